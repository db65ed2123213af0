"""``handle_event`` on the event shapes AWS documents, with in-memory backends.

The shapes below follow the AWS Lambda developer guide's sample events field for field
(placeholders where the service fills in values); only the payload is ours: a message
built by the project's own code. The integration tests feed records read back from
moto_server; these pin down the routing rules quickly and without any server.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from protocol_kit import HandBus

from config.loader import load_text
from config.settings import Settings
from fsm import Action
from fsm.app import App
from fsm.app.intake import handle_event
from fsm.app.wiring import build
from fsm.app.worker import run_worker
from fsm.errors import FsmError, RecoverableError
from fsm.message import Message
from fsm.ports import Record, Scalar, SwapResult
from sources.memory import MemoryStore, MemoryTimers

MACHINES = """
machines:
  - name: three
    version: '2'
    states:
      - name: a
        initial: true
        do_action: {class: protocol_kit.Record}
        transitions: [{event: next, target: b}]
      - name: b
        do_action: {class: protocol_kit.Record}
        transitions: [{event: next, target: c}]
      - name: c
        final: true
"""

SQS = {"messageId": "059f36b4-87a3-44ab-83d2-661975830a7d", "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
       "body": "", "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183",
                                  "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                                  "ApproximateFirstReceiveTimestamp": "1545082649185"},
       "messageAttributes": {}, "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3", "eventSource": "aws:sqs",
       "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:my-queue", "awsRegion": "us-east-1"}
KINESIS = {"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "1",
                       "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                       "data": "", "approximateArrivalTimestamp": 1545084650.987},
           "eventSource": "aws:kinesis", "eventVersion": "1.0",
           "eventID": "shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
           "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
           "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/my-stream"}
SNS = {"EventVersion": "1.0",
       "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:my-topic:0b6941c3-f04d-4d3e-a66d-b1df00e1e381",
       "EventSource": "aws:sns",
       "Sns": {"SignatureVersion": "1", "Timestamp": "2019-01-02T12:45:07.000Z", "Signature": "tcc6faL2yUC6...65r==",
               "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-ac565b8b1a6c.pem",
               "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e", "Message": "",
               "MessageAttributes": {"Test": {"Type": "String", "Value": "TestString"}}, "Type": "Notification",
               "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&amp;SubscriptionArn=...",
               "TopicArn": "arn:aws:sns:us-east-1:123456789012:my-topic", "Subject": "TestInvoke"}}
DYNAMODB = {"eventID": "c4ca4238a0b923820dcc509a6f75849b", "eventName": "INSERT", "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
            "dynamodb": {"Keys": {"pk": {"S": ""}}, "NewImage": {},
                         "ApproximateCreationDateTime": 1428537600,
                         "SequenceNumber": "4421584500000000017450439091", "SizeBytes": 26,
                         "StreamViewType": "NEW_AND_OLD_IMAGES"},
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/my-table/stream/2015-06-27T00:48:05.899"}
SCHEDULED = {"version": "0", "account": "123456789012", "region": "us-east-1", "detail": {},
             "detail-type": "Scheduled Event", "source": "aws.events", "time": "2019-03-01T01:23:45Z",
             "id": "cdc73f9d-aea9-11e3-9d5a-835b769c0d9c",
             "resources": ["arn:aws:events:us-east-1:123456789012:rule/my-schedule"]}


class DownFor(MemoryStore):
    """A store whose backend is unreachable for some instances (a shard, a partition)."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()

    def swap(self, cid: str, expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any],
             history: Sequence[Mapping[str, Any]] = ()) -> SwapResult:
        self._check(cid)
        return super().swap(cid, expect, fields, history)

    def get(self, cid: str) -> Record | None:
        self._check(cid)
        return super().get(cid)

    def _check(self, cid: str) -> None:
        if cid in self.down:
            raise RecoverableError(f"memory://: connection refused for {cid}")


