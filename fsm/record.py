"""The instance record, its statuses and its history entries: one typed definition.

A record is a plain ``dict`` at run time (stores serialise it field by field and the
hot path copies it several times per transition), typed by :class:`Record` so that every
reader and writer names its fields the same way. History entries and errors are built
only by :func:`history_entry` and :func:`error_info`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypedDict

from .message import iso


class Status(StrEnum):
    """Instance statuses, everywhere (records, status views, metrics, the CLI)."""

    RUNNING = "running"      # a message for it is on its way or being handled
    WAITING = "waiting"      # settled in a state, waiting for an external event or a timer
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED})
SETTLED = FINISHED | {Status.WAITING}

# Field name -> how adapters that need types store it.
#   str / int / float: scalars, the only kinds an ``expect`` condition compares;
#   json: any JSON value (adapters without native documents store it as JSON text).
RECORD_FIELDS: dict[str, str] = {
    "id": "str",
    "machine": "str",
    "version": "str",
    "state": "json",          # str, or null before the first commit
    "status": "str",          # a Status
    "step": "int",            # transitions committed
    "retries": "int",         # failed attempts at the current step
    "fence": "int",           # raised by every acquire; a commit must present it
    "lease_owner": "str",     # "" when free
    "lease_expires": "int",   # epoch milliseconds, 0 when free
    "context": "json",
    "outbox": "json",         # [{"message": {...}, "delay": seconds}] this commit must send
    "consumed": "json",       # {"kind", "step", "retries"} or {"kind", "event_id"} last committed
    "event_ids": "json",      # recent external event ids, for deduplication
    "last_error": "json",     # an error_info(), or null
    "failed_message": "json",  # kept when the instance failed, for `retry`
    "checkpoint": "json",     # {"arn", "shard", "sequence"} of the last consumed stream record
    "created_at": "float",
    "updated_at": "float",
    "expires_at": "int",      # epoch seconds for store-side expiry (DynamoDB TTL), 0 = never
    "pending": "float",       # when the outbox was written and not yet consumed; 0 = nothing owed
    "inbox": "json",          # external events not yet applied, oldest first: [inbox entry]
    "inbox_end": "int",       # position of the last event ever appended (0: none; absent reads as 0)
    "chart": "json",          # statecharts: {"active": [paths], "history": {...}, "entered": {...}}
    "migrate_to": "json",     # a version `fsm migrate` moves the instance to once its run settles
    "parent": "json",         # a child instance: {"id", "machine", "version", "state", "stamp", "index", "store"}
    "children": "json",       # children started: [{"state", "prefix", "count"}] per visit (fsm.join.child_ids)
    "output": "json",         # a finished instance's output (Machine.output), when its machine gives one
}


class Record(TypedDict, total=False):
    id: str
    machine: str
    version: str
    state: str | None
    status: str
    step: int
    retries: int
    fence: int
    lease_owner: str
    lease_expires: int
    context: dict[str, Any]
    outbox: list[dict[str, Any]]
    consumed: dict[str, Any] | None
    event_ids: list[str]
    last_error: dict[str, Any] | None
    failed_message: dict[str, Any] | None
    checkpoint: dict[str, Any] | None
    created_at: float
    updated_at: float
    expires_at: int
    pending: float
    inbox: list[dict[str, Any]]
    inbox_end: int
    chart: dict[str, Any] | None
    migrate_to: str | None
    parent: dict[str, Any] | None
    children: list[dict[str, Any]]
    output: Any


def freshness(record: Record, store_index: int) -> tuple[int, int, int]:
    """Which of an instance's records (one per configured store) is the live one: the
    furthest step, then the highest fence, then the later store (failover only goes
    forward, so on a tie the instance has moved on)."""
    return (record.get("step", 0), record.get("fence", 0), store_index)


def new_record(cid: str, machine: str, version: str, state: str | None, step: int, retries: int,
               context: dict[str, Any] | None, now: float) -> Record:
    return {"id": cid, "machine": machine, "version": version, "state": state, "status": Status.RUNNING,
            "step": step, "retries": retries, "fence": 0, "lease_owner": "", "lease_expires": 0,
            "context": context or {}, "outbox": [], "consumed": None, "event_ids": [], "last_error": None,
            "failed_message": None, "checkpoint": None, "created_at": now, "updated_at": now, "expires_at": 0}


def history_entry(step: int, source: str | None, event: str | None, target: str | None, now: float, *,
                  duration: float = 0.0, retries: int = 0, error: str | None = None,
                  rejected: bool = False, cancelled: str | None = None, pos: int = 0,
                  value: Any = None) -> dict[str, Any]:
    """One line of an instance's history: a transition, a failed attempt (``error``),
    a rejected event (``rejected``) or a cancellation (``cancelled``: the reason).
    ``pos``: the inbox position of the event it took; ``value``: a statechart's state
    value after it."""
    entry: dict[str, Any] = {"step": step, "from": source, "event": event, "to": target, "time": iso(now),
                             "duration": round(duration, 6), "retries": retries}
    if rejected:
        entry["rejected"] = True
    if error is not None:
        entry["error"] = error
    if cancelled is not None:
        entry["cancelled"] = cancelled
    if pos:
        entry["pos"] = pos
    if value is not None:
        entry["value"] = value
    return entry


def error_info(message: str, step: int, state: str | None, event: str | None, now: float) -> dict[str, Any]:
    """What ``last_error`` holds: the error and where the instance stood."""
    return {"message": message, "step": step, "state": state, "event": event, "time": iso(now)}
