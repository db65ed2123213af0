"""One suite, every InstanceStore (and TimerStore): they must be interchangeable.

The fixtures in ``tests/conftest.py`` give each test an empty store of every kind:
memory, sqlite, redis (a real redis-server), fakeredis, memcached (a real server) and
DynamoDB (moto in-process). The dispatcher's lease and failover logic is written once on
top of these primitives, so any difference between backends shows up here first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fsm.ports import SwapResult

CONTEXT = {
    "order": {"id": "A-1", "lines": [{"sku": "x", "qty": 2, "price": 9.99}], "notes": None},
    "ratio": 0.1 + 0.2,
    "tiny": 1e-300,
    "big": 2**53,
    "text": "naïve café ✓ 日本",
    "flags": [True, False, None],
    "empty": {"list": [], "dict": {}},
}


def fresh(store: Any, cid: str = "cid-1", **fields: Any) -> None:
    base = {"id": cid, "machine": "m", "status": "running", "state": "start", "step": 0,
            "retries": 0, "fence": 0, "lease_owner": "", "lease_expires": 0}
    assert store.swap(cid, None, {**base, **fields}).ok


def after(store: Any, result: SwapResult, cid: str = "cid-1") -> dict[str, Any]:
    """The record a successful swap wrote (some backends return None with history)."""
    assert result.ok
    current = store.get(cid)
    if result.record is not None:
        assert result.record == current
    return current


# ---- create and conditions --------------------------------------------------------------


def test_create_when_absent_returns_the_record(store: Any) -> None:
    result = store.swap("cid-1", None, {"id": "cid-1", "step": 0, "status": "running"})
    assert result.ok
    assert result.record == {"id": "cid-1", "step": 0, "status": "running"}
    assert store.get("cid-1") == result.record


def test_create_on_existing_fails_and_returns_current(store: Any) -> None:
    fresh(store, step=3)
    result = store.swap("cid-1", None, {"step": 0, "status": "other"})
    assert not result.ok
    assert result.record is not None and result.record["step"] == 3
    assert result.record["status"] == "running"


def test_expect_on_missing_record_fails_with_none(store: Any) -> None:
    assert store.swap("nobody", {"step": 0}, {"step": 1}) == SwapResult(False, None)
    assert store.swap("nobody", {}, {"step": 1}) == SwapResult(False, None)
    assert store.get("nobody") is None


def test_equality_on_int_and_str_fields(store: Any) -> None:
    fresh(store, step=4, lease_owner="worker-a")
    assert not store.swap("cid-1", {"step": 5}, {"status": "x"}).ok
    assert not store.swap("cid-1", {"step": 4, "lease_owner": "worker-b"}, {"status": "x"}).ok
    assert not store.swap("cid-1", {"step": "4"}, {"status": "x"}).ok     # a str is not an int
    result = store.swap("cid-1", {"step": 4, "lease_owner": "worker-a"}, {"status": "waiting"})
    assert after(store, result)["status"] == "waiting"


def test_expect_on_float_and_json_fields(store: Any) -> None:
    fresh(store, created_at=1700000000.25, state="waiting-for-payment")
    assert not store.swap("cid-1", {"created_at": 1700000000.5}, {"step": 1}).ok
    assert store.swap("cid-1", {"created_at": 1700000000.25, "state": "waiting-for-payment"}, {"step": 1}).ok


def test_expect_none_value_matches_null_or_missing_field(store: Any) -> None:
    fresh(store, last_error=None)
    assert store.swap("cid-1", {"last_error": None, "never_set": None}, {"step": 1}).ok
    assert not store.swap("cid-1", {"step": None}, {"step": 2}).ok


def test_merge_keeps_untouched_fields(store: Any) -> None:
    fresh(store, context={"a": 1}, fence=7)
    record = after(store, store.swap("cid-1", {"fence": 7}, {"step": 1, "lease_owner": "w"}))
    assert record["context"] == {"a": 1} and record["fence"] == 7 and record["machine"] == "m"
    assert record["step"] == 1 and record["lease_owner"] == "w"


def test_failed_condition_changes_nothing(store: Any) -> None:
    fresh(store, step=2)
    before = store.get("cid-1")
    result = store.swap("cid-1", {"step": 1}, {"step": 9, "status": "done"}, history=[{"e": 1}])
    assert result == SwapResult(False, before)
    assert store.get("cid-1") == before
    assert store.history("cid-1") == []


def test_get_of_unknown_id_is_none(store: Any) -> None:
    assert store.get("never-seen") is None
    assert store.history("never-seen") == []


def test_empty_fields_still_create_and_swap(store: Any) -> None:
    assert store.swap("cid-1", None, {}).ok
    assert store.get("cid-1") == {}
    assert not store.swap("cid-1", None, {}).ok
    assert store.swap("cid-1", {}, {"step": 1}).ok


# ---- values -----------------------------------------------------------------------------


def test_json_fields_round_trip_exactly(store: Any) -> None:
    outbox = [{"message": {"machine": "m", "data": {"k": [1, 2.5, "ü"]}}, "delay": 0.0}]
    checkpoint = {"source": "arn:aws:kinesis:us-east-1:1:stream/s", "sequence": "4960" * 10}
    fresh(store, context=CONTEXT, outbox=outbox, checkpoint=checkpoint, last_error=None,
          state=None, updated_at=1700000000.123456, lease_expires=1700000000123,
          extra_field={"unknown": ["kinds", "round", "trip"]})
    record = store.get("cid-1")
    assert record["context"] == CONTEXT
    assert type(record["context"]["ratio"]) is float and record["context"]["ratio"] == 0.1 + 0.2
    assert record["context"]["big"] == 2**53 and type(record["context"]["big"]) is int
    assert record["outbox"] == outbox and record["checkpoint"] == checkpoint
    assert record["last_error"] is None and record["state"] is None
    assert record["updated_at"] == 1700000000.123456 and type(record["updated_at"]) is float
    assert record["lease_expires"] == 1700000000123 and type(record["lease_expires"]) is int
    assert record["step"] == 0 and type(record["step"]) is int
    assert record["extra_field"] == {"unknown": ["kinds", "round", "trip"]}


def test_returned_records_are_copies(store: Any) -> None:
    fresh(store, context={"a": [1]})
    record = store.get("cid-1")
    record["context"]["a"].append(2)
    assert store.get("cid-1")["context"] == {"a": [1]}


# ---- history ----------------------------------------------------------------------------


def test_history_is_appended_in_order_with_the_swap(store: Any) -> None:
    assert store.swap("cid-1", None, {"step": 0}, history=[{"n": 1}]).ok
    after(store, store.swap("cid-1", {"step": 0}, {"step": 1}, history=[{"n": 2}, {"n": 3}, {"n": 4}]))
    assert not store.swap("cid-1", {"step": 0}, {"step": 9}, history=[{"n": "lost"}]).ok
    after(store, store.swap("cid-1", {"step": 1}, {"step": 2}, history=[{"n": 5, "ctx": CONTEXT}]))
    assert store.history("cid-1") == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}, {"n": 5, "ctx": CONTEXT}]
    assert store.get("cid-1")["step"] == 2


def test_history_of_instances_is_kept_apart(store: Any) -> None:
    fresh(store, "a")
    fresh(store, "b")
    store.swap("a", {}, {}, history=[{"of": "a"}])
    store.swap("b", {}, {}, history=[{"of": "b"}, {"of": "b2"}])
    assert store.history("a") == [{"of": "a"}]
    assert store.history("b") == [{"of": "b"}, {"of": "b2"}]


def test_another_handle_continues_the_history(store_factory: Callable[[], Any]) -> None:
    """A second client (another Lambda) knows nothing the first one cached."""
    first, second = store_factory(), store_factory()
    fresh(first)
    first.swap("cid-1", {"step": 0}, {"step": 1}, history=[{"n": 1}])
    assert second.swap("cid-1", {"step": 1}, {"step": 2}, history=[{"n": 2}]).ok
    assert first.swap("cid-1", {"step": 2}, {"step": 3}, history=[{"n": 3}]).ok
    assert not second.swap("cid-1", {"step": 2}, {"step": 3}, history=[{"n": "lost"}]).ok
    assert first.history("cid-1") == second.history("cid-1") == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_long_history_reads_back_complete(store: Any) -> None:
    fresh(store)
    for step in range(21):
        batch = [{"step": step, "i": i} for i in range(50)]
        assert store.swap("cid-1", {"step": step}, {"step": step + 1}, history=batch).ok
    for step in range(21, 81):      # and many swaps of one entry each
        assert store.swap("cid-1", {"step": step}, {"step": step + 1}, history=[{"step": step, "i": 0}]).ok
    entries = store.history("cid-1")
    assert len(entries) == 21 * 50 + 60
    assert entries == sorted(entries, key=lambda e: (e["step"], e["i"]))
    assert entries[0] == {"step": 0, "i": 0} and entries[-1] == {"step": 80, "i": 0}


# ---- concurrency ------------------------------------------------------------------------


def test_one_of_eight_racing_swaps_wins(store_factory: Callable[[], Any]) -> None:
    fresh(store_factory(), fence=1)
    handles = [store_factory() for _ in range(8)]
    barrier = threading.Barrier(len(handles))
    results: list[SwapResult] = []
    errors: list[BaseException] = []

    def race(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(handles[index].swap("cid-1", {"fence": 1, "lease_owner": ""},
                                               {"fence": 2, "lease_owner": f"w{index}"},
                                               history=[{"won_by": f"w{index}"}]))
        except BaseException as exc:   # noqa: BLE001 - re-raised below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(handles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    winners = [r for r in results if r.ok]
    assert len(results) == 8 and len(winners) == 1
    record = handles[0].get("cid-1")
    assert record["fence"] == 2
    assert handles[0].history("cid-1") == [{"won_by": record["lease_owner"]}]
    for loser in (r for r in results if not r.ok):
        assert loser.record is not None and loser.record["fence"] == 2


def test_racing_creates_make_one_record(store_factory: Callable[[], Any]) -> None:
    handles = [store_factory() for _ in range(8)]
    barrier = threading.Barrier(len(handles))
    results: list[SwapResult] = []

    def create(index: int) -> None:
        barrier.wait(timeout=10)
        results.append(handles[index].swap("new", None, {"owner": index}))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(handles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(r.ok for r in results) == 1
    owner = handles[0].get("new")["owner"]
    assert all(r.record == {"owner": owner} for r in results if not r.ok and r.record is not None)


# ---- timers -----------------------------------------------------------------------------


def test_timers_come_due_in_order(timers: Any) -> None:
    timers.add("late", 300.0, "body-late")
    timers.add("early", 100.0, "body-early")
    timers.add("middle", 200.5, "body-middle")
    assert timers.due(50.0) == []
    assert timers.due(250.0) == [("early", "body-early"), ("middle", "body-middle")]
    assert timers.due(1000.0, limit=1) == [("early", "body-early")]
    assert timers.due(1000.0) == [("early", "body-early"), ("middle", "body-middle"), ("late", "body-late")]


def test_timer_add_is_idempotent_and_remove_forgets(timers: Any) -> None:
    timers.add("t1", 100.0, "first")
    timers.add("t1", 50.0, "second")
    assert timers.due(1000.0) == [("t1", "first")]
    timers.remove("t1")
    timers.remove("t1")
    timers.remove("never-added")
    assert timers.due(1000.0) == []
