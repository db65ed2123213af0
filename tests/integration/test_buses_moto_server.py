"""The AWS buses and CloudWatch metrics over real HTTP, against moto_server.

In-process moto never times out, refuses a connection or loses a queue under a running
sender; these tests do, and check that FailoverBus moves the traffic quickly.
Resource names are unique per test so the server needs no reset between tests.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
import uuid
from typing import Any

import pytest

from fsm.errors import RecoverableError
from fsm.ports import Envelope, NullMetrics
from sources.aws import make_client
from sources.cloudwatch import CloudWatchMetrics
from sources.dynamodb_stream import DynamoStreamBus
from sources.failover import FailoverBus
from sources.kinesis import KinesisBus
from sources.sns import SnsBus
from sources.sqs import SqsBus

ACCOUNT = "123456789012"
FAST = {"connect_timeout": 1, "read_timeout": 1, "max_attempts": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def endpoint(moto_url: str) -> str:
    """moto_server from the shared conftest (skips locally, fails in CI, when absent)."""
    return moto_url


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:us-east-1:{ACCOUNT}:{resource}"


def env(n: int) -> Envelope:
    return Envelope(body=f"message-{n}", key=f"cid-{n % 2}", dedup_id=f"d-{n}")


def drain(client: Any, queue_url: str) -> list[str]:
    bodies: list[str] = []
    while True:
        messages = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for m in messages:
            bodies.append(m["Body"])
            client.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


class Recorder(NullMetrics):
    def __init__(self) -> None:
        super().__init__()
        self.dims: list[dict[str, str]] = []

    def incr(self, name: str, value: float = 1.0, unit: str = "Count", dims: Any = None) -> None:
        super().incr(name, value, unit, dims)
        self.dims.append(dict(dims or {}))


def test_primary_queue_deleted_mid_run_fails_over(endpoint: str) -> None:
    primary = SqsBus(arn("sqs", unique("primary")), endpoint_url=endpoint, aws=FAST)
    secondary = SqsBus(arn("sqs", unique("secondary")), endpoint_url=endpoint, aws=FAST)
    primary.create()
    secondary.create()
    metrics = Recorder()
    router = FailoverBus([primary, secondary], metrics=metrics)
    for n in range(3):
        router.send(env(n))

    sqs = make_client("sqs", endpoint_url=endpoint)
    assert sorted(drain(sqs, primary.queue_url)) == ["message-0", "message-1", "message-2"]
    sqs.delete_queue(QueueUrl=primary.queue_url)

    for n in range(3, 6):
        router.send(env(n))
    router.send_batch([env(n) for n in range(6, 18)])
    assert sorted(drain(sqs, secondary.queue_url)) == sorted(f"message-{n}" for n in range(3, 18))
    assert metrics.counts["Failovers"] >= 3
    assert {"Resource": primary.url} in metrics.dims
    assert router.breakers[0].state == "open"


@pytest.mark.parametrize("failure", ["refused", "silent"])
def test_unreachable_primary_fails_over_quickly(endpoint: str, failure: str) -> None:
    listener = None
    if failure == "refused":
        dead = f"http://127.0.0.1:{free_port()}"        # closed again: connection refused
    else:
        listener = socket.socket()                        # accepts (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        dead = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        name = unique("q")
        primary = SqsBus(arn("sqs", name), endpoint_url=dead, aws=FAST)
        secondary = SqsBus(arn("sqs", unique("backup")), endpoint_url=endpoint, aws=FAST)
        secondary.create()
        router = FailoverBus([primary, secondary], breaker_threshold=1)
        started = time.monotonic()
        router.send(env(0))                               # pays the primary's timeout once
        first = time.monotonic() - started
        for n in range(1, 5):                             # circuit open: straight to the secondary
            router.send(env(n))
        rest = time.monotonic() - started - first
    finally:
        if listener is not None:
            listener.close()
    # one attempt (max_attempts=1) with 1 s timeouts
    assert first < 2.5, first
    assert rest < 1.0, rest
    sqs = make_client("sqs", endpoint_url=endpoint)
    assert sorted(drain(sqs, secondary.queue_url)) == [f"message-{n}" for n in range(5)]


def test_network_errors_are_recoverable_and_name_the_arn(endpoint: str) -> None:
    bus = SqsBus(arn("sqs", unique("gone")), endpoint_url=f"http://127.0.0.1:{free_port()}", aws=FAST)
    with pytest.raises(RecoverableError, match=bus.name):
        bus.send(env(1))


def test_every_bus_works_over_http(endpoint: str) -> None:
    buses = [
        SqsBus(arn("sqs", unique("http")), endpoint_url=endpoint, aws=FAST),
        SqsBus(arn("sqs", unique("http") + ".fifo"), endpoint_url=endpoint, aws=FAST),
        KinesisBus(arn("kinesis", "stream/" + unique("http")), endpoint_url=endpoint, aws=FAST),
        SnsBus(arn("sns", unique("http")), endpoint_url=endpoint, aws=FAST),
        DynamoStreamBus(arn("dynamodb", "table/" + unique("http")), endpoint_url=endpoint, aws=FAST),
    ]
    for bus in buses:
        bus.create()
        bus.create()
        bus.send(env(0))
        bus.send_batch([env(n) for n in range(1, 13)])


def test_cloudwatch_flush_is_read_back(endpoint: str) -> None:
    namespace = unique("Fsm")
    metrics = CloudWatchMetrics(namespace, endpoint_url=endpoint, aws=FAST, region="us-east-1")
    for _ in range(5):
        metrics.incr("Transitions", dims={"Machine": "order"})
    for ms in (10.0, 20.0, 20.0):
        metrics.incr("Duration", ms, unit="Milliseconds", dims={"Machine": "order"})
    metrics.flush()
    assert metrics.calls == 1 and metrics.dropped == 0

    cloudwatch = make_client("cloudwatch", endpoint_url=endpoint, region="us-east-1")
    now = dt.datetime.now(dt.UTC)

    def stats(name: str) -> dict[str, float]:
        reply = cloudwatch.get_metric_statistics(
            Namespace=namespace, MetricName=name, Dimensions=[{"Name": "Machine", "Value": "order"}],
            StartTime=now - dt.timedelta(minutes=10), EndTime=now + dt.timedelta(minutes=10),
            Period=60, Statistics=["Sum", "SampleCount", "Maximum"])
        points = reply["Datapoints"]
        return {k: sum(p[k] for p in points) for k in ("Sum", "SampleCount")} | {
            "Maximum": max((p["Maximum"] for p in points), default=0.0)}

    assert stats("Transitions")["Sum"] == 5.0
    duration = stats("Duration")
    assert duration["Sum"] == 50.0 and duration["SampleCount"] == 3.0 and duration["Maximum"] == 20.0


def test_cloudwatch_failure_does_not_raise(endpoint: str) -> None:
    metrics = CloudWatchMetrics("Fsm", endpoint_url=f"http://127.0.0.1:{free_port()}", aws=FAST,
                                region="us-east-1")
    metrics.incr("Transitions")
    metrics.flush()
    assert metrics.dropped == 1

