"""Listing instances, on every store: ``list_instances`` returns a page of records
matching every filter given, most recently updated first (ties: id descending), and a
cursor to the next page (``None`` after the last).

Stores keep their listing index in the same atomic write as ``swap``, so what a listing
returns must follow from the swaps that succeeded: these tests check it through the port
only, plus a few backend-specific ones (prefixes sharing a server or table, expired redis
records, a sqlite file and a DynamoDB table made before listing existed, DynamoDB shards).
memcached cannot list keys: it must not claim the capability.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fsm.ports import InstanceIndex

STATUSES = ("running", "waiting", "done", "failed", "cancelled")


def put(store: Any, cid: str, updated_at: float, machine: str = "m", status: str = "waiting",
        state: str | None = "s", **fields: Any) -> None:
    record = {"id": cid, "machine": machine, "status": status, "state": state, "step": 0, "retries": 0,
              "fence": 0, "lease_owner": "", "updated_at": updated_at, "created_at": updated_at}
    assert store.swap(cid, None, {**record, **fields}).ok


def ids(page: tuple[list[dict[str, Any]], str | None]) -> list[str]:
    return [record["id"] for record in page[0]]


def every_page(store: Any, limit: int, **filters: Any) -> list[list[str]]:
    """The ids of every page, following the cursors to the end."""
    pages, cursor = [], None
    for _ in range(1000):       # a listing that loops would never end: fail instead
        records, cursor = store.list_instances(limit=limit, cursor=cursor, **filters)
        pages.append([record["id"] for record in records])
        if cursor is None:
            return pages
    raise AssertionError("paging did not end")


@pytest.fixture
def indexed(store: Any) -> Any:
    """The store under test; memcached is checked to refuse, then skipped."""
    if type(store).__name__ == "MemcacheStore":
        assert not isinstance(store, InstanceIndex)
        assert not hasattr(store, "list_instances")
        pytest.skip("memcached cannot list instances (it does not claim the capability, checked above)")
    return store


@pytest.fixture
def fleet(indexed: Any) -> Any:
    """Twelve instances: two machines, every status, a few states, distinct times."""
    for n in range(12):
        put(indexed, f"i{n:02d}", 1000.0 + n, machine="a" if n % 2 else "b", status=STATUSES[n % 5],
            state=f"s{n % 3}")
    return indexed


def test_every_store_but_memcached_can_list(store_factory: Callable[[], Any]) -> None:
    """The client lists from the first store that can, and names the store that cannot."""
    from fsm.app.listing import ListingUnsupported, listing_store

    store = store_factory()
    if type(store).__name__ != "MemcacheStore":
        assert isinstance(store, InstanceIndex) and listing_store([store]) is store
        return
    assert not isinstance(store, InstanceIndex)
    with pytest.raises(ListingUnsupported) as refused:
        listing_store([store])
    message = str(refused.value)
    assert store.url in message and "cannot list instances" in message
    assert "sqlite" in message and "redis" in message and "DynamoDB" in message


def test_most_recently_updated_first_with_full_records(indexed: Any) -> None:
    put(indexed, "old", 100.0, context={"k": 1})
    put(indexed, "new", 300.5)
    put(indexed, "mid", 200.25)
    records, cursor = indexed.list_instances()
    assert [r["id"] for r in records] == ["new", "mid", "old"] and cursor is None
    assert records[2] == indexed.get("old") and records[2]["context"] == {"k": 1}


def test_ties_in_time_are_ordered_by_id_descending(indexed: Any) -> None:
    for cid in ("b", "a", "c", "ab"):
        put(indexed, cid, 500.0)
    assert ids(indexed.list_instances()) == ["c", "b", "ab", "a"]
    assert every_page(indexed, 1) == [["c"], ["b"], ["ab"], ["a"]]


def test_filters_combine(fleet: Any) -> None:
    assert ids(fleet.list_instances(limit=100)) == [f"i{n:02d}" for n in range(11, -1, -1)]
    assert ids(fleet.list_instances(machine="a")) == ["i11", "i09", "i07", "i05", "i03", "i01"]
    assert ids(fleet.list_instances(status="waiting")) == ["i11", "i06", "i01"]
    assert ids(fleet.list_instances(machine="a", status="waiting")) == ["i11", "i01"]
    assert ids(fleet.list_instances(machine="a", state="s0")) == ["i09", "i03"]
    assert ids(fleet.list_instances(machine="b", state="s0", status="running")) == ["i00"]
    assert ids(fleet.list_instances(machine="b", state="s0", status="done")) == []
    assert ids(fleet.list_instances(machine="c")) == []
    assert ids(fleet.list_instances(machine="a", state="nowhere")) == []


def test_paging_returns_each_instance_once_in_order(fleet: Any) -> None:
    everything = [f"i{n:02d}" for n in range(11, -1, -1)]
    for limit in (1, 3, 5, 11, 12, 13):
        pages = every_page(fleet, limit)
        assert [cid for page in pages for cid in page] == everything
        assert all(len(page) == limit for page in pages[:-1]) and 0 < len(pages[-1]) <= limit
    pages = every_page(fleet, 2, machine="a")
    assert pages == [["i11", "i09"], ["i07", "i05"], ["i03", "i01"]]    # an exact fit: no empty last page
    assert every_page(fleet, 1, machine="b", state="s0") == [["i06"], ["i00"]]


def test_since_is_inclusive_and_combines_with_paging(fleet: Any) -> None:
    assert ids(fleet.list_instances(since=1009.0)) == ["i11", "i10", "i09"]
    assert ids(fleet.list_instances(since=1009.000001)) == ["i11", "i10"]
    assert ids(fleet.list_instances(since=5000.0)) == []
    assert every_page(fleet, 2, since=1007.0, machine="a") == [["i11", "i09"], ["i07"]]


def test_a_cursor_older_than_since_leads_nowhere(fleet: Any) -> None:
    _, cursor = fleet.list_instances(limit=6)
    assert fleet.list_instances(cursor=cursor, since=1008.0) == ([], None)
    assert ids(fleet.list_instances(cursor=cursor, since=1004.0)) == ["i05", "i04"]


def test_an_instance_updated_while_paging_moves_to_the_first_page_only(fleet: Any) -> None:
    """An update that changes the status (DynamoDB orders by the time of the last change
    of status: see the DynamoDB test below for one that does not)."""
    first, cursor = fleet.list_instances(limit=4)
    assert [r["id"] for r in first] == ["i11", "i10", "i09", "i08"]
    assert fleet.swap("i02", {}, {"updated_at": 2000.0, "status": "failed"}).ok     # not yet listed: moves ahead
    assert fleet.swap("i10", {}, {"updated_at": 2001.0, "status": "done"}).ok       # listed already
    rest = []
    while cursor is not None:
        records, cursor = fleet.list_instances(limit=4, cursor=cursor)
        rest += [r["id"] for r in records]
    assert rest == ["i07", "i06", "i05", "i04", "i03", "i01", "i00"]
    assert ids(fleet.list_instances(limit=3)) == ["i10", "i02", "i11"]


def test_changes_of_status_and_state_move_an_instance_between_filters(indexed: Any) -> None:
    put(indexed, "x", 10.0, status="running", state=None)
    assert indexed.swap("x", {"fence": 0}, {"fence": 1, "lease_owner": "w"}).ok     # a lease: nothing moves
    assert ids(indexed.list_instances(status="running")) == ["x"]
    assert indexed.swap("x", {"fence": 1}, {"state": "s1", "status": "waiting", "updated_at": 20.0,
                                            "lease_owner": ""}, history=[{"n": 1}]).ok   # a commit
    assert ids(indexed.list_instances(status="running")) == []
    assert ids(indexed.list_instances(machine="m", state="s1", status="waiting")) == ["x"]
    assert indexed.swap("x", {"fence": 1}, {"status": "failed", "updated_at": 30.0}).ok   # status only
    assert ids(indexed.list_instances(machine="m", state="s1", status="failed")) == ["x"]
    assert ids(indexed.list_instances(machine="m", status="waiting")) == []
    assert indexed.swap("x", {"fence": 1}, {"updated_at": 40.0}, history=[{"n": 2}]).ok   # time only
    # DynamoDB lists by the time of the last change of status (30.0), the others by updated_at
    since = 30.0 if type(indexed).__name__ == "DynamoStore" else 40.0
    assert ids(indexed.list_instances(machine="m", state="s1", since=since)) == ["x"]
    assert ids(indexed.list_instances(machine="m", state="s1", since=since + 0.5)) == []
    assert indexed.swap("x", {"fence": 1}, {"state": "s2"}).ok                            # state only
    assert ids(indexed.list_instances(machine="m", state="s1")) == []
    records, _ = indexed.list_instances(machine="m", state="s2", status="failed")
    assert records == [indexed.get("x")] and records[0]["updated_at"] == 40.0


def test_a_failed_swap_leaves_the_index_alone(indexed: Any) -> None:
    put(indexed, "x", 10.0, status="waiting")
    assert not indexed.swap("x", {"step": 9}, {"status": "done", "updated_at": 99.0}).ok
    assert not indexed.swap("x", {"step": 9}, {"status": "done", "updated_at": 99.0}, history=[{"n": 1}]).ok
    assert not indexed.swap("x", None, {"id": "x", "status": "done", "updated_at": 99.0}).ok
    assert ids(indexed.list_instances(status="waiting")) == ["x"]
    assert ids(indexed.list_instances(status="done")) == []
    assert ids(indexed.list_instances(since=50.0)) == []


def test_another_handle_keeps_the_index_right(store_factory: Callable[[], Any]) -> None:
    """A second client (another process) changes what the first one last saw of an
    instance; the first one's later writes must still put it in the right place."""
    first = store_factory()
    if not isinstance(first, InstanceIndex):
        pytest.skip("memcached cannot list instances")
    second = store_factory()
    put(first, "x", 10.0, status="running", state="s1")
    assert first.get("x")["state"] == "s1"
    assert second.swap("x", {}, {"state": "s2", "updated_at": 20.0}).ok
    assert first.swap("x", {}, {"status": "done"}).ok
    assert ids(first.list_instances(machine="m", state="s2", status="done")) == ["x"]
    assert ids(second.list_instances(machine="m", state="s1")) == []
    fresh = store_factory()     # has seen nothing of it
    assert fresh.swap("x", {"status": "done"}, {"state": "s3", "updated_at": 30.0}).ok
    assert ids(first.list_instances(machine="m", state="s3", status="done")) == ["x"]


