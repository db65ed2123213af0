"""A 10-step machine, end to end, on every bus moto_server offers.

Each bus runs the same machine twice: once through ``lambda_handler`` fed with records the
test reads from the bus itself (built in the shapes Lambda delivers, as in AWS's sample
events), once through ``fsm worker`` in a subprocess. Resources come from ``fsm
create-resources`` (run twice: it must be safe to repeat) and instances from ``fsm start``,
both subprocesses that see only what an operator's shell would: a settings file,
``FSM_CONFIG``, ``AWS_ENDPOINT_URL`` and credentials.

Every state's action counts its runs in redis, per (instance, state): a transition that ran
twice, whatever the bus redelivered, shows up as a 2.

This module also holds what the other AWS integration modules share: the counting action,
the deployment (files, environment, the ``fsm`` command) and the bus readers.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from config.loader import load_file
from config.settings import load_settings
from fsm import Action, Context
from fsm.app import App
from fsm.app.intake import handle_event
from fsm.app.wiring import build
from fsm.client import Client

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ACCOUNT = "123456789012"
REGION = "us-east-1"
MACHINE = "ten"
STATES = [f"s{i}" for i in range(10)]
EFFECTS_KEY = "fsm-e2e-effects"

# ---- the machine ----------------------------------------------------------------------------

_effect_clients: dict[str, redis.Redis] = {}


class CountedStep(Action):
    """Counts its own runs in redis, per (instance, state), then moves on.

    Redis rather than the context: the context is rolled back with a failed attempt and
    rebuilt on a replay, while a side effect in another system is exactly what a
    duplicate transition would repeat.
    """

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        url = self.params["effects"]
        client = _effect_clients.get(url) or _effect_clients.setdefault(url, redis.Redis.from_url(url))
        state = context.current_state.name
        client.hincrby(f"{EFFECTS_KEY}:{context.correlation_id}", state, 1)
        context[state] = context.steps
        return None if context.current_state.final else "next"


def machine_yaml(effects_url: str) -> str:
    """Ten states, ten transitions: the first message enters s0, the tenth enters s9 (final)."""
    action = f"{{class: {__name__}.CountedStep, params: {{effects: '{effects_url}'}}}}"
    lines = [f"machines:\n  - name: {MACHINE}\n    version: '1'\n    max_retries: 2\n    states:\n"]
    for i, state in enumerate(STATES):
        if i == len(STATES) - 1:
            lines.append(f"      - name: {state}\n        final: true\n        entry_action: {action}\n")
        else:
            lines.append(f"      - name: {state}\n" + ("        initial: true\n" if i == 0 else "")
                         + f"        do_action: {action}\n"
                         f"        transitions: [{{event: next, target: {STATES[i + 1]}}}]\n")
    return "".join(lines)


def effects(effects_url: str, cid: str) -> dict[str, int]:
    """How many times each state's action ran for ``cid``."""
    client = redis.Redis.from_url(effects_url, decode_responses=True)
    try:
        return {k: int(v) for k, v in client.hgetall(f"{EFFECTS_KEY}:{cid}").items()}
    finally:
        client.close()


def assert_ran_once(effects_url: str, cid: str) -> None:
    assert effects(effects_url, cid) == dict.fromkeys(STATES, 1), f"side effects of {cid}"


