"""``memory://``: the embedded in-process store, timer store and bus.

Everything is kept as JSON text, so a value that would not survive a real backend
fails here too, and nothing is shared by reference between a record and its reader.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from typing import Any, Mapping, Sequence

from fsm.ports import Envelope, Record, Scalar, SwapResult

from .base import dumps, matches, merged


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
            if not matches(current, expect):
                return SwapResult(False, current)
            record = merged(current, fields)
            self._records[cid] = dumps(record)
            if history:
                self._history.setdefault(cid, []).extend(dumps(h) for h in history)
            return SwapResult(True, json.loads(self._records[cid]))

    def get(self, cid: str) -> Record | None:
        with self._lock:
            return self._load(cid)

    def history(self, cid: str) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(h) for h in self._history.get(cid, [])]

    def close(self) -> None:
        pass

    def _load(self, cid: str) -> Record | None:
        raw = self._records.get(cid)
        return None if raw is None else json.loads(raw)


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
    """A delay-ordered queue; ``receive`` hands out what is due, FIFO among equals."""

    max_delay = float("inf")

    def __init__(self, url: str = "memory://", clock: Any = time.time):
        self.url = url
        self.clock = clock
        self._heap: list[tuple[float, int, Envelope]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.sent = 0

    def send(self, envelope: Envelope) -> None:
        with self._lock:
            due = self.clock() + envelope.delay if envelope.delay > 0 else 0.0
            heapq.heappush(self._heap, (due, next(self._seq), envelope))
            self.sent += 1

    def send_batch(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            self.send(envelope)

    def receive(self, limit: int = 10) -> list[Envelope]:
        now, out = self.clock(), []
        with self._lock:
            while self._heap and self._heap[0][0] <= now and len(out) < limit:
                out.append(heapq.heappop(self._heap)[2])
        return out

    def next_due(self) -> float | None:
        with self._lock:
            return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
