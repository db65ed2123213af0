"""The Lambda handler against moto_server: bad records, backend faults, scheduled events.

Batches are read back from the real bus (``test_aws_end_to_end``'s readers build the
records in the shapes Lambda delivers), so what the handler sees is what the service
returned. What it must do with a batch:

- a poison record (not JSON, unknown machine, unknown state, wrong version) is
  dead-lettered and counted, and the rest of the batch commits: nothing is redelivered;
- a record whose store is down is redelivered; on ordered sources (Kinesis, DynamoDB
  streams, FIFO queues) so is everything after it, in order, so one instance's messages
  never overtake each other; SNS, which ignores the answer, gets an exception instead;
- an EventBridge scheduled event moves due timers onto the stream.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from test_aws_end_to_end import (
    MACHINE,
    DynamoStreamReader,
    KinesisReader,
    Reader,
    SnsReader,
    SqsReader,
    arn,
    aws_client,
    lambda_sns,
    machine_yaml,
    unique,
)

from config.loader import load_text
from config.settings import Settings
from fsm.app import App
from fsm.app.delivery import freshest_record
from fsm.app.intake import handle_event
from fsm.app.resources import create_resources
from fsm.app.wiring import build
from fsm.client import Client
from fsm.errors import FsmError
from fsm.message import Message
from fsm.ports import Envelope

ORDERED = ("sqs-fifo", "kinesis", "dynamodb-stream")
SCHEDULED = {"version": "0", "account": "123456789012", "region": "us-east-1", "detail": {},
             "detail-type": "Scheduled Event", "source": "aws.events", "time": "2019-03-01T01:23:45Z",
             "id": "cdc73f9d-aea9-11e3-9d5a-835b769c0d9c",
             "resources": ["arn:aws:events:us-east-1:123456789012:rule/my-schedule"]}


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Rig:
    """One bus, its dead-letter queue, an application and a reader of the bus."""

    kind: str
    app: App
    reader: Reader
    dead_letters: SqsReader

    @property
    def client(self) -> Client:
        return Client(wiring=self.app.wiring)

    def send_raw(self, body: str) -> None:
        """Put a body on the bus as any producer could, bypassing the client's checks."""
        self.app.wiring.routes.bus.send(Envelope(body, f"raw-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex))

    def batch(self, expected: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The next ``expected`` records, as one batch."""
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected:
            assert time.monotonic() < deadline, f"only {len(records)} of {expected} records arrived"
            records += self.reader.records()
        assert len(records) == expected
        return records

    def handle(self, records: list[dict[str, Any]]) -> list[str]:
        """Hand the batch over as Lambda would; the identifiers it asks to be redelivered."""
        if self.kind == "sns":  # SNS invokes once per notification and ignores the answer
            for record in records:
                assert handle_event(self.app, {"Records": [lambda_sns(record)]}) == {"batchItemFailures": []}
            return []
        return [f["itemIdentifier"] for f in handle_event(self.app, {"Records": records})["batchItemFailures"]]

    def step(self, cid: str) -> int | None:
        found = freshest_record(self.app.wiring, cid)
        return found[1]["step"] if found else None


def identifier(kind: str, record: dict[str, Any]) -> str:
    if kind == "kinesis":
        return record["kinesis"]["sequenceNumber"]
    if kind == "dynamodb-stream":
        return record["dynamodb"]["SequenceNumber"]
    return record["messageId"]


def cid_of(kind: str, record: dict[str, Any]) -> str | None:
    """The correlation id a record carries, if its body is a message at all."""
    if kind == "kinesis":
        body = base64.b64decode(record["kinesis"]["data"]).decode()
    elif kind == "dynamodb-stream":
        body = record["dynamodb"]["NewImage"]["body"]["S"]
    else:
        body = record["body"]
    try:
        return json.loads(body)["correlation_id"]
    except (ValueError, KeyError, TypeError):
        return None


@pytest.fixture
def rig(moto_url: str, redis_url: str,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``rig(kind, store=[...], retry=[...])``: a bus of that kind with its resources created."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    made: list[App] = []

    def make(kind: str, store: list[str] | None = None, retry: list[str] | None = None) -> Rig:
        dead_letter = arn("sqs", unique("dead"))
        stream = {"sqs": arn("sqs", unique("steps")), "sqs-fifo": arn("sqs", unique("steps") + ".fifo"),
                  "kinesis": arn("kinesis", f"stream/{unique('steps')}"), "sns": arn("sns", unique("steps")),
                  "dynamodb-stream": arn("dynamodb", f"table/{unique('steps')}")}[kind]
        settings = Settings(store=store or [redis_url], stream=[stream], dead_letter=[dead_letter],
                            retry=retry or [])
        list(create_resources(settings))
        definitions = load_text(machine_yaml(redis_url))
        app = App(definitions, settings, build(definitions.machines, settings))
        made.append(app)
        if kind == "sns":
            carrier = arn("sqs", unique("subscriber"))
            aws_client("sqs", moto_url).create_queue(QueueName=carrier.rsplit(":", 1)[1])
            reader: Reader = SnsReader(moto_url, carrier, stream)
        elif kind == "kinesis":
            reader = KinesisReader(moto_url, stream)
        elif kind == "dynamodb-stream":
            reader = DynamoStreamReader(moto_url, stream)
        else:
            reader = SqsReader(moto_url, stream)
        return Rig(kind, app, reader, SqsReader(moto_url, dead_letter))

    yield make
    for app in made:
        app.wiring.close()


def poison(cid: str) -> list[str]:
    """Four bodies no retry can ever process."""
    return ["this is not JSON {",
            Message(machine="no-such-machine", correlation_id=f"{cid}-m").encode(),
            Message(machine=MACHINE, correlation_id=f"{cid}-s", step=3, state="s42", context={}).encode(),
            Message(machine=MACHINE, correlation_id=f"{cid}-v", version="0", context={}).encode()]


@pytest.mark.parametrize("kind", ["sqs", "sqs-fifo", "kinesis", "sns", "dynamodb-stream"])
def test_poison_records_are_dead_lettered_and_the_rest_of_the_batch_commits(rig: Any, kind: str) -> None:
    r: Rig = rig(kind)
    bad = poison(uuid.uuid4().hex)
    good: list[str] = []
    for body in bad:  # interleaved, so on ordered sources good records follow bad ones
        good.append(r.client.start(MACHINE))
        r.send_raw(body)

    assert r.handle(r.batch(len(good) + len(bad))) == []  # nothing to redeliver

    assert [r.step(cid) for cid in good] == [1] * len(good)
    assert r.app.wiring.metrics.counts.get("DeadLetters") == len(bad)
    kept = []
    deadline = time.monotonic() + 5
    while len(kept) < len(bad) and time.monotonic() < deadline:
        kept += [m["Body"] for m in r.dead_letters.receive()]
    assert sorted(kept) == sorted(bad)


@pytest.mark.parametrize("kind", ["sqs", "sqs-fifo", "kinesis", "dynamodb-stream"])
def test_a_record_whose_store_is_down_is_redelivered(rig: Any, kind: str, redis_url: str) -> None:
    """Store 1 refuses connections; a message of an instance that lives there fails."""
    r: Rig = rig(kind, store=[redis_url, f"redis://127.0.0.1:{closed_port()}/0"])
    cids = [r.client.start(MACHINE) for _ in range(2)]
    stranded = f"stranded-{uuid.uuid4().hex[:8]}"
    r.send_raw(Message(machine=MACHINE, correlation_id=stranded, store=1, context={}).encode())
    cids += [r.client.start(MACHINE) for _ in range(2)]
    records = r.batch(5)
    at = [cid_of(kind, rec) for rec in records].index(stranded)
    assert 0 < at < len(records) - 1, "the batch must hold records before and after the failing one"

    failures = r.handle(records)

    if kind in ORDERED:  # the failed record and everything after it, in batch order
        assert failures == [identifier(kind, rec) for rec in records[at:]]
        expected = {cid_of(kind, rec): (1 if n < at else None) for n, rec in enumerate(records)}
    else:
        assert failures == [identifier(kind, records[at])]
        expected = {cid_of(kind, rec): 1 for rec in records}
    expected.pop(stranded)
    assert {cid: r.step(cid) for cid in cids} == expected
    assert r.app.wiring.metrics.counts.get("DeadLetters", 0) == 0


def test_sns_raises_when_a_record_fails(rig: Any, redis_url: str) -> None:
    """SNS invokes asynchronously and ignores the answer: only an exception gets a retry."""
    r: Rig = rig("sns", store=[redis_url, f"redis://127.0.0.1:{closed_port()}/0"])
    r.send_raw(Message(machine=MACHINE, correlation_id=f"stranded-{uuid.uuid4().hex[:8]}",
                       store=1, context={}).encode())
    record = lambda_sns(r.batch(1)[0])
    assert record["EventSource"] == "aws:sns" and "eventSource" not in record
    with pytest.raises(FsmError, match="1 SNS records failed"):
        handle_event(r.app, {"Records": [record]})


def test_scheduled_event_releases_due_timers(rig: Any, redis_url: str) -> None:
    """A timer due in the past is moved onto the stream by EventBridge's scheduled event;
    one due later stays where it is."""
    timers_table = arn("dynamodb", f"table/{unique('timers')}")
    # A store of its own: the sweep in the same event must not find other tests' instances.
    r: Rig = rig("sqs", store=["memory://"], retry=[timers_table])
    timers = r.app.wiring.routes.timers
    assert timers is not None and type(timers).__name__ == "DynamoTimers"
    due, later = uuid.uuid4().hex, uuid.uuid4().hex
    timers.add(f"{due}:0", time.time() - 60, Message(machine=MACHINE, correlation_id=due, context={}).encode())
    timers.add(f"{later}:0", time.time() + 3600,
               Message(machine=MACHINE, correlation_id=later, context={}).encode())

    assert handle_event(r.app, SCHEDULED) == {"timers_released": 1, "instances_healed": 0}
    assert handle_event(r.app, SCHEDULED) == {"timers_released": 0, "instances_healed": 0}  # released once

    records = r.batch(1)
    assert cid_of("sqs", records[0]) == due
    assert r.handle(records) == []
    assert (r.step(due), r.step(later)) == (1, None)
    assert [timer_id for timer_id, _ in timers.due(time.time() + 7200)] == [f"{later}:0"]
