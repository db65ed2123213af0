"""One message in, at most one committed transition out.

``Dispatcher.handle`` is the whole per-message protocol (see the README's architecture
section): acquire the fenced lease, run the actions, commit the transition with its
outgoing messages (the outbox) and release the lease in one write, then send the
outbox. It talks only to ports, so the same code runs on Lambda, in ``fsm worker``,
in ``fsm run`` and in tests.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import codec, join, owing
from . import lease as leases
from .backoff import full_jitter
from .chart import Snapshot, value
from .engine import (
    Hop,
    accepted_events,
    accepts,
    error_event,
    retries_allowed,
    run_transitions,
)
from .errors import (
    ContextNotSerialisable,
    Failed,
    MalformedMessage,
    RecoverableError,
    SendFailed,
    TransitionError,
)
from .healing import Healing
from .inbox import inbox_entry, store_index, work_message
from .logs import log
from .message import Kind, Message
from .migrate import Moved, migrate
from .model import Context, Machine
from .outbox import entries, owed
from .payloads import Payloads
from .ports import (
    CheckpointStore,
    CommitsCheckpoints,
    Envelope,
    InstanceStore,
    Metrics,
    NullMetrics,
)
from .record import (
    FINISHED,
    Record,
    Status,
    error_info,
    history_entry,
)
from .routing import Router, Routes, kept_by_router

__all__ = ["Dispatcher", "Outcome", "Routes"]


@dataclass
class Outcome:
    """What happened to one message (``result``) and where the instance is now."""

    result: str  # committed | retrying | failed | cancelled | rejected | duplicate | stale | busy | queued | drained
    correlation_id: str
    status: str | None = None
    state: str | None = None
    hops: list[Hop] = field(default_factory=list)
    error: str | None = None
    retries: int = 0


class Dispatcher(Healing):
    """The per-message protocol (here), the healing of what redelivery cannot heal
    (:class:`~fsm.healing.Healing`) and, held as ``router``, where messages go
    (:class:`~fsm.routing.Router`)."""

    routes: Routes = kept_by_router("routes")
    metrics: Metrics = kept_by_router("metrics")
    clock: Callable[[], float] = kept_by_router("clock")

    def __init__(self, machines: Mapping[str, Machine], stores: Sequence[InstanceStore], routes: Routes,
                 *, metrics: Metrics | None = None, lease_timeout: float = 960.0,
                 max_local_hops: int = 100, resend_after: float = 60.0, max_drain: int = 100,
                 checkpoints: CheckpointStore | None = None,
                 retention_days: float = 0.0, holder_alive: Callable[[str], bool] | None = None,
                 payloads: Payloads | None = None, optimistic: bool = False,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None):
        if not stores:
            raise ValueError("at least one store is needed")
        self.router = Router(routes, metrics or NullMetrics(), clock)
        self.machines = machines
        self.stores = list(stores)
        self.lease_ms = int(lease_timeout * 1000)
        self.max_local_hops = max_local_hops
        self.resend_after = resend_after
        self.max_drain = max_drain  # inbox events one delivery applies before handing on
        self.payloads = payloads or Payloads()  # size limits and the claim check
        self.optimistic = optimistic  # `concurrency: optimistic`: steps commit without a lease
        self.checkpoints = checkpoints  # correlation id -> last consumed stream position
        self.retention_days = retention_days
        self.holder_alive = holder_alive  # the embedded runtime: recognise its own dead processes
        self.rng = rng or random.Random()
        self._node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._seq = itertools.count(1)

    # -- entry ------------------------------------------------------------------------

    def handle(self, msg: Message, source: Mapping[str, Any] | None = None) -> Outcome:
        """Process one message. Raises MalformedMessage (dead-letter it) or a backend
        error (redeliver it); every other failure is recorded on the instance."""
        machine = self.machine_for(msg)
        index = min(msg.store, len(self.stores) - 1)
        while True:
            try:
                if msg.store != index:
                    msg = msg.evolve(store=index)
                return self._handle(index, msg, machine, source)
            except RecoverableError as exc:
                if index + 1 >= len(self.stores) or isinstance(exc, SendFailed):
                    raise
                self.metrics.incr("Failovers", dims={"Resource": self.stores[index].url})
                log(logging.WARNING, "store failover", store=self.stores[index].url,
                    to=self.stores[index + 1].url, error=str(exc), correlation_id=msg.correlation_id)
                index += 1

    def machine_for(self, msg: Message) -> Machine:
        machine = self.machines.get(msg.machine)
        if machine is None:
            raise MalformedMessage(f"unknown machine {msg.machine!r}; known: {', '.join(sorted(self.machines))}")
        if msg.version and machine.version and msg.version != machine.version:
            older = machine.at_version(msg.version)
            if older is None:
                raise MalformedMessage(f"message for version {msg.version!r} of machine {machine.name!r}, which "
                                       f"the loaded config no longer defines (it has {', '.join(machine.versions) or machine.version}); "
                                       "move its instances with `fsm migrate`")
            machine = older
        states = (msg.chart or {}).get("active") or ([msg.state] if msg.state is not None else [])
        for state in states:
            if state not in machine.states:
                raise MalformedMessage(f"machine {machine.name!r} has no state {state!r}")
        return machine

    # -- sending: the router's (see fsm.routing.Router) ------------------------------

    def batched(self) -> contextlib.AbstractContextManager[None]:
        """Send this thread's messages for the stream together, at the end."""
        return self.router.batched()

    def batch_of_this_thread(self) -> list[Envelope] | None:
        return self.router.batch_of_this_thread()

    def sharing(self, batch: list[Envelope] | None) -> contextlib.AbstractContextManager[None]:
        """Send this thread's messages to ``batch``, another thread's :meth:`batched`."""
        return self.router.sharing(batch)

    def dead_letter(self, body: str, reason: str, *, machine: str = "unknown", key: str = "dead-letter",
                    dedup_id: str | None = None, **where: Any) -> None:
        self.router.dead_letter(body, reason, machine=machine, key=key, dedup_id=dedup_id, **where)

    # -- the protocol -----------------------------------------------------------------

    def _handle(self, index: int, msg: Message, machine: Machine,
                source: Mapping[str, Any] | None, locked: bool = False) -> Outcome:
        if self.optimistic and not locked and msg.kind == Kind.STEP and msg.context is not None \
                and len(self.stores) == 1:
            return self._optimistic(index, msg, machine, source)
        store = self.stores[index]
        now = self.clock()
        cid = msg.correlation_id
        if msg.kind in (Kind.EVENT, Kind.TIMER):
            # An external event (or a timer) goes into the instance's inbox first: one
            # conditional write, in arrival order, once per event id. Then it is drained
            # like any nudge.
            appended = store.append(cid, inbox_entry(msg, now))
            if appended.record is None:
                self.router.dead_letter_message(msg, f"no instance {cid!r} to send {msg.kind} {msg.event!r} to")
                self.metrics.incr("RejectedEvents", dims={"Machine": machine.name})
                return Outcome("rejected", cid, error=f"unknown instance {cid!r}")
            if not appended.ok and msg.event_id in (appended.record.get("event_ids") or ()):
                return self._duplicate(store, msg, appended.record, now)
            msg = work_message(appended.record, index)
        owner = f"{self._node}:{next(self._seq)}"
        got = leases.acquire(store, msg, owner, self.lease_ms, int(now * 1000),
                             lambda: owing.first_record(msg, machine, now), self.holder_alive)
        if isinstance(got, leases.Missing):
            self.router.dead_letter_message(msg, f"no instance {cid!r} to send {msg.kind} to")
            self.metrics.incr("RejectedEvents", dims={"Machine": machine.name})
            return Outcome("rejected", cid, error=f"unknown instance {cid!r}")
        if isinstance(got, leases.Queued):
            return Outcome("queued", cid, got.record.get("status"), got.record.get("state"))
        if isinstance(got, leases.Duplicate):
            if msg.kind == Kind.WORK:
                return Outcome("duplicate", cid, got.record.get("status"), got.record.get("state"))
            return self._duplicate(store, msg, got.record, now)
        if isinstance(got, leases.Stale):
            self.metrics.incr("StaleMessages", dims={"Machine": machine.name})
            log(logging.WARNING, "stale copy acknowledged", correlation_id=cid, step=msg.step, fence=msg.fence,
                stored_fence=got.record["fence"], status=got.record["status"])
            return Outcome("stale", cid, got.record["status"], got.record.get("state"))
        if isinstance(got, leases.Busy):
            self.metrics.incr("LeaseContention", dims={"Machine": machine.name})
            self.router.requeue(msg, full_jitter(msg.busy, 0.2, 20.0, self.rng))
            return Outcome("busy", cid, status=(got.record or {}).get("status"))
        lease, record = got, got.record
        at = self.machines[machine.name].at_version(str(record.get("version") or "")) \
            if machine.name in self.machines else machine
        if at is None:
            return self._undefined(store, lease, record, machine)
        machine = at
        if len(self.stores) > 1:
            moved = self._elsewhere(index, cid, {**record, "fence": lease.fence - 1})
            if moved is not None:
                return self._retire(index, lease, msg, machine, source, moved)
        if msg.kind == Kind.CANCEL:
            if msg.event_id and msg.event_id in (record.get("event_ids") or []):
                leases.commit(store, lease, {})
                return self._duplicate(store, msg, {**record, "lease_owner": ""}, now)
            if record["status"] in FINISHED:
                outcome, after = self._reject(store, lease, msg, record, machine, "cancel", now,
                                              f"instance is {record['status']}: cancel not applied")
            else:
                outcome, after = self._cancel(store, lease, msg, record, now)
        elif msg.kind == Kind.STEP:
            outcome, after = self._transition(store, lease, msg, record, machine, source, now)
        else:  # a nudge: the lease is ours and the inbox has events
            outcome, after = Outcome("drained", cid, record["status"], record.get("state")), record
        return self._drain(store, lease, after, machine, source, outcome)

    def _undefined(self, store: InstanceStore, lease: leases.Lease, record: Record, machine: Machine) -> Outcome:
        """An instance of a version the loaded config no longer has: nothing can run it.
        Say so on the record (status shows it) and leave it for ``fsm migrate``."""
        error = (f"version {record.get('version')!r} of machine {machine.name!r} is not defined in the loaded "
                 f"config (it has {', '.join(self.machines[machine.name].versions) or machine.version}); "
                 "move the instance with `fsm migrate`")
        leases.commit(store, lease, {"last_error": error_info(error, record.get("step", 0), record.get("state"),
                                                              None, self.clock())})
        self.metrics.incr("RejectedEvents", dims={"Machine": machine.name})
        log(logging.ERROR, "instance of an undefined version", correlation_id=record["id"], error=error)
        return Outcome("rejected", record["id"], record.get("status"), record.get("state"), error=error)

    def _drain(self, store: InstanceStore, lease: leases.Lease, record: Record | None, machine: Machine,
               source: Mapping[str, Any] | None, outcome: Outcome) -> Outcome:
        """Apply the inbox, oldest event first, one committed step each, while the lease
        is ours (a commit keeps it while the instance is settled and events remain). A
        step that starts internal steps releases it: the chain's settling commit drains
        what is left. A nudge that finds the inbox empty (another holder drained it)
        gives the lease back at once, on the same inbox-end condition. After
        ``max_drain`` events the lease is let go with a nudge sent."""
        hops, taken = list(outcome.hops), 0
        while record is not None and record.get("lease_owner") == lease.owner:
            if not record.get("inbox"):
                record = self._commit(store, lease, record, {})  # kept if an event came meanwhile
                continue
            if taken >= self.max_drain:
                leases.release(store, lease)
                self.router.send([(work_message(record, store_index(self.stores, store)), 0.0)])
                break
            outcome, record = self._take(store, lease, record, record["inbox"][0], machine, source)
            hops += outcome.hops
            taken += 1
        outcome.hops = hops
        return outcome

    def _take(self, store: InstanceStore, lease: leases.Lease, record: Record, entry: dict[str, Any],
              machine: Machine, source: Mapping[str, Any] | None) -> tuple[Outcome, Record | None]:
        """One inbox event: a duplicate or a stale timer is taken out silently, an event
        the configuration does not take (or a finished instance) is a recorded rejection,
        anything else a step."""
        now = self.clock()
        cid, pos = record["id"], entry["pos"]
        msg = Message(machine=machine.name, correlation_id=cid, kind=entry.get("kind") or Kind.EVENT,
                      event=entry.get("event"), data=entry.get("data") or {}, state=entry.get("state"),
                      step=entry.get("stamp", 0), event_id=entry["id"], sent_at=entry.get("at", 0.0))
        snapshot = Snapshot.of(record.get("chart"), record.get("state"), record.get("step", 0))
        quiet = entry["id"] in (record.get("event_ids") or ())
        if msg.kind == Kind.TIMER and not quiet:
            quiet = record["status"] in FINISHED or snapshot is None or msg.state not in snapshot.active \
                or snapshot.entered.get(msg.state or "") != msg.step  # the state was left or re-entered
        if quiet:
            after = self._commit(store, lease, record, {}, consume=pos)  # taken out, nothing else changes
            return Outcome("duplicate", cid, record["status"], record.get("state")), after
        if record["status"] in FINISHED:
            return self._reject(store, lease, msg, record, machine, msg.event, now,
                                f"instance is {record['status']}: event {msg.event!r} not applied", consume=pos)
        if msg.kind == Kind.EVENT and msg.state and snapshot is not None and msg.state not in snapshot.active:
            return self._reject(store, lease, msg, record, machine, msg.event, now,
                                f"event {msg.event!r} was sent to state {msg.state!r}; the instance "
                                f"has moved on to {record.get('state')!r}", consume=pos)
        if msg.event is None and msg.kind == Kind.TIMER:
            msg = msg.evolve(event=machine.states[msg.state or ""].timeout_event)
        return self._transition(store, lease, msg, record, machine, source, now, consume=pos)

    def _commit(self, store: InstanceStore, lease: leases.Lease, record: Record, fields: dict[str, Any],
                history: list[dict[str, Any]] | tuple = (), consume: int = 0) -> Record | None:
        """Commit, or raise; a commit whose answer was lost and that the record shows
        landed stands (see :func:`fsm.lease.commit_checked`)."""
        # No lease (optimistic): the commit is conditional on the position the message saw.
        position = None if lease.owner else {k: record[k] for k in ("step", "retries", "status")}
        return leases.commit_checked(store, lease, record, fields, history, consume=consume,
                                     now=int(self.clock() * 1000), lease_ms=self.lease_ms, position=position)

    def _optimistic(self, index: int, msg: Message, machine: Machine,
                    source: Mapping[str, Any] | None) -> Outcome:
        """``concurrency: optimistic``: no lease. The step message carries the context, the
        step runs, and its commit is one write conditional on the position (step, retries,
        fence) the message saw; then it sends. The first step's commit creates the record,
        on condition that there is none. A lost race (another copy committed first)
        discards the result and acknowledges; a record behind the message (a failover
        store) is taken the locked way."""
        store, now = self.stores[index], self.clock()
        seen: Record = {"id": msg.correlation_id, "machine": machine.name, "version": machine.version,
                        "step": msg.step, "retries": msg.retries, "fence": msg.fence, "status": Status.RUNNING,
                        "state": msg.state, "chart": msg.chart, "context": msg.context or {}, "lease_owner": "",
                        "parent": msg.parent}
        create = owing.first_record(msg, machine, now) if msg.position == (0, 0) else None
        lease = leases.Lease(seen, msg.fence, "", create)
        outcome, after = self._transition(store, lease, msg, seen, machine, source, now)
        if after is not None:
            if after.get("inbox") and after.get("status") != Status.RUNNING:  # settled with events queued
                self.router.send([(work_message(after, index), 0.0)])
            return outcome
        current = store.get(msg.correlation_id)
        at = None if current is None else (current["step"], current["retries"])
        if at is None or at < msg.position or at == msg.position == (0, 0):
            # behind the message, or made by a first step taken the locked way and not yet
            # committed (its lease decides)
            return self._handle(index, msg.evolve(copy=True), machine, source, locked=True)
        return self._duplicate(store, msg, current, now)

    def _transition(self, store: InstanceStore, lease: leases.Lease, msg: Message, record: Record,
                    machine: Machine, source: Mapping[str, Any] | None, now: float,
                    consume: int = 0) -> tuple[Outcome, Record | None]:
        steps = msg.kind == Kind.STEP
        step = msg.step if steps else record["step"]
        retries = msg.retries if steps else record.get("retries", 0)
        committed = msg.context if steps else record.get("context") or {}
        if steps:
            snapshot = Snapshot.of(msg.chart, msg.state, step)
        else:
            snapshot = Snapshot.of(record.get("chart"), record.get("state"), step)
        # A private copy: a failed attempt must not leak its changes to nested values into
        # the retry (or the failover) that starts again from the committed context.
        loaded = self.payloads.fetch(committed) if committed else {}
        event_data = self.payloads.fetch(msg.data) if msg.data else {}
        if msg.event == join.CHILD and event_data.get("result"):  # a child's output may be stowed apart
            event_data = {**event_data, "result": self.payloads.fetch(event_data["result"])}
        private = codec.copy(loaded) if loaded else {}
        if event_data and not machine.xstate and msg.event != join.CHILD:  # XState: only actions change it
            private.update(codec.copy(event_data))
        context = Context(private,
                          correlation_id=msg.correlation_id,
                          machine=machine, steps=step, retries=retries,
                          current_state=machine.states.get(msg.state or ""), current_event=msg.event)
        context.max_retries = retries_allowed(machine, snapshot)
        obj = {"message": msg.to_dict(), "source": dict(source or {}), "fence_token": lease.fence,
               "event_data": event_data, "store": store.url}
        try:
            run = run_transitions(machine, snapshot, msg.event, context, obj, self.max_local_hops,
                                  data=event_data)
            data = self.payloads.stow(msg.correlation_id, f"{step + len(run.hops)}-context", context.user_data())
            family = owing.family(self.machines, self.payloads, machine, msg, record, run, context, now)
        except KeyboardInterrupt:
            # Stopped by its operator: give the lease back so that the next command can go
            # on at once (the message is re-sent from the record's outbox).
            leases.release(store, lease)
            raise
        except Exception as exc:  # noqa: BLE001 - user code: any exception is a failed attempt
            # What a retry re-runs: this step, from the context as last committed.
            chart = snapshot.to_dict() if snapshot is not None and machine.chart else None
            again = msg.evolve(kind=Kind.STEP, step=step, retries=retries, context=committed, busy=0, copy=False,
                               state=record.get("state") if not steps else msg.state, chart=chart)
            retryable = not isinstance(exc, (TransitionError, ContextNotSerialisable))
            return self._fail(store, lease, msg, again, record, machine, snapshot, exc, now, retryable, consume)
        if not run.handled:
            return self._reject(store, lease, msg, record, machine, msg.event, now, consume=consume,
                                snapshot=snapshot)
        too_big = self.payloads.too_big(data, run.status == Status.RUNNING)
        if too_big is None and run.snapshot is not None and run.snapshot.joins:  # children's results, kept
            too_big = self.payloads.too_big({**data, "joins": run.snapshot.joins}, False, "context with the "
                                            "results of the children it waits for")
        if too_big is not None:  # no backend can hold it: fail at once, saying so (never redeliver)
            again = msg.evolve(kind=Kind.STEP, step=step, retries=retries, context=committed, busy=0, copy=False,
                               state=record.get("state") if not steps else msg.state)
            return self._fail(store, lease, msg, again, record, machine, snapshot, too_big, now, False, consume)
        new_step = step + len(run.hops)
        outbox: list[tuple[Message, float]] = []
        base = {"machine": machine.name, "correlation_id": msg.correlation_id, "fence": lease.fence,
                "store": msg.store, "version": machine.version, "sent_at": now}
        chart = run.snapshot.to_dict() if run.snapshot is not None and machine.chart else None
        if run.status == Status.RUNNING:
            outbox.append((Message(kind=Kind.STEP, step=new_step, event=run.next_event, state=run.state,
                                   context=data, chart=chart, parent=record.get("parent"), **base), 0.0))
        outbox.extend(owing.timers(run, obj.get("schedule"), new_step, base))
        outbox.extend((m, 0.0) for m in family)
        if chart is not None and run.snapshot is not None:
            chart["value"] = value(machine, run.snapshot.active)
        last = len(run.hops) - 1
        history = [history_entry(h.step + 1, h.source, h.event, h.target, now, duration=h.duration, retries=retries,
                                 value=(chart or {}).get("value") if i == last else None)
                   for i, h in enumerate(run.hops)]
        if msg.event_id and msg.kind != Kind.CANCEL:  # where an inbox event's run ended: `send --wait` shows it
            history[-1].update(event_id=msg.event_id, status=run.status, **({"pos": consume} if consume else {}))
        if msg.parent and step == 0:
            history[0]["parent"] = msg.parent["id"]
        if run.starts:
            history[-1]["children"] = [s.child_id for s in run.starts[:100]]
        fields = {"state": run.state, "status": run.status, "step": new_step, "retries": 0,
                  "context": data, "outbox": entries(outbox, msg.correlation_id), "consumed": _identity(msg),
                  "event_ids": _remember(record, msg), "last_error": None, "failed_message": None,
                  "updated_at": now, "pending": now if run.status == Status.RUNNING else 0.0, **self._expiry(now)}
        if chart is not None:
            fields["chart"] = chart
        visits = join.visits(record, run.snapshot.joins if run.snapshot is not None else {}, run.starts)
        if visits is not None:
            fields["children"] = visits
        if run.status == Status.DONE and machine.output is not None:
            fields["output"] = machine.output(context)
        if record.get("migrate_to") and run.status == Status.WAITING:  # `fsm migrate` asked, mid-run
            fields.update(self._migrated(machine, {**record, **fields}))
        checkpoint = None
        if source and source.get("sequence"):
            checkpoint = {k: source.get(k) for k in ("arn", "shard", "sequence")}
            fields["checkpoint"] = checkpoint
        after = self._commit(store, lease, record, fields, history, consume=consume)
        if after is None:
            return self._stale(msg), None
        # Counted as soon as the commit stands: nothing after it (a checkpoint write, the
        # send) may fail between the commit and its count.
        for hop in run.hops:
            dims = {"Machine": machine.name, "State": hop.target, "Event": str(hop.event)}
            self.metrics.incr("Transitions", dims=dims)
            self.metrics.incr("ActionDuration", hop.duration * 1000, "Milliseconds", dims)
        if msg.sent_at:
            self.metrics.incr("Lag", max(0.0, now - msg.sent_at) * 1000, "Milliseconds",
                              {"Machine": machine.name})
        if checkpoint and checkpoint["shard"] and self.checkpoints is not None \
                and not self._checkpoints_with_commit(store):  # only Kinesis positions can be replayed
            self.checkpoints[msg.correlation_id] = checkpoint
        self.router.send(outbox)
        self.router.notify(msg.correlation_id, machine, run.state, run.status, new_step)
        return Outcome("committed", msg.correlation_id, run.status, run.state, run.hops, retries=retries), after

    def _migrated(self, machine: Machine, record: Record) -> dict[str, Any]:
        moved = migrate(self.machines[machine.name], record, str(record["migrate_to"]))
        if isinstance(moved, Moved):
            log(logging.WARNING, "instance migrated after its transition", correlation_id=record["id"],
                to=record["migrate_to"])
            return moved.fields
        log(logging.ERROR, "migration failed", correlation_id=record["id"], error=moved.reason)
        return {"migrate_to": None, "last_error": error_info(f"migration to version {record['migrate_to']} "
                                                             f"failed: {moved.reason}", record["step"],
                                                             record.get("state"), None, self.clock())}

    def _expiry(self, now: float) -> dict[str, int]:
        """With a retention, records and history expire that long after their last change."""
        if not self.retention_days:
            return {}
        return {"expires_at": int(now + self.retention_days * 86400)}

    def _fail(self, store: InstanceStore, lease: leases.Lease, msg: Message, again: Message, record: Record,
              machine: Machine, snapshot: Snapshot | None, exc: BaseException, now: float, retryable: bool,
              consume: int = 0) -> tuple[Outcome, Record | None]:
        """A failed attempt: schedule the retry; once retries are used up, raise the
        ``error`` event where the configuration takes it, else fail the instance."""
        error = str(exc) if isinstance(exc, Failed) else f"{type(exc).__name__}: {exc}"
        # ASL-style name and cause: a `fsm.Failed` names its own; any other exception its type.
        named = {"error": exc.error, "cause": exc.cause} if isinstance(exc, Failed) else \
            {"error": type(exc).__name__, "cause": str(exc)}
        dims = {"Machine": machine.name, "State": str(again.state), "Event": str(again.event)}
        final = not retryable or again.retries >= retries_allowed(machine, snapshot)
        entry = history_entry(again.step + 1, again.state, again.event, None, now, retries=again.retries, error=error)
        fields: dict[str, Any] = {
            **self._expiry(now),
            "retries": again.retries + 1, "updated_at": now, "consumed": _identity(msg),
            "event_ids": _remember(record, again),
            "last_error": {**error_info(error, again.step, again.state, again.event, now), **named}}
        raised = error_event(machine, again.event)
        handled = final and snapshot is not None and again.event != raised and accepts(machine, snapshot, raised)
        if final and not handled:
            outbox: list[tuple[Message, float]] = [(m, 0.0) for m in owing.ended(record, named, now)]
            fields.update(status=Status.FAILED, outbox=entries(outbox, again.correlation_id), pending=0.0,
                          failed_message=again.evolve(retries=0).to_dict())
            if again.event_id:
                entry.update(event_id=again.event_id, status=Status.FAILED)
        elif handled:
            outbox = [(again.evolve(event=raised, data=named if isinstance(exc, Failed) else {"error": error},
                                    retries=again.retries + 1,
                                    fence=lease.fence, sent_at=now), 0.0)]
            fields.update(status=Status.RUNNING, outbox=entries(outbox, again.correlation_id), pending=now)
        else:
            delay = full_jitter(again.retries, machine.retry_base_delay, machine.retry_max_delay, self.rng)
            outbox = [(again.evolve(retries=again.retries + 1, fence=lease.fence, sent_at=now), delay)]
            fields.update(status=Status.RUNNING, outbox=entries(outbox, again.correlation_id), pending=now)
        after = self._commit(store, lease, record, fields, [entry], consume=consume)
        if after is None:
            return self._stale(again), None
        log(logging.ERROR if final else logging.WARNING, "action failed", correlation_id=again.correlation_id,
            machine=machine.name, state=again.state, event=again.event, retries=again.retries,
            error=error, gave_up=final, raised=raised if handled else None)
        if final and not handled:
            self.metrics.incr("Failures", dims=dims)
            if not isinstance(exc, Failed):  # a Failed is the machine's own verdict, not a lost message
                self.router.dead_letter_message(again, error)
            self.router.send(outbox)
            self.router.notify(again.correlation_id, machine, record.get("state"), Status.FAILED, record.get("step", 0))
            return Outcome("failed", again.correlation_id, Status.FAILED, record.get("state"), error=error,
                           retries=again.retries + 1), after
        self.metrics.incr("Failures" if handled else "Retries", dims=dims)
        self.router.send(outbox)
        return Outcome("retrying", again.correlation_id, Status.RUNNING, record.get("state"), error=error,
                       retries=again.retries + 1), after

    def _reject(self, store: InstanceStore, lease: leases.Lease, msg: Message, record: Record,
                machine: Machine, event: str | None, now: float, error: str | None = None, consume: int = 0,
                snapshot: Snapshot | None = None) -> tuple[Outcome, Record | None]:
        state = record.get("state")
        if error is None:
            snapshot = snapshot or Snapshot.of(record.get("chart"), state, record.get("step", 0))
            accepted = accepted_events(machine, snapshot)
            takes = event is not None and snapshot is not None and accepts(machine, snapshot, event)
            error = (f"event {event!r} rejected: no guard of its transitions in state {state!r} passed" if takes
                     else f"event {event!r} rejected: state {state!r} accepts {', '.join(accepted) or 'no events'}")
        fields = {"event_ids": _remember(record, msg), "updated_at": now,
                  "last_error": error_info(error, record["step"], state, event, now)}
        entry = history_entry(record["step"], state, event, None, now, rejected=True, error=error, pos=consume)
        if consume:
            entry.update(event_id=msg.event_id, status=record["status"])
        after = self._commit(store, lease, record, fields, [entry], consume=consume)
        if after is None:
            return self._stale(msg), None
        self.metrics.incr("RejectedEvents", dims={"Machine": machine.name, "State": str(state),
                                                  "Event": str(event)})
        return Outcome("rejected", msg.correlation_id, record["status"], state, error=error), after

    def _cancel(self, store: InstanceStore, lease: leases.Lease, msg: Message, record: Record,
                now: float) -> tuple[Outcome, Record | None]:
        reason = msg.reason or "cancelled"
        outbox = [(m, 0.0) for m in owing.ended(record, {"error": "Cancelled", "cause": reason}, now)]
        fields = {"status": Status.CANCELLED, "outbox": entries(outbox, msg.correlation_id), "pending": 0.0,
                  "updated_at": now,
                  "event_ids": _remember(record, msg),
                  **self._expiry(now),
                  "last_error": error_info(f"cancelled: {reason}", record["step"], record["state"], None, now)}
        entry = history_entry(record["step"], record["state"], "cancel", None, now, cancelled=reason)
        after = self._commit(store, lease, record, fields, [entry])
        if after is None:
            return self._stale(msg), None
        self.router.send(outbox)
        self.router.notify(msg.correlation_id, self.machines[msg.machine], record["state"], Status.CANCELLED,
                           record["step"])
        return Outcome("cancelled", msg.correlation_id, Status.CANCELLED, record["state"]), after

    def _duplicate(self, store: InstanceStore, msg: Message, record: Record, now: float) -> Outcome:
        """Acknowledge a message whose work is committed, re-sending the outbox when the
        commit may have crashed before sending it.

        Only the redelivery of the very message that was consumed can know that. A copy
        (sent again by the sweep or ``fsm resume``) re-sends nothing: healing what is still
        owed is the sweep's job, which does it at most once per ``resend_after``, so copies
        cannot chain or pile up behind a backlog.
        """
        self.metrics.incr("Duplicates", dims={"Machine": msg.machine})
        outbox = record.get("outbox") or []
        if outbox and not msg.copy and record.get("consumed") == _identity(msg) and not record.get("lease_owner"):
            self.router.send(owed(record))
        return Outcome("duplicate", msg.correlation_id, record.get("status"), record.get("state"))

    def _stale(self, msg: Message) -> Outcome:
        """Our lease expired and another worker took the instance over: drop our work."""
        self.metrics.incr("LeaseContention", dims={"Machine": msg.machine})
        log(logging.WARNING, "stale lease: commit refused", correlation_id=msg.correlation_id, step=msg.step)
        return Outcome("duplicate", msg.correlation_id, error="lease lost before commit")

    def _checkpoints_with_commit(self, store: InstanceStore) -> bool:
        """The store writes the checkpoint item in the commit's own write when the
        checkpoint table is its table: no extra round trip."""
        return isinstance(store, CommitsCheckpoints) and store.writes_checkpoints and \
            self.checkpoints is not None and self.checkpoints.url == store.url and \
            self.checkpoints.prefix == store.prefix


def _identity(msg: Message) -> dict[str, Any]:
    if msg.kind == Kind.STEP:
        return {"kind": Kind.STEP, "step": msg.step, "retries": msg.retries}
    return {"kind": msg.kind, "event_id": msg.event_id}


def _remember(record: Record, msg: Message, keep: int = 100) -> list[str]:
    seen = list(record.get("event_ids") or [])
    if msg.event_id and msg.event_id not in seen:
        seen = (seen + [msg.event_id])[-keep:]
    return seen