def assert_done(status: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """Done after exactly ten transitions, each recorded once, in order."""
    assert (status["status"], status["state"], status["steps"], status["retries"]) == ("done", "s9", 10, 0), status
    assert status["context"] == {state: n for n, state in enumerate(STATES)}  # steps before its hop
    assert [(e["step"], e["from"], e["event"], e["to"]) for e in history] == (
        [(1, None, None, "s0")] + [(n + 1, STATES[n - 1], "next", STATES[n]) for n in range(1, 10)])


# ---- names ----------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    """Names unique per test, so tests share one moto_server without resetting it."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


def aws_client(service: str, endpoint: str) -> Any:
    return boto3.session.Session().client(service, region_name=REGION, endpoint_url=endpoint)


def queue_url(endpoint: str, queue_arn: str) -> str:
    return f"{endpoint}/{ACCOUNT}/{queue_arn.rsplit(':', 1)[-1]}"


# ---- a deployment: files, environment, the command --------------------------------------------


@dataclass
class Deployment:
    """What an operator has: a machines file, a settings file and a shell to run ``fsm`` in."""

    folder: Path
    moto_url: str
    effects_url: str
    settings: dict[str, Any]
    apps: list[App] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config = self.folder / "fsm.yaml"
        self.config.write_text(machine_yaml(self.effects_url), encoding="utf-8")
        self.settings_file = self.folder / "settings.yaml"
        self.settings_file.write_text(json.dumps(self.settings, indent=2), encoding="utf-8")  # JSON is YAML

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FSM_", "AWS_"))}
        env.update(FSM_CONFIG=str(self.config), FSM_SETTINGS=str(self.settings_file),
                   AWS_ENDPOINT_URL=self.moto_url, AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
                   PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]))
        return env

    def fsm(self, *args: str, expect: int = 0, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "fsm", *args], cwd=self.folder, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        assert done.returncode == expect, (f"fsm {' '.join(args)} exited {done.returncode}, expected {expect}\n"
                                           f"stdout: {done.stdout}\nstderr: {done.stderr[-3000:]}")
        return done

    def start(self) -> str:
        return self.fsm("start", "--machine", MACHINE).stdout.strip()

    def status(self, cid: str) -> dict[str, Any]:
        return json.loads(self.fsm("status", cid, "--json").stdout)

    def history(self, cid: str) -> list[dict[str, Any]]:
        return json.loads(self.fsm("history", cid, "--json").stdout)

    def app(self) -> App:
        """The same files, in this process (the test's environment must point at moto)."""
        definitions = load_file(str(self.config))
        settings = load_settings(definitions.settings, str(self.settings_file), environ={})
        application = App(definitions, settings, build(definitions.machines, settings))
        self.apps.append(application)
        return application

    def close(self) -> None:
        for application in self.apps:
            application.wiring.close()


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point this process's boto3 clients at moto_server, as the subprocesses are."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return moto_url


@pytest.fixture
def deploy(tmp_path: Path, aws_env: str, redis_url: str) -> Iterator[Callable[[dict[str, Any]], Deployment]]:
    """``deploy(settings)``: a deployment in its own folder; its applications are closed after
    the test, so redis and memcached connections do not pile up over the session."""
    made: list[Deployment] = []

    def make(settings: dict[str, Any]) -> Deployment:
        deployment = Deployment(tmp_path / f"deployment-{len(made)}", aws_env, redis_url, settings)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()


# ---- reading buses the way Lambda's event source mappings do ---------------------------------


