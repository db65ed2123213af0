"""The ports the dispatcher talks to. Adapters live in ``sources/``, one per service.

Each port is a handful of primitives; the algorithms built on them (the fenced lease in
:mod:`fsm.lease`, failover in :mod:`sources.failover`, backoff in :mod:`fsm.backoff`)
are written once.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .record import RECORD_FIELDS, Record  # noqa: F401 - adapters import them from here

Scalar = str | int | float


@dataclass(frozen=True)
class SwapResult:
    ok: bool
    record: Record | None


class InstanceStore(Protocol):
    """Per-instance records plus their history, behind one compare-and-set primitive.

    ``swap`` is the only write. It is atomic and is one round trip wherever the backend
    allows (a Lua script, a conditional UpdateItem or TransactWriteItems, an sqlite
    transaction; memcached needs gets + cas):

    - ``expect is None``: the record must not exist; it is created from ``fields``.
    - otherwise the record must exist and every ``expect[name] == record[name]``;
      ``fields`` are then merged into it (fields not named keep their values).
    - when it succeeds and ``history`` is not empty, the entries are appended to the
      instance's history in the same atomic write.
    - it returns ``SwapResult(True, new_record)`` on success (``new_record`` may be
      ``None`` when ``history`` was written and the backend cannot return it in the same
      round trip) and ``SwapResult(False, current_record_or_None)`` when a condition
      failed. Adapters never raise for a failed condition.
    - backend faults raise ``RecoverableError`` (connection refused/reset, timeout,
      throttling, 5xx, missing table) or ``BackendError``.
    """

    url: str

    def swap(self, cid: str, expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any],
             history: Sequence[Mapping[str, Any]] = ()) -> SwapResult: ...

    def append(self, cid: str, entry: Mapping[str, Any]) -> SwapResult:
        """Append one external event to the instance's inbox, in one atomic write.

        ``entry`` has at least ``id`` (the event id) and ``at`` (epoch seconds). Atomically:
        when the record is missing, ``SwapResult(False, None)``; when ``entry["id"]`` is in
        the record's ``event_ids`` or already in its ``inbox``, ``SwapResult(False,
        record)`` (a duplicate, nothing written); otherwise ``inbox_end`` (absent reads as
        0) goes up by one, ``{**entry, "pos": inbox_end}`` goes at the end of ``inbox``,
        ``pending`` is set to ``entry["at"]`` when it was 0 or absent (so the sweep sees an
        inbox nobody drains), and ``SwapResult(True, record_after)`` is returned. One round
        trip (memcached: gets + cas). ``swap`` may rewrite ``inbox`` as a whole and
        ``expect`` may name ``inbox_end`` (absent reads as 0): an append in between makes
        such a swap fail, never lost."""

    def get(self, cid: str) -> Record | None: ...

    def history(self, cid: str, start: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """The instance's history entries ``start`` to ``start + limit`` (0-based,
        oldest first; ``limit`` None: to the end; past the end: fewer, or none). Reads
        only that range wherever the backend can (a list range, a key range, the pages
        that hold it), so the last page of a long history costs what the first does."""

    def history_len(self, cid: str) -> int:
        """How many entries the history holds (0 for an unknown instance), without
        reading them."""

    def close(self) -> None: ...


@runtime_checkable
class PendingIndex(Protocol):
    """Optional store capability: list the instances that owe a message, so a sweep can
    re-send what the bus lost. Stores keep the index in the same write as ``swap`` (a
    sorted set, a sparse GSI, an expression index). memcached cannot list keys and does
    not have it: there, lost messages heal only through redelivery and ``fsm resume``."""

    def pending(self, before: float, limit: int = 100) -> list[Record]:
        """Records whose ``0 < pending < before``, oldest first."""


class TimerStore(Protocol):
    """Messages due later than a bus can hold them (a state ``timeout``, long backoff)."""

    url: str

    def add(self, timer_id: str, due: float, body: str) -> None:
        """Idempotent on ``timer_id``."""

    def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        """Up to ``limit`` ``(timer_id, body)`` pairs due at ``now``, earliest first."""

    def remove(self, timer_id: str) -> None: ...


class PayloadStore(Protocol):
    """Where a payload above the offload threshold is kept (the claim check)."""

    url: str

    def put(self, key: str, body: bytes) -> str:
        """Store ``body`` under ``key``; return the URL a reference carries."""

    def get(self, url: str) -> bytes: ...


@runtime_checkable
class InstanceIndex(Protocol):
    """Optional store capability: find instances without reading them all.

    ``list_instances`` returns one page of records matching every filter given, most
    recently updated first, and an opaque cursor for the next page (``None`` at the end).
    Stores keep the index in the same write as ``swap`` (sqlite indexes, redis sorted
    sets, a DynamoDB GSI); memcached cannot list keys and does not have it."""

    def list_instances(self, *, machine: str | None = None, status: str | None = None,
                       state: str | None = None, since: float | None = None, limit: int = 50,
                       cursor: str | None = None) -> tuple[list[Record], str | None]: ...


@runtime_checkable
class GathersCalls(Protocol):
    """Optional store capability: the swaps and appends the threads of one batch make at
    the same moment go as one request (redis: a pipeline; see :mod:`fsm.gather`), so a
    batch of records for different instances is handled one thread per instance."""

    gathers: bool


@runtime_checkable
class NextDue(Protocol):
    """Optional timer capability: when the earliest timer is due (the embedded runtime
    sleeps until then instead of polling)."""

    def next_due(self) -> float | None: ...


class CheckpointStore(Protocol):
    """Stream positions by key: an instance's last consumed Kinesis record (for ``fsm
    resume``) and each worker shard reader's position."""

    url: str
    prefix: str

    def get(self, key: str, default: Any = None) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...


