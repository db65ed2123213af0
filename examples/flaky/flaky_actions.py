"""Actions of the flaky machine (examples/flaky/fsm.yaml): a nightly export whose
every step talks to a service that fails half the time.

Each action raises ``ConnectionError`` with probability ``params.probability``. The
framework records the failed attempt and runs the whole transition again, from the last
committed context, after a full-jitter backoff, up to the machine's ``max_retries``.
Because a retry starts from the committed context, nothing an attempt wrote into the
context survives its failure: each step records on success how many retries it took
(``context.retries``), not a counter of its own.

Give ``--context '{"seed": 7}'`` (and a fixed ``--correlation-id``) to replay exactly the
same failures: every attempt then draws from a generator seeded by the seed, the
instance, the step, the retry and the action, instead of the process-wide one.
"""

from __future__ import annotations

import random
from typing import Any

from fsm import Action, Context, max_retry_event


class FlakyAction(Action):
    """Base class: :meth:`maybe_fail` is the unreliable network call."""

    def maybe_fail(self, context: Context) -> None:
        probability = float(self.params.get("probability", 0.5))
        seed = context.get("seed")
        if seed is None:
            draw = random.random()
        else:
            key = f"{seed}:{context.correlation_id}:{context.steps}:{context.retries}:{self.name}"
            draw = random.Random(key).random()
        if draw < probability:
            raise ConnectionError(f"{self.name}: the service dropped the connection "
                                  f"(attempt {context.retries + 1})")

    def record_retries(self, context: Context, key: str) -> None:
        context.setdefault("retries_by_step", {})[key] = context.retries


class Download(FlakyAction):
    """Fetch the day's orders (here: made up from ``params.rows``)."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        self.maybe_fail(context)
        rows = int(self.params.get("rows", 5))
        context["orders"] = [{"id": n, "cents": 500 + 125 * n} for n in range(1, rows + 1)]
        self.record_retries(context, "download")
        return "downloaded"


class Summarise(FlakyAction):
    """Total the orders: pure work, but its result is written to a flaky cache."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        self.maybe_fail(context)
        context["total_cents"] = sum(order["cents"] for order in context["orders"])
        context["order_count"] = len(context["orders"])
        self.record_retries(context, "summarise")
        return "summarised"


class Upload(FlakyAction):
    """Upload the summary; the object key is derived from the instance, so a retry
    after a timed-out (but successful) upload overwrites rather than duplicates."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        self.maybe_fail(context)
        context["upload_key"] = f"exports/{context.correlation_id}.json"
        self.record_retries(context, "upload")
        return "uploaded"


class SendReceipt(FlakyAction):
    """Mail the receipt: best effort.

    The export is already uploaded; a receipt service that stays down must not turn a
    finished export into a ``failed`` instance. ``@max_retry_event`` turns the last
    failed attempt into the event ``receipt_gave_up``, which ends the machine in
    ``done_without_receipt`` instead. ``--context '{"receipt_service_down": true}'``
    simulates the outage.
    """

    @max_retry_event("receipt_gave_up")
    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        if context.get("receipt_service_down"):
            raise ConnectionError(f"{self.name}: the receipt service is down")
        self.maybe_fail(context)
        context["receipt_sent"] = True
        self.record_retries(context, "receipt")
        return "receipt_sent"