class SqsReader:
    """Receives from a queue and builds ``aws:sqs`` records (sqs.json's shape)."""

    def __init__(self, endpoint: str, queue_arn: str):
        self.client = aws_client("sqs", endpoint)
        self.arn = queue_arn
        self.url = queue_url(endpoint, queue_arn)

    def receive(self) -> list[dict[str, Any]]:
        reply = self.client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                            AttributeNames=["All"], MessageAttributeNames=["All"])
        return reply.get("Messages", [])

    def records(self) -> list[dict[str, Any]]:
        return [self.record(m) for m in self.receive()]

    def record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"], "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": self.arn,
                "awsRegion": REGION}

    def settle(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        """Delete what succeeded; the failed come back when their visibility times out."""
        for r in records:
            if r["messageId"] not in failed:
                self.client.delete_message(QueueUrl=self.url, ReceiptHandle=r["receiptHandle"])


class SnsReader(SqsReader):
    """What a Lambda subscribed to a topic receives: ``EventSource`` (capital E) and ``Sns``
    (sns.json's shape), built from the notifications an SQS subscription of the topic got."""

    def __init__(self, endpoint: str, queue_arn: str, topic_arn: str):
        super().__init__(endpoint, queue_arn)
        self.topic_arn = topic_arn
        self.subscription = aws_client("sns", endpoint).subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"]

    def record(self, message: dict[str, Any]) -> dict[str, Any]:
        note = json.loads(message["Body"])
        return {"EventVersion": "1.0", "EventSubscriptionArn": self.subscription, "EventSource": "aws:sns",
                "Sns": {"SignatureVersion": note.get("SignatureVersion", "1"), "Timestamp": note["Timestamp"],
                        "Signature": note.get("Signature", ""), "SigningCertUrl": note.get("SigningCertURL", ""),
                        "MessageId": note["MessageId"], "Message": note["Message"],
                        "MessageAttributes": note.get("MessageAttributes", {}), "Type": note["Type"],
                        "UnsubscribeUrl": note.get("UnsubscribeURL", ""), "TopicArn": note["TopicArn"],
                        "Subject": note.get("Subject")},
                "receiptHandle": message["ReceiptHandle"]}

    def records(self) -> list[dict[str, Any]]:
        # SNS invokes once per notification: one record per event.
        return [self.record(m) for m in self.receive()]

    def settle(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        for r in records:
            self.client.delete_message(QueueUrl=self.url, ReceiptHandle=r["receiptHandle"])


def lambda_sns(record: dict[str, Any]) -> dict[str, Any]:
    """The record without the test's own bookkeeping (the receipt of the carrier queue)."""
    return {k: v for k, v in record.items() if k != "receiptHandle"}


class KinesisReader:
    """Reads every shard from the start and builds ``aws:kinesis`` records (kinesis.json's shape)."""

    def __init__(self, endpoint: str, stream_arn: str):
        self.client = aws_client("kinesis", endpoint)
        self.arn = stream_arn
        self.name = stream_arn.split("/", 1)[1]
        shards = self.client.list_shards(StreamName=self.name)["Shards"]
        self.iterators = {s["ShardId"]: self.client.get_shard_iterator(
            StreamName=self.name, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            for s in shards}

    def records(self, limit: int = 10) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for shard, iterator in self.iterators.items():
            reply = self.client.get_records(ShardIterator=iterator, Limit=limit)
            self.iterators[shard] = reply["NextShardIterator"]
            out += [self.record(shard, r) for r in reply["Records"]]
        return out

    def record(self, shard: str, r: dict[str, Any]) -> dict[str, Any]:
        return {"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r["PartitionKey"],
                            "sequenceNumber": r["SequenceNumber"], "data": base64.b64encode(r["Data"]).decode(),
                            "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp()},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": f"{shard}:{r['SequenceNumber']}", "eventName": "aws:kinesis:record",
                "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/lambda-role", "awsRegion": REGION,
                "eventSourceARN": self.arn}

    def settle(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        if failed:
            first = next(r for r in records if r["kinesis"]["sequenceNumber"] in failed)
            shard, seq = first["eventID"].split(":", 1)
            self.iterators[shard] = self.client.get_shard_iterator(
                StreamName=self.name, ShardId=shard, ShardIteratorType="AT_SEQUENCE_NUMBER",
                StartingSequenceNumber=seq)["ShardIterator"]


class DynamoStreamReader:
    """Reads a table's stream and builds ``aws:dynamodb`` records (dynamodb-stream.json's shape)."""

    def __init__(self, endpoint: str, table_arn: str):
        table = table_arn.split("/", 1)[1]
        self.stream_arn = aws_client("dynamodb", endpoint).describe_table(TableName=table)["Table"]["LatestStreamArn"]
        self.client = aws_client("dynamodbstreams", endpoint)
        shards = self.client.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        self.iterators = {s["ShardId"]: self.client.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            for s in shards}

    def records(self, limit: int = 10) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for shard, iterator in self.iterators.items():
            reply = self.client.get_records(ShardIterator=iterator, Limit=limit)
            self.iterators[shard] = reply["NextShardIterator"]
            out += [self.record(r) for r in reply["Records"]]
        return out

    def record(self, r: dict[str, Any]) -> dict[str, Any]:
        change = r["dynamodb"]
        return {"eventID": r["eventID"], "eventName": r["eventName"], "eventVersion": "1.1",
                "eventSource": "aws:dynamodb", "awsRegion": REGION,
                "dynamodb": {**change, "ApproximateCreationDateTime":
                             int(change["ApproximateCreationDateTime"].timestamp())},
                "eventSourceARN": self.stream_arn}

    def settle(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        assert not failed, "no fault is injected on this bus"


Reader = SqsReader | SnsReader | KinesisReader | DynamoStreamReader


def drive(handler: Callable[[dict[str, Any]], dict[str, Any]], reader: Reader,
          finished: Callable[[], bool], timeout: float = 30.0) -> int:
    """Feed ``handler`` what ``reader`` reads until ``finished()``; returns the record count."""
    deadline = time.monotonic() + timeout
    seen = 0
    while not finished():
        assert time.monotonic() < deadline, "the instance did not finish"
        records = reader.records()
        if not records:
            time.sleep(0.05)
            continue
        seen += len(records)
        if isinstance(reader, SnsReader):
            for record in records:  # SNS invokes once per notification
                handler({"Records": [lambda_sns(record)]})
            failed: set[str] = set()
        else:
            failed = {f["itemIdentifier"] for f in handler({"Records": records})["batchItemFailures"]}
        reader.settle(records, failed)
    return seen


# ---- every bus, both ways --------------------------------------------------------------------


@dataclass
class BusUnderTest:
    """A bus, the store that goes with it, the ARN a worker reads and how the test reads it."""

    settings: dict[str, Any]
    source: str
    reader: Callable[[], Reader]


def bus_under_test(kind: str, endpoint: str, redis_url: str, memcached_url: str) -> BusUnderTest:
    dead_letter = [arn("sqs", unique("dead"))]
    if kind in ("sqs", "sqs-fifo"):
        queue = arn("sqs", unique("steps") + (".fifo" if kind == "sqs-fifo" else ""))
        return BusUnderTest({"stream": [queue], "store": [redis_url], "dead_letter": dead_letter}, queue,
                            lambda: SqsReader(endpoint, queue))
    if kind == "kinesis":
        stream = arn("kinesis", f"stream/{unique('steps')}")
        return BusUnderTest({"stream": [stream], "store": [arn("dynamodb", f"table/{unique('store')}")],
                             "checkpoint": [arn("dynamodb", f"table/{unique('checkpoints')}")],
                             "dead_letter": dead_letter}, stream, lambda: KinesisReader(endpoint, stream))
    if kind == "sns":
        topic, queue = arn("sns", unique("steps")), arn("sqs", unique("subscriber"))

        def subscribed() -> SnsReader:
            # The topic's subscriber is the operator's (a Lambda, or a queue a worker reads).
            aws_client("sqs", endpoint).create_queue(QueueName=queue.rsplit(":", 1)[1])
            return SnsReader(endpoint, queue, topic)
        return BusUnderTest({"stream": [topic], "store": [memcached_url], "dead_letter": dead_letter},
                            queue, subscribed)
    if kind == "dynamodb-stream":
        table = arn("dynamodb", f"table/{unique('steps')}")
        return BusUnderTest({"stream": [table], "store": [arn("dynamodb", f"table/{unique('store')}")],
                             "dead_letter": dead_letter}, table, lambda: DynamoStreamReader(endpoint, table))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["sqs", "sqs-fifo", "kinesis", "sns", "dynamodb-stream"])
def test_ten_steps_through_lambda_handler_and_fsm_worker(
        kind: str, deploy: Callable[[dict[str, Any]], Deployment], redis_url: str, memcached_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fsm import handler
    from fsm.app.delivery import freshest_record

    bus = bus_under_test(kind, os.environ["AWS_ENDPOINT_URL"], redis_url, memcached_url)
    deployment = deploy(bus.settings)
    created = deployment.fsm("create-resources").stdout
    names = [*bus.settings["stream"], *bus.settings["dead_letter"], *bus.settings.get("checkpoint", [])]
    assert all(name in created for name in names), created
    assert deployment.fsm("create-resources").stdout == created  # a second run changes nothing
    reader = bus.reader()
    watcher = deployment.app()

    def done(cid: str) -> Callable[[], bool]:
        return lambda: (freshest_record(watcher.wiring, cid) or (0, {}))[1].get("status") == "done"

    # Lambda: the entry point itself, configured from the environment as on AWS.
    monkeypatch.setenv("FSM_CONFIG", str(deployment.config))
    monkeypatch.setenv("FSM_SETTINGS", str(deployment.settings_file))
    monkeypatch.setattr(handler, "_app", None)
    on_lambda = deployment.start()
    drive(lambda event: handler.lambda_handler(event, None), reader, done(on_lambda))
    deployment.apps.append(handler.app())  # the container's application, closed with the others
    client = Client(wiring=watcher.wiring)
    assert_done(client.status(on_lambda), client.history(on_lambda))
    assert_ran_once(redis_url, on_lambda)

    # fsm worker: polls the bus itself (streams from their start, so it meets the first
    # instance's records again: duplicates it must acknowledge without running anything).
    in_worker = deployment.start()
    output = deployment.fsm("worker", "--source", bus.source, "--idle-exit", "2").stdout
    assert "records (0 failed)" in output, output
    if kind == "sqs":  # the commands too, once: each costs a process start
        assert_done(deployment.status(in_worker), deployment.history(in_worker))
    assert_done(client.status(in_worker), client.history(in_worker))
    assert_ran_once(redis_url, in_worker)
    assert_ran_once(redis_url, on_lambda)
    assert handler.app().wiring.metrics.counts.get("DeadLetters", 0) == 0


# ---- resume from the Kinesis checkpoint --------------------------------------------------------


def test_resume_replays_the_checkpointed_kinesis_record_after_the_record_is_lost(
        deploy: Callable[[dict[str, Any]], Deployment], redis_url: str) -> None:
    """The store loses an instance mid-run; ``fsm resume`` rebuilds it from the stream.

    The record at the checkpoint is the last message the instance consumed, and it carries
    the context as it was before that step: dispatching it again re-runs that one step
    (its commit was lost with the record, so nothing can tell it ran) and carries on.
    """
    from fsm.app.delivery import freshest_record
    from fsm.app.resources import create_resources

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    stream = arn("kinesis", f"stream/{unique('steps')}")
    table = arn("dynamodb", f"table/{unique('store')}")
    deployment = deploy({"stream": [stream], "store": [table],
                         "checkpoint": [arn("dynamodb", f"table/{unique('checkpoints')}")]})
    application = deployment.app()
    list(create_resources(application.settings))
    client = Client(wiring=application.wiring)
    cid = client.start(MACHINE)
    reader = KinesisReader(endpoint, stream)

    def at_step(n: int) -> Callable[[], bool]:
        return lambda: (freshest_record(application.wiring, cid) or (0, {"step": -1}))[1]["step"] >= n

    drive(lambda event: handle_event(application, event), reader, at_step(4))
    checkpoint = application.wiring.dispatcher.checkpoints.get(cid)
    assert checkpoint["arn"] == stream and checkpoint["shard"]

    dynamodb = aws_client("dynamodb", endpoint)
    name = table.split("/", 1)[1]
    items = dynamodb.query(TableName=name, KeyConditionExpression="pk = :pk",
                           ExpressionAttributeValues={":pk": {"S": cid}})["Items"]
    assert {item["sk"]["S"] for item in items} >= {"record"}
    for item in items:  # the record and its history
        dynamodb.delete_item(TableName=name, Key={"pk": item["pk"], "sk": item["sk"]})
    assert freshest_record(application.wiring, cid) is None

    output = deployment.fsm("resume", cid).stdout
    assert f"{cid}: committed (running in state s3)" in output, output
    drive(lambda event: handle_event(application, event), reader,
          lambda: (freshest_record(application.wiring, cid) or (0, {}))[1].get("status") == "done")
    status = client.status(cid)
    assert (status["status"], status["state"], status["steps"]) == ("done", "s9", 10)
    assert status["context"] == {state: n for n, state in enumerate(STATES)}
    assert [e["step"] for e in client.history(cid)] == list(range(4, 11))  # steps 1-3 went with the record
    assert effects(redis_url, cid) == {**dict.fromkeys(STATES, 1), "s3": 2}


# ---- a context no bus or table could carry: the payload offload --------------------------------


@pytest.mark.parametrize("kind", ["sqs", "sqs-fifo", "kinesis", "sns", "dynamodb-stream"])
def test_a_300_kb_context_completes_on_every_bus_with_the_offload(
        kind: str, deploy: Callable[[dict[str, Any]], Deployment], redis_url: str, memcached_url: str) -> None:
    """300 KB: more than an SQS/SNS message (256 KB) and most of a DynamoDB item (400 KB).
    With ``offload:`` the context lives in S3 (moto_server), messages and records carry a
    reference, and the instance runs its ten steps on every bus; each action once."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    bus = bus_under_test(kind, endpoint, redis_url, memcached_url)
    bucket = unique("payloads")
    deployment = deploy({**bus.settings, "offload": {"store": f"s3://{bucket}/fsm", "threshold": 64 * 1024}})
    created = deployment.fsm("create-resources").stdout
    assert f"s3://{bucket}/fsm" in created, created
    bus.reader()                                     # the SNS subscriber queue, where there is one
    blob = "x" * 300_000
    given = deployment.folder / "context.json"      # a command line holds at most 128 KB per argument
    given.write_text(json.dumps({"blob": blob}))
    cid = deployment.fsm("start", "--machine", MACHINE, "--context", f"file://{given}").stdout.strip()
    output = deployment.fsm("worker", "--source", bus.source, "--idle-exit", "2").stdout
    assert "records (0 failed)" in output, output
    app = deployment.app()
    status = Client(wiring=app.wiring).status(cid)
    assert (status["status"], status["steps"]) == ("done", 10), status
    assert status["context"]["blob"] == blob and status["context"]["s8"] == 8
    record = freshest(app, cid)
    assert len(json.dumps(record["context"])) < 1000   # the record holds a reference, not the context
    stored = aws_client("s3", endpoint).list_objects_v2(Bucket=bucket, Prefix="fsm/")
    assert stored.get("KeyCount", 0) >= 2
    assert_ran_once(redis_url, cid)


def freshest(app: App, cid: str) -> dict[str, Any]:
    from fsm.app.delivery import freshest_record

    found = freshest_record(app.wiring, cid)
    assert found is not None
    return found[1]