class Harness:
    """An application on in-memory backends, whose buses keep what they were sent."""

    def __init__(self) -> None:
        definitions = load_text(MACHINES)
        self.store = DownFor()
        self.bus, self.dead = HandBus(), HandBus()
        settings = Settings(store=["memory://"])
        wiring = build(definitions.machines, settings, bus=self.bus)
        wiring.stores[0] = wiring.dispatcher.stores[0] = self.store
        wiring.routes.dead_letter = self.dead
        wiring.routes.timers = MemoryTimers()
        self.app = App(definitions, settings, wiring)

    def start(self) -> tuple[str, str]:
        cid = uuid.uuid4().hex
        return cid, Message(machine="three", correlation_id=cid, version="2", context={}).encode()

    def step(self, cid: str) -> int | None:
        record = self.store.get(cid)
        return record["step"] if record else None

    @property
    def counts(self) -> dict[str, float]:
        return self.app.wiring.metrics.counts  # type: ignore[attr-defined]


@pytest.fixture
def h() -> Harness:
    return Harness()


def sqs(body: str, n: int = 0, arn: str | None = None) -> dict[str, Any]:
    record = copy.deepcopy(SQS)
    record.update(body=body, messageId=f"m-{n}")
    if arn:
        record["eventSourceARN"] = arn
    return record


def kinesis(body: str | bytes, n: int = 0) -> dict[str, Any]:
    record = copy.deepcopy(KINESIS)
    raw = body.encode() if isinstance(body, str) else body
    record["kinesis"].update(data=base64.b64encode(raw).decode(), sequenceNumber=str(1000 + n))
    record["eventID"] = f"shardId-000000000006:{1000 + n}"
    return record


def sns(body: str, n: int = 0) -> dict[str, Any]:
    record = copy.deepcopy(SNS)
    record["Sns"].update(Message=body, MessageId=f"sns-{n}")
    return record


def dynamodb(body: str, n: int = 0, event: str = "INSERT") -> dict[str, Any]:
    record = copy.deepcopy(DYNAMODB)
    record["eventName"] = event
    record["dynamodb"].update(Keys={"pk": {"S": f"k{n}"}}, NewImage={"pk": {"S": f"k{n}"}, "body": {"S": body}},
                              SequenceNumber=str(5000 + n))
    return record


SHAPES = {"sqs": sqs, "kinesis": kinesis, "sns": sns, "dynamodb": dynamodb}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_source_shape_reaches_the_dispatcher(h: Harness, shape: str) -> None:
    cid, body = h.start()
    assert handle_event(h.app, {"Records": [SHAPES[shape](body)]}) == {"batchItemFailures": []}
    assert h.step(cid) == 1
    assert json.loads(h.bus.sent[-1].body)["step"] == 1  # the next message went out


def test_sns_records_say_EventSource_with_a_capital_e(h: Harness) -> None:
    record = sns(h.start()[1])
    assert "EventSource" in record and "eventSource" not in record
    assert handle_event(h.app, {"Records": [record]}) == {"batchItemFailures": []}
    assert h.counts.get("DeadLetters", 0) == 0


def test_kinesis_checkpoint_names_stream_shard_and_sequence(h: Harness) -> None:
    cid, body = h.start()
    handle_event(h.app, {"Records": [kinesis(body, 7)]})
    assert h.store.get(cid)["checkpoint"] == {"arn": KINESIS["eventSourceARN"], "shard": "shardId-000000000006",
                                             "sequence": "1007"}


def test_sns_envelope_in_an_sqs_body_is_unwrapped(h: Harness) -> None:
    """SNS -> SQS without raw delivery: the queue holds SNS's JSON envelope."""
    cid, body = h.start()
    envelope = {"Type": "Notification", "MessageId": "95df01b4", "TopicArn": SNS["Sns"]["TopicArn"],
                "Message": body, "Timestamp": "2019-01-02T12:45:07.000Z"}
    assert handle_event(h.app, {"Records": [sqs(json.dumps(envelope, indent=2))]}) == {"batchItemFailures": []}
    assert h.step(cid) == 1


@pytest.mark.parametrize("event", ["REMOVE", "MODIFY"])
def test_dynamodb_records_other_than_inserts_are_ignored(h: Harness, event: str) -> None:
    """REMOVE is a message item expiring; MODIFY a re-written item whose INSERT counted."""
    cid, body = h.start()
    assert handle_event(h.app, {"Records": [dynamodb(body, event=event)]}) == {"batchItemFailures": []}
    assert h.step(cid) is None and not h.bus.sent and not h.dead.sent


