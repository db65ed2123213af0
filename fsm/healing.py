"""Healing what redelivery cannot, and the stale records a failover leaves.

Redelivery heals a crash between a commit and its send, but not a message that vanished
from the bus (a queue deleted with messages in it): the re-send sweep
(:meth:`Healing.resend_overdue`) sends copies of what the stores' pending index says is
long overdue. With several stores, a record that another store holds fresher (after a
failover and the primary's return) is stale: nothing continues the instance from it or
re-sends what it owed; it is retired.

:class:`Healing` is part of :class:`~fsm.dispatcher.Dispatcher` (a base class of it):
it works with the dispatcher's stores, router, clock and metrics, and hands a message
that reached a stale record back to the dispatcher's protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import lease as leases
from .errors import BackendError, RecoverableError
from .inbox import store_index, work_message
from .logs import log
from .message import Message
from .model import Machine
from .outbox import owed
from .ports import InstanceStore, Metrics, PendingIndex
from .record import Record, Status, error_info, freshness

if TYPE_CHECKING:
    from .dispatcher import Outcome
    from .routing import Router


class Healing:
    """The re-send sweep and the multi-store freshness check of a Dispatcher."""

    if TYPE_CHECKING:  # provided by the Dispatcher
        stores: list[InstanceStore]
        router: Router
        metrics: Metrics
        clock: Callable[[], float]
        resend_after: float
        holder_alive: Callable[[str], bool] | None

        def _handle(self, index: int, msg: Message, machine: Machine, source: Mapping[str, Any] | None,
                    locked: bool = False) -> Outcome: ...

    def resend_overdue(self, limit: int = 100) -> int:
        """Re-send the outbox of instances that owe a message long after it was due.

        Redelivery heals a crash between commit and send, but not a message that vanished
        from the bus (a queue deleted with messages in it). The stores index the instances
        that owe a message (``pending``); this sends copies of what is overdue by
        ``resend_after``, which are duplicates if the original is still on its way.
        Run by ``fsm worker`` and the scheduled Lambda handler. Returns the instances healed.
        """
        now = self.clock()
        healed = 0
        for store in self.stores:
            if not isinstance(store, PendingIndex):
                continue  # memcached: see healing_gaps(), which the worker reports once
            try:
                records = store.pending(now - self.resend_after, limit)
            except BackendError as exc:
                log(logging.WARNING, "cannot list pending instances", store=store.url, error=str(exc))
                continue
            for record in records:
                try:
                    healed += self.resend_outbox(store, record, now)
                except RecoverableError as exc:  # the next sweep tries again; go on with the others
                    log(logging.WARNING, "re-send failed", correlation_id=record.get("id"), error=str(exc))
        return healed

    def resend_outbox(self, store: InstanceStore, record: Record, now: float | None = None,
                      force: bool = False, grace: float | None = None) -> int:
        """Send copies of a record's outbox messages that are overdue by ``grace``
        (default ``resend_after``; all of them with ``force``, for ``fsm resume``); 1 if
        any were sent.

        The record's ``pending`` moves to now first (a conditional write that loses to any
        concurrent change), so the next sweep waits another ``resend_after``: a slow
        backlog is not flooded with copies of what it is still working through.
        """
        now = self.clock() if now is None else now
        grace = self.resend_after if grace is None else grace
        running = record.get("status") == Status.RUNNING
        if leases.live(record, int(now * 1000), self.holder_alive) or not (running or record.get("inbox")):
            return 0  # a worker is on it, or it owes nothing
        index = store_index(self.stores, store)
        if self._elsewhere(index, record["id"], record) is not None:
            # A stale copy: the instance went on elsewhere. Stop owing; never re-send it.
            store.swap(record["id"], {"fence": record["fence"], "lease_owner": record.get("lease_owner", "")},
                       {"pending": 0.0, "outbox": []})
            self.metrics.incr("Retired", dims={"Machine": record.get("machine", ""), "Resource": store.url})
            return 0
        since = record.get("pending") or record.get("updated_at", 0)
        due = [(m, delay) for m, delay in owed(record) if running and (force or since + delay + grace <= now)]
        if not running and (force or since + grace <= now):  # settled, with an inbox nobody drains
            due.append((work_message(record, index), 0.0))
        if not due:
            return 0
        # Exactly the record we saw: an expired lease (a worker lost with its message) stays
        # as it is, and the copy we send takes it over.
        expect = {"fence": record["fence"], "lease_owner": record.get("lease_owner", ""),
                  "lease_expires": record.get("lease_expires", 0), "pending": record.get("pending")}
        if not store.swap(record["id"], expect, {"pending": now}).ok:
            return 0  # it moved on meanwhile
        self.metrics.incr("Resent", len(due), dims={"Machine": record.get("machine", "")})
        log(logging.WARNING, "re-sending overdue messages", correlation_id=record.get("id"), messages=len(due))
        self.router.send(due)
        return 1

    def healing_gaps(self) -> list[str]:
        """The stores that cannot list instances owing a message (no pending index)."""
        return [store.url for store in self.stores if not isinstance(store, PendingIndex)]

    # -- one instance, one store ---------------------------------------------------------

    def _elsewhere(self, index: int, cid: str, here: Record) -> int | None:
        """The store whose record of ``cid`` is fresher than ``here`` (on store ``index``),
        if any: after a failover and the primary's return, the primary's record is stale,
        and nothing may continue the instance from it. One read per other store, made only
        when several stores are configured; an unreachable one cannot be asked and is
        logged (it is down: nothing continues the instance there either)."""
        if len(self.stores) == 1:
            return None
        mine, best = freshness(here, index), None
        for other_index, other in enumerate(self.stores):
            if other_index == index:
                continue
            try:
                found = other.get(cid)
            except BackendError as exc:
                log(logging.WARNING, "cannot compare with another store", store=other.url, error=str(exc),
                    correlation_id=cid)
                continue
            if found is not None and freshness(found, other_index) > mine:
                mine, best = freshness(found, other_index), other_index
        return best

    def _retire(self, index: int, lease: leases.Lease, msg: Message, machine: Machine,
                source: Mapping[str, Any] | None, moved: int) -> Outcome:
        """Retire a stale record (it owes nothing any more) and hand the message to the
        store the instance lives on, which decides what it is there (usually a duplicate)."""
        store, live = self.stores[index], self.stores[moved]
        note = error_info(f"retired: the instance continues on {live.url}", lease.record.get("step", 0),
                          lease.record.get("state"), None, self.clock())
        leases.commit(store, lease, {"pending": 0.0, "outbox": [], "last_error": note})
        self.metrics.incr("Retired", dims={"Machine": machine.name, "Resource": store.url})
        log(logging.WARNING, "stale record retired", correlation_id=msg.correlation_id, store=store.url,
            live=live.url)
        return self._handle(moved, msg.evolve(store=moved), machine, source)
