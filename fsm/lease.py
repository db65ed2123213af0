"""The fenced lease, written once over ``InstanceStore.swap``.

Every message carries the sender's view of the record: (step, retries, fence). The
first ``swap`` expects exactly that view with a free lease, which is what the record
looks like on the happy path, so acquiring is one round trip. When the guess is wrong
the store hands back the record it has, and :func:`acquire` decides from it: a
duplicate (the step is already committed), a live lease (retry later), or a lease
that expired or a record that is behind or missing (take it over, one more round trip).

Every acquire raises the fence above both the stored fence and the message's, and a
commit must present it: a worker whose lease expired and was taken over cannot commit.
A commit whose answer was lost is read back (:func:`commit_checked`): one that landed
stands.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import RecoverableError
from .logs import log
from .message import Kind, Message
from .ports import InstanceStore
from .record import FINISHED, Record, Status


@dataclass(frozen=True)
class Lease:
    record: Record
    fence: int
    owner: str
    # Optimistic concurrency's first step: no record yet, and the commit creates this one
    # (with the step's fields over it), on condition that there is still none.
    create: Record | None = None


@dataclass(frozen=True)
class Duplicate:
    """The message's step is already committed (or the instance finished)."""

    record: Record


@dataclass(frozen=True)
class Busy:
    """Another worker holds a live lease, or the instance is not ready for this message."""

    record: Record | None


@dataclass(frozen=True)
class Stale:
    """A step message for the record's own position that the record has left behind: the
    instance is waiting there, or an acquire since raised the fence above the message's
    and let go without moving on. A copy from before that: acknowledged, counted, nothing
    run, nothing written."""

    record: Record


@dataclass(frozen=True)
class Queued:
    """A nudge for an inbox that someone else will drain: the lease holder (its release
    is conditional on the inbox end it saw) or the running chain of internal steps (its
    settling commit is)."""

    record: Record


@dataclass(frozen=True)
class Missing:
    """An event for an instance the store does not know."""


Acquired = Lease | Duplicate | Busy | Stale | Queued | Missing


def _lease_fields(owner: str, fence: int, now: int, lease_ms: int) -> dict[str, Any]:
    return {"lease_owner": owner, "lease_expires": now + lease_ms, "fence": fence}


def live(record: Record, now: int, holder_alive: Callable[[str], bool] | None = None) -> bool:
    """Someone holds the lease, it has not expired (``now`` in epoch milliseconds), and
    ``holder_alive`` (when given: the embedded runtime knows its own host's processes)
    does not say its holder is gone."""
    owner = record.get("lease_owner")
    return bool(owner) and record.get("lease_expires", 0) > now and (holder_alive is None or holder_alive(owner))


def release(store: InstanceStore, lease: Lease) -> bool:
    """Give the lease back (the holder is stopping mid-transition). The record keeps its
    position; its owed messages take the new fence, so a copy sent again is not taken
    for a stale one."""
    outbox = [{**entry, "message": {**entry["message"], "fence": lease.fence}}
              for entry in lease.record.get("outbox") or []]
    return commit(store, lease, {"outbox": outbox} if outbox else {}) is not None


