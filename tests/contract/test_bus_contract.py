"""One suite, every EventBus: what is sent can be read back from the service itself.

AWS buses run against moto in-process. Each case pairs a bus with a reader that reads
the service the way the Lambda event source would (ReceiveMessage, GetRecords, the
queue subscribed to a topic, the table's stream, the queue an EventBridge rule delivers
to), so the test checks what the handler will actually see, not what the adapter
believes it sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from fsm.errors import BackendError, PartialBatchError, RecoverableError
from fsm.ports import Envelope
from sources.dynamodb_stream import DynamoStreamBus
from sources.eventbridge import EventBridgeBus
from sources.failover import FailoverBus
from sources.kinesis import KinesisBus
from sources.memory import MemoryBus
from sources.sns import SnsBus
from sources.sqs import SqsBus, read_record

moto = pytest.importorskip("moto")

ACCOUNT = "123456789012"


def arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:us-east-1:{ACCOUNT}:{resource}"


@dataclass
class Received:
    body: str
    key: str | None = None      # group / partition key, where the service shows it
    dedup: str | None = None


@dataclass
class Case:
    bus: Any
    read: Callable[[], list[Received]]
    shows_key: bool = False
    dedups: bool = False        # the service drops a re-send with the same dedup id
    pending_delayed: Callable[[], int] | None = None


@pytest.fixture
def aws(monkeypatch) -> Iterator[None]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setattr("sources.aws_bus.time.sleep", lambda s: None)
    with moto.mock_aws():
        yield


# ---- readers -------------------------------------------------------------------------


def sqs_reader(queue_url: str) -> Callable[[], list[Received]]:
    sqs = boto3.client("sqs")

    def read() -> list[Received]:
        out: list[Received] = []
        while True:
            reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                        MessageSystemAttributeNames=["All"])
            messages = reply.get("Messages", [])
            if not messages:
                return out
            for m in messages:
                attrs = m.get("Attributes", {})
                out.append(Received(m["Body"], attrs.get("MessageGroupId"), attrs.get("MessageDeduplicationId")))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return read


def eventbridge_reader(queue_url: str, queue_arn: str) -> Callable[[], list[Received]]:
    """The messages inside the events the rule delivered, unwrapped by the SQS record
    reader the handler uses; re-encoded so they compare with what was sent."""
    read_queue = sqs_reader(queue_url)

    def read() -> list[Received]:
        out = []
        for got in read_queue():
            delivered = read_record({"body": got.body, "eventSourceARN": queue_arn}).body
            assert isinstance(delivered, dict), f"not an EventBridge event of ours: {got.body}"
            out.append(Received(json.dumps(delivered)))
        return out
    return read


def delayed_count(queue_url: str) -> Callable[[], int]:
    def count() -> int:
        attrs = boto3.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessagesDelayed"])
    return count


def kinesis_reader(stream: str) -> Callable[[], list[Received]]:
    kinesis = boto3.client("kinesis")
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = [kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                           ShardIteratorType="TRIM_HORIZON")["ShardIterator"]]

    def read() -> list[Received]:
        reply = kinesis.get_records(ShardIterator=iterator[0], Limit=10000)
        iterator[0] = reply["NextShardIterator"]
        return [Received(r["Data"].decode(), r["PartitionKey"]) for r in reply["Records"]]
    return read


def table_stream_reader(bus: DynamoStreamBus) -> Callable[[], list[Received]]:
    streams = boto3.client("dynamodbstreams")
    description = streams.describe_stream(StreamArn=bus.stream_arn)["StreamDescription"]
    assert description["StreamViewType"] == "NEW_IMAGE"
    iterator = [streams.get_shard_iterator(StreamArn=bus.stream_arn, ShardId=description["Shards"][0]["ShardId"],
                                           ShardIteratorType="TRIM_HORIZON")["ShardIterator"]]

    def read() -> list[Received]:
        reply = streams.get_records(ShardIterator=iterator[0])
        iterator[0] = reply["NextShardIterator"]
        return [Received(r["dynamodb"]["NewImage"]["body"]["S"], r["dynamodb"]["NewImage"]["key"]["S"],
                         r["dynamodb"]["NewImage"]["pk"]["S"])
                for r in reply["Records"] if r["eventName"] == "INSERT"]
    return read


# ---- the cases -----------------------------------------------------------------------


def memory_case() -> Case:
    bus = MemoryBus("memory://contract")
    return Case(bus, lambda: [Received(e.body, e.key, e.dedup_id) for e in bus.receive(10000)],
                shows_key=True)


def sqs_case(fifo: bool) -> Case:
    bus = SqsBus(arn("sqs", "contract.fifo" if fifo else "contract"))
    queue_url = bus.create()
    return Case(bus, sqs_reader(queue_url), shows_key=fifo, dedups=fifo,
                pending_delayed=None if fifo else delayed_count(queue_url))


def kinesis_case() -> Case:
    bus = KinesisBus(arn("kinesis", "stream/contract"))
    bus.create()
    return Case(bus, kinesis_reader("contract"), shows_key=True)


def sns_case(fifo: bool) -> Case:
    suffix = ".fifo" if fifo else ""
    queue = SqsBus(arn("sqs", f"from-topic{suffix}"))
    queue_url = queue.create()
    bus = SnsBus(arn("sns", f"contract{suffix}"))
    assert bus.create() == bus.url
    boto3.client("sns").subscribe(TopicArn=bus.url, Protocol="sqs", Endpoint=queue.url,
                                  Attributes={"RawMessageDelivery": "true"})
    return Case(bus, sqs_reader(queue_url), shows_key=fifo, dedups=fifo)


def eventbridge_case() -> Case:
    queue = SqsBus(arn("sqs", "from-rule"))
    queue_url = queue.create()
    bus = EventBridgeBus(arn("events", "event-bus/contract"))
    rule_arn = bus.create(target=queue.url)
    targets = boto3.client("events").list_targets_by_rule(Rule=bus.rule, EventBusName=bus.name)["Targets"]
    assert [t["Arn"] for t in targets] == [queue.url] and rule_arn.endswith(f"/contract/{bus.rule}")
    return Case(bus, eventbridge_reader(queue_url, queue.url))


def dynamo_case() -> Case:
    bus = DynamoStreamBus(arn("dynamodb", "table/contract"))
    bus.create()
    return Case(bus, table_stream_reader(bus), shows_key=True, dedups=True)


CASES: dict[str, Callable[[], Case]] = {
    "memory": memory_case,
    "sqs": lambda: sqs_case(fifo=False),
    "sqs-fifo": lambda: sqs_case(fifo=True),
    "kinesis": kinesis_case,
    "sns": lambda: sns_case(fifo=False),
    "sns-fifo": lambda: sns_case(fifo=True),
    "dynamodb-stream": dynamo_case,
    "eventbridge": eventbridge_case,
}


# moto's EventBridge delivers every PutEvents through its rules to an SQS target: its
# cases take seconds each, so they run in the full suite, not the fast tier.
@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.slow) if name == "eventbridge" else name
                        for name in sorted(CASES)])
def case(request, aws) -> Case:
    return CASES[request.param]()


def env(n: int, key: str = "cid-1", delay: float = 0.0) -> Envelope:
    return Envelope(body=json.dumps({"n": n}), key=key, dedup_id=f"{key}-step-{n}", delay=delay)


# ---- the contract ----------------------------------------------------------------------


def test_send_then_read_back_body_and_key(case: Case) -> None:
    sent = [env(1), env(2, key="cid-2"), env(3)]
    for envelope in sent:
        case.bus.send(envelope)
    got = case.read()
    assert sorted(r.body for r in got) == sorted(e.body for e in sent)
    if case.shows_key:
        assert {(r.body, r.key) for r in got} == {(e.body, e.key) for e in sent}
    # one instance's messages keep their order (FIFO group, shard, stream)
    assert [r.body for r in got if r.body != sent[1].body] == [sent[0].body, sent[2].body]


def test_batch_larger_than_any_service_chunk(case: Case) -> None:
    sent = [env(n, key=f"cid-{n % 3}") for n in range(27)]
    case.bus.send_batch(sent)
    got = case.read()
    assert sorted(r.body for r in got) == sorted(e.body for e in sent)
    case.bus.send_batch([])


def test_resend_with_same_dedup_id(case: Case) -> None:
    case.bus.send(env(1))
    case.bus.send(env(1))
    got = case.read()
    assert len(got) == (1 if case.dedups else 2)
    if case.dedups and got[0].dedup is not None:
        assert got[0].dedup == "cid-1-step-1"


def test_delay_is_held_or_refused(case: Case) -> None:
    if case.bus.max_delay <= 0:
        with pytest.raises(BackendError) as info:
            case.bus.send(env(1, delay=5))
        assert not isinstance(info.value, RecoverableError)
        assert case.read() == []
        return
    case.bus.send(env(1, delay=60))
    case.bus.send(env(2))
    assert [r.body for r in case.read()] == [env(2).body]     # the delayed one is not receivable yet
    assert case.pending_delayed is not None and case.pending_delayed() == 1


def test_url_is_the_resource_name(case: Case) -> None:
    assert case.bus.url.startswith(("arn:aws:", "memory://"))


def test_create_is_idempotent(case: Case) -> None:
    if not hasattr(case.bus, "create"):
        pytest.skip("nothing to create")
    case.bus.create()
    case.bus.send(env(9))
    assert [r.body for r in case.read()] == [env(9).body]


# No EventBridge case: AWS has been reported to accept PutEvents for a bus that does not
# exist, losing the events (aws/aws-cli#9186), while moto refuses it: moto cannot show
# what the bus does there.
MISSING = {
    "sqs": lambda: SqsBus(arn("sqs", "nope")),
    "kinesis": lambda: KinesisBus(arn("kinesis", "stream/nope")),
    "dynamodb": lambda: DynamoStreamBus(arn("dynamodb", "table/nope")),
}


@pytest.mark.parametrize("service", sorted(MISSING))
def test_missing_resource_is_recoverable_and_named(aws, service: str) -> None:
    bus = MISSING[service]()
    with pytest.raises(RecoverableError, match="nope"):
        bus.send(env(1))
    with pytest.raises(RecoverableError, match="nope"):
        bus.send_batch([env(1), env(2)])


def test_wrong_arn_is_refused() -> None:
    with pytest.raises(BackendError):
        SqsBus(arn("kinesis", "stream/x"))
    with pytest.raises(BackendError):
        KinesisBus(arn("kinesis", "x"))


def test_fifo_ids_are_sanitised(aws) -> None:
    bus = SqsBus(arn("sqs", "ids.fifo"))
    read = sqs_reader(bus.create())
    bus.send(Envelope(body="b", key="instance with spaces ü", dedup_id="x" * 300))
    (got,) = read()
    assert got.body == "b" and len(got.dedup or "") <= 128 and " " not in (got.key or " ")


# ---- partial batch failures (moto never reports them) ------------------------------------


class FlakyClient:
    """Wraps a real client; batch calls report chosen entries failed without sending them.

    ``failures[body]`` is how many more times that entry fails.
    """

    def __init__(self, real: Any, failures: dict[str, int], sender_fault: bool = False):
        self.real, self.failures, self.sender_fault = real, failures, sender_fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _split(self, entries: list[Any], body: Callable[[Any], str]) -> tuple[list[Any], list[Any]]:
        ok, bad = [], []
        for entry in entries:
            left = self.failures.get(body(entry), 0)
            if left:
                self.failures[body(entry)] = left - 1
            (bad if left else ok).append(entry)
        return ok, bad

    def _failed(self, bad: list[dict]) -> list[dict]:
        return [{"Id": e["Id"], "SenderFault": self.sender_fault, "Code": "InternalError", "Message": "injected"}
                for e in bad]

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:
        ok, bad = self._split(Entries, lambda e: e["MessageBody"])
        if ok:
            self.real.send_message_batch(QueueUrl=QueueUrl, Entries=ok)
        return {"Successful": [{"Id": e["Id"]} for e in ok], "Failed": self._failed(bad)}

    def publish_batch(self, TopicArn: str, PublishBatchRequestEntries: list[dict]) -> dict:
        ok, bad = self._split(PublishBatchRequestEntries, lambda e: e["Message"])
        if ok:
            self.real.publish_batch(TopicArn=TopicArn, PublishBatchRequestEntries=ok)
        return {"Successful": [{"Id": e["Id"]} for e in ok], "Failed": self._failed(bad)}

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:
        ok, bad = self._split(Records, lambda r: r["Data"].decode())
        if ok:
            self.real.put_records(StreamName=StreamName, Records=ok)
        code = "KMSAccessDeniedException" if self.sender_fault else "ProvisionedThroughputExceededException"
        return {"FailedRecordCount": len(bad),
                "Records": [{"ErrorCode": code} if r in bad else {"SequenceNumber": "1"} for r in Records]}

    def put_events(self, Entries: list[dict]) -> dict:
        ok, bad = self._split(Entries, lambda e: e["Detail"])
        if ok:
            self.real.put_events(Entries=ok)
        code = "MalformedDetail" if self.sender_fault else "ThrottlingException"
        return {"FailedEntryCount": len(bad),
                "Entries": [{"ErrorCode": code, "ErrorMessage": "injected"} if e in bad else {"EventId": "1"}
                            for e in Entries]}

    def batch_write_item(self, RequestItems: dict) -> dict:
        (table, writes), = RequestItems.items()
        ok, bad = self._split(writes, lambda w: w["PutRequest"]["Item"]["body"]["S"])
        if ok:
            self.real.batch_write_item(RequestItems={table: ok})
        return {"UnprocessedItems": {table: bad} if bad else {}}


FLAKY = ["sqs", "sns", "kinesis", "dynamodb-stream", "eventbridge"]


def flaky_case(name: str, failures: dict[str, int], sender_fault: bool = False) -> Case:
    case = CASES[name]()
    case.bus._client = FlakyClient(case.bus.client, failures, sender_fault)
    return case


@pytest.mark.parametrize("name", FLAKY)
def test_failed_entries_are_retried_once(aws, name: str) -> None:
    sent = [env(n, key=f"cid-{n}") for n in range(12)]
    case = flaky_case(name, {sent[3].body: 1, sent[11].body: 1})
    case.bus.send_batch(sent)
    assert sorted(r.body for r in case.read()) == sorted(e.body for e in sent)


@pytest.mark.parametrize("name", FLAKY)
def test_entries_failing_twice_fail_over_never_dropped(aws, name: str) -> None:
    sent = [env(n, key=f"cid-{n}") for n in range(12)]
    case = flaky_case(name, {sent[3].body: 2, sent[11].body: 5})
    with pytest.raises(PartialBatchError) as info:
        case.bus.send_batch(sent)
    assert info.value.failed == [3, 11] and info.value.recoverable

    case.bus._client.failures = {sent[3].body: 2, sent[11].body: 5}
    secondary = MemoryBus("memory://secondary")
    FailoverBus([case.bus, secondary]).send_batch(sent)
    on_primary = [r.body for r in case.read()]
    on_secondary = [e.body for e in secondary.receive(100)]
    assert sorted(on_secondary) == sorted([sent[3].body, sent[11].body])
    assert sorted(set(on_primary)) == sorted(e.body for n, e in enumerate(sent) if n not in (3, 11))


@pytest.mark.parametrize("name", ["sqs", "sns", "kinesis", "eventbridge"])
def test_sender_faults_are_not_retried_nor_failed_over(aws, name: str) -> None:
    sent = [env(n, key=f"cid-{n}") for n in range(4)]
    case = flaky_case(name, {sent[1].body: 1}, sender_fault=True)
    secondary = MemoryBus("memory://secondary")
    with pytest.raises(PartialBatchError) as info:
        FailoverBus([case.bus, secondary]).send_batch(sent)
    assert info.value.failed == [1] and not info.value.recoverable
    assert len(secondary) == 0
    assert sorted(r.body for r in case.read()) == sorted(e.body for n, e in enumerate(sent) if n != 1)


def test_a_single_eventbridge_send_is_retried_once_then_fails_over(aws) -> None:
    """``send`` is one PutEvents entry: a throttled entry is retried like a batch entry,
    and one throttled twice is a RecoverableError, which is what a failover router moves
    on; a refused one (malformed) stays a plain BackendError and is not moved."""
    once = flaky_case("eventbridge", {env(1).body: 1})
    once.bus.send(env(1))
    assert [r.body for r in once.read()] == [env(1).body]

    twice = flaky_case("eventbridge", {env(2).body: 2})
    with pytest.raises(RecoverableError):
        twice.bus.send(env(2))
    twice.bus._client.failures = {env(2).body: 2}
    secondary = MemoryBus("memory://secondary")
    FailoverBus([twice.bus, secondary]).send(env(2))
    assert [e.body for e in secondary.receive(10)] == [env(2).body] and twice.read() == []

    refused = flaky_case("eventbridge", {env(3).body: 1}, sender_fault=True)
    with pytest.raises(BackendError) as info:
        FailoverBus([refused.bus, MemoryBus("memory://other")]).send(env(3))
    assert not isinstance(info.value, RecoverableError)