def test_records_without_a_status_are_not_listed(indexed: Any) -> None:
    assert indexed.swap("bare", None, {"id": "bare", "pending": 1.0}).ok
    put(indexed, "real", 5.0)
    assert ids(indexed.list_instances()) == ["real"]


@pytest.mark.parametrize("bad", [
    {"status": "sleeping"}, {"limit": 0}, {"limit": 1001}, {"limit": "10"}, {"state": "s"},
    {"since": float("nan")}, {"cursor": "nonsense"}, {"cursor": "12:"}, {"cursor": "abc.123456:x"},
])
def test_bad_arguments_are_refused(indexed: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        indexed.list_instances(**bad)


def test_stores_with_other_prefixes_do_not_see_each_other(indexed: Any) -> None:
    from test_pending_index import relabelled

    other = relabelled(indexed)
    if other is None:
        pytest.skip(f"{type(indexed).__name__} has no key prefix (each handle is its own namespace)")
    with contextlib.closing(other):
        put(indexed, "same", 10.0)
        put(other, "same", 20.0, machine="n")
        put(other, "only-other", 30.0)
        assert ids(indexed.list_instances()) == ["same"]
        assert ids(other.list_instances()) == ["only-other", "same"]
        assert ids(indexed.list_instances(machine="n")) == []


# ---- redis ----------------------------------------------------------------------------------


@pytest.fixture(params=["fakeredis", "redis"])
def redis_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    from conftest import _backend
    with contextlib.ExitStack() as stack:
        store = _backend(request.param, request, stack, tmp_path)("store")
        yield store
        store.close()


def test_redis_forgets_the_members_of_records_that_expired(redis_store: Any) -> None:
    indexed = redis_store
    listing, expiring = indexed._listing
    put(indexed, "kept", 10.0, expires_at=int(time.time()) + 3600)
    put(indexed, "gone", 20.0, expires_at=int(time.time()) + 3600)
    assert indexed.client.zcard(listing) == 6 and indexed.client.zcard(expiring) == 2
    # An hour passes for "gone": its record expires, and its schedule entry falls due.
    indexed.client.delete(indexed._keys("gone")[0])
    (due,) = [m for m in indexed.client.zrange(expiring, 0, -1) if b'"gone"' in m]
    indexed.client.zadd(expiring, {due: 1.0}, xx=True)
    assert ids(indexed.list_instances()) == ["kept"]      # a member met is checked against its record
    assert indexed.client.zcard(listing) == 5            # ... and removed
    put(indexed, "plain", 35.0)                 # without expiry a swap pays nothing for the others'
    assert indexed.client.zcard(listing) == 8 and indexed.client.zcard(expiring) == 2
    put(indexed, "later", 40.0, expires_at=int(time.time()) + 3600)   # with expiry: removes the rest of it
    assert indexed.client.zcard(listing) == 9 and indexed.client.zcard(expiring) == 2
    assert not [m for m in indexed.client.zrange(listing, 0, -1) if m.endswith(b"|gone")]
    put(indexed, "dies", 30.0, expires_at=int(time.time()) - 5)   # gone at once, and its swap prunes it
    assert indexed.client.zcard(listing) == 9 and indexed.client.zcard(expiring) == 2
    assert ids(indexed.list_instances(machine="m")) == ["later", "plain", "kept"]


def test_redis_a_commit_touches_the_index_a_lease_does_not(redis_store: Any) -> None:
    indexed = redis_store
    put(indexed, "x", 10.0)
    listing = indexed._listing[0]
    before = indexed.client.zrange(listing, 0, -1)
    assert indexed.swap("x", {"fence": 0}, {"fence": 1, "lease_owner": "w", "lease_expires": 5}).ok
    assert indexed.client.zrange(listing, 0, -1) == before
    assert indexed.swap("x", {"fence": 1}, {"lease_owner": "", "updated_at": 11.0, "status": "done"}).ok
    after = indexed.client.zrange(listing, 0, -1)
    assert len(after) == 3 and not set(after) & set(before)


# ---- sqlite ---------------------------------------------------------------------------------


def test_sqlite_file_made_before_listing_gains_its_columns(tmp_path: Path) -> None:
    from sources.sqlite import SqliteStore

    path = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE instances (id TEXT PRIMARY KEY, record TEXT NOT NULL)")
        db.executemany("INSERT INTO instances VALUES (?, ?)", [
            ("a", '{"id":"a","machine":"m","status":"done","state":"z","updated_at":5.5}'),
            ("b", '{"id":"b","machine":"m","status":"waiting","state":"y","updated_at":7.0}')])
        db.commit()
    store = SqliteStore(f"sqlite:///{path}")
    try:
        assert ids(store.list_instances()) == ["b", "a"]
        assert ids(store.list_instances(machine="m", state="z", status="done")) == ["a"]
        plan = store._db.execute("EXPLAIN QUERY PLAN SELECT record FROM instances WHERE machine = 'm' AND "
                                 "status = 'done' ORDER BY updated_key DESC, id DESC LIMIT 3").fetchall()
        assert "USING INDEX instances_by_machine" in str(plan) and "TEMP B-TREE" not in str(plan)
    finally:
        store.close()
    SqliteStore(f"sqlite:///{path}").close()        # opening it again changes nothing


# ---- DynamoDB -------------------------------------------------------------------------------


@pytest.fixture
def dynamo() -> Iterator[tuple[str, Any]]:
    from conftest import in_process_dynamodb
    with in_process_dynamodb() as (url, client):
        yield url, client


def test_dynamodb_listing_across_shards_is_in_order(dynamo: tuple[str, Any]) -> None:
    from sources.dynamodb import DynamoStore
    url, client = dynamo
    store = DynamoStore(url, client=client, list_shards=3)
    times = {f"c{n}": 1000.0 + (n * 37) % 50 + n / 100 for n in range(14)}
    for cid, at in times.items():
        put(store, cid, at, status=STATUSES[len(cid) % 2])
    expected = sorted(times, key=times.__getitem__, reverse=True)
    assert [cid for page in every_page(store, 4) for cid in page] == expected
    assert [cid for page in every_page(store, 3, machine="m", state="s") for cid in page] == expected
    table = url.rsplit("/", 1)[1]
    shards = {item["list_s"]["S"].split("#")[1] for item in client.scan(TableName=table)["Items"] if "list_s" in item}
    assert shards == {"0", "1", "2"}


def test_dynamodb_listing_indexes_hold_only_keys(dynamo: tuple[str, Any]) -> None:
    from sources.dynamodb_tables import LIST_INDEXES
    url, client = dynamo
    described = client.describe_table(TableName=url.rsplit("/", 1)[1])["Table"]["GlobalSecondaryIndexes"]
    projections = {index["IndexName"]: index["Projection"]["ProjectionType"] for index in described}
    assert {projections[name] for name in LIST_INDEXES.values()} == {"KEYS_ONLY"}


def test_dynamodb_create_tables_adds_listing_to_an_older_table(dynamo: tuple[str, Any]) -> None:
    """A table made before listing gains the indexes, and its records gain their listing
    attributes (once: a marker item remembers it); running it twice is fine."""
    from conftest import table_arn

    from sources.dynamodb import DynamoStore
    from sources.dynamodb_tables import (
        INDEXES,
        LEGACY_INDEXES,
        LIST_FILLED,
        create_tables,
    )
    _, client = dynamo
    name = f"fsm-old-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    for cid, status, at in [("a", "done", "5.5"), ("b", "waiting", "7")]:
        client.put_item(TableName=name, Item={
            "pk": {"S": f"pre:{cid}"}, "sk": {"S": "record"}, "id": {"S": cid}, "machine": {"S": "m"},
            "status": {"S": status}, "state": {"S": '"z"'}, "updated_at": {"N": at}, "step": {"N": "1"}})
    create_tables(table_arn(name), client=client, index_wait=5)
    create_tables(table_arn(name), client=client, index_wait=5)
    described = client.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"]
    assert {index["IndexName"] for index in described} == set(INDEXES) - LEGACY_INDEXES
    assert client.get_item(TableName=name, Key=LIST_FILLED).get("Item")
    store = DynamoStore(table_arn(name), client=client, prefix="pre:")
    assert ids(store.list_instances()) == ["b", "a"]
    assert ids(store.list_instances(machine="m", state="z", status="done")) == ["a"]
    assert ids(DynamoStore(table_arn(name), client=client).list_instances()) == []   # another prefix


# ---- the client -----------------------------------------------------------------------------

MACHINES = """
machines:
  - name: order
    states:
      - {name: placed, initial: true, transitions: [{event: PAY, target: paid}]}
      - {name: paid, final: true}
  - name: refund
    states:
      - {name: asked, initial: true, transitions: [{event: OK, target: paid}]}
      - {name: paid, final: true}
"""


@pytest.fixture
def client() -> Any:
    from config.loader import load_text
    from config.settings import Settings
    from fsm.app.client import Client
    from fsm.app.wiring import build

    definitions = load_text(MACHINES)
    return Client(wiring=build(definitions.machines, Settings(store=["memory://"])))


def test_the_client_lists_status_views_a_page_at_a_time(client: Any) -> None:
    for n in range(5):
        client.start("order", {"n": n}, correlation_id=f"o{n}")
    client.start("refund", correlation_id="r0")
    client.send_event("o1", "PAY")
    page = client.list(limit=2)
    assert [view["correlation_id"] for view in page["instances"]] == ["o1", "r0"]
    assert page["instances"][0] == client.status("o1") and page["next"]
    assert [v["correlation_id"] for v in client.list(limit=10, cursor=page["next"])["instances"]] == \
        ["o4", "o3", "o2", "o0"]
    assert [v["correlation_id"] for v in client.list(state="placed", limit=2)["instances"]] == ["o4", "o3"]
    assert [v["correlation_id"] for v in client.list(machine="order", status="done")["instances"]] == ["o1"]
    later = client.list(since=client.wiring.stores[0].get("o1")["updated_at"])
    assert [v["correlation_id"] for v in later["instances"]] == ["o1"] and later["next"] is None
    assert len(client.list(since="2000-01-01T00:00:00Z")["instances"]) == 6       # ISO 8601 too
    assert client.list(since="2999-01-01") == {"instances": [], "next": None}
    with pytest.raises(ValueError, match="machines order, refund"):
        client.list(state="paid")
    with pytest.raises(ValueError, match="no loaded machine"):
        client.list(state="nowhere")


def test_the_client_lists_from_the_first_store_that_can(client: Any) -> None:
    from fsm.app.listing import ListingUnsupported

    class Unlisted:
        url = "memcached://cache:11211"

    primary = client.wiring.stores[0]
    client.start("order", correlation_id="o1")
    client.wiring.stores.insert(0, Unlisted())
    assert [v["correlation_id"] for v in client.list()["instances"]] == ["o1"]
    client.wiring.stores[:] = [Unlisted()]
    with pytest.raises(ListingUnsupported, match="memcached://cache:11211 cannot list"):
        client.list()
    client.wiring.stores[:] = [primary]


def test_the_module_level_client_lists_too() -> None:
    from fsm import client

    assert client.list is client.list_instances and "list_instances" in client.__all__
