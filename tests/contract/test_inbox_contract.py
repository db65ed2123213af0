"""The inbox, on every store: ``append(cid, entry)`` (see ``fsm/ports.py``).

An append is one atomic write that refuses duplicates (ids applied already, in
``event_ids``, or waiting in ``inbox``), numbers the entry ``inbox_end + 1``, and marks
the record ``pending`` when it owed nothing. A swap may rewrite the inbox, expecting
``inbox_end``: an append in between must make it fail, never be lost. These tests go
through the port only (plus call counting, and DynamoDB on moto_server), on every
backend of the ``store`` fixture: memory, sqlite, redis, fakeredis, memcached, DynamoDB.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fsm.errors import BackendError, RecoverableError
from fsm.ports import PendingIndex, SwapResult

DATA = {
    "order": {"id": "A-1", "lines": [{"sku": "x", "qty": 2, "price": 9.99}], "notes": None},
    "ratio": 0.1 + 0.2,
    "tiny": 1e-300,
    "big": 2**53,
    "text": "naïve café ✓ 日本 \"quoted\" \\ }]",
    "flags": [True, False, None],
    "empty": {"list": [], "dict": {}},
}


def fresh(store: Any, cid: str = "cid-1", **fields: Any) -> None:
    base = {"id": cid, "machine": "m", "status": "waiting", "state": "idle", "step": 0, "retries": 0,
            "fence": 0, "lease_owner": "", "lease_expires": 0, "event_ids": [], "context": {"n": 1}}
    assert store.swap(cid, None, {**base, **fields}).ok


def event(event_id: str, at: float = 1700000000.5, **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "at": at, "kind": "event", "event": "go", "data": {"n": event_id}, **extra}


def appended(store: Any, cid: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Append, check the reply is the stored record, and return it."""
    result = store.append(cid, entry)
    assert result.ok, result
    assert result.record is not None and result.record == store.get(cid)
    return result.record


def ids(record: dict[str, Any]) -> list[str]:
    return [e["id"] for e in record.get("inbox") or []]


def positions(record: dict[str, Any]) -> list[int]:
    return [e["pos"] for e in record.get("inbox") or []]


def kind_of(store: Any) -> str:
    name = type(store).__name__
    if name == "RedisStore":
        return "fakeredis" if "fakeredis" in store.url else "redis"
    return {"MemoryStore": "memory", "SqliteStore": "sqlite", "MemcacheStore": "memcached",
            "DynamoStore": "dynamodb"}[name]


# ---- append -------------------------------------------------------------------------------


def test_append_to_a_missing_record_fails_with_none(store: Any) -> None:
    assert store.append("nobody", event("e1")) == SwapResult(False, None)
    assert store.get("nobody") is None


def test_entries_are_numbered_from_one_in_order(store: Any) -> None:
    fresh(store)
    for n in range(1, 6):
        record = appended(store, "cid-1", event(f"e{n}", at=1000.0 + n, state="idle"))
        assert record["inbox_end"] == n and type(record["inbox_end"]) is int
    assert ids(record) == ["e1", "e2", "e3", "e4", "e5"]
    assert positions(record) == [1, 2, 3, 4, 5] and all(type(p) is int for p in positions(record))
    assert record["inbox"][2] == {**event("e3", at=1003.0, state="idle"), "pos": 3}
    # the rest of the record is untouched, and an append writes no history
    assert record["context"] == {"n": 1} and record["step"] == 0 and record["status"] == "waiting"
    assert store.history("cid-1") == []


def test_a_position_given_by_the_caller_is_replaced(store: Any) -> None:
    fresh(store)
    record = appended(store, "cid-1", event("e1", pos=99))
    assert record["inbox"] == [{**event("e1"), "pos": 1}]


def test_a_waiting_event_is_not_appended_twice(store: Any) -> None:
    fresh(store)
    appended(store, "cid-1", event("e1"))
    before = appended(store, "cid-1", event("e2"))
    result = store.append("cid-1", event("e1", at=5.0, data={"other": True}))
    assert result == SwapResult(False, before)
    assert store.get("cid-1") == before


def test_an_applied_event_is_not_appended(store: Any) -> None:
    fresh(store, event_ids=["e-old", "f.1:x_y-z"], pending=0.0)
    before = store.get("cid-1")
    for duplicate in ("e-old", "f.1:x_y-z"):
        result = store.append("cid-1", event(duplicate))
        assert result == SwapResult(False, before)
    assert store.get("cid-1") == before
    # ids that only share text with an applied id are other events
    for other in ("e", "old", "e-ol", "e-old2", "f.1"):
        appended(store, "cid-1", event(other))
    assert ids(store.get("cid-1")) == ["e", "old", "e-ol", "e-old2", "f.1"]


