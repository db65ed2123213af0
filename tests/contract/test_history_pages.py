"""A page of history, read without reading the rest: ``store.history(cid, start, limit)``
and ``store.history_len(cid)`` on every store, ``Client.history(cid, page=N)`` and
``fsm history ID --page N``.

Every store returns exactly ``whole[start:start + limit]``; the long-history tests count
what the store reads for the last page of a long history (decoded entries, rows fetched,
``LRANGE`` replies, DynamoDB items), which must not grow with the history.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fsm.cli import main

LONG = 100_000          # entries, memory and sqlite
REDIS_LONG = 20_000
DYNAMO_LONG = 2_000     # moto in-process: a few hundred swaps
PAGE = 100


def entry(n: int, size: int = 0) -> dict[str, Any]:
    """A history entry like the dispatcher's (~120 bytes), ``size`` bytes of error more."""
    made = {"step": n, "from": f"s{n - 1}", "event": "next", "to": f"s{n}", "time": "2026-01-01T00:00:00.000Z",
            "duration": 0.000123, "retries": 0}
    if size:
        made["error"] = "x" * size
    return made


def create(store: Any, cid: str) -> None:
    assert store.swap(cid, None, {"id": cid, "machine": "m", "status": "waiting", "state": "s0", "step": 0,
                                  "retries": 0, "fence": 0, "lease_owner": "", "lease_expires": 0,
                                  "context": {}}).ok


def commit(store: Any, cid: str, step: int, batch: list[dict[str, Any]]) -> None:
    """An acquire (no history) and a commit with ``batch``, as the dispatcher makes them."""
    assert store.swap(cid, {"step": step - 1, "lease_owner": ""}, {"lease_owner": "w", "lease_expires": 10**12}).ok
    assert store.swap(cid, {"step": step - 1, "lease_owner": "w"},
                      {"step": step, "lease_owner": "", "lease_expires": 0, "state": f"s{step}"}, batch).ok


def bulk(store: Any, cid: str, total: int, per_commit: int) -> list[dict[str, Any]]:
    """A history of ``total`` entries written ``per_commit`` at a time."""
    create(store, cid)
    written: list[dict[str, Any]] = []
    step = 0
    while len(written) < total:
        step += 1
        batch = [entry(len(written) + i + 1) for i in range(min(per_commit, total - len(written)))]
        commit(store, cid, step, batch)
        written += batch
    return written


RANGES = [(0, 1), (0, 10), (3, 7), (37, 45), (100, 100), (230, 1000), (0, None), (17, None), (2, 0), (10_000, 5)]


# ---- every store ------------------------------------------------------------------------


def test_every_range_is_the_slice_of_the_whole(store_factory: Callable[[], Any]) -> None:
    """Single entries, bursts and big entries (which page out at once on DynamoDB and
    memcached): any range reads back as that slice of the whole history, from this handle
    and from another that has seen nothing."""
    first, second = store_factory(), store_factory()
    cid = "cid-pages"
    create(first, cid)
    whole: list[dict[str, Any]] = []
    for step in range(1, 121):
        size = 3000 if step % 29 == 0 else 0
        batch = [{**entry(len(whole) + 1 + i, size), "i": i} for i in range(9 if step % 17 == 0 else 1)]
        commit(first if step % 5 else second, cid, step, batch)
        whole += batch
    assert len(whole) == 176
    for handle in (first, second):
        assert handle.history_len(cid) == len(whole)
        assert handle.history(cid) == whole
        for start, limit in RANGES:
            expected = whole[start:] if limit is None else whole[start:start + limit]
            assert handle.history(cid, start, limit) == expected, (start, limit)
        pages = math.ceil(len(whole) / 50)
        assert [e for p in range(pages) for e in handle.history(cid, p * 50, 50)] == whole


def test_an_unknown_instance_has_no_history(store: Any) -> None:
    assert store.history_len("nobody") == 0
    assert store.history("nobody", 5, 10) == [] and store.history("nobody") == []


# ---- the last page of a long history ----------------------------------------------------