def poison(h: Harness) -> list[str]:
    return ["not JSON at all",
            Message(machine="nope", correlation_id="poison-1").encode(),
            Message(machine="three", correlation_id="poison-2", step=1, state="zz", version="2").encode(),
            Message(machine="three", correlation_id="poison-3", version="1").encode()]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_poison_is_dead_lettered_and_counted_and_the_good_commit(h: Harness, shape: str) -> None:
    bad = poison(h)
    starts = [h.start() for _ in bad]
    bodies = [body for pair in zip([b for _, b in starts], bad) for body in pair]
    records = [SHAPES[shape](body, n) for n, body in enumerate(bodies)]
    if shape == "sns":  # one record per invocation
        responses = [handle_event(h.app, {"Records": [r]}) for r in records]
        assert all(r == {"batchItemFailures": []} for r in responses)
    else:
        assert handle_event(h.app, {"Records": records}) == {"batchItemFailures": []}
    assert [h.step(cid) for cid, _ in starts] == [1] * len(starts)
    assert sorted(e.body for e in h.dead.sent) == sorted(bad)
    assert h.counts["DeadLetters"] == len(bad)


def test_kinesis_data_that_is_not_base64_is_dead_lettered(h: Harness) -> None:
    record = kinesis("x")
    record["kinesis"]["data"] = "%%% not base64 %%%"
    assert handle_event(h.app, {"Records": [record]}) == {"batchItemFailures": []}
    assert [e.body for e in h.dead.sent] == ["%%% not base64 %%%"]


def test_the_sample_dynamodb_image_without_a_body_is_dead_lettered(h: Harness) -> None:
    record = copy.deepcopy(DYNAMODB)
    record["dynamodb"]["NewImage"] = {"Message": {"S": "New item!"}, "Id": {"N": "101"}}
    assert handle_event(h.app, {"Records": [record]}) == {"batchItemFailures": []}
    assert h.counts["DeadLetters"] == 1


FIFO = "arn:aws:sqs:us-east-1:123456789012:my-queue.fifo"


@pytest.mark.parametrize(("shape", "ordered"), [("sqs", False), ("fifo", True), ("kinesis", True),
                                                ("dynamodb", True)])
def test_a_backend_fault_redelivers_the_record_and_on_ordered_sources_the_rest(
        h: Harness, shape: str, ordered: bool) -> None:
    make = (lambda body, n: sqs(body, n, FIFO)) if shape == "fifo" else SHAPES[shape]
    starts = [h.start() for _ in range(4)]
    h.store.down.add(starts[1][0])
    records = [make(body, n) for n, (_, body) in enumerate(starts)]
    ids = [r.get("messageId") or r.get("kinesis", {}).get("sequenceNumber") or r["dynamodb"]["SequenceNumber"]
           for r in records]

    failures = [f["itemIdentifier"] for f in handle_event(h.app, {"Records": records})["batchItemFailures"]]

    assert failures == (ids[1:] if ordered else [ids[1]])
    h.store.down.clear()
    assert [h.step(cid) for cid, _ in starts] == ([1, None, None, None] if ordered else [1, None, 1, 1])
    assert not h.dead.sent


def test_sns_raises_so_lambda_retries(h: Harness) -> None:
    cid, body = h.start()
    h.store.down.add(cid)
    with pytest.raises(FsmError, match="SNS"):
        handle_event(h.app, {"Records": [sns(body)]})


def test_scheduled_event_releases_only_due_timers(h: Harness) -> None:
    timers = h.app.wiring.routes.timers
    due, later = h.start(), h.start()
    timers.add("due", 1.0, due[1])
    timers.add("later", 4e9, later[1])
    assert handle_event(h.app, SCHEDULED) == {"timers_released": 1, "instances_healed": 0}
    assert [e.body for e in h.bus.sent] == [due[1]]
    assert [t for t, _ in timers.due(5e9)] == ["later"]


def test_an_unrecognised_event_is_dead_lettered_with_its_reason(h: Harness) -> None:
    reply = handle_event(h.app, {"hello": "world"})
    assert reply["batchItemFailures"] == []
    assert "not a record batch" in reply["dead_lettered"]
    assert h.counts["DeadLetters"] == 1
    assert [json.loads(e.body) for e in h.dead.sent] == [{"hello": "world"}]


@pytest.mark.parametrize("record", [{"body": "{}"}, {"eventSource": "aws:s3", "s3": {}}, "nope"])
def test_a_record_from_no_known_source_is_dead_lettered_not_redelivered(h: Harness, record: Any) -> None:
    cid, body = h.start()
    reply = handle_event(h.app, {"Records": [record, sqs(body)]})
    assert reply == {"batchItemFailures": []}
    assert h.counts["DeadLetters"] == 1 and len(h.dead.sent) == 1
    assert h.step(cid) == 1  # the good record in the same batch went through


