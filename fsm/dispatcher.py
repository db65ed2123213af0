"""One message in, at most one committed transition out.

``Dispatcher.handle`` is the whole per-message protocol (see the README's architecture
section): acquire the fenced lease, run the actions, commit the transition with its
outgoing messages (the outbox) and release the lease in one write, then send the
outbox. It talks only to ports, so the same code runs on Lambda, in ``fsm worker``,
in ``fsm run`` and in tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import codec
from . import lease as leases
from .backoff import full_jitter
from .engine import Hop, run_transitions
from .errors import (
    BackendError,
    ContextNotSerialisable,
    MalformedMessage,
    RecoverableError,
    SendFailed,
    TransitionError,
)
from .logs import log, redact
from .message import Kind, Message
from .model import Context, Machine
from .ports import (
    CheckpointStore,
    CommitsCheckpoints,
    Envelope,
    EventBus,
    InstanceStore,
    Metrics,
    NullMetrics,
    PendingIndex,
    TimerStore,
)
from .record import (
    FINISHED,
    Record,
    Status,
    error_info,
    freshness,
    history_entry,
    new_record,
)


@dataclass
class Outcome:
    """What happened to one message (``result``) and where the instance is now."""

    result: str            # committed | retrying | failed | cancelled | rejected | duplicate | stale | busy
    correlation_id: str
    status: str | None = None
    state: str | None = None
    hops: list[Hop] = field(default_factory=list)
    error: str | None = None
    retries: int = 0


@dataclass
class Routes:
    """Where messages go. ``bus`` is the stream; the rest are optional."""

    bus: EventBus
    retry: EventBus | None = None        # delays the stream cannot hold
    timers: TimerStore | None = None     # delays no bus can hold
    dead_letter: EventBus | None = None
    notify: EventBus | None = None


class Dispatcher:
    def __init__(self, machines: Mapping[str, Machine], stores: Sequence[InstanceStore], routes: Routes,
                 *, metrics: Metrics | None = None, lease_timeout: float = 960.0,
                 max_local_hops: int = 100, resend_after: float = 60.0,
                 checkpoints: CheckpointStore | None = None,
                 retention_days: float = 0.0, holder_alive: Callable[[str], bool] | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None):
        if not stores:
            raise ValueError("at least one store is needed")
        self.machines = machines
        self.stores = list(stores)
        self.routes = routes
        self.metrics = metrics or NullMetrics()
        self.lease_ms = int(lease_timeout * 1000)
        self.max_local_hops = max_local_hops
        self.resend_after = resend_after
        self.checkpoints = checkpoints  # correlation id -> last consumed stream position
        self.retention_days = retention_days
        self.holder_alive = holder_alive  # the embedded runtime: recognise its own dead processes
        self.clock = clock
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
            raise MalformedMessage(f"message for version {msg.version!r} of machine {machine.name!r}, "
                                   f"which is at version {machine.version!r}")
        state = msg.state
        if state is not None and state not in machine.states:
            raise MalformedMessage(f"machine {machine.name!r} has no state {state!r}")
        return machine

    # -- the protocol -----------------------------------------------------------------

    def _handle(self, index: int, msg: Message, machine: Machine,
                source: Mapping[str, Any] | None) -> Outcome:
        store = self.stores[index]
        now = self.clock()
        owner = f"{self._node}:{next(self._seq)}"
        got = leases.acquire(store, msg, owner, self.lease_ms, int(now * 1000),
                             lambda: self._new_record(msg, machine, now), self.holder_alive)
        cid = msg.correlation_id
        if isinstance(got, leases.Missing):
            self._dead_letter(msg, f"no instance {cid!r} to send {msg.kind} {msg.event!r} to")
            self.metrics.incr("RejectedEvents", dims={"Machine": machine.name})
            return Outcome("rejected", cid, error=f"unknown instance {cid!r}")
        if isinstance(got, leases.Duplicate):
            return self._duplicate(store, msg, got.record, now)
        if isinstance(got, leases.Stale):
            self.metrics.incr("StaleMessages", dims={"Machine": machine.name})
            log(logging.WARNING, "stale copy acknowledged", correlation_id=cid, step=msg.step, fence=msg.fence,
                stored_fence=got.record["fence"], status=got.record["status"])
            return Outcome("stale", cid, got.record["status"], got.record.get("state"))
        if isinstance(got, leases.Busy):
            self.metrics.incr("LeaseContention", dims={"Machine": machine.name})
            self._requeue(msg)
            return Outcome("busy", cid, status=(got.record or {}).get("status"))
        lease, record = got, got.record
        if len(self.stores) > 1:
            moved = self._elsewhere(index, cid, {**record, "fence": lease.fence - 1})
            if moved is not None:
                return self._retire(index, lease, msg, machine, source, moved)
        if msg.event_id and msg.kind != Kind.STEP and msg.event_id in (record.get("event_ids") or []):
            leases.commit(store, lease, {})
            return self._duplicate(store, msg, {**record, "lease_owner": ""}, now)
        if record["status"] in FINISHED:  # an event or cancel that came too late
            return self._reject(store, lease, msg, record, machine, msg.event or msg.kind, now,
                                f"instance is {record['status']}: {msg.kind} {msg.event or ''} not applied"
                                .replace("  ", " ").strip())
        if msg.kind == Kind.CANCEL:
            return self._cancel(store, lease, msg, record, now)
        if msg.kind != Kind.STEP:
            state = machine.states[record["state"]]
            if msg.kind == Kind.EVENT and msg.state and msg.state != state.name:
                return self._reject(store, lease, msg, record, machine, msg.event, now,
                                    f"event {msg.event!r} was sent to state {msg.state!r}; the instance "
                                    f"has moved on to {state.name!r}")
            event = msg.event or state.timeout_event
            if event not in state.transitions:
                return self._reject(store, lease, msg, record, machine, event, now)
            msg = msg.evolve(event=event, state=state.name)
        return self._transition(store, lease, msg, record, machine, source, now)

    def _transition(self, store: InstanceStore, lease: leases.Lease, msg: Message, record: Record,
                    machine: Machine, source: Mapping[str, Any] | None, now: float) -> Outcome:
        steps = msg.kind == Kind.STEP
        step = msg.step if steps else record["step"]
        retries = msg.retries if steps else record.get("retries", 0)
        committed = msg.context if steps else record.get("context") or {}
        # A private copy: a failed attempt must not leak its changes to nested values into
        # the retry (or the failover) that starts again from the committed context.
        private = codec.copy(committed) if committed else {}
        if msg.data:
            private.update(codec.copy(msg.data))
        context = Context(private,
                          correlation_id=msg.correlation_id,
                          machine=machine, steps=step, retries=retries,
                          current_state=machine.states.get(msg.state or ""), current_event=msg.event)
        obj = {"message": msg.to_dict(), "source": dict(source or {}), "fence_token": lease.fence,
               "event_data": msg.data, "store": store.url}
        try:
            run = run_transitions(machine, msg.state, msg.event, context, obj, self.max_local_hops)
            data = context.user_data()
        except KeyboardInterrupt:
            # Stopped by its operator: give the lease back so that the next command can go
            # on at once (the message is re-sent from the record's outbox).
            leases.release(store, lease)
            raise
        except Exception as exc:  # noqa: BLE001 - user code: any exception is a failed attempt
            # What a retry re-runs: this step, from the context as last committed.
            again = msg.evolve(kind=Kind.STEP, step=step, retries=retries, context=committed, busy=0, copy=False)
            retryable = not isinstance(exc, (TransitionError, ContextNotSerialisable))
            return self._fail(store, lease, msg, again, record, machine, exc, now, retryable)
        new_step = step + len(run.hops)
        outbox: list[tuple[Message, float]] = []
        base = {"machine": machine.name, "correlation_id": msg.correlation_id, "fence": lease.fence,
                "store": msg.store, "version": machine.version, "sent_at": now}
        if run.status == Status.RUNNING:
            outbox.append((Message(kind=Kind.STEP, step=new_step, event=run.next_event, state=run.state,
                                   context=data, **base), 0.0))
        outbox.extend(self._timers(machine.states[run.state], run.status, obj.get("schedule"), new_step, base))
        history = [history_entry(h.step + 1, h.source, h.event, h.target, now, duration=h.duration, retries=retries)
                   for h in run.hops]
        fields = {"state": run.state, "status": run.status, "step": new_step, "retries": 0,
                  "context": data, "outbox": _entries(outbox), "consumed": _identity(msg),
                  "event_ids": _remember(record, msg), "last_error": None, "failed_message": None,
                  "updated_at": now, "pending": now if run.status == Status.RUNNING else 0.0, **self._expiry(now)}
        checkpoint = None
        if source and source.get("sequence"):
            checkpoint = {k: source.get(k) for k in ("arn", "shard", "sequence")}
            fields["checkpoint"] = checkpoint
        if not leases.commit(store, lease, fields, history):
            return self._stale(msg)
        if checkpoint and checkpoint["shard"] and self.checkpoints is not None \
                and not self._checkpoints_with_commit(store):  # only Kinesis positions can be replayed
            self.checkpoints[msg.correlation_id] = checkpoint
        for hop in run.hops:
            dims = {"Machine": machine.name, "State": hop.target, "Event": str(hop.event)}
            self.metrics.incr("Transitions", dims=dims)
            self.metrics.incr("ActionDuration", hop.duration * 1000, "Milliseconds", dims)
        if msg.sent_at:
            self.metrics.incr("Lag", max(0.0, now - msg.sent_at) * 1000, "Milliseconds",
                              {"Machine": machine.name})
        self._send(outbox)
        self._notify(msg.correlation_id, machine, run.state, run.status, new_step)
        return Outcome("committed", msg.correlation_id, run.status, run.state, run.hops, retries=retries)

    @staticmethod
    def _timers(state: Any, status: str, schedule: Any, step: int,
                base: dict[str, Any]) -> list[tuple[Message, float]]:
        """Timer messages for the state just entered: its ``timeout``, and a wake-up an
        action asked for (``obj["schedule"]``, see ``actions.wait.Sleep``). Each names
        the step it was set at, so it is ignored once the state was left or re-entered."""
        if status == Status.DONE:
            return []
        timers = []
        if state.timeout:
            timers.append((Message(kind=Kind.TIMER, step=step, event=state.timeout_event, state=state.name,
                                   event_id=f"timeout-{step}", **base), float(state.timeout)))
        if schedule and status == Status.WAITING:
            timers.append((Message(kind=Kind.TIMER, step=step, event=str(schedule["event"]), state=state.name,
                                   event_id=f"wake-{step}", **base), float(schedule["delay"])))
        return timers

    def _expiry(self, now: float) -> dict[str, int]:
        """With a retention, records and history expire that long after their last change."""
        if not self.retention_days:
            return {}
        return {"expires_at": int(now + self.retention_days * 86400)}

    def _fail(self, store: InstanceStore, lease: leases.Lease, msg: Message, again: Message, record: Record,
              machine: Machine, exc: BaseException, now: float, retryable: bool) -> Outcome:
        """A failed attempt: schedule the retry, or fail the instance for good."""
        error = f"{type(exc).__name__}: {exc}"
        dims = {"Machine": machine.name, "State": str(again.state), "Event": str(again.event)}
        final = not retryable or again.retries >= machine.max_retries
        entry = history_entry(again.step + 1, again.state, again.event, None, now, retries=again.retries, error=error)
        fields: dict[str, Any] = {
            **self._expiry(now),
            "retries": again.retries + 1, "updated_at": now, "consumed": _identity(msg),
            "event_ids": _remember(record, again),
            "last_error": error_info(error, again.step, again.state, again.event, now)}
        if final:
            fields.update(status=Status.FAILED, outbox=[], pending=0.0, failed_message=again.evolve(retries=0).to_dict())
            outbox: list[tuple[Message, float]] = []
        else:
            delay = full_jitter(again.retries, machine.retry_base_delay, machine.retry_max_delay, self.rng)
            outbox = [(again.evolve(retries=again.retries + 1, fence=lease.fence, sent_at=now), delay)]
            fields.update(status=Status.RUNNING, outbox=_entries(outbox), pending=now)
        if not leases.commit(store, lease, fields, [entry]):
            return self._stale(again)
        log(logging.ERROR if final else logging.WARNING, "action failed", correlation_id=again.correlation_id,
            machine=machine.name, state=again.state, event=again.event, retries=again.retries,
            error=error, gave_up=final)
        if final:
            self.metrics.incr("Failures", dims=dims)
            self._dead_letter(again, error)
            self._notify(again.correlation_id, machine, record.get("state"), Status.FAILED, record.get("step", 0))
            return Outcome("failed", again.correlation_id, Status.FAILED, record.get("state"), error=error,
                           retries=again.retries + 1)
        self.metrics.incr("Retries", dims=dims)
        self._send(outbox)
        return Outcome("retrying", again.correlation_id, Status.RUNNING, record.get("state"), error=error,
                       retries=again.retries + 1)

    def _reject(self, store: InstanceStore, lease: leases.Lease, msg: Message, record: Record,
                machine: Machine, event: str | None, now: float, error: str | None = None) -> Outcome:
        state = machine.states[record["state"]]
        error = error or (f"event {event!r} rejected: state {state.name!r} accepts "
                          f"{', '.join(state.external_events) or 'no events'}")
        fields = {"event_ids": _remember(record, msg), "updated_at": now,
                  "last_error": error_info(error, record["step"], state.name, event, now)}
        entry = history_entry(record["step"], state.name, event, None, now, rejected=True, error=error)
        if not leases.commit(store, lease, fields, [entry]):
            return self._stale(msg)
        self.metrics.incr("RejectedEvents", dims={"Machine": machine.name, "State": state.name,
                                                  "Event": str(event)})
        return Outcome("rejected", msg.correlation_id, record["status"], state.name, error=error)

    def _cancel(self, store: InstanceStore, lease: leases.Lease, msg: Message, record: Record,
                now: float) -> Outcome:
        reason = msg.reason or "cancelled"
        fields = {"status": Status.CANCELLED, "outbox": [], "pending": 0.0, "updated_at": now,
                  "event_ids": _remember(record, msg),
                  **self._expiry(now),
                  "last_error": error_info(f"cancelled: {reason}", record["step"], record["state"], None, now)}
        entry = history_entry(record["step"], record["state"], "cancel", None, now, cancelled=reason)
        if not leases.commit(store, lease, fields, [entry]):
            return self._stale(msg)
        self._notify(msg.correlation_id, self.machines[msg.machine], record["state"], Status.CANCELLED, record["step"])
        return Outcome("cancelled", msg.correlation_id, Status.CANCELLED, record["state"])

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
            self._send([(Message(**{**e["message"], "copy": True}), e["delay"]) for e in outbox])
        return Outcome("duplicate", msg.correlation_id, record.get("status"), record.get("state"))

    def _stale(self, msg: Message) -> Outcome:
        """Our lease expired and another worker took the instance over: drop our work."""
        self.metrics.incr("LeaseContention", dims={"Machine": msg.machine})
        log(logging.WARNING, "stale lease: commit refused", correlation_id=msg.correlation_id, step=msg.step)
        return Outcome("duplicate", msg.correlation_id, error="lease lost before commit")

    # -- healing ----------------------------------------------------------------------

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
        if leases.live(record, int(now * 1000), self.holder_alive) or record.get("status") != Status.RUNNING:
            return 0  # a worker is on it, or it owes nothing
        index = next((i for i, s in enumerate(self.stores) if s is store), 0)
        if self._elsewhere(index, record["id"], record) is not None:
            # A stale copy: the instance went on elsewhere. Stop owing; never re-send it.
            store.swap(record["id"], {"fence": record["fence"], "lease_owner": record.get("lease_owner", "")},
                       {"pending": 0.0, "outbox": []})
            self.metrics.incr("Retired", dims={"Machine": record.get("machine", ""), "Resource": store.url})
            return 0
        since = record.get("pending") or record.get("updated_at", 0)
        due = [(Message(**{**e["message"], "copy": True}), e["delay"]) for e in record.get("outbox") or []
               if force or since + e["delay"] + grace <= now]
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
        self._send(due)
        return 1

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

    def healing_gaps(self) -> list[str]:
        """The stores that cannot list instances owing a message (no pending index)."""
        return [store.url for store in self.stores if not isinstance(store, PendingIndex)]

    def _checkpoints_with_commit(self, store: InstanceStore) -> bool:
        """The store writes the checkpoint item in the commit's own write when the
        checkpoint table is its table: no extra round trip."""
        return isinstance(store, CommitsCheckpoints) and store.writes_checkpoints and \
            self.checkpoints is not None and self.checkpoints.url == store.url and \
            self.checkpoints.prefix == store.prefix

    # -- sending ----------------------------------------------------------------------

    def _requeue(self, msg: Message) -> None:
        """Send the message again later. The requeued one is a copy: it is not the
        redelivery of a consumed message, so it must not re-send that message's outbox."""
        delay = full_jitter(msg.busy, 0.2, 20.0, self.rng)
        self._send([(msg.evolve(busy=msg.busy + 1, copy=msg.kind == Kind.STEP or msg.copy), delay)])

    def _send(self, entries: Sequence[tuple[Message, float]]) -> None:
        with _sending():
            for msg, delay in entries:
                self._route(msg, delay)

    def _route(self, msg: Message, delay: float) -> None:
        envelope = Envelope(msg.encode(), msg.correlation_id, msg.dedup_id, delay)
        if delay <= self.routes.bus.max_delay:
            self.routes.bus.send(envelope)
        elif self.routes.retry is not None and delay <= self.routes.retry.max_delay:
            self.routes.retry.send(envelope)
        elif self.routes.timers is not None:
            self.routes.timers.add(msg.dedup_id, self.clock() + delay, envelope.body)
        else:
            raise BackendError(f"nowhere to hold a message for {delay:.0f} s: {self.routes.bus.url} "
                               f"holds at most {self.routes.bus.max_delay:.0f} s; add a standard SQS "
                               "queue or a DynamoDB timer table to settings `retry:`")

    def _dead_letter(self, msg: Message, error: str) -> None:
        self.dead_letter(msg.encode(), error, machine=msg.machine, key=msg.correlation_id,
                         dedup_id=msg.dedup_id, kind=msg.kind)

    def dead_letter(self, body: str, reason: str, *, machine: str = "unknown", key: str = "dead-letter",
                    dedup_id: str | None = None, **where: Any) -> None:
        """The one dead-letter path: for a message that failed for good, a body that is
        no message, an event no handler recognises. Logged (the payload redacted),
        counted, and kept on the ``dead_letter`` bus when one is configured."""
        self.metrics.incr("DeadLetters", dims={"Machine": machine})
        log(logging.ERROR, "dead-lettered", reason=reason, payload=redact(body), machine=machine,
            correlation_id=key, to=getattr(self.routes.dead_letter, "url", None), **where)
        if self.routes.dead_letter is not None:
            digest = dedup_id or hashlib.sha256(body.encode()).hexdigest()
            with _sending():
                self.routes.dead_letter.send(Envelope(body, key, digest))

    def _notify(self, cid: str, machine: Machine, state: str | None, status: str, step: int) -> None:
        if self.routes.notify is None:
            return
        body = {"correlation_id": cid, "machine": machine.name, "state": state, "status": status, "step": step}
        try:
            self.routes.notify.send(Envelope(codec.dumps(body), cid, f"{cid}:{step}:{status}"))
        except BackendError as exc:  # a UI feed must not fail a committed transition
            log(logging.WARNING, "notify failed", correlation_id=cid, error=str(exc))

    @staticmethod
    def _new_record(msg: Message, machine: Machine, now: float) -> Record:
        return new_record(msg.correlation_id, machine.name, machine.version, msg.state, msg.step, msg.retries,
                          msg.context, now)


@contextlib.contextmanager
def _sending() -> Iterator[None]:
    """A bus fault after the commit is a ``SendFailed``: redeliver, never switch stores."""
    try:
        yield
    except SendFailed:
        raise
    except RecoverableError as exc:
        raise SendFailed(str(exc)) from exc


def _identity(msg: Message) -> dict[str, Any]:
    if msg.kind == Kind.STEP:
        return {"kind": Kind.STEP, "step": msg.step, "retries": msg.retries}
    return {"kind": msg.kind, "event_id": msg.event_id}


def _remember(record: Record, msg: Message, keep: int = 100) -> list[str]:
    seen = list(record.get("event_ids") or [])
    if msg.event_id and msg.event_id not in seen:
        seen = (seen + [msg.event_id])[-keep:]
    return seen


def _entries(outbox: list[tuple[Message, float]]) -> list[dict[str, Any]]:
    return [{"message": m.to_dict(), "delay": d} for m, d in outbox]
