"""History carried in the record and paged out (DynamoDB, memcached), and complete on
every store: each entry once, in order, across many commits, across a crash between a
page's write and the swap that stops carrying it, and for records the previous layout
wrote (each swap's entries an item or key of their own).

See the module docstrings of ``sources/dynamodb.py`` and ``sources/memcache.py``.
"""

from __future__ import annotations

import json
import math
import random
import string
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sources.dynamodb_items import page_entries

TRANSITIONS = 2500      # DynamoDB on moto in-process: some 400 page-outs
SERVER_TRANSITIONS = 300
EVERY_STORE_TRANSITIONS = 250


class Crash(Exception):
    """The process died here (raised by the wrappers below, never by a store)."""


class Calls:
    """A client wrapper that counts the calls made through it by name and can make one
    of them die before it reaches the backend."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.names: list[str] = []
        self.crash_on: str | None = None        # the next call of this name raises Crash
        self.crash_after: str | None = None     # ... armed once a call of this name returned

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_") or isinstance(attr, type) or name in ("check_key", "close"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.crash_on == name and self.crash_after is None:
                self.crash_on = None
                raise Crash(name)
            self.names.append(name)
            result = attr(*args, **kwargs)
            if self.crash_after == name:
                self.crash_after = None
            return result
        return call

    def count(self, name: str) -> int:
        return self.names.count(name)


def entry(step: int, size: int = 0) -> dict[str, Any]:
    """A history entry like the dispatcher's (~120 bytes), ``size`` bytes of error more
    (random letters: a store that packs entries cannot shrink them much)."""
    made = {"step": step, "from": f"s{step - 1}", "event": "next", "to": f"s{step}",
            "time": "2026-01-01T00:00:00.000Z", "duration": 0.000123, "retries": 0}
    if size:
        made["error"] = "".join(random.Random(step).choices(string.ascii_letters + string.digits, k=size))
    return made


def transition(store: Any, cid: str, step: int, fence: int, history: list[dict[str, Any]],
               context: dict[str, Any] | None = None) -> None:
    """An acquire (no history) and a commit (with it), as the dispatcher makes them."""
    assert store.swap(cid, {"fence": fence, "lease_owner": ""},
                      {"fence": fence + 1, "lease_owner": "w", "lease_expires": 10**12}).ok
    assert store.swap(cid, {"fence": fence + 1, "lease_owner": "w"},
                      {"step": step, "lease_owner": "", "lease_expires": 0, "state": f"s{step}",
                       "context": context or {"n": step}, "updated_at": 1.7e9 + step}, history).ok


def create(store: Any, cid: str) -> None:
    assert store.swap(cid, None, {"id": cid, "machine": "m", "status": "running", "state": "s0", "step": 0,
                                  "fence": 0, "lease_owner": "", "lease_expires": 0, "context": {}}).ok


def size_of(text: Any) -> int:
    return len(json.dumps(text, separators=(",", ":")))


# ---- every store ------------------------------------------------------------------------


def test_history_is_complete_and_in_order_across_many_commits(store_factory: Callable[[], Any]) -> None:
    """Single entries, bursts of entries, a few large ones, and a second handle that
    knows nothing of what the first carried: every entry once, in order."""
    first, second = store_factory(), store_factory()
    cid = "cid-long"
    create(first, cid)
    expected: list[dict[str, Any]] = []
    for step in range(1, EVERY_STORE_TRANSITIONS + 1):
        if step % 97 == 0:
            batch = [entry(step, size=3000)]                      # a big one
        elif step % 41 == 0:
            batch = [{**entry(step), "i": i} for i in range(45)]   # a burst
        else:
            batch = [entry(step)]
        transition(second if step % 13 == 0 else first, cid, step, step - 1, batch)
        expected += batch
    assert first.history(cid) == expected
    assert second.history(cid) == expected
    assert first.get(cid)["step"] == EVERY_STORE_TRANSITIONS


# ---- DynamoDB: many commits, crashes, the previous layout -------------------------------


@pytest.fixture
def dynamo() -> Iterator[tuple[str, Any]]:
    from conftest import in_process_dynamodb
    with in_process_dynamodb() as (url, client):
        yield url, client


def record_item(client: Any, url: str, cid: str) -> dict[str, Any]:
    return client.get_item(TableName=url.rsplit("/", 1)[1], Key={"pk": {"S": cid}, "sk": {"S": "record"}},
                           ConsistentRead=True)["Item"]


def history_items(client: Any, url: str, cid: str) -> list[dict[str, Any]]:
    return [item for item in client.query(TableName=url.rsplit("/", 1)[1], KeyConditionExpression="pk = :pk",
                                          ExpressionAttributeValues={":pk": {"S": cid}},
                                          ConsistentRead=True)["Items"]
            if item["sk"]["S"].startswith("h#")]


@pytest.mark.slow  # a minute: moto's UpdateItem takes ~20 ms in-process
def test_dynamodb_2500_transitions_one_update_each_and_history_complete(dynamo: tuple[str, Any]) -> None:
    """The steady-state commit is one conditional UpdateItem, never a transaction; a page
    goes out as one PutItem every few commits; the record item never carries more than
    its write units allow; the history reads back whole. (Commits only: the dispatcher's
    acquire before each is a swap without history, which the other tests make.)"""
    from sources.dynamodb import DynamoStore
    from sources.dynamodb_items import WRITE_UNIT, item_size
    url, client = dynamo
    calls = Calls(client)
    store = DynamoStore(url, client=calls, page_size=50)
    cid = "cid-2500"
    create(store, cid)
    calls.names.clear()
    expected = []
    extra_units = 0
    for step in range(1, TRANSITIONS + 1):
        batch = [entry(step)]
        assert store.swap(cid, {"step": step - 1}, {"step": step, "state": f"s{step}", "context": {"n": step},
                                                    "updated_at": 1.7e9 + step}, batch).ok
        expected += batch
        if step % 50 == 0:      # the item, and what it would be with only this swap's entry
            item = record_item(client, url, cid)
            tail = item["history_tail"]["L"]
            own = {**item, "history_tail": {"L": tail[-1:]}}
            units, own_units = (math.ceil(item_size(i) / WRITE_UNIT) for i in (item, own))
            assert units - own_units <= 1       # carried across one unit boundary at most
            extra_units += units - own_units
            assert len(tail) <= 16 and item_size({"t": item["history_tail"]}) < 2 * WRITE_UNIT
    assert "transact_write_items" not in calls.names
    assert calls.count("update_item") == TRANSITIONS
    pages = calls.count("put_item")
    assert TRANSITIONS / 17 < pages < TRANSITIONS / 3, pages      # amortised: one per 3-16 commits here
    assert extra_units < TRANSITIONS / 50 / 2      # and mostly in the record's own units
    assert set(calls.names) == {"update_item", "put_item"}
    assert store.history(cid) == expected
    stored = history_items(client, url, cid)
    assert len(stored) == pages
    assert sum(len(page_entries(item)) for item in stored) == len(expected) - len(
        record_item(client, url, cid)["history_tail"]["L"])         # each entry paged once
    assert DynamoStore(url, client=client).history(cid) == expected    # another handle, nothing cached


def test_dynamodb_crash_between_a_page_and_the_swap_duplicates_nothing(dynamo: tuple[str, Any]) -> None:
    """The page is written, the process dies before the UpdateItem that stops carrying
    its entries: they are in the page and in the record, and read once. The same
    handle, and then a fresh one, go on; the page is written again, the same."""
    from sources.dynamodb import DynamoStore
    url, client = dynamo
    calls = Calls(client)
    store = DynamoStore(url, client=calls)
    cid = "cid-crash"
    create(store, cid)
    expected: list[dict[str, Any]] = []
    step = 0
    crashes = 0
    while crashes < 3:
        step += 1
        batch = [entry(step)]
        assert store.swap(cid, {"fence": step - 1, "lease_owner": ""},
                          {"fence": step, "lease_owner": "w"}).ok
        calls.crash_on, calls.crash_after = "update_item", "put_item"
        try:
            store.swap(cid, {"fence": step, "lease_owner": "w"}, {"step": step, "lease_owner": ""}, batch)
        except Crash:
            crashes += 1
            calls.crash_on = calls.crash_after = None
            assert store.history(cid) == expected      # the page's entries once, this swap's not at all
            assert DynamoStore(url, client=client).history(cid) == expected
            if crashes == 2:
                store = DynamoStore(url, client=calls)  # a new process, nothing remembered
            # the message is delivered again: the same commit, made again
            assert store.swap(cid, {"fence": step, "lease_owner": "w"}, {"step": step, "lease_owner": ""}, batch).ok
        else:
            calls.crash_on = calls.crash_after = None
        expected += batch
        assert store.history(cid) == expected
        assert step < 200, "no page-out happened"
    for more in range(step + 1, step + 40):
        transition(store, cid, more, more - 1, [entry(more)])
        expected.append(entry(more))
    assert store.history(cid) == expected
    for item in history_items(client, url, cid):   # pages overlap after a crash: they agree
        first = int(item["sk"]["S"][2:14])
        entries = page_entries(item)
        assert entries == expected[first - 1:first - 1 + len(entries)]


def test_dynamodb_page_of_a_handle_that_loses_its_swap_loses_nothing(dynamo: tuple[str, Any]) -> None:
    """A worker pages out on a stale view (a rival took the lease and committed since,
    paging out more than the worker saw carried), then loses its swap. Its page holds a
    prefix of the rival's page, under a key of its own: written over the rival's page it
    would have dropped the entry only the rival saw."""
    from sources.dynamodb import DynamoStore
    url, client = dynamo
    worker, rival = DynamoStore(url, client=client), DynamoStore(url, client=client)
    cid = "cid-race"
    create(worker, cid)
    e1, e2, n3, e4 = entry(1, 600), entry(2, 660), {"n": 3}, entry(4, 400)
    transition(worker, cid, 1, 0, [e1])
    transition(worker, cid, 2, 1, [e2])        # pages out [e1]: the record carries [e2]
    assert [i["sk"]["S"] for i in history_items(client, url, cid)] == ["h#000000000001-000000000001"]
    assert worker.swap(cid, {"fence": 2, "lease_owner": ""}, {"fence": 3, "lease_owner": "w"}).ok
    assert rival.swap(cid, {"fence": 3, "lease_owner": "w"}, {"fence": 4, "lease_owner": "r"}).ok  # expired
    assert rival.swap(cid, {"fence": 4, "lease_owner": "r"}, {"step": 3, "lease_owner": ""}, [n3]).ok
    transition(rival, cid, 4, 4, [e4])         # pages out [e2, n3]
    late = worker.swap(cid, {"fence": 3, "lease_owner": "w"}, {"step": 3, "lease_owner": ""}, [entry(-1, 400)])
    assert not late.ok and late.record is not None and late.record["lease_owner"] == ""
    assert [i["sk"]["S"] for i in history_items(client, url, cid)] == [
        "h#000000000001-000000000001", "h#000000000002-000000000002", "h#000000000002-000000000003"]
    assert worker.history(cid) == rival.history(cid) == [e1, e2, n3, e4]
    expected = [e1, e2, n3, e4]
    for step in range(5, 40):
        transition(rival, cid, step, step, [entry(step, 60)])
        expected.append(entry(step, 60))
    assert worker.history(cid) == DynamoStore(url, client=client).history(cid) == expected


def test_dynamodb_records_of_the_previous_layout_read_back_and_go_on(dynamo: tuple[str, Any]) -> None:
    """The previous version wrote each swap's entries as an item ``h#<first number>``
    (in a transaction with the record) and carried none: such a record reads back
    whole, and new commits continue its numbering, carried and paged out."""
    from sources.dynamodb import DynamoStore
    url, client = dynamo
    table = url.rsplit("/", 1)[1]
    cid = "cid-old"
    old = [[entry(1)], [entry(2), entry(3)], [entry(4)], [{"n": i} for i in range(5, 30)], [entry(30)]]
    number = 1
    for batch in old:       # as the previous version's TransactWriteItems put them
        client.put_item(TableName=table, Item={"pk": {"S": cid}, "sk": {"S": f"h#{number:012d}"},
                                               "entries": {"S": json.dumps(batch)}})
        number += len(batch)
    client.put_item(TableName=table, Item={
        "pk": {"S": cid}, "sk": {"S": "record"}, "history_len": {"N": str(number - 1)}, "id": {"S": cid},
        "machine": {"S": "m"}, "status": {"S": "running"}, "state": {"S": '"s30"'}, "step": {"N": "30"},
        "fence": {"N": "30"}, "lease_owner": {"S": ""}, "lease_expires": {"N": "0"}, "context": {"S": "{}"}})
    expected = [e for batch in old for e in batch]
    store = DynamoStore(url, client=client, page_size=2)
    assert store.history(cid) == expected
    assert store.get(cid)["step"] == 30
    for step in range(31, 80):
        transition(store, cid, step, step - 1, [entry(step)])
        expected.append(entry(step))
        assert store.history(cid) == expected
    item = record_item(client, url, cid)
    assert int(item["history_len"]["N"]) == len(expected)
    assert len(history_items(client, url, cid)) > len(old)      # paged out after the old items


@pytest.mark.slow
def test_dynamodb_on_moto_server_pages_out_and_reads_back(moto_url: str) -> None:
    """A few hundred transitions against moto_server, one crash between a page and its
    swap among them, in a table of this test's own (the server is shared: it is not
    reset, and the table is deleted at the end)."""
    import boto3
    from conftest import table_arn

    from sources.dynamodb import DynamoStore
    from sources.dynamodb_tables import create_tables
    url = table_arn(f"fsm-paging-{uuid.uuid4().hex[:8]}")
    create_tables(url, endpoint_url=moto_url)
    raw = Calls(boto3.client("dynamodb", region_name="us-east-1", endpoint_url=moto_url))
    store = DynamoStore(url, client=raw)
    try:
        cid = f"cid-{uuid.uuid4().hex[:6]}"
        create(store, cid)
        raw.names.clear()
        expected: list[dict[str, Any]] = []
        crashed = False
        for step in range(1, SERVER_TRANSITIONS + 1):
            batch = [entry(step, size=400 if step % 37 == 0 else 0)]
            assert store.swap(cid, {"fence": step - 1, "lease_owner": ""}, {"fence": step, "lease_owner": "w"}).ok
            commit = (cid, {"fence": step, "lease_owner": "w"}, {"step": step, "lease_owner": "", "state": f"s{step}"})
            if step > SERVER_TRANSITIONS // 2 and not crashed:
                raw.crash_on, raw.crash_after = "update_item", "put_item"
            try:
                assert store.swap(*commit, batch).ok
            except Crash:
                crashed = True
                assert DynamoStore(url, endpoint_url=moto_url).history(cid) == expected
                store = DynamoStore(url, client=raw)        # a new process, nothing remembered
                assert store.swap(*commit, batch).ok
            raw.crash_on = raw.crash_after = None
            expected += batch
        assert crashed
        assert "transact_write_items" not in raw.names
        assert raw.count("put_item") < SERVER_TRANSITIONS / 3
        assert store.history(cid) == expected
        assert DynamoStore(url, endpoint_url=moto_url, page_size=7).history(cid) == expected
    finally:
        raw.inner.delete_table(TableName=url.rsplit("/", 1)[1])


# ---- memcached --------------------------------------------------------------------------


@pytest.fixture
def memcached(memcached_url: str) -> Iterator[Callable[..., Any]]:
    from sources.memcache import MemcacheStore
    prefix = f"fsmtest:{uuid.uuid4().hex[:8]}:"
    opened: list[Any] = []

    def make(**options: Any) -> Any:
        store = MemcacheStore(memcached_url, prefix=prefix, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_memcached_commit_is_one_write_and_pages_go_out_in_one_set_many(memcached: Callable[..., Any]) -> None:
    from sources.memcache import PAGE_ENTRIES
    store = memcached()
    calls = Calls(store.client)
    store.client = calls
    create(store, "cid-1")
    calls.names.clear()
    expected = []
    for step in range(1, 501):
        transition(store, "cid-1", step, step - 1, [entry(step)])
        expected.append(entry(step))
    assert calls.count("meta_set") == 1000 and calls.count("gets") == 0
    assert 500 / PAGE_ENTRIES - 2 <= calls.count("set_many") <= 500 / (PAGE_ENTRIES // 2)
    assert set(calls.names) == {"meta_set", "set_many"}
    assert store.history("cid-1") == expected


def test_memcached_crash_between_a_page_and_the_write_duplicates_nothing(memcached: Callable[..., Any]) -> None:
    store = memcached()
    calls = Calls(store.client)
    store.client = calls
    create(store, "cid-1")
    expected: list[dict[str, Any]] = []
    crashed = False
    for step in range(1, 120):
        batch = [entry(step)]
        assert store.swap("cid-1", {"fence": step - 1, "lease_owner": ""}, {"fence": step, "lease_owner": "w"}).ok
        if not crashed:
            calls.crash_on, calls.crash_after = "meta_set", "set_many"
        try:
            assert store.swap("cid-1", {"fence": step, "lease_owner": "w"}, {"step": step, "lease_owner": ""},
                              batch).ok
        except Crash:
            crashed = True
            assert store.history("cid-1") == expected
            store = memcached()     # a new process
            store.client = calls
            assert store.swap("cid-1", {"fence": step, "lease_owner": "w"}, {"step": step, "lease_owner": ""},
                              batch).ok
        expected += batch
        assert store.history("cid-1") == expected
    assert crashed


def test_memcached_values_of_the_previous_layout_read_back_and_go_on(memcached: Callable[..., Any]) -> None:
    """The previous version kept ``{"record", "history_len"}`` and one key per entry."""
    store = memcached()
    old = [entry(n) for n in range(1, 41)]
    store.client.set(store._key("cid-1", "r"), json.dumps({
        "record": {"id": "cid-1", "step": 40, "fence": 40, "lease_owner": ""}, "history_len": len(old)}).encode(),
        noreply=False)
    store.client.set_many({store._key("cid-1", f"h{n}"): json.dumps(e).encode() for n, e in enumerate(old, 1)},
                          noreply=False)
    assert store.history("cid-1") == old
    expected = list(old)
    for step in range(41, 120):
        transition(store, "cid-1", step, step - 1, [entry(step)])
        expected.append(entry(step))
    assert store.history("cid-1") == expected
    assert memcached().history("cid-1") == expected


def test_memcached_carried_history_is_bounded(memcached: Callable[..., Any]) -> None:
    from sources.memcache import PAGE_BYTES, PAGE_ENTRIES
    store = memcached()
    create(store, "cid-1")
    for step in range(1, 200):
        transition(store, "cid-1", step, step - 1, [entry(step, size=300 if step % 3 else 0)])
        value = json.loads(store.client.get(store._key("cid-1", "r")))
        tail = value.get("history_tail", [])
        assert len(tail) <= PAGE_ENTRIES and sum(size_of(e) for e in tail) <= PAGE_BYTES + size_of(entry(0, 300))
    assert len(store.history("cid-1")) == 199


def test_dynamodb_a_handle_that_saw_nothing_appends_only_below_the_limit(dynamo: tuple[str, Any]) -> None:
    """Commits from handles that never saw the record (``concurrency: optimistic``, a new
    container each time) append without a page-out while the record carries fewer than
    ``CARRY_MAX_ENTRIES``; the one that finds it full learns the record from the failed
    write and pages out. Never a transaction, never more than the limit plus one swap's."""
    from sources.dynamodb import CARRY_MAX_ENTRIES, DynamoStore
    url, client = dynamo
    cid = "cid-cold"
    create(DynamoStore(url, client=client), cid)
    expected = []
    names: list[str] = []
    for step in range(1, 3 * CARRY_MAX_ENTRIES + 5):
        calls = Calls(client)
        cold = DynamoStore(url, client=calls)
        assert cold.swap(cid, {"step": step - 1}, {"step": step}, [entry(step)]).ok
        names += calls.names
        expected.append(entry(step))
        assert len(record_item(client, url, cid).get("history_tail", {}).get("L", [])) <= CARRY_MAX_ENTRIES
    assert "transact_write_items" not in names
    pages = names.count("put_item")
    assert pages >= 2 and names.count("update_item") == len(expected) + pages    # each page: one refused append
    assert DynamoStore(url, client=client).history(cid) == expected
