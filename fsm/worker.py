"""``fsm worker``: Lambda's event source mappings and schedule, outside Lambda.

It polls SQS queues, Kinesis streams (every shard) and DynamoDB streams, hands each batch
to the same ``handle_event`` that ``lambda_handler`` uses, in the same record shapes, and
releases due timers as the scheduled handler does on Lambda.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from .handler import App, handle_event
from .logs import log
from .runtime import LocalRuntime, release_due_timers


def run_worker(application: App, sources: list[str], *, idle_exit: float | None = None,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
               should_stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
    from sources.pollers import open_poller

    settings = application.settings
    positions: Any = None
    if settings.checkpoint:
        positions = application.wiring.dispatcher.checkpoints
    pollers = [open_poller(arn, endpoint_url=settings.endpoints.get(arn), aws=settings.aws or None,
                           positions=positions) for arn in sources]
    local = LocalRuntime(application.wiring) if application.wiring.embedded else None
    counts = {"records": 0, "failed": 0, "timers": 0}
    idle_since = clock()
    while not should_stop():
        busy = False
        counts["timers"] += (moved := release_due_timers(application.wiring, time.time()))
        busy = busy or moved > 0
        if local is not None:
            counts["records"] += (drained := local.drain())
            busy = busy or drained > 0
        for poller in pollers:
            records = poller.poll()
            if not records:
                continue
            busy = True
            response = handle_event(application, {"Records": records})
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            poller.done(records, failed)
            counts["records"] += len(records)
            counts["failed"] += len(failed)
        if busy:
            idle_since = clock()
        elif idle_exit is not None and clock() - idle_since >= idle_exit:
            break
        if not busy and not any(p.arn.startswith("arn:aws:sqs:") for p in pollers):
            sleep(0.2)  # SQS long-polls; stream readers and timers would spin
    log(logging.INFO, "worker stopped", **counts)
    return counts