def acquire(store: InstanceStore, msg: Message, owner: str, lease_ms: int, now: int,
            new_record: Callable[[], Record], holder_alive: Callable[[str], bool] | None = None) -> Acquired:
    """Take the instance's lease for ``msg``; ``new_record()`` makes one if none exists."""
    steps = msg.kind == Kind.STEP
    if steps and msg.position == (0, 0):
        expect = None
        fields = {**new_record(), **_lease_fields(owner, msg.fence + 1, now, lease_ms)}
    else:
        expect = {"step": msg.step, "fence": msg.fence, "lease_owner": ""}
        if steps:
            expect.update(retries=msg.retries, status=Status.RUNNING)
        elif msg.kind == Kind.WORK:
            # A settled instance only: a running one's settling commit drains the inbox
            # (a nudge taking the lease between two internal steps would judge an event
            # in a passing state and stale the chain's next step).
            del expect["step"]
            expect["status"] = Status.WAITING
        fields = _lease_fields(owner, msg.fence + 1, now, lease_ms)
    result = store.swap(msg.correlation_id, expect, fields)
    if result.ok:
        return Lease(result.record or fields, fields["fence"], owner)
    current = result.record
    decision = _decide(msg, current, now, holder_alive)
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
                          context=msg.context or {}, status=Status.RUNNING)
            if msg.chart:
                fields["chart"] = msg.chart
    result = store.swap(msg.correlation_id, expect, fields)
    if result.ok:
        return Lease(result.record or {**(current or {}), **fields}, fence, owner)
    return Busy(result.record)


def _decide(msg: Message, current: Record | None, now: int,
            holder_alive: Callable[[str], bool] | None) -> Acquired | None:
    """What an unexpected record means for ``msg``; ``None`` means: take it over."""
    if current is None:
        return Missing() if msg.kind != Kind.STEP else None
    if msg.kind == Kind.STEP:
        position = (current["step"], current["retries"])
        if current["status"] in FINISHED or position > msg.position:
            return Duplicate(current)
        if position == msg.position and (current["status"] == Status.WAITING or (
                current["fence"] > msg.fence and not current.get("lease_owner"))):
            return Stale(current)
    elif msg.kind == Kind.WORK:
        if not current.get("inbox"):
            return Duplicate(current)  # drained already
        if current["status"] == Status.RUNNING or live(current, now, holder_alive):
            return Queued(current)
        return None  # a free (or abandoned) lease: take it and drain
    elif msg.event_id in (current.get("event_ids") or ()):
        return Duplicate(current)
    # A cancel for a finished instance is taken in, to record its rejection.
    if live(current, now, holder_alive):
        return Busy(current)
    return None


def commit(store: InstanceStore, lease: Lease, fields: dict[str, Any],
           history: list[dict[str, Any]] | tuple = (), *, seen: Record | None = None, consume: int = 0,
           now: int = 0, lease_ms: int = 0, position: dict[str, Any] | None = None) -> Record | None:
    """Write the transition, only if our fence still stands; return the record as it now
    is, or ``None`` when the lease was lost.

    Without ``seen`` the lease is simply released. With ``seen`` (the record as this
    holder knows it) the inbox is respected: inbox events up to position ``consume`` are
    taken out; an instance that is not running and still has events keeps the lease (the
    holder goes on draining); otherwise the lease is released, on condition that the
    inbox end is the one seen. An event appended meanwhile fails that condition, and the
    commit is made again on the record the store returned: an event is never stranded
    behind a released lease.

    ``position`` (optimistic concurrency: no lease was taken, ``lease.owner`` is ``""``)
    is what the record must still be at (step, retries, status); the lease is never kept.
    A lease with ``create`` (optimistic concurrency's first step) writes the record whole,
    on condition that there is none yet.
    """
    cid = lease.record["id"]
    if lease.create is not None:
        write = {**lease.create, **fields, "lease_owner": "", "lease_expires": 0, "fence": lease.fence}
        return write if store.swap(cid, None, write, history).ok else None
    if seen is None:
        result = store.swap(cid, {"fence": lease.fence, "lease_owner": lease.owner},
                            {**fields, "lease_owner": "", "lease_expires": 0}, history)
        return ({**lease.record, **fields, "lease_owner": "", "lease_expires": 0, "fence": lease.fence}
                if result.ok else None)
    while True:
        inbox = [entry for entry in seen.get("inbox") or () if entry["pos"] > consume]
        status = fields.get("status", seen.get("status"))
        keep = bool(inbox) and status != Status.RUNNING and bool(lease.owner)
        write = dict(fields)
        if consume:
            write["inbox"] = inbox
        if keep:
            write.update(lease_owner=lease.owner, lease_expires=now + lease_ms, pending=now / 1000)
        else:
            write.update(lease_owner="", lease_expires=0)
        expect: dict[str, Any] = {"fence": lease.fence, "lease_owner": lease.owner, **(position or {})}
        if consume or status != Status.RUNNING:
            expect["inbox_end"] = seen.get("inbox_end", 0)
        result = store.swap(cid, expect, write, history)
        if result.ok:
            return {**seen, **write, "fence": lease.fence}
        current = result.record
        if current is None or current.get("fence") != lease.fence or current.get("lease_owner") != lease.owner \
                or any(current.get(k) != v for k, v in (position or {}).items()):
            return None
        seen = current  # only the inbox grew: commit again over it


