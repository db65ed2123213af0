#!/usr/bin/env python
"""Listing a page of instances out of many (not a timed test: it prints figures).

    python bench/listing.py [--quick] [--instances N] [--limit N] [--repeat N] [--stores redis,sqlite]

Fills a store with ``--instances`` (default 100,000) instances of four machines, in every
status and several states, updated over the last 30 days, then lists ``--limit`` (default
100) of them with each kind of filter and prints, per query, the median time of
``--repeat`` listings and what one listing touched:

- redis: backend calls (each ``execute_command``: one EVALSHA per page) and index members
  read (each status range's ``ZLEXCOUNT`` between the page's bounds, capped at
  ``limit + 1``, which is as deep as the script reads), and the records read (the page);
- sqlite: statements run (one per status range), rows they returned, and sqlite's virtual
  machine steps (a progress handler every 100 instructions), beside the same count for a
  query that answers ``--status failed`` by reading every record, for scale.

The point: those figures stay near ``limit`` whatever ``--instances`` is. redis is filled
through the store's own swap script (pipelined, so the index is exactly what commits
write); sqlite through one transaction of plain inserts of the rows a swap would write.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from servers import Servers

from sources.base import dumps
from sources.redis import RedisStore
from sources.sqlite import SqliteStore, _list_values

MACHINES = {"order": ["placed", "paid", "packed", "shipped", "closed"], "refund": ["asked", "approved", "paid"],
            "signup": ["mailing", "waiting", "verified", "expired"], "report": ["queued", "running", "sent"]}
STATUSES = [("done", 0.70), ("waiting", 0.15), ("running", 0.10), ("failed", 0.04), ("cancelled", 0.01)]
DAY = 86400.0


def instances(count: int, now: float, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``count`` records, deterministic for a seed."""
    rng = random.Random(seed)
    names = list(MACHINES)
    statuses, weights = zip(*STATUSES, strict=True)
    for n in range(count):
        machine = names[n % len(names)]
        updated = now - rng.random() * 30 * DAY
        yield {"id": f"bench-{n:07d}", "machine": machine, "version": "", "state": rng.choice(MACHINES[machine]),
               "status": rng.choices(statuses, weights)[0], "step": rng.randint(1, 20), "retries": 0, "fence": 1,
               "lease_owner": "", "lease_expires": 0, "context": {"n": n, "note": "x" * 40}, "outbox": [],
               "consumed": None, "event_ids": [], "last_error": None, "failed_message": None,
               "checkpoint": None, "created_at": updated - 60, "updated_at": updated, "expires_at": 0,
               "pending": 0.0}


def queries(now: float) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("no filter", {}),
        ("--status failed", {"status": "failed"}),
        ("--status cancelled (1%)", {"status": "cancelled"}),
        ("--machine order", {"machine": "order"}),
        ("--machine order --status waiting", {"machine": "order", "status": "waiting"}),
        ("--machine order --state packed", {"machine": "order", "state": "packed"}),
        ("--machine order --state packed --status failed", {"machine": "order", "state": "packed",
                                                           "status": "failed"}),
        ("--since 1 hour ago", {"since": now - 3600}),
        ("--machine refund --since 1 day ago", {"machine": "refund", "since": now - DAY}),
    ]