@runtime_checkable
class CommitsCheckpoints(Protocol):
    """Optional store capability: the store writes an instance's checkpoint item itself,
    inside the commit that consumed the record (no extra round trip), when the checkpoint
    store is the same table with the same prefix."""

    url: str
    prefix: str
    writes_checkpoints: bool


@dataclass(frozen=True)
class Delivery:
    """A message body as a service delivered it, and where it came from (``arn``, and
    ``shard``/``sequence`` for streams): what a record decoder hands to the dispatcher."""

    body: str | dict[str, Any]
    source: dict[str, Any]


@dataclass(frozen=True)
class Envelope:
    """What a bus sends: the encoded message plus what the bus needs to route it."""

    body: str
    key: str            # correlation id: FIFO MessageGroupId, Kinesis PartitionKey
    dedup_id: str
    delay: float = 0.0


class EventBus(Protocol):
    url: str
    max_delay: float    # the longest delay it can hold; 0 means none (FIFO, Kinesis, SNS)

    def send(self, envelope: Envelope) -> None: ...

    def send_batch(self, envelopes: Sequence[Envelope]) -> None:
        """Send all; raises ``PartialBatchError`` naming the indices that failed."""


class Poller(Protocol):
    """A queue or stream read outside Lambda (``fsm worker``), handing out records in
    Lambda's shapes and settling them as an event source mapping would."""

    arn: str
    ordered: bool       # a failed record must be read again before the ones after it

    def poll(self, wait: bool = True) -> list[dict[str, Any]]:
        """Up to a batch of records; ``wait`` allows a long poll when there are none."""

    def done(self, records: list[dict[str, Any]], failed: set[str]) -> None: ...


class Metrics(Protocol):
    def incr(self, name: str, value: float = 1.0, unit: str = "Count",
             dims: Mapping[str, str] | None = None) -> None: ...

    def flush(self) -> None: ...


class NullMetrics:
    """Counts in memory only; what the local runtime and tests read back."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self._lock = threading.Lock()   # the threads of a batch count too (fsm.gather)

    def incr(self, name: str, value: float = 1.0, unit: str = "Count",
             dims: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0.0) + value

    def flush(self) -> None:
        pass
