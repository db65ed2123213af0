"""Lambda's events, read and dispatched: shared by ``fsm.handler.lambda_handler`` and
``fsm worker``, which hands its polled batches over in the same record shapes.

Record batches (SQS, SNS, Kinesis, DynamoDB streams) answer with ``batchItemFailures``
(enable ReportBatchItemFailures on the event source mapping, or a failure redelivers the
whole batch). Which service a record comes from, how to read it and whether its source
is ordered are the service module's business (``sources.registry.record_reader``).
Ordered sources (Kinesis, DynamoDB streams, FIFO queues) stop at the first failure and
report it and everything after it, so one instance's messages are never applied out of
order. A record no reader recognises is dead-lettered with the reason, not redelivered.
On a store that gathers its calls (redis), an unordered batch's instances are handled by
one thread each, taking turns, and their store calls go together (:mod:`fsm.gather`).

Whole events: EventBridge messages (a rule delivering our bus's events), the schedule
(timers and the re-send sweep), ECS task state changes (``actions.ecs.RunTask``), and
HTTP requests (API Gateway, function URLs), which :mod:`.http` answers.
Anything else is dead-lettered.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from ..errors import FsmError, InstanceError, MalformedMessage
from ..gather import Gather
from ..logs import log
from ..ports import GathersCalls
from .delivery import process, release_due_timers
from .http import handle_http_event, is_http_event
from .wiring import App, Wiring


def handle_event(application: App, event: Any) -> dict[str, Any]:
    wiring = application.wiring
    try:
        if not isinstance(event, Mapping):
            return _unrecognised(wiring, event, f"a Lambda event must be a JSON object, got {type(event).__name__}")
        if is_http_event(event):
            return handle_http_event(application, event)
        if "Records" in event:
            records = event["Records"]
            if not isinstance(records, list):
                return _unrecognised(wiring, event, f"'Records' must be a list, got {type(records).__name__}")
            return handle_records(application, records)
        if "detail-type" in event:
            return _whole_event(application, event)
        return _unrecognised(wiring, event, "not a record batch, an EventBridge event, a schedule or an HTTP request")
    finally:
        wiring.metrics.flush()


def handle_records(application: App, records: list[Any]) -> dict[str, Any]:
    """Every record of a batch, its sends made together at the end (one batched request
    per stream), answering with the records to redeliver."""
    wiring = application.wiring
    failures: list[dict[str, str]] = []
    retry_soon: dict[str, tuple[Any, list[Any]]] = {}
    done: list[tuple[str, Any, Any]] = []   # (item id, record, its reader)
    try:
        with wiring.dispatcher.batched():
            asynchronous = _each_record(wiring, records, failures, retry_soon, done)
    except Exception as exc:  # noqa: BLE001 - the batch's send: every record it was for comes back
        log(logging.ERROR, "sending the batch's messages failed; its records will be redelivered",
            error=f"{type(exc).__name__}: {exc}", records=len(done))
        failures += [{"itemIdentifier": item} for item, _, _ in done]
        for _, record, reader in done:   # soon, as any failed record of an unordered source
            if not reader.ordered(record) and hasattr(reader, "retry_later"):
                retry_soon.setdefault(record.get("eventSource") or "", (reader, []))[1].append(record)
        asynchronous = any((r.get("EventSource") == "aws:sns") for r in records if isinstance(r, Mapping))
    if failures and asynchronous:
        raise FsmError(f"{len(failures)} SNS records failed; raising so Lambda retries the invocation")
    for reader, failed in retry_soon.values():
        _retry_later(application, reader, failed)
    return {"batchItemFailures": failures}


def _each_record(wiring: Wiring, records: list[Any], failures: list[dict[str, str]],
                 retry_soon: dict[str, tuple[Any, list[Any]]], done: list[tuple[str, Any, Any]]) -> bool:
    """Process each record; a failed one is listed, and on an ordered source the ones
    after it too; ``done`` gets the ones processed. Returns whether the source is
    asynchronous (SNS)."""
    from sources.registry import record_reader

    asynchronous = False
    known: list[tuple[str, Any, Any, str]] = []     # (item id, record, its reader, its source)
    for record in records:
        kind = (record.get("eventSource") or record.get("EventSource") or "") if isinstance(record, Mapping) else ""
        reader = record_reader(kind) if isinstance(kind, str) and kind else None
        if reader is None:
            wiring.dispatcher.dead_letter(_text(record), f"record from unknown event source {kind!r}; known: "
                                          "aws:sqs, aws:sns, aws:kinesis, aws:dynamodb", source=str(kind))
            continue
        asynchronous = asynchronous or getattr(reader, "ASYNCHRONOUS", False)
        known.append((reader.item_id(record), record, reader, kind))
    together = len(known) > 1 and any(isinstance(store, GathersCalls) and store.gathers for store in wiring.stores) \
        and not any(reader.ordered(record) for _, record, reader, _ in known)
    errors = _together(wiring, known) if together else None
    stop = False
    for n, (item, record, reader, kind) in enumerate(known):
        if stop:
            failures.append({"itemIdentifier": item})
            continue
        try:
            if errors is None:
                delivery = reader.read_record(record)
                if delivery is not None:
                    process(wiring, delivery.body, delivery.source)
            elif errors[n] is not None:
                raise errors[n]
            done.append((item, record, reader))
        except Exception as exc:  # noqa: BLE001 - one bad record must not fail the others
            log(logging.ERROR, "record failed; it will be redelivered", source=kind, item=item,
                error=f"{type(exc).__name__}: {exc}")
            failures.append({"itemIdentifier": item})
            stop = reader.ordered(record)
            if not stop and hasattr(reader, "retry_later"):
                retry_soon.setdefault(kind, (reader, []))[1].append(record)
    return asynchronous


def _together(wiring: Wiring, known: list[tuple[str, Any, Any, str]]) -> list[Exception | None]:
    """The records of an unordered source on a store that gathers its calls: one thread
    per instance (its records in their order), their store calls sent together
    (:mod:`fsm.gather`); each record's error, or None."""
    errors: list[Exception | None] = [None] * len(known)
    deliveries: dict[int, Any] = {}
    groups: dict[str, list[int]] = {}
    for n, (_, record, reader, _) in enumerate(known):
        try:
            delivery = reader.read_record(record)
        except Exception as exc:  # noqa: BLE001 - reported as that record's failure
            errors[n] = exc
            continue
        if delivery is not None:
            deliveries[n] = delivery
            groups.setdefault(_instance_of(delivery.body) or f"#{n}", []).append(n)
    batch = wiring.dispatcher.batch_of_this_thread()
    together = Gather(len(groups))
    stopped: list[BaseException] = []    # an interrupt or exit in a thread: raised here, as without threads

    def run(indexes: list[int]) -> None:
        with together.party(), wiring.dispatcher.sharing(batch):
            for n in indexes:
                try:
                    process(wiring, deliveries[n].body, deliveries[n].source)
                except Exception as exc:  # noqa: BLE001 - reported as that record's failure
                    errors[n] = exc
                except BaseException as exc:  # noqa: BLE001 - stops the invocation, below
                    stopped.append(exc)
                    return

    threads = [threading.Thread(target=run, args=(indexes,), name=f"fsm-batch-{k}")
               for k, indexes in enumerate(groups.values())]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if stopped:
        raise stopped[0]
    return errors