def test_memory_last_page_of_100000_decodes_only_that_page(monkeypatch: pytest.MonkeyPatch) -> None:
    from sources import memory

    store = memory.MemoryStore()
    whole = bulk(store, "long", LONG, per_commit=10_000)
    decoded = []
    real = memory.codec.loads
    monkeypatch.setattr(memory.codec, "loads", lambda text: decoded.append(1) or real(text))
    assert store.history_len("long") == LONG and not decoded
    assert store.history("long", LONG - PAGE, PAGE) == whole[-PAGE:]
    assert len(decoded) == PAGE


class CountingRows:
    """An sqlite connection that counts the rows its cursors hand out."""

    def __init__(self, db: Any):
        self.db, self.rows = db, 0

    def execute(self, *args: Any) -> Any:
        return CountingCursor(self, self.db.execute(*args))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


class CountingCursor:
    def __init__(self, owner: CountingRows, cursor: Any):
        self.owner, self.cursor = owner, cursor

    def fetchall(self) -> list[Any]:
        rows = self.cursor.fetchall()
        self.owner.rows += len(rows)
        return rows

    def fetchone(self) -> Any:
        row = self.cursor.fetchone()
        self.owner.rows += row is not None
        return row


def test_sqlite_last_page_of_100000_fetches_only_that_page(tmp_path: Path) -> None:
    from sources.sqlite import SqliteStore

    store = SqliteStore(f"sqlite:///{tmp_path / 'long.db'}")
    try:
        whole = bulk(store, "long", LONG, per_commit=10_000)
        counting = CountingRows(store._db)
        store._db = counting
        assert store.history_len("long") == LONG and counting.rows == 1
        assert store.history("long", LONG - PAGE, PAGE) == whole[-PAGE:]
        assert counting.rows == 1 + PAGE
        assert store.history("long", LONG - 30, PAGE) == whole[-30:]      # a short last page
    finally:
        store._db = getattr(store._db, "db", store._db)
        store.close()


class Calls:
    """A client wrapper counting the calls made through it, and for a DynamoDB query
    the items it returned."""

    def __init__(self, inner: Any):
        self.inner, self.names, self.items = inner, [], 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_") or isinstance(attr, type):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.names.append(name)
            result = attr(*args, **kwargs)
            if name == "query":
                self.items += len(result.get("Items", []))
            return result
        return call


@pytest.mark.parametrize("store_factory", ["redis"], indirect=True)
def test_redis_last_page_is_one_lrange(store_factory: Callable[[], Any]) -> None:
    store = store_factory()
    whole = bulk(store, "long", REDIS_LONG, per_commit=2_000)
    store.client = calls = Calls(store.client)
    assert store.history_len("long") == REDIS_LONG
    assert store.history("long", REDIS_LONG - PAGE, PAGE) == whole[-PAGE:]
    assert calls.names == ["llen", "lrange"]


@pytest.mark.slow   # moto in-process: ~20 ms a swap
def test_dynamodb_last_page_reads_only_the_items_that_hold_it() -> None:
    """2,000 entries in a few hundred page items: the last page is the record's carried
    entries and the few items before them, not a read of the partition."""
    from conftest import in_process_dynamodb

    from sources.dynamodb import DynamoStore

    with in_process_dynamodb() as (url, client):
        store = DynamoStore(url, client=client)
        whole: list[dict[str, Any]] = []
        create(store, "long")
        step = 0
        while len(whole) < DYNAMO_LONG:
            step += 1
            batch = [entry(len(whole) + i + 1) for i in range(1 + step % 7)][:DYNAMO_LONG - len(whole)]
            commit(store, "long", step, batch)
            whole += batch
        reader = DynamoStore(url, client=(calls := Calls(client)))
        assert reader.history("long") == whole
        all_items = calls.items
        assert all_items > 50, all_items       # it really is paged
        calls.names.clear()
        calls.items = 0
        assert reader.history_len("long") == DYNAMO_LONG
        for start, limit in [(DYNAMO_LONG - PAGE, PAGE), (0, PAGE), (1234, 77), (DYNAMO_LONG - 3, 10)]:
            assert reader.history("long", start, limit) == whole[start:start + limit]
        assert calls.names.count("query") <= 8 and calls.names.count("get_item") == 5
        assert calls.items < all_items / 4, (calls.items, all_items)
        calls.items = 0
        reader.history("long", DYNAMO_LONG - PAGE, PAGE)
        assert calls.items <= PAGE // 2 + 4, calls.items     # pages hold several entries each