def median_ms(work: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def deep_cursor(store: Any, limit: int, pages: int) -> str | None:
    """The cursor ``pages`` pages in, to time a page far from the newest."""
    cursor = None
    for _ in range(pages):
        _, cursor = store.list_instances(limit=limit, cursor=cursor)
    return cursor


# -- redis ----------------------------------------------------------------------------------


def fill_redis(store: RedisStore, count: int, now: float, batch: int = 1000) -> None:
    keys_of = store._keys
    pipe = store.client.pipeline(transaction=False)
    for n, record in enumerate(instances(count, now), 1):
        args: list[Any] = ["new", record["id"], 0, len(record)]
        for name, value in record.items():
            args += [name, dumps(value)]
        store._swap(keys=[*keys_of(record["id"]), store._index, *store._listing], args=args, client=pipe)
        if n % batch == 0:
            pipe.execute()
    pipe.execute()


def redis_touched(store: RedisStore, filters: dict[str, Any], limit: int, cursor: str | None) -> int:
    """Index members one listing reads: per status range, what lies between its bounds,
    up to ``limit + 1`` (the script reads no deeper)."""
    from sources.listing import list_query

    query = list_query(machine=filters.get("machine"), status=filters.get("status"), state=filters.get("state"),
                       since=filters.get("since"), limit=limit, cursor=cursor)
    read = 0
    for status in query.statuses:
        _, high, low = store._range(query, status)
        read += min(limit + 1, store.client.zlexcount(store._listing[0], low, high))
    return read


class CallCounter:
    """Counts a redis client's ``execute_command`` calls: its round trips."""

    def __init__(self, client: Any):
        self.calls, self._execute = 0, client.execute_command
        client.execute_command = self

    def __call__(self, *args: Any, **options: Any) -> Any:
        self.calls += 1
        return self._execute(*args, **options)


def bench_redis(url: str, count: int, limit: int, repeat: int) -> None:
    prefix = f"benchlist:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(url, prefix=prefix)
    try:
        now = time.time()
        started = time.perf_counter()
        fill_redis(store, count, now)
        members = store.client.zcard(store._listing[0])
        print(f"filled {count:,} instances in {time.perf_counter() - started:.1f}s "
              f"(through the swap script, pipelined); listing index: {members:,} members")
        header = f"{'query':<50} {'ms/page':>8} {'found':>6} {'calls':>6} {'members read':>13} {'records read':>13}"
        print(header)
        counter = CallCounter(store.client)
        rows = [(label, filters, None) for label, filters in queries(now)]
        rows.append((f"no filter, page {11} (after 10 cursors)", {}, deep_cursor(store, limit, 10)))
        for label, filters, cursor in rows:
            counter.calls = 0
            page, _ = store.list_instances(limit=limit, cursor=cursor, **filters)
            calls = counter.calls
            ms = median_ms(lambda f=filters, c=cursor: store.list_instances(limit=limit, cursor=c, **f), repeat)
            touched = redis_touched(store, filters, limit, cursor)
            print(f"{label:<50} {ms:8.2f} {len(page):6} {calls:6} {touched:13,} {len(page):13,}")
        print(f"(one listing reads at most 5 x (limit + 1) = {5 * (limit + 1)} members and `limit` records, "
              f"of {members:,} members and {count:,} records)")
    finally:
        with contextlib.suppress(Exception):
            for batch in _chunks(list(store.client.scan_iter(match=f"{prefix}*", count=5000)), 5000):
                store.client.delete(*batch)
        store.close()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# -- sqlite ---------------------------------------------------------------------------------


def fill_sqlite(store: SqliteStore, count: int, now: float) -> None:
    rows = [(r["id"], dumps(r), *_list_values(r)) for r in instances(count, now)]
    with store._lock:
        store._db.execute("BEGIN IMMEDIATE")
        store._db.executemany("INSERT INTO instances (id, record, machine, status, state, updated_key) "
                              "VALUES (?, ?, ?, ?, ?, ?)", rows)
        store._db.execute("COMMIT")
        store._db.execute("ANALYZE")


class CountingConnection:
    """Stands in for the store's connection: counts statements, rows and VM steps."""

    def __init__(self, db: Any):
        self.db, self.statements, self.rows, self.steps = db, 0, 0, 0
        db.set_progress_handler(self._step, 100)

    def _step(self) -> int:
        self.steps += 100
        return 0

    def execute(self, sql: str, params: Any = ()) -> Any:
        rows = self.db.execute(sql, params).fetchall()
        self.statements += 1
        self.rows += len(rows)
        return _Rows(rows)

    def reset(self) -> None:
        self.statements = self.rows = self.steps = 0


class _Rows:
    def __init__(self, rows: list[Any]):
        self.rows = rows

    def fetchall(self) -> list[Any]:
        return self.rows


def bench_sqlite(folder: Path, count: int, limit: int, repeat: int) -> None:
    store = SqliteStore(f"sqlite:///{folder / 'listing.sqlite3'}")
    try:
        now = time.time()
        started = time.perf_counter()
        fill_sqlite(store, count, now)
        print(f"filled {count:,} instances in {time.perf_counter() - started:.1f}s (one transaction)")
        print(f"{'query':<50} {'ms/page':>8} {'found':>6} {'statements':>10} {'rows read':>10} {'VM steps':>10}")
        real = store._db
        counting = CountingConnection(real)
        store._db = counting
        rows = [(label, filters, None) for label, filters in queries(now)]
        rows.append((f"no filter, page {11} (after 10 cursors)", {}, deep_cursor(store, limit, 10)))
        for label, filters, cursor in rows:
            counting.reset()
            page, _ = store.list_instances(limit=limit, cursor=cursor, **filters)
            figures = (counting.statements, counting.rows, counting.steps)
            ms = median_ms(lambda f=filters, c=cursor: store.list_instances(limit=limit, cursor=c, **f), repeat)
            print(f"{label:<50} {ms:8.2f} {len(page):6} {figures[0]:10} {figures[1]:10,} {figures[2]:10,}")
        counting.reset()
        scan_sql = ("SELECT record FROM instances WHERE json_extract(record, '$.status') = 'failed' "
                    "ORDER BY json_extract(record, '$.updated_at') DESC LIMIT ?")
        scan_ms = median_ms(lambda: counting.execute(scan_sql, (limit,)), max(1, repeat // 4))
        print(f"{'for scale: --status failed reading every record':<50} {scan_ms:8.2f} {limit:6} {1:10} "
              f"{count:10,} {counting.steps // max(1, repeat // 4):10,}")
        plan = real.execute("EXPLAIN QUERY PLAN SELECT updated_key, id, record FROM instances WHERE machine = ? "
                            "AND status = ? ORDER BY updated_key DESC, id DESC LIMIT 101", ("order", "waiting"))
        print("query plan (--machine order --status waiting):", "; ".join(row[-1] for row in plan))
        store._db = real
    finally:
        store.close()


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5,000 instances and 3 repeats (a smoke run)")
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--stores", default="redis,sqlite")
    args = parser.parse_args(argv)
    count, repeat = (5_000, 3) if args.quick else (args.instances, args.repeat)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    print(f"lambda-fsm listing benchmark: {count:,} instances, pages of {args.limit}, median of {repeat} "
          f"(Python {sys.version.split()[0]})")
    if "redis" in stores:
        print("\n== redis ==")
        with Servers() as servers:
            url = servers.redis()
            if url is None:
                print(f"skipped: {servers.missing.get('redis', 'unavailable')}")
            else:
                bench_redis(url, count, args.limit, repeat)
    if "sqlite" in stores:
        print("\n== sqlite ==")
        with tempfile.TemporaryDirectory() as folder:
            bench_sqlite(Path(folder), count, args.limit, repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
