"""``sqlite:///relative/path`` or ``sqlite:////absolute/path``: the embedded durable store.

One file holds records, history and timers, so a waiting instance survives the process
and another process (``fsm send``) can resume it. ``swap`` is one ``BEGIN IMMEDIATE``
transaction: the write lock makes read-check-write atomic across processes.

Listing (``list_instances``): besides the record's JSON, a row keeps the four values
instances are found by in columns of their own (``machine``, ``status``, ``state`` and
``updated_key``, the record's ``updated_at`` as :func:`~sources.memory.time_key`),
written by the same statement as the record, and three indexes serve every filter:
``(status, updated_key, id)`` for none or a status, ``(machine, status, ...)`` for a
machine, ``(machine, state, status, ...)`` for a machine and a state. Each page is one
index range per status read ``limit + 1`` deep, so its cost does not grow with the
number of instances. Plain columns rather than expression indexes: a commit then pays
no JSON parsing per index, and a swap that names none of the four (taking a lease)
updates only the record. A file made before listing existed gains the columns, filled
from the records, when it is first opened.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fsm import codec
from fsm.errors import BackendError, RecoverableError
from fsm.ports import Record, Scalar, SwapResult

from .base import appended, checked_entry, dumps, expect_holds, merged
from .listing import list_query, page_of, time_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, record TEXT NOT NULL,
                                      machine TEXT, status TEXT, state TEXT, updated_key TEXT);
CREATE TABLE IF NOT EXISTS history (id TEXT NOT NULL, seq INTEGER NOT NULL, entry TEXT NOT NULL,
                                    PRIMARY KEY (id, seq));
CREATE TABLE IF NOT EXISTS timers (id TEXT PRIMARY KEY, due REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due);
CREATE INDEX IF NOT EXISTS instances_pending ON instances (json_extract(record, '$.pending'));
"""
LISTED = frozenset({"machine", "status", "state", "updated_at"})    # record fields with a column
LIST_COLUMNS = ("machine", "status", "state", "updated_key")
LIST_INDEXES = """
CREATE INDEX IF NOT EXISTS instances_by_status ON instances (status, updated_key, id);
CREATE INDEX IF NOT EXISTS instances_by_machine ON instances (machine, status, updated_key, id);
CREATE INDEX IF NOT EXISTS instances_by_state ON instances (machine, state, status, updated_key, id);
"""


