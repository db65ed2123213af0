"""The ports the dispatcher talks to. Adapters live in ``sources/``, one per service.

Each port is a handful of primitives; the algorithms built on them (the fenced lease in
:mod:`fsm.lease`, failover in :mod:`sources.failover`, backoff in :mod:`fsm.backoff`)
are written once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# The instance record: field name -> how adapters that need types store it.
#   str / int / float: scalars, the only kinds an ``expect`` condition compares;
#   json: any JSON value (adapters without native documents store it as JSON text).
RECORD_FIELDS: dict[str, str] = {
    "id": "str",
    "machine": "str",
    "version": "str",
    "state": "json",          # str, or null before the first commit
    "status": "str",          # running | waiting | done | failed | cancelled
    "step": "int",            # transitions committed
    "retries": "int",         # failed attempts at the current step
    "fence": "int",           # raised by every acquire; a commit must present it
    "lease_owner": "str",     # "" when free
    "lease_expires": "int",   # epoch milliseconds, 0 when free
    "context": "json",
    "outbox": "json",         # [{"message": {...}, "delay": seconds}] this commit must send
    "consumed": "json",       # {"step", "retries", "event_id"} of the message last committed
    "event_ids": "json",      # recent external event ids, for deduplication
    "last_error": "json",
    "failed_message": "json",  # kept when the instance failed, for `retry`
    "checkpoint": "json",     # {"source": arn, "sequence": n} of the last consumed record
    "created_at": "float",
    "updated_at": "float",
    "expires_at": "int",      # epoch seconds for store-side expiry (DynamoDB TTL), 0 = never
    "pending": "float",       # when the outbox was written and not yet consumed; 0 = nothing owed
}

Record = dict[str, Any]
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

    def get(self, cid: str) -> Record | None: ...

    def history(self, cid: str) -> list[dict[str, Any]]: ...

    def pending(self, before: float, limit: int = 100) -> list[Record]:
        """Records whose ``0 < pending < before``, oldest first: instances that owe a
        message. Stores keep this index in the same write as ``swap`` (a sorted set, a
        sparse GSI, a scan for the embedded ones); memcached cannot list and raises
        ``BackendError``."""

    def close(self) -> None: ...


class TimerStore(Protocol):
    """Messages due later than a bus can hold them (a state ``timeout``, long backoff)."""

    url: str

    def add(self, timer_id: str, due: float, body: str) -> None:
        """Idempotent on ``timer_id``."""

    def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        """Up to ``limit`` ``(timer_id, body)`` pairs due at ``now``, earliest first."""

    def remove(self, timer_id: str) -> None: ...


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


class Metrics(Protocol):
    def incr(self, name: str, value: float = 1.0, unit: str = "Count",
             dims: Mapping[str, str] | None = None) -> None: ...

    def flush(self) -> None: ...


class NullMetrics:
    """Counts in memory only; what the local runtime and tests read back."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}

    def incr(self, name: str, value: float = 1.0, unit: str = "Count",
             dims: Mapping[str, str] | None = None) -> None:
        self.counts[name] = self.counts.get(name, 0.0) + value

    def flush(self) -> None:
        pass
