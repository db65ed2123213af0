"""An EventBridge bus (``stream: [arn:aws:events:...:event-bus/NAME]``) end to end, against
moto_server, as an operator would run it; and the short backoff of failed SQS records.

moto delivers what PutEvents puts on a bus to the SQS targets of the rules that match,
as EventBridge does, so the queue holds the events EventBridge would send. Three ways
in, each driving the ten-step machine of ``test_aws_end_to_end`` to its final state:

- ``fsm create-resources`` makes the bus and its rule; the rule is pointed at a queue;
  ``fsm worker --source QUEUE`` reads it;
- the rule invokes the function: ``handle_event`` gets the EventBridge event itself (the
  shape of eventbridge-scheduled.json, our message as ``detail``);
- the rule fills a queue that triggers the function: the same event as an SQS body.

The first message of each run is written by the test in the JSON AWS sends (compact,
every envelope field), the rest are what moto delivered.

A failed SQS record must come back within seconds, not after the queue's 300 s
visibility timeout, through the Lambda handler and through the worker; a FIFO queue's
must not (ordered sources stop at the first failure and leave redelivery to the queue).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_aws_end_to_end import (
    ACCOUNT,
    MACHINE,
    REGION,
    Deployment,
    SqsReader,
    arn,
    assert_done,
    assert_ran_once,
    aws_client,
    drive,
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
from fsm.app.worker import default_poller, run_worker
from fsm.client import Client
from fsm.errors import RecoverableError
from fsm.message import Message
from fsm.ports import Envelope, Poller
from sources.eventbridge import DETAIL_TYPE, EVENT_PATTERN, SOURCE, EventBridgeBus

VISIBILITY_TIMEOUT = 300
# The first failure's backoff is at most 2 s; receiving again adds up to a long poll.
COMES_BACK_WITHIN = 4.5


@pytest.fixture
def endpoint(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process's boto3 clients (and the ``fsm`` subprocesses') talk to moto_server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return moto_url


@pytest.fixture
def apps() -> Iterator[Callable[[Settings, str], App]]:
    """``apps(settings, effects_url)``: an application of the ten-step machine, closed after the test."""
    made: list[App] = []

    def make(settings: Settings, effects_url: str) -> App:
        definitions = load_text(machine_yaml(effects_url))
        made.append(App(definitions, settings, build(definitions.machines, settings)))
        return made[-1]

    yield make
    for app in made:
        app.wiring.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bus_arn() -> str:
    return arn("events", f"event-bus/{unique('fsm')}")


def aws_event(detail: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """An event as EventBridge hands it to a target (eventbridge-scheduled.json's shape)."""
    return {"version": "0", "id": event_id or str(uuid.uuid4()), "detail-type": DETAIL_TYPE, "source": SOURCE,
            "account": ACCOUNT, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": REGION,
            "resources": [], "detail": detail}


def first_message(cid: str) -> dict[str, Any]:
    """What ``fsm start`` would put on the bus, built with the project's own code."""
    return json.loads(Message(machine=MACHINE, correlation_id=cid, context={}).encode())


def point_rule_at_a_queue(bus: str, endpoint: str) -> tuple[str, str]:
    """The operator's step after ``create-resources``: a queue, and the rule aimed at it.
    Checks the wiring reads back; returns the queue's ARN and the rule's."""
    queue = arn("sqs", unique("from-rule"))
    aws_client("sqs", endpoint).create_queue(QueueName=queue.rsplit(":", 1)[1])
    eventbridge = EventBridgeBus(bus)
    rule_arn = eventbridge.create(target=queue)
    assert eventbridge.create(target=queue) == rule_arn          # again: nothing changes
    events = aws_client("events", endpoint)
    targets = events.list_targets_by_rule(Rule=eventbridge.rule, EventBusName=eventbridge.name)["Targets"]
    assert [(t["Id"], t["Arn"]) for t in targets] == [("lambda-fsm", queue)]
    sqs = aws_client("sqs", endpoint)
    queue_url = sqs.get_queue_url(QueueName=queue.rsplit(":", 1)[1])["QueueUrl"]
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["Policy"])["Attributes"]["Policy"])
    (statement,) = policy["Statement"]                             # added once, not once per create
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage" and statement["Resource"] == queue
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rule_arn}}
    return queue, rule_arn


def settings_for(bus: str, redis_url: str, **extra: Any) -> Settings:
    return Settings(**{"store": [redis_url], "stream": [bus], "dead_letter": [arn("sqs", unique("dead"))],
                       **extra})