def path_of(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise BackendError(f"sqlite URL {url!r} must look like sqlite:///relative/path or sqlite:////abs/path")
    return Path(url[len("sqlite:///"):])


class SqliteStore:
    def __init__(self, url: str):
        self.url = url
        path = path_of(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        if not set(LIST_COLUMNS) <= _columns(self._db):
            self._run(_add_list_columns)
        self._db.executescript(LIST_INDEXES)

    def _run(self, work: Any) -> Any:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                raise RecoverableError(f"{self.url}: {exc}") from exc

    def swap(self, cid: str, expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any],
             history: Sequence[Mapping[str, Any]] = ()) -> SwapResult:
        def work(db: sqlite3.Connection) -> SwapResult:
            current = _load(db, cid)
            if not expect_holds(current, expect):
                return SwapResult(False, current)
            record = merged(current, fields)
            if current is None:
                db.execute("INSERT INTO instances (id, record, machine, status, state, updated_key) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (cid, dumps(record), *_list_values(record)))
            elif LISTED.isdisjoint(fields):     # only the record: the listing indexes stay untouched
                db.execute("UPDATE instances SET record = ? WHERE id = ?", (dumps(record), cid))
            else:
                db.execute("UPDATE instances SET record = ?, machine = ?, status = ?, state = ?, updated_key = ? "
                           "WHERE id = ?", (dumps(record), *_list_values(record), cid))
            if history:
                (last,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM history WHERE id = ?", (cid,)).fetchone()
                db.executemany("INSERT INTO history (id, seq, entry) VALUES (?, ?, ?)",
                               [(cid, last + i + 1, dumps(h)) for i, h in enumerate(history)])
            return SwapResult(True, record)

        return self._run(work)

    def append(self, cid: str, entry: Mapping[str, Any]) -> SwapResult:
        """See :meth:`fsm.ports.InstanceStore.append`: one ``BEGIN IMMEDIATE``
        transaction. Only the record changes: the pending index reads it (an expression
        index) and an append names no listed field."""
        entry = checked_entry(entry)

        def work(db: sqlite3.Connection) -> SwapResult:
            current = _load(db, cid)
            if current is None:
                return SwapResult(False, None)
            fields = appended(current, entry)
            if fields is None:
                return SwapResult(False, current)
            record = merged(current, fields)
            db.execute("UPDATE instances SET record = ? WHERE id = ?", (dumps(record), cid))
            return SwapResult(True, record)

        return self._run(work)

    def get(self, cid: str) -> Record | None:
        with self._lock:
            return _load(self._db, cid)

    def history(self, cid: str, start: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries ``start`` to ``start + limit`` (0-based; ``limit`` None: to the end).
        A swap numbers an instance's entries 1, 2, 3, ... (``seq``) and none is ever
        removed alone, so entry ``n`` (0-based) has ``seq`` ``n + 1``: a page is one range
        of the primary key, however long the history."""
        start = max(0, start)
        sql, params = "SELECT entry FROM history WHERE id = ? AND seq > ? ORDER BY seq", [cid, start]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [codec.loads(entry) for (entry,) in rows]

    def history_len(self, cid: str) -> int:
        """How many entries the instance's history holds: its last ``seq`` (one index
        lookup, not a count of the rows)."""
        with self._lock:
            (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM history WHERE id = ?", (cid,)).fetchone()
        return int(last)

    def pending(self, before: float, limit: int = 100) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM instances WHERE json_extract(record, '$.pending') > 0 "
                "AND json_extract(record, '$.pending') < ? ORDER BY json_extract(record, '$.pending') LIMIT ?",
                (before, limit)).fetchall()
        return [codec.loads(record) for (record,) in rows]

    def list_instances(self, *, machine: str | None = None, status: str | None = None,
                       state: str | None = None, since: float | None = None, limit: int = 50,
                       cursor: str | None = None) -> tuple[list[Record], str | None]:
        """One page, most recently updated first: one index range per status (see the
        module docstring); only the page's records are decoded."""
        query = list_query(machine=machine, status=status, state=state, since=since, limit=limit, cursor=cursor)
        params: dict[str, Any] = {"machine": machine, "state": state, "since": query.since_key,
                                  "limit": query.limit + 1}
        where = [name for name in ("machine", "state") if params[name] is not None]
        clauses = [f"{name} = :{name}" for name in where] + ["status = :status"]
        if query.since_key is not None:
            clauses.append("updated_key >= :since")
        if query.after is not None:
            clauses.append("(updated_key, id) < (:after_key, :after_id)")
            params["after_key"], params["after_id"] = query.after
        sql = (f"SELECT updated_key, id, record FROM instances WHERE {' AND '.join(clauses)} "
               "ORDER BY updated_key DESC, id DESC LIMIT :limit")
        found = []
        with self._lock:
            for each in query.statuses:
                found += self._db.execute(sql, {**params, "status": each}).fetchall()
        page, after = page_of(found, query.limit)
        return [codec.loads(text) for text in page], after

    # -- timers (the same file: the embedded runtime needs no other backend) --------------

    def add(self, timer_id: str, due: float, body: str) -> None:
        self._run(lambda db: db.execute("INSERT OR IGNORE INTO timers (id, due, body) VALUES (?, ?, ?)",
                                        (timer_id, due, body)))

    def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        with self._lock:
            return self._db.execute("SELECT id, body FROM timers WHERE due <= ? ORDER BY due LIMIT ?",
                                    (now, limit)).fetchall()

    def remove(self, timer_id: str) -> None:
        self._run(lambda db: db.execute("DELETE FROM timers WHERE id = ?", (timer_id,)))

    def next_due(self) -> float | None:
        with self._lock:
            (due,) = self._db.execute("SELECT MIN(due) FROM timers").fetchone()
        return due

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _list_values(record: Record) -> tuple[str | None, str | None, str | None, str]:
    """The listing columns of a record (a state or machine that is not a string is
    never asked for: it is kept as NULL)."""
    machine, status, state = record.get("machine"), record.get("status"), record.get("state")
    return (machine if isinstance(machine, str) else None, str(status) if isinstance(status, str) else None,
            state if isinstance(state, str) else None, time_key(record.get("updated_at")))


def _columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(instances)")}


def _add_list_columns(db: sqlite3.Connection) -> None:
    """Upgrade a file made before listing: add the columns and fill them from the
    records, once, inside the write lock (another process may be doing the same)."""
    for column in LIST_COLUMNS:
        if column not in _columns(db):
            db.execute(f"ALTER TABLE instances ADD COLUMN {column} TEXT")
    rows = db.execute("SELECT id, record FROM instances WHERE updated_key IS NULL").fetchall()
    db.executemany("UPDATE instances SET machine = ?, status = ?, state = ?, updated_key = ? WHERE id = ?",
                   [(*_list_values(codec.loads(text)), cid) for cid, text in rows])


def _load(db: sqlite3.Connection, cid: str) -> Record | None:
    row = db.execute("SELECT record FROM instances WHERE id = ?", (cid,)).fetchone()
    return None if row is None else codec.loads(row[0])