_CORRELATION_ID = re.compile(r'"correlation_id":\s*"((?:[^"\\]|\\.)*)"')


def _instance_of(body: Any) -> str | None:
    """The instance a message body is for, read without decoding it (which its thread
    does): the records of one instance are handled by one thread, in their order."""
    if isinstance(body, bytes):
        body = body[:4096].decode("utf-8", "replace")
    if not isinstance(body, str):
        return None
    found = _CORRELATION_ID.search(body[:4096])
    return found.group(1) if found else None


def _retry_later(application: App, reader: Any, records: list[Any]) -> None:
    """Bring failed records back after a short backoff rather than the source's timeout."""
    settings = application.settings
    try:
        arn = records[0].get("eventSourceARN", "")
        reader.retry_later(records, endpoint_url=settings.endpoints.get(arn), aws=settings.aws or None)
    except Exception as exc:  # noqa: BLE001 - best effort: they come back later anyway
        log(logging.WARNING, "could not shorten the backoff of failed records", error=f"{type(exc).__name__}: {exc}")


def _whole_event(application: App, event: Mapping[str, Any]) -> dict[str, Any]:
    from sources.registry import event_reader

    wiring = application.wiring
    eventbridge = event_reader("eventbridge")
    if eventbridge.is_message(event):
        delivery = eventbridge.read_event(event)
        outcome = process(wiring, delivery.body, delivery.source)
        return {"result": outcome.result if outcome else "dead-lettered"}
    ecs = event_reader("ecs")
    if ecs.is_task_change(event):
        return _ecs_task_change(application, ecs.event_from_task_change(event))
    if event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event":
        moved = release_due_timers(wiring, wiring.dispatcher.clock())
        return {"timers_released": moved, "instances_healed": wiring.dispatcher.resend_overdue()}
    return _unrecognised(wiring, event, f"EventBridge event {event.get('source')!r} / "
                         f"{event.get('detail-type')!r} is not one this handler takes")


def _unrecognised(wiring: Wiring, event: Any, reason: str) -> dict[str, Any]:
    wiring.dispatcher.dead_letter(_text(event), reason)
    return {"batchItemFailures": [], "dead_lettered": reason}


def _text(value: Any) -> str:
    from .. import codec

    try:
        return codec.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _ecs_task_change(application: App, found: tuple[str, str, dict[str, Any], str] | None) -> dict[str, Any]:
    """A stopped task started by ``actions.ecs.RunTask`` reports to its instance."""
    from .client import Client

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
    except (InstanceError, MalformedMessage) as exc:
        log(logging.WARNING, "task report not applied", correlation_id=cid, error=str(exc))
        return {"ignored": True, "reason": str(exc)}
    return {"sent": name, "correlation_id": cid}
