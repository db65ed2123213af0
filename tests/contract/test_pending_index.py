"""The pending index, on every store: ``pending(before, limit)`` lists the records whose
``0 < pending < before`` (instances that owe a message), oldest first.

Stores keep the index in the same atomic write as ``swap``, so what the index says must
follow exactly from the swaps that succeeded: these tests check it through the port only,
plus a few backend-specific ones (prefixes sharing a server or table, DynamoDB shards and
adding the index to an existing table). memcached cannot list keys: it must say so.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fsm.ports import PendingIndex


def fresh(store: Any, cid: str, **fields: Any) -> None:
    base = {"id": cid, "machine": "m", "status": "running", "step": 0, "fence": 0, "lease_owner": ""}
    assert store.swap(cid, None, {**base, **fields}).ok


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in records]


@pytest.fixture
def indexed(store: Any) -> Any:
    """The store under test; memcached is checked to refuse, then skipped."""
    if type(store).__name__ == "MemcacheStore":
        assert not isinstance(store, PendingIndex)
        pytest.skip("memcached has no pending index (it does not claim the capability, checked above)")
    return store


def test_pending_records_come_oldest_first_and_limited(indexed: Any) -> None:
    for cid, pending in [("c", 300.5), ("a", 100.0), ("idle", 0.0), ("b", 200.25), ("late", 900.0)]:
        fresh(indexed, cid, pending=pending, context={"cid": cid})
    fresh(indexed, "never-set")
    found = indexed.pending(500.0)
    assert ids(found) == ["a", "b", "c"]
    assert found == [indexed.get(cid) for cid in ("a", "b", "c")]   # full records
    assert found[1]["pending"] == 200.25 and found[1]["context"] == {"cid": "b"}
    assert ids(indexed.pending(500.0, limit=2)) == ["a", "b"]
    assert ids(indexed.pending(1000.0, limit=1)) == ["a"]
    assert indexed.pending(1000.0, limit=0) == []
    assert ids(indexed.pending(1000.0)) == ["a", "b", "c", "late"]


def test_before_is_exclusive(indexed: Any) -> None:
    fresh(indexed, "a", pending=100.0)
    assert indexed.pending(100.0) == []
    assert ids(indexed.pending(100.001)) == ["a"]


def test_setting_pending_to_zero_takes_a_record_out(indexed: Any) -> None:
    fresh(indexed, "a", pending=100.0)
    fresh(indexed, "b", pending=200.0)
    assert indexed.swap("a", {"step": 0}, {"step": 1, "pending": 0.0}).ok
    assert ids(indexed.pending(1000.0)) == ["b"]
    assert indexed.get("a")["step"] == 1 and not indexed.get("a").get("pending")
    assert indexed.swap("a", {"step": 1}, {"step": 2, "pending": 50.0}).ok   # and back in
    assert ids(indexed.pending(1000.0)) == ["a", "b"]


def test_commits_with_history_move_the_index_too(indexed: Any) -> None:
    """A commit (a swap with history) is a different write path on some stores."""
    fresh(indexed, "a")
    assert indexed.swap("a", {"step": 0}, {"step": 1, "pending": 10.0}, history=[{"n": 1}]).ok
    assert ids(indexed.pending(100.0)) == ["a"]
    assert indexed.swap("a", {"step": 1}, {"step": 2, "pending": 20.0}, history=[{"n": 2}]).ok
    assert [r["pending"] for r in indexed.pending(100.0)] == [20.0]
    assert indexed.swap("a", {"step": 2}, {"step": 3, "pending": 0.0}, history=[{"n": 3}]).ok
    assert indexed.pending(100.0) == []
    assert indexed.history("a") == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_a_failed_swap_leaves_the_index_alone(indexed: Any) -> None:
    fresh(indexed, "owing", pending=100.0)
    fresh(indexed, "settled", pending=0.0)
    assert not indexed.swap("owing", {"step": 7}, {"pending": 0.0}).ok
    assert not indexed.swap("owing", {"step": 7}, {"pending": 0.0}, history=[{"lost": 1}]).ok
    assert not indexed.swap("settled", {"step": 7}, {"pending": 50.0}).ok
    assert not indexed.swap("settled", {"step": 7}, {"pending": 50.0}, history=[{"lost": 1}]).ok
    assert not indexed.swap("settled", None, {"pending": 50.0}).ok          # exists already
    assert ids(indexed.pending(1000.0)) == ["owing"]
    assert indexed.get("owing")["pending"] == 100.0


def test_a_record_created_pending_is_listed(indexed: Any) -> None:
    assert indexed.swap("new", None, {"id": "new", "pending": 42.0}).ok
    assert indexed.swap("new-with-history", None, {"id": "new-with-history", "pending": 43.0},
                        history=[{"n": 1}]).ok
    assert ids(indexed.pending(100.0)) == ["new", "new-with-history"]


def test_swaps_not_naming_pending_keep_the_index_as_it_was(indexed: Any) -> None:
    fresh(indexed, "owing", pending=100.0)
    fresh(indexed, "settled", pending=0.0)
    fresh(indexed, "never")
    for cid in ("owing", "settled", "never"):      # a lease taken and released, as acquire does
        assert indexed.swap(cid, {"lease_owner": ""}, {"lease_owner": "w", "fence": 1}).ok
        assert indexed.swap(cid, {"fence": 1}, {"lease_owner": "", "step": 1}, history=[{"n": 1}]).ok
    found = indexed.pending(1000.0)
    assert ids(found) == ["owing"]
    assert found[0]["step"] == 1 and found[0]["fence"] == 1 and found[0]["pending"] == 100.0


def test_stores_with_other_prefixes_do_not_see_each_other(indexed: Any) -> None:
    store = indexed
    other = relabelled(store)
    if other is None:
        pytest.skip(f"{type(store).__name__} has no key prefix (each handle is its own namespace)")
    with contextlib.closing(other):
        fresh(store, "same-id", pending=100.0)
        fresh(other, "same-id", pending=50.0)
        fresh(other, "only-other", pending=60.0)
        assert [(r["id"], r["pending"]) for r in store.pending(1000.0)] == [("same-id", 100.0)]
        assert ids(other.pending(1000.0)) == ["same-id", "only-other"]
        assert other.swap("same-id", {}, {"pending": 0.0}).ok
        assert ids(store.pending(1000.0)) == ["same-id"]


def relabelled(store: Any) -> Any:
    """Another handle on the same server or table under another key prefix, or None."""
    kind = type(store).__name__
    if kind == "RedisStore":
        from sources.redis import RedisStore
        return RedisStore(store.url, client=store.client, prefix=store.prefix + "other:")
    if kind == "DynamoStore":
        from sources.dynamodb import DynamoStore
        return DynamoStore(store.url, client=store.client, prefix=store.prefix + "other:")
    return None


# ---- redis ----------------------------------------------------------------------------------


def test_redis_index_forgets_records_that_expired(redis_url: str) -> None:
    """An expired record leaves its index entry behind; ``pending`` drops it."""
    import redis

    from sources.redis import RedisStore
    prefix = f"fsmtest:{uuid.uuid4().hex[:12]}:"
    store = RedisStore(redis_url, prefix=prefix)
    try:
        fresh(store, "gone", pending=10.0)
        fresh(store, "kept", pending=20.0)
        store.client.delete(store._keys("gone")[0])          # what expiry does
        assert ids(store.pending(100.0)) == ["kept"]
        assert store.client.zrange(f"{prefix}{{pending}}", 0, -1) == [store._keys("kept")[0].encode()]
    finally:
        client = redis.Redis.from_url(redis_url)
        client.delete(*client.keys(f"{prefix}*"))
        client.close()
        store.close()


# ---- DynamoDB -------------------------------------------------------------------------------


@pytest.fixture
def dynamo() -> Iterator[tuple[str, Any]]:
    from conftest import in_process_dynamodb
    with in_process_dynamodb() as (url, client):
        yield url, client


def test_dynamodb_pending_across_shards_is_in_order(dynamo: tuple[str, Any]) -> None:
    from sources.dynamodb import DynamoStore
    url, client = dynamo
    store = DynamoStore(url, client=client, pending_shards=3)
    times = {f"cid-{n}": 1000.0 + (n * 37) % 50 + n / 100 for n in range(12)}
    for cid, pending in times.items():
        fresh(store, cid, pending=pending)
    expected = sorted(times, key=times.__getitem__)
    assert ids(store.pending(2000.0)) == expected
    assert ids(store.pending(2000.0, limit=5)) == expected[:5]
    shards = {item["owed_shard"]["S"] for item in client.scan(TableName=url.rsplit("/", 1)[1])["Items"]
              if "owed_shard" in item}
    assert len(shards) == 3                        # really spread over the shards


def test_dynamodb_settled_records_leave_the_sparse_index(dynamo: tuple[str, Any]) -> None:
    from sources.dynamodb import DynamoStore
    from sources.dynamodb_tables import OWED_INDEX
    url, client = dynamo
    store = DynamoStore(url, client=client)
    fresh(store, "a", pending=10.0)
    fresh(store, "b", pending=20.0)
    assert store.swap("a", {}, {"pending": 0.0}).ok
    assert store.swap("b", {}, {"pending": None}, history=[{"n": 1}]).ok
    table = url.rsplit("/", 1)[1]
    assert client.scan(TableName=table, IndexName=OWED_INDEX)["Items"] == []
    assert store.get("a")["pending"] == 0.0 and "pending" not in store.get("b")   # null: removed
    assert not {"owed_shard", "owed_at", "pending_shard"} & set(store.get("a"))


def test_dynamodb_a_running_chain_leaves_its_index_entry_alone(dynamo: tuple[str, Any]) -> None:
    """The index entry keeps the time the record started owing: the commits of a running
    chain move ``pending`` but not the entry, and the sweep reads the records to decide."""
    from sources.dynamodb import DynamoStore
    from sources.dynamodb_tables import OWED_INDEX
    url, client = dynamo
    table = url.rsplit("/", 1)[1]
    store = DynamoStore(url, client=client)
    fresh(store, "a", pending=10.0)
    for at in (20.0, 30.0, 40.0):
        assert store.swap("a", {}, {"pending": at}).ok
    (entry,) = client.scan(TableName=table, IndexName=OWED_INDEX)["Items"]
    assert entry["owed_at"] == {"N": "10.0"} and set(entry) == {"pk", "sk", "owed_shard", "owed_at"}
    assert ids(store.pending(35.0)) == []                   # a candidate, not overdue: its entry moves up
    (entry,) = client.scan(TableName=table, IndexName=OWED_INDEX)["Items"]
    assert entry["owed_at"] == {"N": "40.0"}
    assert ids(store.pending(40.5)) == ["a"] and store.pending(40.5)[0]["pending"] == 40.0
    assert store.swap("a", {}, {"pending": 0.0}).ok
    assert client.scan(TableName=table, IndexName=OWED_INDEX)["Items"] == []


def test_dynamodb_pending_is_oldest_first_by_the_records_own_pending(dynamo: tuple[str, Any]) -> None:
    """Entries sort by when each record started owing, the answer by its ``pending``."""
    from sources.dynamodb import DynamoStore
    url, client = dynamo
    store = DynamoStore(url, client=client)
    fresh(store, "early-start", pending=1.0)
    fresh(store, "late-start", pending=5.0)
    assert store.swap("early-start", {}, {"pending": 9.0}).ok       # its chain went on
    assert ids(store.pending(100.0)) == ["late-start", "early-start"]
    assert ids(store.pending(100.0, limit=1)) == ["late-start"]
    assert ids(store.pending(6.0)) == ["late-start"]


def test_dynamodb_reads_the_previous_pending_index_of_an_older_table(dynamo: tuple[str, Any]) -> None:
    """A record an earlier version left in ``pending-by-time`` is still found, and its
    next commit takes it out of that index and into ``owed-since``."""
    from sources.dynamodb import DynamoStore
    from sources.dynamodb_tables import OWED_INDEX, PENDING_INDEX, create_tables
    _, client = dynamo
    name = f"fsm-old-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t}
                              for n, t in [("pk", "S"), ("sk", "S"), ("pending_shard", "S"), ("pending", "N")]],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{"IndexName": PENDING_INDEX, "Projection": {"ProjectionType": "ALL"},
                                 "KeySchema": [{"AttributeName": "pending_shard", "KeyType": "HASH"},
                                               {"AttributeName": "pending", "KeyType": "RANGE"}]}])
    client.put_item(TableName=name, Item={
        "pk": {"S": "old"}, "sk": {"S": "record"}, "id": {"S": "old"}, "step": {"N": "1"}, "fence": {"N": "1"},
        "lease_owner": {"S": ""}, "pending": {"N": "5"}, "pending_shard": {"S": "pending#0"}})
    create_tables(url_of(name), client=client, index_wait=5)
    store = DynamoStore(url_of(name), client=client)
    fresh(store, "new", pending=7.0)
    assert ids(store.pending(100.0)) == ["old", "new"]
    assert store.swap("old", {}, {"pending": 8.0}).ok
    assert client.scan(TableName=name, IndexName=PENDING_INDEX)["Items"] == []
    assert len(client.scan(TableName=name, IndexName=OWED_INDEX)["Items"]) == 2
    assert ids(store.pending(100.0)) == ["new", "old"]


def test_dynamodb_create_tables_adds_the_index_to_an_older_table(dynamo: tuple[str, Any]) -> None:
    """A table created before the pending index existed gains it; running twice is fine."""
    from sources.dynamodb import DynamoStore
    from sources.dynamodb_tables import (
        INDEXES,
        LEGACY_INDEXES,
        OWED_INDEX,
        TIMER_INDEX,
        create_tables,
    )
    _, client = dynamo
    name = f"fsm-old-{uuid.uuid4().hex[:8]}"
    url = url_of(name)
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t}
                              for n, t in [("pk", "S"), ("sk", "S"), ("timer_shard", "S"), ("due", "N")]],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{"IndexName": TIMER_INDEX, "Projection": {"ProjectionType": "ALL"},
                                 "KeySchema": [{"AttributeName": "timer_shard", "KeyType": "HASH"},
                                               {"AttributeName": "due", "KeyType": "RANGE"}]}])
    create_tables(url, client=client, index_wait=5)
    create_tables(url, client=client, index_wait=5)
    indexes = {i["IndexName"] for i in client.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"]}
    assert indexes == set(INDEXES) - LEGACY_INDEXES >= {TIMER_INDEX, OWED_INDEX}   # none nothing writes
    store = DynamoStore(url, client=client)
    fresh(store, "a", pending=10.0)
    assert ids(store.pending(100.0)) == ["a"]


def url_of(table: str) -> str:
    from conftest import table_arn
    return table_arn(table)


def test_every_store_but_memcached_declares_the_pending_index(store_factory: Callable[[], Any]) -> None:
    store = store_factory()
    assert isinstance(store, PendingIndex) == (type(store).__name__ != "MemcacheStore")


def test_the_worker_says_when_a_store_cannot_heal_lost_messages(caplog: pytest.LogCaptureFixture) -> None:
    """A store without the index is reported once, by name, not silently skipped."""
    from config.loader import load_text
    from config.settings import Settings
    from fsm.app import App, build
    from fsm.app.worker import run_worker

    class NoIndex:
        url = "memcached://nowhere:1"

    definitions = load_text("machines:\n- name: m\n  states:\n  - {name: a, initial: true, final: true}\n")
    settings = Settings(store=["memory://"])
    wiring = build(definitions.machines, settings)
    wiring.dispatcher.stores.append(NoIndex())  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="fsm"):
        run_worker(App(definitions, settings, wiring), [], idle_exit=0.0)
    assert any("no pending index" in r.getMessage() and "memcached://nowhere:1" in r.getMessage()
               for r in caplog.records)