def commit_checked(store: InstanceStore, lease: Lease, seen: Record, fields: dict[str, Any],
                   history: list[dict[str, Any]] | tuple = (), *, consume: int = 0, now: int = 0,
                   lease_ms: int = 0, position: dict[str, Any] | None = None) -> Record | None:
    """:func:`commit` (with ``seen``), or raise. An error from the write is ambiguous: it
    may have landed with its answer lost. Then the record is read again (a few quick
    tries), and if it shows this very commit, the commit stands and the caller goes on
    (counts, then sends) as if the answer had come; otherwise the error is raised as it
    was, and the message is redelivered. Without this, a landed commit whose answer was
    lost would be redelivered, found a duplicate and never counted."""
    try:
        return commit(store, lease, fields, history, seen=seen, consume=consume,
                      now=now, lease_ms=lease_ms, position=position)
    except RecoverableError as exc:
        cid, began = lease.record["id"], time.monotonic()
        for attempt in range(_COMMIT_CHECKS):
            if attempt:
                if time.monotonic() - began > _COMMIT_CHECK_TIME:
                    break
                time.sleep(min(0.2, 0.01 * 2 ** attempt))
            try:
                current = store.get(cid)
            except RecoverableError:
                continue
            if not _landed(current, seen, lease, fields, consume, now + lease_ms):
                break
            log(logging.WARNING, "commit answer lost; the record shows it landed", correlation_id=cid,
                store=store.url, step=current["step"], fence=lease.fence, error=str(exc))
            return current
        raise


# Reads of the record after a commit whose answer was lost (see commit_checked): up to 8,
# none started after 1.5 s (a store that is down fails over with little delay).
_COMMIT_CHECKS, _COMMIT_CHECK_TIME = 8, 1.5
# The fields that tell a commit apart from the record before it and from another copy's
# commit of the same step (``updated_at`` is the committing attempt's own time).
_MARKS = ("step", "retries", "status", "state", "consumed", "event_ids", "updated_at")


def _landed(current: Record | None, seen: Record, lease: Lease, fields: Mapping[str, Any], consume: int,
            expires: int) -> bool:
    """Whether ``current``, read after a commit whose answer was lost, is that very
    commit applied: the fence is the commit's (nobody took the instance over since), the
    fields that mark it hold the values it wrote, the inbox events it consumed are gone,
    the lease is released (or kept by this holder, with the expiry it wrote), and all of
    it differs from ``seen``, the record before the commit. Anything else cannot be told
    apart from a commit that never landed: ``False``, and the caller raises."""
    if current is None or current.get("fence") != lease.fence:
        return False
    marks = [(k, fields[k]) for k in _MARKS if k in fields]
    if any(current.get(k) != v for k, v in marks):
        return False
    if consume and any(entry.get("pos", 0) <= consume for entry in current.get("inbox") or ()):
        return False
    owner = current.get("lease_owner") or ""
    if owner and (owner != lease.owner or current.get("lease_expires") != expires):
        return False
    released = bool(lease.owner) and not owner and seen.get("lease_owner") == lease.owner
    return released or bool(consume) or any(seen.get(k) != v for k, v in marks)