def is_done(app: App, cid: str) -> Callable[[], bool]:
    return lambda: (freshest_record(app.wiring, cid) or (0, {}))[1].get("status") == "done"


# ---- the bus, end to end ---------------------------------------------------------------------


def test_create_resources_then_fsm_worker_drives_ten_steps_through_the_bus(
        tmp_path: Path, endpoint: str, redis_url: str) -> None:
    bus = bus_arn()
    name = bus.rsplit("/", 1)[1]
    deployment = Deployment(tmp_path / "deployment", endpoint, redis_url,
                            {"stream": [bus], "store": [redis_url], "dead_letter": [arn("sqs", unique("dead"))]})
    try:
        created = deployment.fsm("create-resources").stdout
        assert f"events  {bus} (rule {name}-lambda-fsm:" in created, created
        assert deployment.fsm("create-resources").stdout == created           # safe to run twice

        events = aws_client("events", endpoint)
        assert events.describe_event_bus(Name=name)["Arn"] == bus
        rule = events.describe_rule(Name=f"{name}-lambda-fsm", EventBusName=name)
        assert rule["State"] == "ENABLED" and json.loads(rule["EventPattern"]) == EVENT_PATTERN
        queue, _ = point_rule_at_a_queue(bus, endpoint)

        cid = deployment.start()
        output = deployment.fsm("worker", "--source", queue, "--idle-exit", "2").stdout
        assert "records (0 failed)" in output, output
        client = Client(wiring=deployment.app().wiring)
        assert_done(client.status(cid), client.history(cid))
        assert_ran_once(redis_url, cid)
    finally:
        deployment.close()


def test_the_function_the_rule_invokes_takes_the_event_itself(
        endpoint: str, redis_url: str, apps: Callable[[Settings, str], App]) -> None:
    """The queue stands in for the function as the rule's target: each event it gets is
    what EventBridge would invoke the function with."""
    bus = bus_arn()
    settings = settings_for(bus, redis_url)
    list(create_resources(settings))
    tap, _ = point_rule_at_a_queue(bus, endpoint)
    app = apps(settings, redis_url)
    reader = SqsReader(endpoint, tap)
    cid = uuid.uuid4().hex
    invoked = [aws_event(first_message(cid))]

    deadline = time.monotonic() + 30
    while not is_done(app, cid)():
        assert time.monotonic() < deadline, "the instance did not finish"
        for event in invoked:
            assert handle_event(app, event) == {"result": "committed"}
        invoked = []
        for message in reader.receive():
            emitted = json.loads(message["Body"])
            assert (emitted["source"], emitted["detail-type"]) == (SOURCE, DETAIL_TYPE)
            invoked.append(aws_event(emitted["detail"], emitted["id"]))
            reader.client.delete_message(QueueUrl=reader.url, ReceiptHandle=message["ReceiptHandle"])
        if not invoked:
            time.sleep(0.05)

    client = Client(wiring=app.wiring)
    assert_done(client.status(cid), client.history(cid))
    assert_ran_once(redis_url, cid)
    assert app.wiring.metrics.counts.get("DeadLetters", 0) == 0


def test_the_rule_fills_a_queue_that_triggers_the_function(
        endpoint: str, redis_url: str, apps: Callable[[Settings, str], App]) -> None:
    bus = bus_arn()
    settings = settings_for(bus, redis_url)
    list(create_resources(settings))
    queue, _ = point_rule_at_a_queue(bus, endpoint)
    app = apps(settings, redis_url)
    reader = SqsReader(endpoint, queue)
    cid = uuid.uuid4().hex
    # AWS writes the event compactly, with every envelope field.
    reader.client.send_message(QueueUrl=reader.url,
                               MessageBody=json.dumps(aws_event(first_message(cid)), separators=(",", ":")))

    seen = drive(lambda event: handle_event(app, event), reader, is_done(app, cid))

    assert seen == 10
    client = Client(wiring=app.wiring)
    assert_done(client.status(cid), client.history(cid))
    assert_ran_once(redis_url, cid)
    assert app.wiring.metrics.counts.get("DeadLetters", 0) == 0


