"""The embedded local runtime: the in-process bus and the store's timers, driven by
the same Dispatcher that runs on Lambda (there is no separate local code path)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from .dispatcher import Outcome
from .errors import BackendError, MalformedMessage, RecoverableError
from .logs import log, redact
from .message import decode
from .ports import Envelope, TimerStore
from .wiring import Wiring

SETTLED = ("waiting", "done", "failed", "cancelled")


def release_due_timers(wiring: Wiring, now: float, limit: int = 100) -> int:
    """Move due timers onto the stream: send first, then remove, so a crash in between
    only duplicates a message (which the dispatcher recognises)."""
    timers: TimerStore | None = wiring.routes.timers
    if timers is None:
        return 0
    released: set[str] = set()
    while True:
        batch = [(tid, body) for tid, body in timers.due(now, limit) if tid not in released]
        for timer_id, body in batch:
            try:
                msg = decode(body)
            except MalformedMessage as exc:  # never blocks the others: dead-lettered like any message
                process(wiring, body, {"arn": getattr(timers, "url", "timers")})
                log(logging.ERROR, "malformed timer removed", timer=timer_id, error=str(exc))
            else:
                wiring.routes.bus.send(Envelope(body, msg.correlation_id, msg.dedup_id))
            timers.remove(timer_id)
            released.add(timer_id)
        if len(batch) < limit:  # a timer whose removal failed shows up again: not a reason to loop
            return len(released)


def process(wiring: Wiring, body: str | bytes, source: dict | None = None) -> Outcome | None:
    """Decode and dispatch one message body. A malformed one is logged (redacted),
    counted and dead-lettered, never retried; backend errors propagate (redeliver)."""
    try:
        return wiring.dispatcher.handle(decode(body), source)
    except MalformedMessage as exc:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        log(logging.ERROR, "malformed message dead-lettered", error=str(exc), payload=redact(text),
            source=(source or {}).get("arn"))
        wiring.metrics.incr("DeadLetters", dims={"Machine": "unknown"})
        if wiring.routes.dead_letter is not None:
            digest = hashlib.sha256(text.encode()).hexdigest()
            wiring.routes.dead_letter.send(Envelope(text, "malformed", digest))
        return None


class LocalRuntime:
    def __init__(self, wiring: Wiring, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 on_outcome: Callable[[Outcome], None] | None = None):
        if not wiring.embedded:
            raise BackendError("the local runtime needs the embedded bus (no `stream:` in settings)")
        self.wiring = wiring
        self.bus = wiring.routes.bus
        self.clock = clock
        self.sleep = sleep
        self.on_outcome = on_outcome or (lambda outcome: None)

    def drain(self) -> int:
        """Handle every message now in the bus (and those they send); return how many."""
        handled = 0
        while True:
            envelopes = self.bus.receive(100)  # type: ignore[attr-defined]
            if not envelopes:
                return handled
            for envelope in envelopes:
                handled += 1
                outcome = process(self.wiring, envelope.body)
                if outcome is not None:
                    self.on_outcome(outcome)

    def catch_up(self) -> None:
        """Release the timers that are due and run what they start."""
        try:
            release_due_timers(self.wiring, self.clock())
        except RecoverableError as exc:  # timers wait for the next command; messages go on
            log(logging.WARNING, "releasing timers failed", error=str(exc))
        self.drain()

    def drive(self, cid: str, max_wait: float | None = None) -> dict | None:
        """Run until instance ``cid`` settles (waiting, done, failed, cancelled), sleeping
        through retry backoffs; returns its record."""
        deadline = None if max_wait is None else self.clock() + max_wait
        while True:
            self.catch_up()
            found = freshest_record(self.wiring, cid)
            record = found[1] if found else None
            settled = record is None or record["status"] in SETTLED
            if settled or (deadline is not None and self.clock() >= deadline):
                self.wiring.metrics.flush()  # one command is one "invocation": one batch of metrics
                return record
            # Running, with nothing on the bus: its next message is a timer (a retry backoff).
            next_due = getattr(self.wiring.routes.timers, "next_due", lambda: self.clock() + 0.25)()
            if next_due is None:
                self.wiring.metrics.flush()
                return record  # nothing will ever come: report where it stands
            self.sleep(max(0.0, min(next_due - self.clock(), 1.0)))


def freshest_record(wiring: Wiring, cid: str) -> tuple[int, dict] | None:
    """The record with the highest fence across the stores, and its store's index:
    after a failover the secondary holds the live record and the primary a stale one."""
    best: tuple[int, dict] | None = None
    for index, store in enumerate(wiring.stores):
        try:
            record = store.get(cid)
        except BackendError:
            if len(wiring.stores) == 1:
                raise
            continue
        if record and (best is None or record.get("fence", 0) > best[1].get("fence", 0)):
            best = (index, record)
    return best
