"""``fsm.handler.lambda_handler``: one Lambda entry point for every event source.

SQS, Kinesis and DynamoDB-stream batches answer with ``batchItemFailures`` (enable
ReportBatchItemFailures on the event source mapping, or a failure redelivers the whole
batch). SNS and EventBridge invoke asynchronously and ignore the answer, so for them a
failure is raised to get Lambda's retry. Ordered sources (Kinesis, DynamoDB streams,
FIFO queues) stop at the first failure and report it and everything after it, so one
instance's messages are never applied out of order.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any

from .shadow import check_packages

check_packages()

from .client import Client
from .errors import FsmError, InstanceError, MalformedMessage
from .logs import configure, log, redact
from .runtime import process, release_due_timers
from .wiring import App, Wiring

_app: App | None = None


def app() -> App:
    """Machines and backends are loaded once per container, on the first event."""
    global _app
    if _app is None:
        configure(os.environ.get("FSM_LOG_LEVEL", "INFO"))
        _app = App.load()
    return _app


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return handle_event(app(), event)


def handle_event(application: App, event: dict[str, Any]) -> dict[str, Any]:
    wiring = application.wiring
    try:
        if "Records" in event:
            return _records(wiring, event["Records"])
        if event.get("detail-type") == "ECS Task State Change":
            return _ecs_task_change(application, event)
        if event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event":
            moved = release_due_timers(wiring, wiring.dispatcher.clock())
            return {"timers_released": moved, "instances_healed": wiring.dispatcher.resend_overdue()}
        log(logging.ERROR, "unrecognised event dropped", payload=redact(event))
        wiring.metrics.incr("DeadLetters", dims={"Machine": "unknown"})
        return {"batchItemFailures": []}
    finally:
        wiring.metrics.flush()


# -- record batches -----------------------------------------------------------------------


def _records(wiring: Wiring, records: list[dict[str, Any]]) -> dict[str, Any]:
    failures: list[dict[str, str]] = []
    stop = False
    asynchronous = False
    for record in records:
        kind = record.get("eventSource") or record.get("EventSource") or ""
        asynchronous = asynchronous or kind == "aws:sns"
        item = _item_id(kind, record)
        if stop:
            failures.append({"itemIdentifier": item})
            continue
        try:
            extracted = _extract(kind, record)
            if extracted is not None:
                process(wiring, *extracted)
        except Exception as exc:  # noqa: BLE001 - one bad record must not fail the others
            log(logging.ERROR, "record failed; it will be redelivered", source=kind, item=item,
                error=f"{type(exc).__name__}: {exc}")
            failures.append({"itemIdentifier": item})
            stop = _ordered(kind, record)
    if failures and asynchronous:
        raise FsmError(f"{len(failures)} SNS records failed; raising so Lambda retries the invocation")
    return {"batchItemFailures": failures}


def _ordered(kind: str, record: dict[str, Any]) -> bool:
    return kind in ("aws:kinesis", "aws:dynamodb") or record.get("eventSourceARN", "").endswith(".fifo")


def _item_id(kind: str, record: dict[str, Any]) -> str:
    if kind == "aws:kinesis":
        return record.get("kinesis", {}).get("sequenceNumber", "")
    if kind == "aws:dynamodb":
        return record.get("dynamodb", {}).get("SequenceNumber", "")
    if kind == "aws:sns":
        return record.get("Sns", {}).get("MessageId", "")
    return record.get("messageId", "")


def _extract(kind: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The message body and where it came from; ``None`` for records that carry none."""
    arn = record.get("eventSourceARN") or record.get("EventSubscriptionArn", "")
    if kind == "aws:sqs":
        return _unwrap_sns(record.get("body", "")), {"arn": arn, "id": record.get("messageId")}
    if kind == "aws:sns":
        return record.get("Sns", {}).get("Message", ""), {"arn": record.get("Sns", {}).get("TopicArn", arn)}
    if kind == "aws:kinesis":
        data = record.get("kinesis", {})
        try:
            body = base64.b64decode(data.get("data", ""), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            body = data.get("data", "")  # let decode() report it as malformed
        shard = record.get("eventID", "").split(":", 1)[0]
        return body, {"arn": arn, "sequence": data.get("sequenceNumber"), "shard": shard}
    if kind == "aws:dynamodb":
        if record.get("eventName", "INSERT") != "INSERT":
            # REMOVE: a message item expiring by TTL. MODIFY: a batch re-writing an item
            # already sent, whose INSERT was (or will be) handled: acting on it again
            # would re-send the instance's outbox.
            return None
        image = record.get("dynamodb", {}).get("NewImage", {})
        return image.get("body", {}).get("S", ""), {"arn": arn,
                                                   "sequence": record.get("dynamodb", {}).get("SequenceNumber")}
    raise MalformedMessage(f"record from unknown event source {kind!r}")


def _unwrap_sns(body: str) -> str:
    """SNS -> SQS without raw delivery wraps the message in an SNS envelope."""
    if body.startswith("{") and '"TopicArn"' in body:
        try:
            envelope = json.loads(body)
        except ValueError:
            return body
        if isinstance(envelope, dict) and envelope.get("Type") == "Notification" and "Message" in envelope:
            return envelope["Message"]
    return body


# -- ECS task state changes ---------------------------------------------------------------


def _ecs_task_change(application: App, event: dict[str, Any]) -> dict[str, Any]:
    """A stopped task started by ``actions.ecs.RunTask`` reports to its instance."""
    from actions.ecs import event_from_task_change

    found = event_from_task_change(event)
    if found is None:
        return {"ignored": True}
    cid, name, data, event_id = found
    client = Client(wiring=application.wiring)
    try:
        current = client.status(cid)["context"].get("ecs_task_arn")
        if current and data.get("task_arn") and current != data["task_arn"]:
            # A late report of an earlier task (its state timed out and started another):
            # it must not finish the wait of the task running now.
            log(logging.WARNING, "stale task report ignored", correlation_id=cid, task=data["task_arn"])
            return {"ignored": True, "reason": "stale task"}
        client.send_event(cid, name, data, event_id)
    except InstanceError as exc:
        log(logging.WARNING, "task report not applied", correlation_id=cid, error=str(exc))
        return {"ignored": True, "reason": str(exc)}
    return {"sent": name, "correlation_id": cid}