def test_an_event_the_handler_cannot_use_is_dead_lettered_and_a_store_fault_raises(
        endpoint: str, redis_url: str, apps: Callable[[Settings, str], App]) -> None:
    """The rule invokes the function asynchronously: the answer is ignored, so a message
    that can never work is dead-lettered, and one that may work later raises to get
    Lambda's retry of the invocation."""
    bus = bus_arn()
    settings = settings_for(bus, redis_url, store=[redis_url, f"redis://127.0.0.1:{closed_port()}/0"])
    list(create_resources(settings))
    app = apps(settings, redis_url)

    unknown = json.loads(Message(machine="no-such-machine", correlation_id=uuid.uuid4().hex).encode())
    assert handle_event(app, aws_event(unknown)) == {"result": "dead-lettered"}
    dead = SqsReader(endpoint, settings.dead_letter[0])
    assert [json.loads(m["Body"])["machine"] for m in dead.receive()] == ["no-such-machine"]

    stranded = json.loads(Message(machine=MACHINE, correlation_id=uuid.uuid4().hex, store=1, context={}).encode())
    with pytest.raises(RecoverableError):
        handle_event(app, aws_event(stranded))
    assert app.wiring.metrics.counts.get("DeadLetters") == 1


# ---- failed SQS records come back in seconds ---------------------------------------------------


class Watched:
    """A worker's poller whose settled records the test can count (to stop the worker)."""

    long_polls = True

    def __init__(self, poller: Poller):
        self.poller, self.arn, self.settled = poller, poller.arn, 0

    def poll(self, wait: bool = True) -> list[dict[str, Any]]:
        return self.poller.poll(wait)

    def done(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        self.poller.done(records, failed)
        self.settled += len(records)


def fail_once(app: App, queue: str, endpoint: str, path: str) -> str:
    """Deliver the queue's one record (whose store is down) through ``path``; its id."""
    if path == "lambda":
        reader = SqsReader(endpoint, queue)
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while not records:
            assert time.monotonic() < deadline, "the message did not arrive"
            records = reader.records()
        assert records[0]["receiptHandle"] and records[0]["attributes"]["ApproximateReceiveCount"] == "1"
        reply = handle_event(app, {"Records": records})
        assert reply == {"batchItemFailures": [{"itemIdentifier": records[0]["messageId"]}]}
        return records[0]["messageId"]
    watched: list[Watched] = []

    def open_poller(arn: str, **options: Any) -> Poller:
        watched.append(Watched(default_poller(arn, **options)))
        return watched[-1]

    counts = run_worker(app, [queue], open_poller=open_poller, idle_exit=10,
                        should_stop=lambda: bool(watched) and watched[0].settled > 0)
    assert (counts["records"], counts["failed"]) == (1, 1), counts
    return ""


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
@pytest.mark.parametrize("path", ["lambda", "worker"])
def test_a_failed_record_comes_back_in_seconds_not_after_the_visibility_timeout(
        endpoint: str, redis_url: str, apps: Callable[[Settings, str], App], path: str, fifo: bool) -> None:
    queue = arn("sqs", unique("steps") + (".fifo" if fifo else ""))
    settings = settings_for(queue, redis_url, store=[redis_url, f"redis://127.0.0.1:{closed_port()}/0"])
    list(create_resources(settings))
    sqs = aws_client("sqs", endpoint)
    queue_url = sqs.get_queue_url(QueueName=queue.rsplit(":", 1)[1])["QueueUrl"]
    # What the README asks of a queue that triggers a function: six times its timeout.
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": str(VISIBILITY_TIMEOUT)})
    app = apps(settings, redis_url)
    cid = f"stranded-{uuid.uuid4().hex[:8]}"          # its instance lives in store 1, which is down
    app.wiring.routes.bus.send(Envelope(Message(machine=MACHINE, correlation_id=cid, store=1, context={}).encode(),
                                        cid, uuid.uuid4().hex))

    failed_id = fail_once(app, queue, endpoint, path)

    failed_at = time.monotonic()
    back: list[dict[str, Any]] = []
    while not back and time.monotonic() - failed_at < COMES_BACK_WITHIN:
        back = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1, AttributeNames=["All"]).get("Messages", [])
    if fifo:
        # Left to the queue: still in flight, minutes from coming back.
        assert back == [], "an ordered source's failed record was made visible early"
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
        return
    assert back, f"not back within {COMES_BACK_WITHIN} s (visibility timeout {VISIBILITY_TIMEOUT} s)"
    (message,) = back
    assert json.loads(message["Body"])["correlation_id"] == cid
    assert message["Attributes"]["ApproximateReceiveCount"] == "2"
    assert failed_id in ("", message["MessageId"])
