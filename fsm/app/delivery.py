"""Handing message bodies to the dispatcher, wherever they come from (Lambda records, the
worker, the embedded bus, timers), and reading an instance's freshest record."""

from __future__ import annotations

import logging

from .. import codec
from ..dispatcher import Outcome
from ..errors import BackendError, MalformedMessage
from ..logs import log
from ..message import decode
from ..ports import Envelope, TimerStore
from ..record import Record, freshness
from .wiring import Wiring


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


def process(wiring: Wiring, body: str | bytes | dict, source: dict | None = None) -> Outcome | None:
    """Decode and dispatch one message body. A malformed one is dead-lettered, never
    retried; backend errors propagate (redeliver)."""
    try:
        return wiring.dispatcher.handle(decode(body), source)
    except MalformedMessage as exc:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else \
            body if isinstance(body, str) else codec.dumps(body)
        wiring.dispatcher.dead_letter(text, f"malformed message: {exc}", key="malformed",
                                      source=(source or {}).get("arn"))
        return None


def freshest_record(wiring: Wiring, cid: str) -> tuple[int, Record] | None:
    """The live record across the stores (see :func:`fsm.record.freshness`), and its
    store's index: after a failover the secondary holds it and the primary a stale one."""
    best: tuple[int, Record] | None = None
    for index, store in enumerate(wiring.stores):
        try:
            record = store.get(cid)
        except BackendError:
            if len(wiring.stores) == 1:
                raise
            continue
        if record and (best is None or freshness(record, index) > freshness(best[1], best[0])):
            best = (index, record)
    return best
