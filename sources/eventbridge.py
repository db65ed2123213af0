"""``arn:aws:events:REGION:ACCOUNT:event-bus/NAME``: an EventBridge bus, everything about it.

Sending puts one event per message (``PutEvents``; ``Source`` ``lambda-fsm``,
``DetailType`` ``lambda-fsm message``, ``Detail`` the message itself). A rule on the bus
(``create`` makes it, matching exactly those events) delivers them to the function, or to
an SQS queue that the function or ``fsm worker`` reads. The handler takes either shape:
the EventBridge event itself (:func:`read_event`), or the event as an SQS body
(:func:`unwrap`, called by ``sources.sqs``). EventBridge has no delay (``max_delay`` 0)
and no order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fsm.errors import BackendError
from fsm.ports import Delivery, Envelope

from .aws import THROTTLING_CODES
from .aws_bus import AwsBus, EntryFailures

SOURCE = "lambda-fsm"
DETAIL_TYPE = "lambda-fsm message"
MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024          # PutEvents: all entries together
RETRYABLE_CODES = frozenset({"InternalFailure", "InternalException"}) | THROTTLING_CODES
ALREADY_EXISTS = frozenset({"ResourceAlreadyExistsException"})


class EventBridgeBus(AwsBus):
    max_batch_entries, max_batch_bytes = MAX_BATCH_ENTRIES, MAX_BATCH_BYTES
    service = "events"

    def __init__(self, arn: str, **options: Any):
        super().__init__(arn, **options)
        kind, _, self.name = self.resource.partition("/")
        if kind != "event-bus" or not self.name:
            raise BackendError(f"{arn!r}: expected arn:aws:events:REGION:ACCOUNT:event-bus/NAME")
        self.rule = f"{self.name}-lambda-fsm"

    def send(self, envelope: Envelope) -> None:
        self.check_delay(envelope)
        failed = self.put_batch([envelope], [0])
        if failed:
            reply_kind = "retryable" if failed[0] else "refused"
            raise BackendError(f"{self.url}: PutEvents {reply_kind} the message")

    def entry_size(self, envelope: Envelope) -> int:
        return len(envelope.body.encode()) + len(SOURCE) + len(DETAIL_TYPE)

    def put_batch(self, envelopes: Sequence[Envelope], indices: list[int]) -> EntryFailures:
        entries = [{"Source": SOURCE, "DetailType": DETAIL_TYPE, "Detail": envelopes[i].body,
                    "EventBusName": self.name} for i in indices]
        reply = self.call("put_events", Entries=entries)
        if not reply.get("FailedEntryCount"):
            return {}
        # PutEvents answers in request order, one result per entry.
        return {i: result["ErrorCode"] in RETRYABLE_CODES
                for i, result in zip(indices, reply.get("Entries", [])) if result.get("ErrorCode")}

    def create(self, target: str | None = None) -> None:
        """Make the bus (unless it is ``default``) and the rule that matches our messages;
        with ``target`` (a queue or function ARN), point the rule at it. Safe to run twice."""
        if self.name != "default":
            self.call_accepting(ALREADY_EXISTS, "create_event_bus", Name=self.name)
        self.call("put_rule", Name=self.rule, EventBusName=self.name, State="ENABLED",
                  EventPattern=json.dumps(EVENT_PATTERN))
        if target:
            self.call("put_targets", Rule=self.rule, EventBusName=self.name,
                      Targets=[{"Id": "lambda-fsm", "Arn": target}])


EVENT_PATTERN = {"source": [SOURCE], "detail-type": [DETAIL_TYPE]}


def is_message(event: Mapping[str, Any]) -> bool:
    return event.get("source") == SOURCE and event.get("detail-type") == DETAIL_TYPE


def read_event(event: Mapping[str, Any]) -> Delivery:
    """The message carried by an EventBridge event that a rule delivered to the function."""
    return Delivery(event.get("detail"), {"arn": "", "id": event.get("id")})


def unwrap(body: str) -> str | dict[str, Any]:
    """The message inside an EventBridge event delivered to a queue, else ``body``."""
    if body.startswith("{") and '"detail-type"' in body:
        try:
            event = json.loads(body)
        except ValueError:
            return body
        if isinstance(event, dict) and is_message(event):
            detail = event.get("detail")
            return detail if isinstance(detail, dict) else body
    return body
