"""``memory://``: the embedded in-process store, timer store and bus.

Everything is kept as JSON text, so a value that would not survive a real backend
fails here too, and nothing is shared by reference between a record and its reader.

This module also holds the inbox rules (:func:`appended`, :func:`expect_holds`) that
every store follows: memory, sqlite and memcached apply them in Python, redis and
DynamoDB inside the backend and check their replies with them.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from fsm import codec
from fsm.errors import BackendError
from fsm.message import ID_PATTERN
from fsm.ports import Envelope, Record, Scalar, SwapResult

from .base import dumps, matches, merged
from .listing import list_query, page_of, time_key

INBOX, INBOX_END, PENDING = "inbox", "inbox_end", "pending"


# ---- the inbox rules, shared by every store --------------------------------------------


def checked_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` as a plain dict, refused unless its ``id`` is an event id and ``at`` a
    finite number. Redis and DynamoDB find an id by its quoted text (``"id"``) in JSON,
    which is exact only because an event id holds no quote or backslash."""
    event_id, at = entry.get("id"), entry.get("at")
    if not isinstance(event_id, str) or not ID_PATTERN.fullmatch(event_id):
        raise BackendError(f"inbox entry id {event_id!r} must match {ID_PATTERN.pattern}")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        raise BackendError(f"inbox entry {event_id!r}: 'at' must be epoch seconds, got {at!r}")
    return dict(entry)


def is_duplicate(record: Record, event_id: str) -> bool:
    """The event was applied already (``event_ids``) or is waiting in the inbox."""
    applied = record.get("event_ids")
    if isinstance(applied, list) and event_id in applied:
        return True
    return any(isinstance(e, Mapping) and e.get("id") == event_id for e in record.get(INBOX) or ())


def appended(record: Record, entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fields an append of ``entry`` (see :func:`checked_entry`) changes in
    ``record``, or ``None`` for a duplicate. ``pending`` is only set when nothing is owed
    yet (0, null or absent): an earlier debt is older and the sweep must see that one."""
    if is_duplicate(record, entry["id"]):
        return None
    end = (record.get(INBOX_END) or 0) + 1
    fields: dict[str, Any] = {INBOX: [*(record.get(INBOX) or ()), {**entry, "pos": end}], INBOX_END: end}
    if not record.get(PENDING):
        fields[PENDING] = entry["at"]
    return fields


def expect_holds(current: Record | None, expect: Mapping[str, Scalar] | None) -> bool:
    """:func:`sources.base.matches`, with a missing ``inbox_end`` read as 0: records
    made before inboxes existed have none, and a swap expecting 0 must find them."""
    if current is not None and expect and INBOX_END in expect and INBOX_END not in current:
        wanted = expect[INBOX_END]
        if wanted == 0 and not isinstance(wanted, bool):
            current = {**current, INBOX_END: 0}
    return matches(current, expect)


class MemoryStore:
    def __init__(self, url: str = "memory://"):
        self.url = url
        self._records: dict[str, str] = {}
        self._history: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def swap(self, cid: str, expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any],
             history: Sequence[Mapping[str, Any]] = ()) -> SwapResult:
        with self._lock:
            current = self._load(cid)
            if not expect_holds(current, expect):
                return SwapResult(False, current)
            record = merged(current, fields)
            self._records[cid] = dumps(record)
            if history:
                self._history.setdefault(cid, []).extend(dumps(h) for h in history)
                return SwapResult(True, None)  # allowed by the port; saves a decode per commit
            return SwapResult(True, codec.loads(self._records[cid]))

    def append(self, cid: str, entry: Mapping[str, Any]) -> SwapResult:
        """See :meth:`fsm.ports.InstanceStore.append`: under the store's lock."""
        entry = checked_entry(entry)
        with self._lock:
            current = self._load(cid)
            if current is None:
                return SwapResult(False, None)
            fields = appended(current, entry)
            if fields is None:
                return SwapResult(False, current)
            self._records[cid] = dumps(merged(current, fields))
            return SwapResult(True, codec.loads(self._records[cid]))

    def get(self, cid: str) -> Record | None:
        with self._lock:
            return self._load(cid)

    def history(self, cid: str) -> list[dict[str, Any]]:
        with self._lock:
            return [codec.loads(h) for h in self._history.get(cid, [])]

    def pending(self, before: float, limit: int = 100) -> list[Record]:
        with self._lock:
            records = [codec.loads(raw) for raw in self._records.values()]
        owing = sorted((r for r in records if 0 < (r.get("pending") or 0) < before), key=lambda r: r["pending"])
        return owing[:limit]

    def list_instances(self, *, machine: str | None = None, status: str | None = None,
                       state: str | None = None, since: float | None = None, limit: int = 50,
                       cursor: str | None = None) -> tuple[list[Record], str | None]:
        """One page (see the module docstring). The test double filters every record in
        Python; the other stores read index ranges."""
        query = list_query(machine=machine, status=status, state=state, since=since, limit=limit, cursor=cursor)
        with self._lock:
            records = [(cid, codec.loads(raw)) for cid, raw in self._records.items()]
        found = [(time_key(r.get("updated_at")), cid, r) for cid, r in records if query.admits(cid, r)]
        return page_of(found, query.limit)

    def close(self) -> None:
        pass

    def _load(self, cid: str) -> Record | None:
        raw = self._records.get(cid)
        return None if raw is None else codec.loads(raw)


class MemoryTimers:
    def __init__(self, url: str = "memory://"):
        self.url = url
        self._timers: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def add(self, timer_id: str, due: float, body: str) -> None:
        with self._lock:
            self._timers.setdefault(timer_id, (due, body))

    def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        with self._lock:
            ready = sorted((due, tid, body) for tid, (due, body) in self._timers.items() if due <= now)
        return [(tid, body) for _, tid, body in ready[:limit]]

    def remove(self, timer_id: str) -> None:
        with self._lock:
            self._timers.pop(timer_id, None)

    def next_due(self) -> float | None:
        with self._lock:
            return min((due for due, _ in self._timers.values()), default=None)


class MemoryBus:
    """An in-process FIFO queue. It holds no delays (``max_delay = 0``): delayed
    messages go to the timer store, which is durable on sqlite."""

    max_delay = 0.0

    def __init__(self, url: str = "memory://"):
        self.url = url
        self._queue: deque[Envelope] = deque()
        self._lock = threading.Lock()
        self.sent = 0

    def send(self, envelope: Envelope) -> None:
        if envelope.delay > 0:
            raise BackendError(f"{self.url} cannot delay a message; use a timer store")
        with self._lock:
            self._queue.append(envelope)
            self.sent += 1

    def send_batch(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            self.send(envelope)

    def receive(self, limit: int = 10) -> list[Envelope]:
        with self._lock:
            return [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]

    def __len__(self) -> int:
        return len(self._queue)


class MemoryPayloads:
    """The claim check's payload store in this process (``offload: {store: memory://}``),
    for the embedded runtime and tests."""

    def __init__(self, url: str = "memory://"):
        self.url = url
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, body: bytes) -> str:
        url = self.url + key if self.url.endswith("//") else f"{self.url.rstrip('/')}/{key}"
        self.objects[url] = body
        return url

    def get(self, url: str) -> bytes:
        try:
            return self.objects[url]
        except KeyError:
            raise BackendError(f"no payload {url!r} in this process's memory store") from None

    def close(self) -> None:
        pass
