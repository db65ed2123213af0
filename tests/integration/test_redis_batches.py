"""A Lambda batch of SQS records for different instances on a redis store: their store
calls go as pipelines, so a batch of 10 transitions makes fewer than 10 round trips, in
both concurrency modes, and nothing is lost, doubled or reordered on the way.

Runs on a real redis-server (``FSM_TEST_REDIS_URL``) and on fakeredis."""

from __future__ import annotations

import copy
import sys
import threading
import uuid
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
from protocol_kit import HandBus

from config.loader import load_text
from config.settings import Settings
from fsm import Action
from fsm.app import App
from fsm.app.intake import handle_event
from fsm.app.wiring import build
from fsm.message import Message
from sources.redis import RedisStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from redis_batches import Counting  # noqa: E402 - the benchmark's round-trip counter

MACHINES = """
machines:
  - name: line
    states:
      - {name: a, initial: true, do_action: test_redis_batches.Note, transitions: [{event: next, target: b}]}
      - {name: b, do_action: test_redis_batches.Note, transitions: [{event: next, target: c}]}
      - {name: c, do_action: test_redis_batches.Note, transitions: [{event: next, target: d}]}
      - {name: d, final: true}
  - name: tally
    states:
      - {name: open, initial: true, transitions: [{event: note, action: test_redis_batches.Tally}]}
"""
SQS = {"messageId": "", "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...", "body": "",
       "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183",
                      "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185"},
       "messageAttributes": {}, "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3", "eventSource": "aws:sqs",
       "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:fsm", "awsRegion": "us-east-1"}
RAN: dict[tuple[str, str], int] = {}
RAN_LOCK = threading.Lock()


class Note(Action):
    def execute(self, context: Any, obj: Any) -> str:
        with RAN_LOCK:
            key = (context.correlation_id, context.current_state.name)
            RAN[key] = RAN.get(key, 0) + 1
        context["seen"] = [*context.get("seen", []), context.current_state.name]
        return "next"


class Tally(Action):
    def execute(self, context: Any, obj: Any) -> None:
        context["notes"] = [*context.get("notes", []), obj["event_data"]["n"]]


@pytest.fixture(params=["redis", "fakeredis"])
def client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Any]:
    if request.param == "redis":
        import redis
        inner = redis.Redis.from_url(redis_url)
    else:
        import fakeredis
        inner = fakeredis.FakeRedis()
    yield inner
    inner.close()


def app_on(client: Any, optimistic: bool) -> tuple[App, HandBus, Counting, RedisStore]:
    definitions = load_text(MACHINES)
    settings = Settings(store=["memory://"], concurrency="optimistic" if optimistic else "locked")
    bus = HandBus()
    wiring = build(definitions.machines, settings, bus=bus)
    counting = Counting(client)
    store = RedisStore("redis://batch", client=counting, prefix=f"batch-{uuid.uuid4().hex[:8]}:")
    wiring.stores[0] = wiring.dispatcher.stores[0] = store
    return App(definitions, settings, wiring), bus, counting, store


def records(bodies: list[str]) -> dict[str, Any]:
    out = []
    for n, body in enumerate(bodies):
        record = copy.deepcopy(SQS)
        record.update(body=body, messageId=f"m-{n}-{uuid.uuid4().hex[:6]}")
        out.append(record)
    return {"Records": out}


@pytest.mark.parametrize("optimistic", [True, False], ids=["optimistic", "locked"])
def test_a_batch_of_ten_instances_makes_fewer_round_trips_than_transitions(client: Any, optimistic: bool) -> None:
    app, bus, counting, store = app_on(client, optimistic)
    cids = [f"b-{uuid.uuid4().hex[:10]}" for _ in range(10)]
    bodies = [Message(machine="line", correlation_id=cid, context={"n": n}).encode() for n, cid in enumerate(cids)]
    trips, transitions = [], 0
    while bodies:
        before = counting.trips
        assert handle_event(app, records(bodies))["batchItemFailures"] == []
        trips.append(counting.trips - before)
        transitions += len(bodies)
        bodies = [envelope.body for envelope in bus.sent]
        bus.sent.clear()
    for cid in cids:
        record = store.get(cid)
        assert record["status"] == "done" and record["context"]["seen"] == ["a", "b", "c"]
        assert [RAN[(cid, state)] for state in "abc"] == [1, 1, 1]
    assert transitions == 40    # start and three do-actions each (the first is the lease's own)
    # Each batch after the first: the commits in one pipeline (optimistic), or the leases in
    # one and the commits in another (locked); a straggler may make one more.
    assert all(trip < 10 for trip in trips[1:]), trips
    assert sum(trips) / transitions < 1, trips


def test_events_for_a_few_instances_keep_their_order_and_count_once(client: Any) -> None:
    """Ten records for three instances, interleaved, one duplicated: each instance takes
    its own in the order the batch holds them, the duplicate once."""
    app, bus, _, store = app_on(client, False)
    cids = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    starts = [Message(machine="tally", correlation_id=cid, context={}).encode() for cid in cids]
    assert handle_event(app, records(starts))["batchItemFailures"] == []
    events = [Message(machine="tally", correlation_id=cids[i % 3], kind="event", event="note", data={"n": i // 3},
                      event_id=f"e-{i}").encode() for i in range(9)]
    assert handle_event(app, records(events + events[4:5]))["batchItemFailures"] == []
    while bus.sent:
        bodies = [envelope.body for envelope in bus.sent]
        bus.sent.clear()
        assert handle_event(app, records(bodies))["batchItemFailures"] == []
    assert [store.get(cid)["context"]["notes"] for cid in cids] == [[0, 1, 2]] * 3


def test_a_server_that_lost_its_scripts_still_takes_the_batch(client: Any) -> None:
    """A restarted (or flushed) server answers the pipeline's EVALSHAs with NOSCRIPT: each
    call is sent again alone, which loads its script, and the batch goes through."""
    app, bus, _, store = app_on(client, True)
    cids = [f"s-{uuid.uuid4().hex[:10]}" for _ in range(5)]
    client.script_flush()
    bodies = [Message(machine="line", correlation_id=cid, context={}).encode() for cid in cids]
    assert handle_event(app, records(bodies))["batchItemFailures"] == []
    assert all(store.get(cid)["step"] == 1 for cid in cids)
    client.script_flush()
    assert handle_event(app, records([e.body for e in bus.sent]))["batchItemFailures"] == []
    assert all(store.get(cid)["step"] == 2 for cid in cids)
