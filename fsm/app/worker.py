"""``fsm worker``: Lambda's event source mappings and schedule, outside Lambda.

It polls SQS queues, Kinesis streams (every shard) and DynamoDB streams, hands each batch
to the same ``handle_event`` that ``lambda_handler`` uses, in the same record shapes, and
releases due timers as the scheduled handler does on Lambda.

Like an event source mapping, the worker outlives the sources it reads: a queue that was
deleted or an endpoint that refuses connections is logged and tried again later, while
the other sources go on. That is what lets instances carry on over a secondary queue
when the primary disappears under a running worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import BackendError, RecoverableError, UnknownBackend
from ..logs import log
from ..ports import Poller
from .delivery import release_due_timers
from .intake import handle_event
from .local import LocalRuntime
from .wiring import App

PollerFactory = Callable[..., Poller]
# A failing source is retried after this many seconds, doubling up to the cap, so a dead
# endpoint costs one connection attempt per pause instead of one per loop.
FIRST_PAUSE, MAX_PAUSE = 1.0, 15.0


class Source:
    """One queue or stream, opened on its first poll; while it fails, it is skipped for a
    pause that doubles with each failure, so the others are read meanwhile."""

    def __init__(self, arn: str, open_poller: Callable[[], Poller], clock: Callable[[], float]):
        self.arn = arn
        self._open = open_poller
        self._clock = clock
        self.poller: Poller | None = None
        self.pause = 0.0
        self.retry_at = 0.0
        self.waited = False  # the last poll waited on the server (an SQS long poll)

    def poll(self, wait: bool) -> list[dict[str, Any]]:
        self.waited = False
        if self._clock() < self.retry_at:
            return []
        try:
            if self.poller is None:
                self.poller = self._open()
            records = self.poller.poll(wait)
        except RecoverableError as exc:
            self._failed("poll", exc)
            return []
        self.pause = 0.0
        self.waited = wait and getattr(self.poller, "long_polls", False)
        return records

    def done(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        """Settle a batch. If that fails, SQS delivers the records again and a stream
        reader keeps an older saved position: records seen twice, which the dispatcher
        acknowledges as duplicates without running anything."""
        assert self.poller is not None
        try:
            self.poller.done(records, failed)
        except BackendError as exc:
            self._failed("settle", exc)
            return
        if failed and getattr(self.poller, "ordered", True):
            # An ordered reader (a shard, a FIFO queue) re-reads a failed record at once
            # and must not pass it: a backend that just failed deserves a breath first.
            # An unordered queue goes on with the records after it; the failed one comes
            # back by itself after its short backoff.
            self.retry_at = self._clock() + FIRST_PAUSE

    def _failed(self, what: str, exc: BackendError) -> None:
        self.pause = min(MAX_PAUSE, self.pause * 2 or FIRST_PAUSE)
        self.retry_at = self._clock() + self.pause
        log(logging.WARNING, f"source failed to {what}; trying again later", source=self.arn,
            pause=self.pause, error=f"{type(exc).__name__}: {exc}")


def run_worker(application: App, sources: list[str], *, idle_exit: float | None = None,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
               should_stop: Callable[[], bool] = lambda: False,
               open_poller: PollerFactory | None = None,
               on_progress: Callable[[dict[str, int]], None] | None = None) -> dict[str, int]:
    """Poll ``sources`` until ``should_stop()`` or ``idle_exit`` seconds without work.

    ``open_poller`` (default :func:`default_poller`) lets a test wrap the pollers, to delete
    a queue at a chosen moment for instance. ``on_progress`` gets a copy of the counts
    after every round, busy or idle, so a caller can show a rate without a thread of its own.
    """
    factory: PollerFactory = open_poller or default_poller
    settings = application.settings
    positions: Any = application.wiring.dispatcher.checkpoints if settings.checkpoint else None

    def opener(arn: str) -> Callable[[], Poller]:
        return lambda: factory(arn, endpoint_url=settings.endpoints.get(arn), aws=settings.aws or None,
                               positions=positions)

    # Opened on their first poll, so a source that is down cannot stop the others.
    readers = [Source(arn, opener(arn), clock) for arn in sources]
    local = LocalRuntime(application.wiring) if application.wiring.embedded else None
    counts = {"records": 0, "failed": 0, "timers": 0, "healed": 0}
    dispatcher = application.wiring.dispatcher
    for url in dispatcher.healing_gaps():
        log(logging.WARNING, "this store keeps no pending index: an instance whose message the bus lost "
            "is healed only by redelivery or `fsm resume ID`", store=url)
    sweep_every = max(1.0, dispatcher.resend_after / 4)
    idle_since = clock()
    timers_retry_at = 0.0
    next_sweep = clock() + sweep_every
    was_busy = False
    while not should_stop():
        busy = False
        if clock() >= timers_retry_at:
            try:
                counts["timers"] += (moved := release_due_timers(application.wiring, time.time()))
                busy = moved > 0
                if clock() >= next_sweep:
                    next_sweep = clock() + sweep_every
                    counts["healed"] += (healed := dispatcher.resend_overdue())
                    busy = busy or healed > 0
            except BackendError as exc:
                timers_retry_at = clock() + FIRST_PAUSE
                log(logging.WARNING, "releasing timers or healing failed; trying again later", error=str(exc))
        if local is not None:
            counts["records"] += (drained := local.drain())
            if drained:
                application.wiring.metrics.flush()
            busy = busy or drained > 0
        for reader in readers:
            # Long-poll only when the last round found nothing: an empty queue must not
            # hold up a busy one for a second on every round.
            records = reader.poll(wait=not was_busy)
            if not records:
                continue
            busy = True
            response = handle_event(application, {"Records": records})
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            reader.done(records, failed)
            counts["records"] += len(records)
            counts["failed"] += len(failed)
        was_busy = busy
        if on_progress is not None:
            on_progress(dict(counts))
        if busy:
            idle_since = clock()
        elif idle_exit is not None and clock() - idle_since >= idle_exit:
            break
        if not busy and not any(r.waited for r in readers):
            sleep(0.2)  # SQS long-polls; stream readers, timers and failing sources would spin
    log(logging.INFO, "worker stopped", **counts)
    return counts


def default_poller(arn: str, **options: Any) -> Poller:
    """The poller of ``arn``'s service (SQS, Kinesis, a DynamoDB table's stream)."""
    from sources.registry import ADAPTERS, adapter_class

    try:
        return adapter_class("poller", arn)(arn, **options)
    except UnknownBackend:
        raise UnknownBackend(f"cannot poll {arn!r}: fsm worker reads {', '.join(sorted(ADAPTERS['poller']))} "
                             "(SQS queues, Kinesis streams, DynamoDB tables with a stream)") from None
