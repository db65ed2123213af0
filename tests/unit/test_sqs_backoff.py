"""The short jittered backoff of failed SQS records (``sources.sqs.retry_later``).

A record that failed for a passing reason must come back in seconds, not after the
queue's visibility timeout; how long grows with the times SQS has handed it out and
never passes the cap; ordered (FIFO) records are left to the queue. A stub client
records the calls and an injected rng pins the draw, so the numbers are exact.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from sources import sqs
from sources.sqs import RETRY_CAP, SqsPoller, backoff_seconds, retry_later

QUEUE = "arn:aws:sqs:us-east-1:123456789012:steps"
FIFO = "arn:aws:sqs:us-east-1:123456789012:steps.fifo"


class StubSqs:
    """Answers what retry_later and SqsPoller ask, and keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _record(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((operation, params))
        return {}

    def get_queue_url(self, **params: Any) -> dict[str, Any]:
        self._record("get_queue_url", params)
        return {"QueueUrl": f"https://sqs.example/{params['QueueOwnerAWSAccountId']}/{params['QueueName']}"}

    def change_message_visibility_batch(self, **params: Any) -> dict[str, Any]:
        return self._record("change_message_visibility_batch", params)

    def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        return self._record("delete_message_batch", params)

    def named(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == operation]

    def timeouts(self) -> list[int]:
        return [e["VisibilityTimeout"] for p in self.named("change_message_visibility_batch") for e in p["Entries"]]


class Pinned(random.Random):
    """An rng whose ``uniform(a, b)`` is always the same fraction of the way from a to b."""

    def __init__(self, fraction: float):
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def record(n: int, receives: int | None = 1, arn: str = QUEUE) -> dict[str, Any]:
    """An ``aws:sqs`` record in Lambda's shape (sqs.json)."""
    attributes = {"SentTimestamp": "1545082649183"}
    if receives is not None:
        attributes["ApproximateReceiveCount"] = str(receives)
    return {"messageId": f"m-{n}", "receiptHandle": f"handle-{n}", "body": "{}", "attributes": attributes,
            "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": arn,
            "awsRegion": "us-east-1"}


def test_the_ceiling_doubles_with_each_receive_up_to_the_cap() -> None:
    stub = StubSqs()
    records = [record(n, receives=n) for n in range(1, 9)]
    retry_later(records, client=stub, url="https://sqs.example/q", rng=Pinned(1.0))
    assert stub.timeouts() == [math.ceil(min(RETRY_CAP, 2 ** n)) for n in range(1, 9)] == [2, 4, 8, 16, 30, 30, 30, 30]
    (call,) = stub.named("change_message_visibility_batch")
    assert call["QueueUrl"] == "https://sqs.example/q"
    assert [e["ReceiptHandle"] for e in call["Entries"]] == [f"handle-{n}" for n in range(1, 9)]
    assert len({e["Id"] for e in call["Entries"]}) == 8


def test_the_floor_is_one_second_whatever_the_draw() -> None:
    stub = StubSqs()
    retry_later([record(n, receives=n) for n in range(1, 9)], client=stub, url="u", rng=Pinned(0.0))
    assert stub.timeouts() == [1] * 8


@pytest.mark.parametrize("receives", [1, 2, 3, 4, 5, 10, 1000])
def test_a_real_rng_stays_between_one_second_and_the_ceiling(receives: int) -> None:
    rng = random.Random(receives)
    ceiling = math.ceil(min(RETRY_CAP, 2 ** receives))
    drawn = [backoff_seconds(receives, rng) for _ in range(2000)]
    assert min(drawn) >= 1 and max(drawn) <= ceiling <= RETRY_CAP
    if ceiling > 2:     # jittered, not a constant: failures of one moment come back spread out
        assert len(set(drawn)) > ceiling // 2


def test_later_receives_wait_longer_on_average() -> None:
    rng = random.Random(7)
    means = [sum(backoff_seconds(n, rng) for _ in range(2000)) / 2000 for n in range(1, 6)]
    assert means == sorted(means) and means[-1] > 3 * means[0]


def test_a_record_without_a_receive_count_counts_as_its_first() -> None:
    stub = StubSqs()
    retry_later([record(1, receives=None)], client=stub, url="u", rng=Pinned(1.0))
    assert stub.timeouts() == [2]


def test_more_than_ten_records_take_several_calls() -> None:
    stub = StubSqs()
    retry_later([record(n) for n in range(23)], client=stub, url="u", rng=Pinned(0.5))
    assert [len(p["Entries"]) for p in stub.named("change_message_visibility_batch")] == [10, 10, 3]


def test_ordered_records_are_left_to_the_queue() -> None:
    stub = StubSqs()
    retry_later([record(n, arn=FIFO) for n in range(3)], client=stub, url="u")
    assert stub.calls == []
    retry_later([record(0, arn=FIFO), record(1)], client=stub, rng=Pinned(1.0))
    assert [e["ReceiptHandle"] for p in stub.named("change_message_visibility_batch")
            for e in p["Entries"]] == ["handle-1"]


def test_each_queue_gets_its_own_url() -> None:
    stub = StubSqs()
    other = "arn:aws:sqs:us-east-1:210987654321:other"
    retry_later([record(1), record(2, arn=other), record(3)], client=stub, rng=Pinned(0.0))
    assert [p["QueueName"] for p in stub.named("get_queue_url")] == ["steps", "other"]
    assert {p["QueueUrl"]: len(p["Entries"]) for p in stub.named("change_message_visibility_batch")} == {
        "https://sqs.example/123456789012/steps": 2, "https://sqs.example/210987654321/other": 1}


def test_the_lambda_path_looks_the_queue_url_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an injected client (the Lambda handler's case) the client and the queue's
    URL are kept for the container: a second failure costs one call, not two."""
    stub = StubSqs()
    made: list[tuple[Any, ...]] = []
    monkeypatch.setattr(sqs, "_clients", {})
    monkeypatch.setattr(sqs, "_queue_urls", {})
    monkeypatch.setattr(sqs.awslib, "make_client", lambda *args, **kwargs: made.append(args) or stub)
    retry_later([record(1)], endpoint_url="http://127.0.0.1:1", rng=Pinned(0.0))
    retry_later([record(2)], endpoint_url="http://127.0.0.1:1", rng=Pinned(0.0))
    assert [name for name, _ in stub.calls] == ["get_queue_url", "change_message_visibility_batch",
                                               "change_message_visibility_batch"]
    assert len(made) == 1


def test_a_client_is_not_reused_under_another_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 takes AWS_ENDPOINT_URL when a client is made; a cached client made under one
    value would send the next test's (or deployment's) calls to the wrong place."""
    monkeypatch.setattr(sqs, "_clients", {})
    monkeypatch.setattr(sqs.awslib, "make_client", lambda *args, **kwargs: object())
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    first = sqs._client("us-east-1", None, None)
    assert sqs._client("us-east-1", None, None) is first
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    assert sqs._client("us-east-1", None, None) is not first
    assert sqs._client("us-east-1", None, {"max_attempts": 1}) is not sqs._client("us-east-1", None, None)


def test_the_poller_deletes_successes_and_leaves_the_backoff_to_the_handler() -> None:
    """``handle_event`` already shortened the failed records' wait (as on Lambda); the
    poller changing it again would double the calls and redraw the delay."""
    stub = StubSqs()
    poller = SqsPoller(QUEUE, client=stub)
    records = [record(n) for n in range(12)]
    poller.done(records, failed={"m-3", "m-11"})
    deleted = [e["ReceiptHandle"] for p in stub.named("delete_message_batch") for e in p["Entries"]]
    assert sorted(deleted) == sorted(f"handle-{n}" for n in range(12) if n not in (3, 11))
    assert [len(p["Entries"]) for p in stub.named("delete_message_batch")] == [10]
    assert stub.named("change_message_visibility_batch") == []
