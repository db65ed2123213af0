"""The fenced lease, written once over ``InstanceStore.swap``.

Every message carries the sender's view of the record: (step, retries, fence). The
first ``swap`` expects exactly that view with a free lease, which is what the record
looks like on the happy path, so acquiring is one round trip. When the guess is wrong
the store hands back the record it has, and :func:`acquire` decides from it: a
duplicate (the step is already committed), a live lease (retry later), or a lease
that expired or a record that is behind or missing (take it over, one more round trip).

Every acquire raises the fence above both the stored fence and the message's, and a
commit must present it: a worker whose lease expired and was taken over cannot commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .message import Message
from .ports import InstanceStore, Record

FINISHED = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class Lease:
    record: Record
    fence: int
    owner: str


@dataclass(frozen=True)
class Duplicate:
    """The message's step is already committed (or the instance finished)."""

    record: Record


@dataclass(frozen=True)
class Busy:
    """Another worker holds a live lease, or the instance is not ready for this message."""

    record: Record | None


@dataclass(frozen=True)
class Missing:
    """An event for an instance the store does not know."""


Acquired = Lease | Duplicate | Busy | Missing


def _lease_fields(owner: str, fence: int, now: int, lease_ms: int) -> dict[str, Any]:
    return {"lease_owner": owner, "lease_expires": now + lease_ms, "fence": fence}


def live(record: Record, now: int) -> bool:
    """Someone holds the lease and it has not expired (``now`` in epoch milliseconds)."""
    return bool(record.get("lease_owner")) and record.get("lease_expires", 0) > now


def acquire(store: InstanceStore, msg: Message, owner: str, lease_ms: int, now: int,
            new_record: Callable[[], dict[str, Any]]) -> Acquired:
    """Take the instance's lease for ``msg``; ``new_record()`` makes one if none exists."""
    steps = msg.kind == "step"
    if steps and msg.position == (0, 0):
        expect = None
        fields = {**new_record(), **_lease_fields(owner, msg.fence + 1, now, lease_ms)}
    else:
        expect = {"step": msg.step, "fence": msg.fence, "lease_owner": ""}
        if steps:
            expect["retries"] = msg.retries
        elif msg.kind in ("event", "timer"):
            expect["status"] = "waiting"
        fields = _lease_fields(owner, msg.fence + 1, now, lease_ms)
    result = store.swap(msg.correlation_id, expect, fields)
    if result.ok:
        return Lease(result.record or fields, fields["fence"], owner)
    current = result.record
    decision = _decide(msg, current, now)
    if decision is not None:
        return decision
    # Take over: expect exactly the record we were shown, so a racing worker makes us lose.
    fence = max(current["fence"] if current else 0, msg.fence) + 1
    fields = _lease_fields(owner, fence, now, lease_ms)
    if current is None:
        expect, fields = None, {**new_record(), **fields}
    else:
        expect = {k: current[k] for k in ("step", "retries", "fence", "lease_owner", "lease_expires")}
        if steps and (current["step"], current["retries"]) < msg.position:
            # The record is behind the message (restored, or replayed from a log): the
            # message is the truth, as it carries the committed context.
            fields.update(step=msg.step, retries=msg.retries, state=msg.state,
                          context=msg.context or {}, status="running")
    result = store.swap(msg.correlation_id, expect, fields)
    if result.ok:
        return Lease(result.record or {**(current or {}), **fields}, fence, owner)
    return Busy(result.record)


def _decide(msg: Message, current: Record | None, now: int) -> Acquired | None:
    """What an unexpected record means for ``msg``; ``None`` means: take it over."""
    if current is None:
        return Missing() if msg.kind != "step" else None
    if msg.kind == "step":
        if current["status"] in FINISHED or (current["step"], current["retries"]) > msg.position:
            return Duplicate(current)
    elif msg.event_id in (current.get("event_ids") or ()):
        return Duplicate(current)
    elif msg.kind == "timer" and (current["step"] != msg.step or current["state"] != msg.state
                                  or current["status"] in FINISHED):
        return Duplicate(current)  # the state was left or re-entered since: stale timer
    elif msg.kind == "event" and current["status"] == "running":
        return Busy(current)  # mid-run: apply it once the instance settles
    # An event or cancel for a finished instance is taken in, to record its rejection.
    if live(current, now):
        return Busy(current)
    return None


def commit(store: InstanceStore, lease: Lease, fields: dict[str, Any],
           history: list[dict[str, Any]] | tuple = ()) -> bool:
    """Write the transition and release the lease, only if our fence still stands."""
    fields = {**fields, "lease_owner": "", "lease_expires": 0}
    result = store.swap(lease.record["id"], {"fence": lease.fence, "lease_owner": lease.owner},
                        fields, history)
    return result.ok