# ---- the client and the command line ----------------------------------------------------

MACHINES = """
machines:
  - name: counter
    states:
      - {name: idle, initial: true, transitions: [{event: TICK, target: idle}]}
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A config and an sqlite store holding instance ``ticks`` with 250 history entries,
    written straight into the store (the CLI reads them as any other)."""
    from sources.sqlite import SqliteStore

    (tmp_path / "fsm.yaml").write_text(MACHINES, encoding="utf-8")
    store = SqliteStore(f"sqlite:///{tmp_path / 'fsm.db'}")
    assert store.swap("ticks", None, {"id": "ticks", "machine": "counter", "status": "waiting", "state": "idle",
                                      "step": 250, "retries": 0, "fence": 0, "lease_owner": "",
                                      "lease_expires": 0, "context": {}, "version": ""},
                      [{**entry(n), "from": "idle", "to": "idle", "event": "TICK"} for n in range(1, 251)]).ok
    store.close()
    monkeypatch.chdir(tmp_path)
    for name in [n for n in list(__import__("os").environ) if n.startswith("FSM_")]:
        monkeypatch.delenv(name)
    yield tmp_path


def fsm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--config", "fsm.yaml", "--store", "sqlite:///fsm.db"])
    out, err = capsys.readouterr()
    return code, out, err


def test_history_page_text_and_footer(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = fsm(capsys, "history", "ticks", "--page", "3")
    lines = out.splitlines()
    assert (code, err) == (0, "") and len(lines) == 51
    assert lines[0].split()[0] == "201" and lines[-2].split()[0] == "250"
    assert lines[-1] == "page 3 of 3 (250 entries)"
    code, out, _ = fsm(capsys, "history", "ticks", "--page", "2", "--page-size", "7")
    assert code == 0 and out.splitlines()[-1] == "page 2 of 36 (250 entries)" and out.split()[0] == "8"


def test_history_page_json(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = fsm(capsys, "history", "ticks", "--page", "2", "--page-size", "1000", "--json")
    assert code == 2
    code, out, _ = fsm(capsys, "history", "ticks", "--page", "1", "--page-size", "1000", "--json")
    page = json.loads(out)
    assert code == 0 and set(page) == {"page", "pages", "total", "entries"}
    assert (page["page"], page["pages"], page["total"], len(page["entries"])) == (1, 1, 250, 250)
    code, out, _ = fsm(capsys, "history", "ticks", "--json")     # without --page: as before, a list
    assert code == 0 and json.loads(out) == page["entries"]


@pytest.mark.parametrize("flags, named", [
    (["--page", "4"], "--page 4: page 4 is past the end: instance 'ticks' has 250 history entries, 3 pages of 100"),
    (["--page", "0"], "--page '0' must be a whole number from 1"),
    (["--page", "two"], "--page 'two' must be a whole number from 1"),
    (["--page", "1", "--page-size", "1001"], "--page-size '1001' must be a whole number from 1 to 1000"),
    (["--page", "1", "--page-size", "0"], "--page-size '0' must be a whole number from 1 to 1000"),
    (["--page-size", "10"], "--page-size needs --page"),
])
def test_bad_pages_are_usage_errors(folder: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
                                    named: str) -> None:
    code, out, err = fsm(capsys, "history", "ticks", *flags)
    assert (code, out) == (2, "") and len(err.splitlines()) == 1
    assert err.startswith(f"fsm history: {named}"), err


def test_client_history_pages(folder: Path) -> None:
    from config.settings import load_settings
    from fsm.app.client import Client

    client = Client(settings=load_settings({"store": "sqlite:///fsm.db"}, environ={}), config="fsm.yaml")
    try:
        assert len(client.history("ticks")) == 250
        last = client.history("ticks", page=25, page_size=10)
        assert (last["page"], last["pages"], last["total"]) == (25, 25, 250)
        assert [e["step"] for e in last["entries"]] == list(range(241, 251))
        for bad in ({"page": 26, "page_size": 10}, {"page": 0}, {"page": 1, "page_size": 1001}):
            with pytest.raises(ValueError):
                client.history("ticks", **bad)
    finally:
        client.wiring.close()
