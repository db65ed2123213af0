"""``arn:aws:events:REGION:ACCOUNT:event-bus/NAME``: an EventBridge bus, everything about it.

Sending puts one event per message (``PutEvents``; ``Source`` ``lambda-fsm``,
``DetailType`` ``lambda-fsm message``, ``Detail`` the message itself). A rule on the bus
(``create`` makes it, matching exactly those events) delivers them to the function, or to
an SQS queue that the function or ``fsm worker`` reads. The handler takes either shape:
the EventBridge event itself (:func:`read_event`), or the event as an SQS body
(:func:`unwrap`, called by ``sources.sqs``). EventBridge has no delay (``max_delay`` 0),
no order and no deduplication: the dispatcher's fences and dedup ids make up for that.

AWS has been seen to answer PutEvents for a bus that does not exist with success, the
events going nowhere (aws/aws-cli#9186), and no rule or target means the same: run
``fsm create-resources`` and point the rule somewhere before the first send. (moto
refuses such a request instead, so tests cannot show this.)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fsm.errors import BackendError, PartialBatchError, RecoverableError
from fsm.ports import Delivery, Envelope

from . import aws as awslib
from .aws import THROTTLING_CODES
from .aws_bus import AwsBus, EntryFailures, send_in_chunks

SOURCE = "lambda-fsm"
DETAIL_TYPE = "lambda-fsm message"
MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024          # PutEvents: all entries together
RETRYABLE_CODES = frozenset({"InternalFailure", "InternalException"}) | THROTTLING_CODES
ALREADY_EXISTS = frozenset({"ResourceAlreadyExistsException"})
RULE_NAME = re.compile(r"[.\-_A-Za-z0-9]{1,64}")
EVENT_PATTERN = {"source": [SOURCE], "detail-type": [DETAIL_TYPE]}


class EventBridgeBus(AwsBus):
    max_batch_entries, max_batch_bytes = MAX_BATCH_ENTRIES, MAX_BATCH_BYTES
    service = "events"

    def __init__(self, arn: str, **options: Any):
        super().__init__(arn, **options)
        kind, _, self.name = self.resource.partition("/")
        if kind != "event-bus" or not self.name:
            raise BackendError(f"{arn!r}: expected arn:aws:events:REGION:ACCOUNT:event-bus/NAME")
        self.rule = rule_name(self.name)

    def send(self, envelope: Envelope) -> None:
        """One PutEvents entry. A throttled entry is retried once, as in a batch, and then
        raised as RecoverableError: a failover router moves only those to a secondary."""
        self.check_delay(envelope)
        try:
            send_in_chunks(self.url, [[0]], lambda indices: self.put_batch([envelope], indices))
        except PartialBatchError as exc:
            if exc.recoverable:
                raise RecoverableError(f"{self.url}: PutEvents could not take the message now: {exc}") from exc
            raise BackendError(f"{self.url}: PutEvents refused the message: {exc}") from exc

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

    def create(self, target: str | None = None) -> str:
        """Make the bus (unless it is ``default``) and the rule that matches our messages;
        with ``target`` (a queue or function ARN), point the rule at it. Returns the rule's
        ARN. Safe to run twice.

        A queue target is also given the policy statement that lets this rule send to it:
        without one, EventBridge drops every delivery and nothing reports it. A function
        target needs ``lambda add-permission`` (principal ``events.amazonaws.com``, source
        the rule's ARN), which is left to the deployment that owns the function.
        """
        if self.name != "default":
            self.call_accepting(ALREADY_EXISTS, "create_event_bus", Name=self.name)
        rule_arn = str(self.call("put_rule", Name=self.rule, EventBusName=self.name, State="ENABLED",
                                 EventPattern=json.dumps(EVENT_PATTERN))["RuleArn"])
        if target:
            self.call("put_targets", Rule=self.rule, EventBusName=self.name,
                      Targets=[{"Id": "lambda-fsm", "Arn": target}])
            if awslib.parse_arn(target)[0] == "sqs":
                self._let_rule_send_to(target, rule_arn)
        return rule_arn

    def _let_rule_send_to(self, queue_arn: str, rule_arn: str) -> None:
        """Add (once) the statement allowing ``rule_arn`` to SendMessage to the queue,
        keeping whatever policy the queue already has."""
        _, region, account, name = awslib.parse_arn(queue_arn)
        sqs = awslib.make_client("sqs", region or self.region or None, self.endpoint_url, self._aws)
        try:
            url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get("Attributes", {})
            policy = json.loads(attributes.get("Policy") or '{"Version": "2012-10-17", "Statement": []}')
            statements = policy.get("Statement") or []
            statements = [statements] if isinstance(statements, dict) else list(statements)
            sid = "lambdafsm" + hashlib.sha256(rule_arn.encode()).hexdigest()[:16]
            if any(s.get("Sid") == sid for s in statements):
                return
            statements.append({"Sid": sid, "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                               "Action": "sqs:SendMessage", "Resource": queue_arn,
                               "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}})
            policy["Statement"] = statements
            sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        except Exception as exc:
            raise awslib.classify(exc, queue_arn) from exc


def rule_name(bus: str) -> str:
    """``BUS-lambda-fsm``, or a name derived from a hash of it when that is not a valid
    rule name (over 64 characters, or a partner bus's ``/``); stable, so ``create`` stays
    idempotent."""
    name = f"{bus}-lambda-fsm"
    if RULE_NAME.fullmatch(name):
        return name
    return f"lambda-fsm-{hashlib.sha256(bus.encode()).hexdigest()[:24]}"


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