def test_an_id_inside_event_data_is_not_a_duplicate(store: Any) -> None:
    fresh(store)
    appended(store, "cid-1", event("e1", data={"id": "e2", "ids": ["e2"], "nested": {"id": "e2"}}))
    record = appended(store, "cid-1", event("e2"))
    assert ids(record) == ["e1", "e2"]
    assert store.append("cid-1", event("e2")).ok is False


def test_nested_data_round_trips_exactly(store: Any) -> None:
    fresh(store)
    appended(store, "cid-1", event("e1", data=DATA, extra=[1, 2.5, {"k": None}]))
    entry = store.get("cid-1")["inbox"][0]
    assert entry["data"] == DATA and entry["extra"] == [1, 2.5, {"k": None}]
    assert type(entry["data"]["ratio"]) is float and entry["data"]["ratio"] == 0.1 + 0.2
    assert type(entry["data"]["big"]) is int and entry["data"]["big"] == 2**53
    assert entry["data"]["empty"] == {"list": [], "dict": {}}
    assert entry["at"] == 1700000000.5 and entry["kind"] == "event" and entry["pos"] == 1


BAD_ENTRIES = [{"id": "has space", "at": 1.0}, {"id": 'q"uote', "at": 1.0}, {"id": "back\\slash", "at": 1.0},
               {"id": "", "at": 1.0}, {"id": "x" * 129, "at": 1.0}, {"id": 7, "at": 1.0}, {"at": 1.0}, {"id": "e1"},
               {"id": "e1", "at": "now"}, {"id": "e1", "at": True}, {"id": "e1", "at": float("nan")}]


def test_an_entry_without_a_valid_id_or_time_is_refused(store: Any) -> None:
    fresh(store)
    before = store.get("cid-1")
    for bad in BAD_ENTRIES:
        with pytest.raises(BackendError):
            store.append("cid-1", bad)
    assert store.get("cid-1") == before
    appended(store, "cid-1", event("x" * 128))      # the longest id is fine


# ---- pending --------------------------------------------------------------------------------


@pytest.mark.parametrize("owed", [None, 0, 0.0, "absent"])
def test_an_append_marks_a_record_that_owed_nothing(store: Any, owed: Any) -> None:
    fresh(store, **({} if owed == "absent" else {"pending": owed}))
    assert appended(store, "cid-1", event("e1", at=100.5))["pending"] == 100.5
    assert appended(store, "cid-1", event("e2", at=200.0))["pending"] == 100.5   # the older debt stays


def test_an_append_keeps_an_earlier_debt(store: Any) -> None:
    fresh(store, pending=50.25)
    assert appended(store, "cid-1", event("e1", at=100.5))["pending"] == 50.25


def test_another_handle_that_cleared_pending_is_seen(store_factory: Callable[[], Any]) -> None:
    """DynamoDB guesses ``pending`` from what a handle saw last: a stale guess must not
    leave an inbox unmarked (nor mark a record that owes already)."""
    sender, drainer = store_factory(), store_factory()
    fresh(sender)
    assert appended(sender, "cid-1", event("e1", at=10.0))["pending"] == 10.0
    record = drainer.get("cid-1")
    assert drainer.swap("cid-1", {"fence": 0, "inbox_end": 1}, {"inbox": [], "pending": 0.0, "fence": 1}).ok
    assert appended(sender, "cid-1", event("e2", at=20.0))["pending"] == 20.0
    assert drainer.swap("cid-1", {"fence": 1}, {"pending": 30.0, "fence": 2}).ok
    assert appended(sender, "cid-1", event("e3", at=40.0))["pending"] == 30.0
    assert record["inbox_end"] == 1 and ids(sender.get("cid-1")) == ["e2", "e3"]