@pytest.mark.parametrize("event", [{"Records": "nope"}, ["not", "an", "object"], {"Records": None}])
def test_a_malformed_envelope_gets_a_named_reason(h: Harness, event: Any) -> None:
    reply = handle_event(h.app, event)
    assert reply["batchItemFailures"] == [] and reply["dead_lettered"]
    assert h.counts["DeadLetters"] == 1


# -- fsm worker: the handler outside Lambda --------------------------------------------------


class ScriptedPoller:
    def __init__(self, arn: str, batches: list[list[dict[str, Any]]]):
        self.arn, self.batches = arn, batches
        self.settled: list[tuple[list[str], set[str]]] = []

    def poll(self, wait: bool = True) -> list[dict[str, Any]]:
        return self.batches.pop(0) if self.batches else []

    def done(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        self.settled.append(([r["messageId"] for r in records], failed))


def test_worker_carries_on_when_a_source_cannot_be_opened(h: Harness) -> None:
    """A dead endpoint is tried again later; the other sources are read meanwhile."""
    cid, body = h.start()
    good = ScriptedPoller("arn:aws:sqs:us-east-1:123456789012:good", [[sqs(body, 1)]])
    attempts: list[str] = []

    def open_poller(arn: str, **options: Any) -> ScriptedPoller:
        attempts.append(arn)
        if arn.endswith(":dead"):
            raise RecoverableError(f"{arn}: connection refused")
        return good

    now = [0.0]

    def clock() -> float:
        now[0] += 0.5
        return now[0]

    counts = run_worker(h.app, ["arn:aws:sqs:us-east-1:123456789012:dead", good.arn], idle_exit=5.0,
                        clock=clock, sleep=lambda s: None, open_poller=open_poller)
    assert counts == {"records": 1, "failed": 0, "timers": 0, "healed": 0}
    assert h.step(cid) == 1 and good.settled == [(["m-1"], set())]
    assert 1 < attempts.count("arn:aws:sqs:us-east-1:123456789012:dead") < 10  # retried, with pauses


@pytest.mark.parametrize("ordered", [False, True])
def test_one_failing_record_in_ten_does_not_hold_up_the_others(h: Harness, ordered: bool,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Unordered: the other nine commit in the same poll and the next batch is read on the
    next round, without a pause. Ordered: the records after the failed one wait for it."""
    backed_off: list[str] = []
    monkeypatch.setattr("sources.sqs.retry_later", lambda records, **_: backed_off.extend(
        r["messageId"] for r in records))
    started = [h.start() for _ in range(20)]
    h.store.down.add(started[3][0])
    arn = "arn:aws:sqs:us-east-1:123456789012:q" + (".fifo" if ordered else "")
    batches = [[sqs(body, n, arn) for n, (_, body) in enumerate(started[:10])],
               [sqs(body, n, arn) for n, (_, body) in enumerate(started[10:], 10)]]
    poller = ScriptedPoller(arn, batches)
    poller.ordered = ordered  # type: ignore[attr-defined]
    rounds = [0]

    def stop() -> bool:
        rounds[0] += 1
        return rounds[0] > 2          # two rounds of polling, no more

    now = [0.0]
    run_worker(h.app, [poller.arn], clock=lambda: now[0], sleep=lambda s: None, should_stop=stop,
               open_poller=lambda arn, **o: poller)
    _, first_failed = poller.settled[0]
    if ordered:
        assert first_failed == {f"m-{n}" for n in range(3, 10)}    # the failed one and all after it
        assert len(poller.settled) == 1                           # and a pause before the next poll
        assert backed_off == []                                   # it is read again first
    else:
        assert first_failed == {"m-3"} and backed_off == ["m-3"]  # back in seconds, by itself
        assert [h.step(cid) for n, (cid, _) in enumerate(started[:10]) if n != 3] == [1] * 9
        assert len(poller.settled) == 2                           # the next batch in the next round
        assert all(h.step(cid) == 1 for cid, _ in started[10:])


# -- fsm resume and fsm create-resources: refusals that need no server ---------------------


def test_resume_refuses_a_checkpoint_it_cannot_replay(h: Harness) -> None:
    """A DynamoDB stream record cannot be read again by sequence number: say so."""
    from fsm.app.resume import resume
    from fsm.errors import InstanceError

    cid, body = h.start()
    handle_event(h.app, {"Records": [dynamodb(body)]})
    record = h.store.get(cid)
    assert record["checkpoint"]["arn"] == DYNAMODB["eventSourceARN"]
    # It owes its next message: resume sends it again (a copy; a duplicate if not lost).
    sent = len(h.bus.sent)
    assert resume(h.app, cid).startswith("re-sent")
    assert len(h.bus.sent) == sent + 1
    # Once it owes nothing, only a Kinesis checkpoint could help, and this is not one.
    h.store.swap(cid, {"fence": record["fence"]}, {"outbox": [], "pending": 0.0})
    with pytest.raises(InstanceError, match="re-reads Kinesis streams only"):
        resume(h.app, cid)


def test_create_resources_refuses_one_table_as_stream_and_store() -> None:
    from fsm.app.resources import create_resources
    from fsm.errors import InvalidDefinition

    table = "arn:aws:dynamodb:us-east-1:123456789012:table/everything"
    with pytest.raises(InvalidDefinition, match="table of its own"):
        list(create_resources(Settings(store=[table], stream=[table])))


# -- per-instance order in a batch -------------------------------------------------------------


class Tally(Action):
    def execute(self, context: Any, obj: dict[str, Any]) -> None:
        context.setdefault("notes", []).append(obj["event_data"]["n"])


TALLY = """
machines:
  - name: tally
    states:
      - {name: open, initial: true, transitions: [{event: note, action: test_handler.Tally}]}
"""


@pytest.mark.parametrize("shape", ["kinesis", "fifo", "dynamodb"])
def test_a_batch_of_interleaved_events_keeps_each_instances_order(shape: str) -> None:
    """Lambda hands over ten records for three instances at once; each instance takes its
    own events in the order the batch holds them, its sends made together at the end."""
    definitions = load_text(TALLY)
    settings = Settings(store=["memory://"])
    bus = HandBus()
    app = App(definitions, settings, build(definitions.machines, settings, bus=bus))
    make = (lambda body, n: sqs(body, n, FIFO)) if shape == "fifo" else SHAPES[shape]
    cids = [uuid.uuid4().hex for _ in range(3)]
    starts = [make(Message(machine="tally", correlation_id=cid, context={}).encode(), n) for n, cid in enumerate(cids)]
    assert handle_event(app, {"Records": starts})["batchItemFailures"] == []
    events = [Message(machine="tally", correlation_id=cids[i % 3], kind="event", event="note", data={"n": i // 3},
                      event_id=f"e-{i}").encode() for i in range(9)]
    answer = handle_event(app, {"Records": [make(body, 10 + n) for n, body in enumerate(events)]})
    assert answer["batchItemFailures"] == []
    while (msg := bus.take()) is not None:        # the nudges the batch sent together
        app.wiring.dispatcher.handle(msg)
    notes = [app.wiring.stores[0].get(cid)["context"]["notes"] for cid in cids]
    assert notes == [[0, 1, 2]] * 3


@pytest.mark.parametrize("ordered", [False, True])
def test_a_failed_batch_send_brings_every_record_back_soon_on_unordered_queues(
        h: Harness, ordered: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's one send fails after its commits: every record is redelivered (the
    commits re-send from their outboxes), and on an unordered queue after a short
    backoff rather than the whole visibility timeout."""
    backed_off: list[str] = []
    monkeypatch.setattr("sources.sqs.retry_later", lambda records, **_: backed_off.extend(
        r["messageId"] for r in records))

    def refuse(envelopes: Any) -> None:
        raise RecoverableError("the queue is unreachable")

    h.bus.send_batch = refuse  # type: ignore[method-assign]
    arn = "arn:aws:sqs:us-east-1:123456789012:q" + (".fifo" if ordered else "")
    started = [h.start() for _ in range(3)]
    answer = handle_event(h.app, {"Records": [sqs(body, n, arn) for n, (_, body) in enumerate(started)]})
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == ["m-0", "m-1", "m-2"]
    assert backed_off == ([] if ordered else ["m-0", "m-1", "m-2"])
    assert [h.step(cid) for cid, _ in started] == [1, 1, 1]      # committed: the redelivery re-sends
