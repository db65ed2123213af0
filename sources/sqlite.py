"""``sqlite:///relative/path`` or ``sqlite:////absolute/path``: the embedded durable store.

One file holds records, history and timers, so a waiting instance survives the process
and another process (``fsm send``) can resume it. ``swap`` is one ``BEGIN IMMEDIATE``
transaction: the write lock makes read-check-write atomic across processes.
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

from .base import dumps, matches, merged

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (id TEXT NOT NULL, seq INTEGER NOT NULL, entry TEXT NOT NULL,
                                    PRIMARY KEY (id, seq));
CREATE TABLE IF NOT EXISTS timers (id TEXT PRIMARY KEY, due REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due);
CREATE INDEX IF NOT EXISTS instances_pending ON instances (json_extract(record, '$.pending'));
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
            if not matches(current, expect):
                return SwapResult(False, current)
            record = merged(current, fields)
            db.execute("INSERT OR REPLACE INTO instances (id, record) VALUES (?, ?)", (cid, dumps(record)))
            if history:
                (last,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM history WHERE id = ?", (cid,)).fetchone()
                db.executemany("INSERT INTO history (id, seq, entry) VALUES (?, ?, ?)",
                               [(cid, last + i + 1, dumps(h)) for i, h in enumerate(history)])
            return SwapResult(True, record)

        return self._run(work)

    def get(self, cid: str) -> Record | None:
        with self._lock:
            return _load(self._db, cid)

    def history(self, cid: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT entry FROM history WHERE id = ? ORDER BY seq", (cid,)).fetchall()
        return [codec.loads(entry) for (entry,) in rows]

    def pending(self, before: float, limit: int = 100) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM instances WHERE json_extract(record, '$.pending') > 0 "
                "AND json_extract(record, '$.pending') < ? ORDER BY json_extract(record, '$.pending') LIMIT ?",
                (before, limit)).fetchall()
        return [codec.loads(record) for (record,) in rows]

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


def _load(db: sqlite3.Connection, cid: str) -> Record | None:
    row = db.execute("SELECT record FROM instances WHERE id = ?", (cid,)).fetchone()
    return None if row is None else codec.loads(row[0])