def test_the_pending_index_follows_appends(store_factory: Callable[[], Any]) -> None:
    store = store_factory()
    if not isinstance(store, PendingIndex):
        assert kind_of(store) == "memcached"
        pytest.skip("memcached has no pending index")
    for cid in ("a", "b", "c"):
        fresh(store, cid)
    appended(store, "b", event("e1", at=10.0))
    appended(store, "a", event("e1", at=20.0))
    appended(store, "b", event("e2", at=30.0))
    found = store.pending(100.0)
    assert [r["id"] for r in found] == ["b", "a"]
    assert found == [store.get("b"), store.get("a")]        # whole records, inbox included
    assert [r["id"] for r in store.pending(15.0)] == ["b"]
    assert store.swap("b", {"inbox_end": 2}, {"inbox": [], "pending": 0.0}).ok   # drained
    assert [r["id"] for r in store_factory().pending(100.0)] == ["a"]


# ---- swap and the inbox ---------------------------------------------------------------------


def test_swap_round_trips_the_inbox(store: Any) -> None:
    inbox = [{**event("e1", data=DATA), "pos": 1}, {**event("e2"), "pos": 2}]
    fresh(store, inbox=inbox, inbox_end=2)
    assert store.get("cid-1")["inbox"] == inbox and store.get("cid-1")["inbox_end"] == 2
    assert store.append("cid-1", event("e2")) == SwapResult(False, store.get("cid-1"))
    assert store.swap("cid-1", {"inbox_end": 2}, {"inbox": []}).ok
    record = store.get("cid-1")
    assert record["inbox"] == [] and record["inbox_end"] == 2
    # gone from the inbox and not recorded as applied: no longer a duplicate
    record = appended(store, "cid-1", event("e2"))
    assert record["inbox"] == [{**event("e2"), "pos": 3}]


def test_missing_inbox_end_reads_as_zero(store: Any) -> None:
    fresh(store)
    assert "inbox_end" not in store.get("cid-1")
    assert not store.swap("cid-1", {"inbox_end": 1}, {"step": 9}).ok
    assert store.swap("cid-1", {"inbox_end": 0, "step": 0}, {"step": 1}).ok
    assert store.swap("cid-1", {"inbox_end": None}, {"step": 2}).ok        # missing also equals None
    assert "inbox_end" not in store.get("cid-1")
    appended(store, "cid-1", event("e1"))
    assert not store.swap("cid-1", {"inbox_end": 0}, {"step": 3}).ok
    assert store.swap("cid-1", {"inbox_end": 1}, {"step": 3}).ok
    fresh(store, "cid-2", inbox_end=0)
    assert store.swap("cid-2", {"inbox_end": 0}, {"step": 1}).ok
    assert not store.swap("cid-2", {"inbox_end": None}, {"step": 2}).ok


def test_a_swap_that_read_the_inbox_before_an_append_fails(store_factory: Callable[[], Any]) -> None:
    drainer, sender = store_factory(), store_factory()
    fresh(drainer)
    appended(sender, "cid-1", event("e1"))
    appended(sender, "cid-1", event("e2"))
    seen = drainer.get("cid-1")
    appended(sender, "cid-1", event("e3"))                          # in between
    result = drainer.swap("cid-1", {"fence": 0, "inbox_end": seen["inbox_end"]},
                          {"inbox": seen["inbox"][1:], "fence": 1})
    assert not result.ok and result.record is not None and ids(result.record) == ["e1", "e2", "e3"]
    assert ids(drainer.get("cid-1")) == ["e1", "e2", "e3"]
    seen = drainer.get("cid-1")
    result = drainer.swap("cid-1", {"fence": 0, "inbox_end": seen["inbox_end"]},
                          {"inbox": seen["inbox"][1:], "fence": 1})
    assert result.ok
    record = appended(sender, "cid-1", event("e4"))
    assert ids(record) == ["e2", "e3", "e4"] and positions(record) == [2, 3, 4]
    assert record["fence"] == 1


def test_moving_inbox_end_alone_renumbers_nothing(store: Any) -> None:
    """No dispatcher flow does this, but the stores must agree on it (DynamoDB counts
    appended entries back from ``inbox_end``: it must write their positions first)."""
    fresh(store)
    appended(store, "cid-1", event("e1"))
    appended(store, "cid-1", event("e2"))
    assert store.swap("cid-1", {"inbox_end": 2}, {"inbox_end": 10}).ok
    record = store.get("cid-1")
    assert positions(record) == [1, 2] and record["inbox_end"] == 10
    assert positions(appended(store, "cid-1", event("e3"))) == [1, 2, 11]
    assert store.swap("cid-1", {"inbox_end": 11}, {"inbox_end": 20}, history=[{"n": 1}]).ok
    assert positions(appended(store, "cid-1", event("e4"))) == [1, 2, 11, 21]
    assert store.history("cid-1") == [{"n": 1}]


