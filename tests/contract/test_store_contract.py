"""One suite, every InstanceStore (and TimerStore): they must be interchangeable.

The fixtures in ``tests/conftest.py`` give each test an empty store of every kind:
memory, sqlite, redis (a real redis-server), fakeredis, memcached (a real server) and
DynamoDB (moto in-process). The dispatcher's lease and failover logic is written once on
top of these primitives, so any difference between backends shows up here first.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fsm.errors import RecoverableError
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


# ---- what a handle remembers of its own writes ------------------------------------------
# memcached writes without reading when it wrote the record last (see sources/memcache.py);
# DynamoDB guesses the history length. A handle that wrote last and then fell behind must
# lose to the writer that came after it, or merge onto the current record.


def test_a_handle_that_wrote_last_merges_onto_what_another_wrote_since(store_factory: Callable[[], Any]) -> None:
    first, second = store_factory(), store_factory()
    fresh(first, context={"by": "first"})
    assert first.swap("cid-1", {"step": 0}, {"step": 1}).ok                  # first wrote last...
    assert second.swap("cid-1", {"step": 1}, {"context": {"by": "second"}}).ok  # ...then second
    assert first.swap("cid-1", {"step": 1}, {"step": 2}).ok
    record = first.get("cid-1")
    assert record["step"] == 2 and record["context"] == {"by": "second"}


def test_a_handle_that_fell_behind_cannot_commit(store_factory: Callable[[], Any]) -> None:
    worker, rival = store_factory(), store_factory()
    fresh(worker, fence=1)
    assert worker.swap("cid-1", {"fence": 1, "lease_owner": ""}, {"fence": 2, "lease_owner": "w"}).ok
    taken = rival.swap("cid-1", {"fence": 2, "lease_owner": "w"}, {"fence": 3, "lease_owner": "r"})
    assert taken.ok
    result = worker.swap("cid-1", {"fence": 2, "lease_owner": "w"}, {"step": 1, "lease_owner": ""},
                         history=[{"by": "w"}])
    assert not result.ok and result.record is not None and result.record["lease_owner"] == "r"
    assert worker.history("cid-1") == []
    # and the rival, whose write is the current one, goes on
    assert rival.swap("cid-1", {"fence": 3, "lease_owner": "r"}, {"step": 1, "lease_owner": ""}).ok


def test_memcached_commit_after_acquire_skips_the_read(memcached_url: str) -> None:
    """The point of ``ms``: a handle that wrote the record last writes again without ``gets``."""
    from sources.memcache import MemcacheStore
    store = MemcacheStore(memcached_url, prefix=f"fsmtest:{uuid.uuid4().hex[:8]}:")
    calls = Tally(store.client)
    store.client = calls
    try:
        fresh(store)
        assert store.swap("cid-1", {"step": 0, "lease_owner": ""}, {"lease_owner": "w", "fence": 1}).ok
        assert store.swap("cid-1", {"fence": 1, "lease_owner": "w"}, {"step": 1, "lease_owner": ""},
                          history=[{"n": 1}]).ok
        assert calls.names == ["meta_set", "meta_set", "meta_set"]     # history rides in the value
        assert store.get("cid-1")["step"] == 1 and store.history("cid-1") == [{"n": 1}]
    finally:
        store.close()


def test_memcached_never_trusts_a_token_from_before_a_restart(server_logs: Path) -> None:
    """Tokens count from 1 again after a restart: the one a handle remembers may name
    another write by then. Here it does, and the handle must still merge onto that write."""
    from conftest import Server, answers, free_port

    from sources.memcache import MemcacheStore
    port = free_port()

    def start() -> Server:
        return Server("memcached", ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64",
                                    "-u", "root"], lambda: answers(port, b"version\r\n", (b"VERSION",)),
                      server_logs / f"memcached-restart-{port}.log")

    if not shutil.which("memcached"):
        pytest.skip("memcached is not installed")
    server = start()
    url = f"memcached://127.0.0.1:{port}"
    stale, other = MemcacheStore(url), MemcacheStore(url)
    try:
        assert stale.swap("cid-1", None, {"step": 0}).ok                  # token 1
        assert stale.swap("cid-1", {"step": 0}, {"step": 1}).ok           # token 2, remembered
        server.stop()
        server = start()
        assert other.swap("cid-1", None, {"step": 0, "by": "other"}).ok   # token 1 again
        assert other.swap("cid-1", {"step": 0}, {"step": 1}).ok           # token 2 again
        for _ in range(3):          # the first call meets the connection the restart closed,
            try:                    # the next one opens a new connection: to the new server
                stale.get("cid-1")
                break
            except RecoverableError:
                continue
        assert stale.swap("cid-1", {"step": 1}, {"step": 2}).ok
        assert other.get("cid-1") == {"step": 2, "by": "other"}
    finally:
        stale.close()
        other.close()
        server.stop()


def test_memcached_without_meta_commands_uses_gets_and_cas(memcached_url: str) -> None:
    """A server before 1.6 answers ``ms`` with ERROR: the store switches to gets + cas."""
    from pymemcache.exceptions import MemcacheUnknownCommandError

    from sources.memcache import MemcacheStore, MetaClient

    class OldServer(MetaClient):
        def meta_set(self, *args: Any, **kwargs: Any) -> Any:
            raise MemcacheUnknownCommandError(b"ms")

    host, port = memcached_url.rsplit("/", 1)[1].split(":")
    store = MemcacheStore(memcached_url, client=OldServer((host, int(port)), default_noreply=False),
                          prefix=f"fsmtest:{uuid.uuid4().hex[:8]}:")
    try:
        fresh(store)
        assert store.swap("cid-1", {"step": 0}, {"step": 1}, history=[{"n": 1}]).ok
        assert not store.swap("cid-1", {"step": 0}, {"step": 9}).ok
        assert store.get("cid-1")["step"] == 1 and store.history("cid-1") == [{"n": 1}]
    finally:
        store.client.close()


class Tally:
    """A client wrapper that records the names of the calls made through it."""

    def __init__(self, inner: Any):
        self.inner, self.names = inner, []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_") or name in ("check_key", "close"):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.names.append(name)
            return attr(*args, **kwargs)
        return counted


# ---- DynamoDB: the checkpoint rides with the commit -------------------------------------

CHECKPOINT = {"arn": "arn:aws:kinesis:us-east-1:123456789012:stream/s", "shard": "shardId-000000000000",
              "sequence": "49590338271490256608559692538361571095921575989136588898"}


@pytest.fixture
def dynamo() -> Iterator[tuple[str, Any]]:
    from conftest import in_process_dynamodb
    with in_process_dynamodb() as (url, client):
        yield url, client


def test_dynamodb_commit_carries_the_checkpoint_in_the_record(dynamo: tuple[str, Any]) -> None:
    """By default the instance's position is the record's ``checkpoint``: a Kinesis
    commit is the same single conditional UpdateItem as any other, no transaction, and
    the dispatcher (checkpoint table = this table) writes nothing of its own."""
    from sources.dynamodb import DynamoStore
    from sources.dynamodb_checkpoints import DynamoCheckpoints
    url, client = dynamo
    calls = Tally(client)
    store = DynamoStore(url, client=calls)
    assert store.writes_checkpoints and not store.checkpoint_items
    fresh(store)
    calls.names.clear()
    result = store.swap("cid-1", {"step": 0}, {"step": 1, "checkpoint": CHECKPOINT}, history=[{"n": 1}])
    assert result.ok and result.record is not None and result.record["checkpoint"] == CHECKPOINT
    assert calls.names == ["update_item"]
    assert not store.swap("cid-1", {"step": 0}, {"step": 9, "checkpoint": {**CHECKPOINT, "sequence": "1"}}).ok
    assert store.get("cid-1")["checkpoint"] == CHECKPOINT
    assert DynamoCheckpoints(url, client=client).get("cid-1") is None     # no item of its own
    assert store.history("cid-1") == [{"n": 1}]


def test_dynamodb_commit_writes_the_checkpoint_item_in_its_transaction(dynamo: tuple[str, Any]) -> None:
    """``checkpoint_items``: the position is also put as its own item, in one transaction
    with the record, so ``fsm resume`` finds it after the record is gone."""
    from sources.dynamodb import DynamoStore
    from sources.dynamodb_checkpoints import DynamoCheckpoints
    url, client = dynamo
    calls = Tally(client)
    store = DynamoStore(url, client=calls, checkpoint_items=True)
    assert store.writes_checkpoints
    fresh(store)
    calls.names.clear()
    assert store.swap("cid-1", {"step": 0}, {"step": 1, "checkpoint": CHECKPOINT}, history=[{"n": 1}]).ok
    assert calls.names == ["transact_write_items"]                 # still one round trip
    later = {**CHECKPOINT, "sequence": CHECKPOINT["sequence"][:-1] + "9"}
    assert store.swap("cid-1", {"step": 1}, {"step": 2, "checkpoint": later}, history=[{"n": 2}]).ok
    assert not store.swap("cid-1", {"step": 1}, {"step": 9, "checkpoint": CHECKPOINT}, history=[{"n": 0}]).ok
    assert store.history("cid-1") == [{"n": 1}, {"n": 2}]
    client.delete_item(TableName=url.rsplit("/", 1)[1], Key={"pk": {"S": "cid-1"}, "sk": {"S": "record"}})
    assert store.get("cid-1") is None
    assert DynamoCheckpoints(url, client=client).get("cid-1") == later


def test_dynamodb_checkpoint_without_history_is_written_too(dynamo: tuple[str, Any]) -> None:
    """The dispatcher skips its own PutItem for a store that ``writes_checkpoints``:
    with ``checkpoint_items``, every swap carrying a checkpoint must write it, history or not."""
    from sources.dynamodb import DynamoStore
    from sources.dynamodb_checkpoints import DynamoCheckpoints
    url, client = dynamo
    store = DynamoStore(url, client=client, checkpoint_items=True)
    fresh(store)
    assert store.swap("cid-1", {"step": 0}, {"step": 1, "checkpoint": CHECKPOINT}).ok
    assert store.swap("cid-1", {"step": 1}, {"step": 2, "checkpoint": None}).ok   # null: kept as it was
    assert store.get("cid-1")["step"] == 2
    assert DynamoCheckpoints(url, client=client).get("cid-1") == CHECKPOINT
    assert DynamoCheckpoints(url, client=client).get("other") is None


def test_dynamodb_checkpoints_read_with_the_store_prefix(dynamo: tuple[str, Any]) -> None:
    from sources.dynamodb import DynamoStore
    from sources.dynamodb_checkpoints import DynamoCheckpoints
    url, client = dynamo
    store = DynamoStore(url, client=client, prefix="tenant-a:", checkpoint_items=True)
    fresh(store)
    assert store.swap("cid-1", {"step": 0}, {"step": 1, "checkpoint": CHECKPOINT, "expires_at": 4102444800},
                      history=[{"n": 1}]).ok
    assert DynamoCheckpoints(url, client=client, prefix="tenant-a:").get("cid-1") == CHECKPOINT
    assert DynamoCheckpoints(url, client=client).get("cid-1") is None
    item = client.get_item(TableName=url.rsplit("/", 1)[1],
                           Key={"pk": {"S": "tenant-a:ckpt#cid-1"}, "sk": {"S": "checkpoint"}})["Item"]
    assert item["ttl"] == {"N": "4102444800"}      # retention: it expires with the commit's record
    # and what the dispatcher's own writes (settings `checkpoint:` on another table) look like
    other = DynamoCheckpoints(url, client=client, prefix="tenant-a:")
    other["shard-reader"] = {"sequence": "1"}
    assert other.get("shard-reader") == {"sequence": "1"}


def test_dynamodb_writes_no_checkpoint_item_nothing_can_resume_from(dynamo: tuple[str, Any]) -> None:
    """A DynamoDB stream position (no shard) cannot be replayed; and a store told not to
    write checkpoints does not."""
    from sources.dynamodb import DynamoStore
    from sources.dynamodb_checkpoints import DynamoCheckpoints
    url, client = dynamo
    store = DynamoStore(url, client=client, checkpoint_items=True)
    fresh(store)
    stream_position = {"arn": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x", "shard": None,
                       "sequence": "100"}
    assert store.swap("cid-1", {"step": 0}, {"step": 1, "checkpoint": stream_position}, history=[{"n": 1}]).ok
    assert store.get("cid-1")["checkpoint"] == stream_position      # the record still has it
    quiet = DynamoStore(url, client=client, write_checkpoints=False, checkpoint_items=True)
    assert not quiet.writes_checkpoints
    fresh(quiet, "cid-2")
    assert quiet.swap("cid-2", {"step": 0}, {"step": 1, "checkpoint": CHECKPOINT}, history=[{"n": 1}]).ok
    positions = DynamoCheckpoints(url, client=client)
    assert positions.get("cid-1") is None and positions.get("cid-2") is None
