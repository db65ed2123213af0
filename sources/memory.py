"""``memory://``: the embedded in-process store, timer store and bus.

Everything is kept as JSON text, so a value that would not survive a real backend
fails here too, and nothing is shared by reference between a record and its reader."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from fsm import codec
from fsm.errors import BackendError
from fsm.ports import Envelope, Record, Scalar, SwapResult

from .base import appended, checked_entry, dumps, expect_holds, merged
from .listing import list_query, page_of, time_key


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

    def history(self, cid: str, start: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries ``start`` to ``start + limit`` (0-based; ``limit`` None: to the end);
        only those are decoded."""
        start = max(0, start)
        with self._lock:
            kept = self._history.get(cid, [])
            texts = kept[start:] if limit is None else kept[start:start + max(0, limit)]
        return [codec.loads(h) for h in texts]

    def history_len(self, cid: str) -> int:
        with self._lock:
            return len(self._history.get(cid, ()))

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