# ---- concurrency ------------------------------------------------------------------------------


def run_threads(workers: list[Callable[[], None]], timeout: float = 120) -> None:
    errors: list[BaseException] = []

    def guarded(work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:   # noqa: BLE001 - re-raised below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(work,)) for work in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    assert not errors, errors


def test_racing_appends_are_all_kept_in_order(store_factory: Callable[[], Any]) -> None:
    fresh(store_factory())
    threads, each = 8, 25
    handles = [store_factory() for _ in range(threads)]
    barrier = threading.Barrier(threads)
    given: dict[str, int] = {}
    lock = threading.Lock()

    def sender(t: int) -> Callable[[], None]:
        def work() -> None:
            barrier.wait(timeout=30)
            for i in range(each):
                entry = event(f"t{t}-{i}", at=1000.0 + t)
                result = handles[t].append("cid-1", entry)
                assert result.ok, result
                mine = [e for e in result.record["inbox"] if e["id"] == entry["id"]]
                assert len(mine) == 1 and mine[0] == {**entry, "pos": mine[0]["pos"]}
                with lock:
                    given[entry["id"]] = mine[0]["pos"]
        return work

    run_threads([sender(t) for t in range(threads)])
    record = handles[0].get("cid-1")
    assert len(record["inbox"]) == threads * each == record["inbox_end"]
    assert positions(record) == list(range(1, threads * each + 1))     # no gaps, in order
    assert sorted(ids(record)) == sorted(f"t{t}-{i}" for t in range(threads) for i in range(each))
    assert {e["id"]: e["pos"] for e in record["inbox"]} == given        # as each reply said
    for t in range(threads):
        order = [int(e["id"].split("-")[1]) for e in record["inbox"] if e["id"].startswith(f"t{t}-")]
        assert order == list(range(each))
    assert record["pending"] in {1000.0 + t for t in range(threads)}


def test_a_drainer_takes_every_appended_event_exactly_once(store_factory: Callable[[], Any]) -> None:
    """Senders append while a drainer reads the record and swaps the first entry out,
    expecting the fence and ``inbox_end``: nothing is lost, nothing taken twice."""
    fresh(store_factory())
    senders, each = 4, 25
    handles = [store_factory() for _ in range(senders + 1)]
    done = threading.Event()
    drained: list[dict[str, Any]] = []
    rng = random.Random(7)

    def sender(t: int) -> Callable[[], None]:
        def work() -> None:
            for i in range(each):
                assert handles[t].append("cid-1", event(f"s{t}-{i}")).ok
                if rng.random() < 0.2:
                    time.sleep(0.001)
        return work

    def drainer() -> None:
        store = handles[senders]
        deadline = time.monotonic() + 100
        while time.monotonic() < deadline:
            finished = done.is_set()        # read before the record: then an empty inbox is final
            record = store.get("cid-1")
            if not record.get("inbox"):
                if finished:
                    return
                time.sleep(0.001)
                continue
            expect = {"fence": record["fence"], "inbox_end": record.get("inbox_end", 0)}
            if store.swap("cid-1", expect, {"inbox": record["inbox"][1:], "fence": record["fence"] + 1}).ok:
                drained.append(record["inbox"][0])
        raise AssertionError("the drainer did not finish")

    def senders_then_done() -> None:
        run_threads([sender(t) for t in range(senders)])
        done.set()

    run_threads([senders_then_done, drainer])
    everything = sorted(f"s{t}-{i}" for t in range(senders) for i in range(each))
    assert sorted(e["id"] for e in drained) == everything                 # each exactly once
    assert [e["pos"] for e in drained] == list(range(1, senders * each + 1))  # in position order
    for t in range(senders):
        order = [int(e["id"].split("-")[1]) for e in drained if e["id"].startswith(f"s{t}-")]
        assert order == list(range(each))
    record = handles[0].get("cid-1")
    assert record["inbox"] == [] and record["inbox_end"] == senders * each
    assert record["fence"] == senders * each


# ---- round trips ------------------------------------------------------------------------------


class Tally:
    """A client wrapper that records the names of the calls made through it."""

    def __init__(self, inner: Any, names: list[str]):
        self.inner, self.names = inner, names

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_") or name in ("check_key", "close"):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.names.append(name)
            return attr(*args, **kwargs)
        return counted


@contextlib.contextmanager
def backend_calls(store: Any) -> Iterator[list[str]]:
    """The calls ``store`` makes to its backend while the block runs: client methods
    (memcached, DynamoDB), commands (redis), SQL statements (sqlite)."""
    calls: list[str] = []
    kind = kind_of(store)
    if kind in ("memcached", "dynamodb"):
        inner = store.client
        store.client = Tally(inner, calls)
        try:
            yield calls
        finally:
            store.client = inner
    elif kind in ("redis", "fakeredis"):
        client, original = store.client, store.client.execute_command

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(str(args[0]))
            return original(*args, **kwargs)
        client.execute_command = counted
        try:
            yield calls
        finally:
            del client.execute_command
    elif kind == "sqlite":
        store._db.set_trace_callback(lambda sql: calls.append(sql.split()[0].upper()))
        try:
            yield calls
        finally:
            store._db.set_trace_callback(None)
    else:
        pytest.skip("the memory store has no backend to call")


EXPECTED_CALLS = {"redis": ["EVALSHA"], "fakeredis": ["EVALSHA"], "dynamodb": ["update_item"],
                  "memcached": ["gets", "meta_set"]}


def test_an_append_is_one_round_trip(store: Any) -> None:
    fresh(store)
    fresh(store, "warm-up")
    store.append("warm-up", event("e0"))     # redis loads its script once per server
    kind = kind_of(store)
    for n in (1, 2, 3):     # the first sets pending, the others leave it
        with backend_calls(store) as calls:
            assert store.append("cid-1", event(f"e{n}", at=100.0 + n)).ok
        if kind == "sqlite":
            assert calls == ["BEGIN", "SELECT", "UPDATE", "COMMIT"]    # one transaction
        else:
            assert calls == EXPECTED_CALLS[kind]
    with backend_calls(store) as calls:    # a duplicate or a missing record: one read at most
        assert not store.append("cid-1", event("e2")).ok
        assert not store.append("nobody", event("e2")).ok
    assert len(calls) == (6 if kind == "sqlite" else 2)
    assert store.get("cid-1")["pending"] == 101.0


# ---- wrappers and DynamoDB specifics --------------------------------------------------------


def test_chaos_injects_faults_on_append_too() -> None:
    from sources.chaos import ChaosWrapper
    from sources.memory import MemoryStore
    target = MemoryStore()
    fresh(target)
    chaotic = ChaosWrapper(target, 1.0, rng=random.Random(1))
    with pytest.raises(RecoverableError, match="append"):    # before: nothing written
        chaotic.append("cid-1", event("e1"))
    assert "inbox" not in target.get("cid-1")
    with pytest.raises(RecoverableError, match="applied"):   # after: written, reply lost
        chaotic.append("cid-1", event("e1"))
    assert ids(target.get("cid-1")) == ["e1"]
    assert chaotic.injected == {"before": 1, "after": 1}
    assert ChaosWrapper(target, 0.0).append("cid-1", event("e1")) == SwapResult(False, target.get("cid-1"))


def test_dynamodb_keeps_its_inbox_attributes_out_of_records(store: Any) -> None:
    if kind_of(store) != "dynamodb":
        pytest.skip("DynamoDB only")
    fresh(store)
    appended(store, "cid-1", event("e1"))
    item = store.client.get_item(TableName=store.table, Key={"pk": {"S": "cid-1"}, "sk": {"S": "record"}})["Item"]
    assert item["inbox_ids"] == {"SS": ["e1"]} and item["inbox_tail"] == {"N": "1"}
    assert "L" in item["inbox"] and item["owed_shard"]["S"].startswith("pending#")
    assert not {"inbox_ids", "inbox_tail", "pending_shard", "owed_shard", "owed_at"} & set(store.get("cid-1"))
    assert store.swap("cid-1", {"inbox_end": 1}, {"inbox": []}).ok     # a set cannot be empty
    item = store.client.get_item(TableName=store.table, Key={"pk": {"S": "cid-1"}, "sk": {"S": "record"}})["Item"]
    assert "inbox_ids" not in item and "inbox_tail" not in item and item["inbox"] == {"L": []}


def test_dynamodb_append_is_one_update_whatever_the_record_owes(store_factory: Callable[[], Any]) -> None:
    """An append needs no knowledge of the record: one UpdateItem from a handle that never
    saw it, whether the record owes a message or not (a busy instance flips that at every
    step, and no guess of it can go stale)."""
    first = store_factory()
    if kind_of(first) != "dynamodb":
        pytest.skip("DynamoDB only")
    fresh(first, pending=5.0)
    for event_id in ("e1", "e2"):
        with backend_calls(cold := store_factory()) as calls:
            assert cold.append("cid-1", event(event_id)).ok
        assert calls == ["update_item"]
    assert first.get("cid-1")["pending"] == 5.0     # owed already: it stays owed since then
    assert first.swap("cid-1", {"inbox_end": 2}, {"pending": 0.0}).ok
    assert first.get("cid-1")["pending"] == 0.0
    item = first.client.get_item(TableName=first.table, Key={"pk": {"S": "cid-1"}, "sk": {"S": "record"}})["Item"]
    assert "pending" not in item and "owed_at" not in item and item["owes_nothing"] == {"BOOL": True}
    with backend_calls(cold := store_factory()) as calls:
        assert cold.append("cid-1", event("e3", at=7.0)).ok
    assert calls == ["update_item"]
    assert first.get("cid-1")["pending"] == 7.0
    assert [record["id"] for record in first.pending(before=8.0)] == ["cid-1"]


def test_dynamodb_append_to_a_record_storing_nothing_owed_as_zero(store: Any) -> None:
    """A record an older version wrote with ``pending`` 0 owes a message after an append
    all the same (one more UpdateItem), and is in the pending index."""
    if kind_of(store) != "dynamodb":
        pytest.skip("DynamoDB only")
    fresh(store)
    store.client.update_item(TableName=store.table, Key={"pk": {"S": "cid-1"}, "sk": {"S": "record"}},
                             UpdateExpression="SET pending = :zero", ExpressionAttributeValues={":zero": {"N": "0"}})
    assert store.swap("cid-1", {"pending": 0.0}, {"status": "waiting"}).ok    # a stored 0 reads as nothing owed
    store.client.update_item(TableName=store.table, Key={"pk": {"S": "cid-1"}, "sk": {"S": "record"}},
                             UpdateExpression="SET pending = :zero", ExpressionAttributeValues={":zero": {"N": "0"}})
    with backend_calls(store) as calls:
        assert store.append("cid-1", event("e1", at=3.0)).ok
    assert calls == ["update_item", "update_item"]
    assert store.get("cid-1")["pending"] == 3.0
    assert [record["id"] for record in store.pending(before=4.0)] == ["cid-1"]


def test_dynamodb_append_on_moto_server(moto_url: str) -> None:
    """moto_server (the HTTP server) as well as the in-process mock: the update and
    condition expressions append relies on, end to end. Its own table: never a reset."""
    from sources.dynamodb import DynamoStore
    from sources.dynamodb_tables import create_tables
    url = f"arn:aws:dynamodb:us-east-1:123456789012:table/fsm-inbox-{uuid.uuid4().hex[:8]}"
    create_tables(url, endpoint_url=moto_url)
    store = DynamoStore(url, endpoint_url=moto_url)
    try:
        assert store.append("cid-1", event("e1")) == SwapResult(False, None)
        fresh(store, event_ids=["e-old"])
        assert store.append("cid-1", event("e-old")) == SwapResult(False, store.get("cid-1"))
        record = appended(store, "cid-1", event("e1", at=10.0, data=DATA))
        assert record["inbox"] == [{**event("e1", at=10.0, data=DATA), "pos": 1}] and record["pending"] == 10.0
        assert appended(store, "cid-1", event("e2", at=20.0))["pending"] == 10.0
        assert not store.append("cid-1", event("e1")).ok
        assert [r["id"] for r in store.pending(100.0)] == ["cid-1"]
        assert not store.swap("cid-1", {"inbox_end": 1}, {"inbox": []}).ok
        current = store.get("cid-1")
        assert store.swap("cid-1", {"inbox_end": 2}, {"inbox": current["inbox"][1:], "pending": 0.0}).ok
        assert store.pending(100.0) == []
        assert positions(appended(store, "cid-1", event("e3", at=30.0))) == [2, 3]
        assert store.swap("cid-1", {"inbox_end": 3}, {"inbox_end": 7}).ok
        assert positions(appended(store, "cid-1", event("e4", at=40.0))) == [2, 3, 8]
        assert [r["id"] for r in store.pending(100.0)] == ["cid-1"]
    finally:
        store.client.delete_table(TableName=url.rsplit("/", 1)[1])
        store.close()
