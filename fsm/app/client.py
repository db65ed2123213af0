"""The client behind ``fsm.client``, the CLI and the handler's ECS reports: start
instances, send them events, ask where they are.

With a ``stream`` configured, messages go there and workers (Lambda or ``fsm worker``)
run them; without one, the embedded runtime runs them in this process until the instance
settles.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from config.loader import Definitions
from config.settings import Settings

from ..chart import Snapshot
from ..dispatcher import Outcome
from ..engine import accepted_events, accepts
from ..errors import (
    EventRejected,
    InstanceError,
    UnknownInstance,
    UnknownMachine,
    WaitTimeout,
)
from ..inbox import work_message
from ..lease import live
from ..message import (
    Kind,
    Message,
    check_correlation_id,
    check_event_id,
    iso,
    new_event_id,
)
from ..model import check_json
from ..ports import Envelope
from ..record import FINISHED, Record, Status
from .delivery import freshest_record
from .local import LocalRuntime
from .wiring import App, Wiring

NO_INPUT: Any = object()          # Client.start: no input given
DEFAULT_HISTORY_PAGE = 100
LARGEST_HISTORY_PAGE = 1000


class Client:
    def __init__(self, settings: Settings | None = None, definitions: Definitions | None = None,
                 config: str | None = None, wiring: Wiring | None = None,
                 on_outcome: Callable[[Outcome], None] | None = None):
        if wiring is None:
            wiring = App.load(config, definitions=definitions, settings=settings).wiring
        self.wiring = wiring
        self.machines = wiring.dispatcher.machines
        self.runtime = LocalRuntime(wiring, on_outcome=on_outcome) if wiring.embedded else None

    # -- commands ---------------------------------------------------------------------

    def start(self, machine: str, context: dict[str, Any] | None = None,
              correlation_id: str | None = None, *, input: Any = NO_INPUT) -> str:
        """Start an instance; a given ``correlation_id`` makes it idempotent.

        ``context`` is the first context as it is. ``input`` (any JSON value) is what the
        instance is started with: the machine's ``start`` hook makes the first context of
        it (ASL machines); a machine without one takes a JSON object as the context and
        refuses anything else with ``ValueError``. Give one of the two; with neither, a
        machine with a ``start`` hook starts from the input ``{}`` (as Step Functions does)."""
        if machine not in self.machines:
            raise UnknownMachine(f"unknown machine {machine!r}; known: {', '.join(sorted(self.machines)) or 'none'}")
        cid = check_correlation_id(correlation_id) if correlation_id else uuid.uuid4().hex
        if input is NO_INPUT and context is None and getattr(self.machines[machine], "start", None) is not None:
            input = {}
        if input is not NO_INPUT:
            if context is not None:
                raise ValueError("give the first context or the input, not both")
            context = first_context(self.machines[machine], input)
        # A machine's own initial context (XState's `context`), then what the caller gives.
        context = {**json.loads(json.dumps(self.machines[machine].context)), **(context or {})}
        check_json(context)
        context = self.wiring.dispatcher.payloads.stow(cid, "0-start", context)
        self._send(Message(machine=machine, correlation_id=cid, context=context,
                           version=self.machines[machine].version, sent_at=time.time()))
        return cid

    def send_event(self, correlation_id: str, event: str, data: dict[str, Any] | None = None,
                   event_id: str | None = None, wait: float | None = None) -> Any:
        """Append an external event to the instance's inbox (one conditional write; an
        ``event_id`` seen before is not appended again) and nudge a worker to drain it.

        Returns the event id once the event is durably accepted; with ``wait`` (seconds),
        the status right after this event was applied (``event``: its position, and
        whether it was applied or rejected), or :class:`WaitTimeout`. Fails fast, with
        :class:`EventRejected`, only when the instance is settled with nothing queued
        and no active state has a transition on ``event``.
        """
        index, record = self._record(correlation_id)
        if record["status"] in FINISHED:
            raise InstanceError(f"instance {correlation_id!r} is {record['status']}; it takes no events")
        machine = self._machine_of(record)
        snapshot = Snapshot.of(record.get("chart"), record.get("state"), record.get("step", 0))
        if record["status"] == Status.WAITING and not record.get("inbox") and (
                snapshot is None or not accepts(machine, snapshot, event)):
            accepted = ", ".join(accepted_events(machine, snapshot)) or "none"
            raise EventRejected(f"instance {correlation_id!r} is in state {record['state']!r}, which does "
                                f"not accept {event!r}; it accepts: {accepted}")
        data = dict(data or {})
        check_json(data)
        event_id = check_event_id(event_id) if event_id is not None else new_event_id()
        store = self.wiring.stores[index]
        data = self.wiring.dispatcher.payloads.stow(correlation_id, f"event-{event_id}", data)
        appended = store.append(correlation_id, {"id": event_id, "kind": Kind.EVENT, "event": event,
                                                 "at": time.time(), **({"data": data} if data else {})})
        after = appended.record
        if after is None:
            raise UnknownInstance(f"no instance {correlation_id!r} in {store.url}")
        if after.get("inbox") and (self.runtime is not None or not (
                after["status"] == Status.RUNNING or live(after, int(time.time() * 1000)))):
            self._send(work_message(after, index))
        if wait is None:
            return event_id
        return self.applied(correlation_id, event_id, wait)

    def applied(self, cid: str, event_id: str, wait: float,
                sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
        """The status right after inbox event ``event_id`` was applied (or rejected),
        waiting up to ``wait`` seconds for it (else :class:`WaitTimeout`)."""
        index, _ = self._record(cid)
        store = self.wiring.stores[index]
        deadline, pause = time.monotonic() + wait, 0.02
        while True:
            record = store.get(cid) or {}
            if not any(entry["id"] == event_id for entry in record.get("inbox") or ()):
                for entry in reversed(store.history(cid)):
                    if entry.get("event_id") == event_id:
                        return applied_view(record, entry, event_id)
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"event {event_id!r} for instance {cid!r} was accepted but not applied "
                                  f"within {wait:g} s; it stays queued and will be applied in order")
            if self.runtime is not None:
                self.runtime.drive(cid)
            sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.5)

    def cancel(self, correlation_id: str, reason: str = "cancelled") -> None:
        index, record = self._record(correlation_id)
        self._machine_of(record)
        if record["status"] in FINISHED:
            raise InstanceError(f"instance {correlation_id!r} is already {record['status']}")
        self._send(Message(machine=record["machine"], correlation_id=correlation_id, kind=Kind.CANCEL,
                           step=record["step"], fence=record["fence"], reason=reason,
                           event_id=new_event_id(), store=index, sent_at=time.time()))

    def retry(self, correlation_id: str) -> None:
        """Resume a failed instance from the message it failed on."""
        index, record = self._record(correlation_id)
        self._machine_of(record)
        kept = record.get("failed_message")
        if record["status"] != Status.FAILED or not kept:
            raise InstanceError(f"instance {correlation_id!r} is {record['status']}; only a failed "
                                "instance can be retried")
        store = self.wiring.stores[index]
        now = time.time()
        msg = Message(**{**kept, "retries": 0, "fence": record["fence"], "store": index, "sent_at": now})
        # The message goes in the outbox first, so a send lost here is re-sent by the sweep.
        result = store.swap(correlation_id, {"status": Status.FAILED, "fence": record["fence"], "lease_owner": ""},
                            {"status": Status.RUNNING, "retries": 0, "failed_message": None, "updated_at": now,
                             "outbox": [{"message": msg.to_dict(), "delay": 0.0}], "pending": now})
        if not result.ok:
            raise InstanceError(f"instance {correlation_id!r} changed while retrying it; try again")
        self._send(msg)

    # -- queries ----------------------------------------------------------------------

    def status(self, correlation_id: str) -> dict[str, Any]:
        """Where the instance is; ``problem`` says why nothing can run it, when that is so
        (its machine, version or state is not in the loaded config)."""
        _, record = self._record(correlation_id)
        view = status_view(record)
        view["context"] = self.wiring.dispatcher.payloads.fetch(view["context"])
        if isinstance(view["output"], dict):    # offloaded like a context, when it is large
            view["output"] = self.wiring.dispatcher.payloads.fetch(view["output"])
        try:
            self._machine_of(record)
        except UnknownMachine as exc:
            view["problem"] = str(exc)
        return view

    def history(self, correlation_id: str, page: int | None = None,
                page_size: int = DEFAULT_HISTORY_PAGE) -> Any:
        """The instance's transitions, oldest first: every one (a list), or with ``page``
        (from 1) that page of ``page_size`` (1 to 1000) entries as ``{"page", "pages",
        "total", "entries"}``, read from the store without reading the rest. A page past
        the last (there is always a page 1) or a bad size raises ``ValueError``."""
        if page is not None:
            check_page(page, page_size)
        index, _ = self._record(correlation_id)
        store = self.wiring.stores[index]
        if page is None:
            return store.history(correlation_id)
        total = _history_len(store, correlation_id)
        pages = max(1, math.ceil(total / page_size))
        if page > pages:
            raise ValueError(f"page {page} is past the end: instance {correlation_id!r} has {total} history "
                             f"entries, {pages} page{'s' if pages != 1 else ''} of {page_size}")
        return {"page": page, "pages": pages, "total": total,
                "entries": _history_range(store, correlation_id, (page - 1) * page_size, page_size)}

    def history_slice(self, correlation_id: str, first: int, count: int) -> dict[str, Any]:
        """``count`` entries of the history from entry ``first`` (0-based) and the total,
        ``{"entries", "total"}``, read without reading the rest."""
        index, _ = self._record(correlation_id)
        store = self.wiring.stores[index]
        return {"entries": _history_range(store, correlation_id, first, count),
                "total": _history_len(store, correlation_id)}

    def list(self, machine: str | None = None, status: str | None = None, state: str | None = None,
             since: float | str | None = None, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """One page of instances, most recently updated first: ``{"instances": [status
        views], "next": the cursor of the next page, or None}``.

        Filters combine. ``since``: updated at or after it, epoch seconds or ISO 8601.
        ``state`` without ``machine`` means the one loaded machine with that state.
        ``limit``: 1 to 1000. An instance updated while you page moves to the first page
        and is not returned again on a later one. Bad arguments raise ``ValueError``.

        With several stores (failover) it lists from the first one that can
        (:class:`fsm.ports.InstanceIndex`): an instance that failed over to a secondary
        shows as the primary last saw it. When none can (memcached), it raises
        :class:`fsm.app.listing.ListingUnsupported`, naming the stores and those that can.
        """
        from .listing import epoch_seconds, listing_store, machine_with_state

        since = epoch_seconds(since)
        if state is not None and machine is None:
            machine = machine_with_state(self.machines, state)
        store = listing_store(self.wiring.stores)
        if self.runtime is not None:
            self.runtime.catch_up()  # overdue timers fired before this call, as for status()
        records, after = store.list_instances(machine=machine, status=status, state=state, since=since,
                                              limit=limit, cursor=cursor)
        return {"instances": [status_view(record) for record in records], "next": after}

    # -- plumbing ---------------------------------------------------------------------

    def _machine_of(self, record: Record) -> Any:
        """The machine, at the version the instance runs on; an instance nothing loaded
        can run is an :class:`UnknownMachine` naming why and the way out."""
        machine = self.machines.get(record["machine"])
        if machine is None:
            raise UnknownMachine(f"instance {record['id']!r} runs machine {record['machine']!r}, which the "
                                 f"loaded config does not define (it has: {', '.join(sorted(self.machines))})")
        version = str(record.get("version") or "")
        at = machine.at_version(version)
        move = f"move it with `fsm migrate --machine {machine.name} --to {machine.version}`"
        if at is None:
            raise UnknownMachine(f"instance {record['id']!r} runs version {version!r} of machine {machine.name!r}, "
                                 f"which the loaded config no longer defines (it has "
                                 f"{', '.join(machine.versions) or machine.version}); {move}")
        snapshot = Snapshot.of(record.get("chart"), record.get("state"), record.get("step", 0))
        missing = sorted(p for p in (snapshot.active if snapshot else ()) if p not in at.states)
        if missing:
            raise UnknownMachine(f"instance {record['id']!r} is in state {', '.join(map(repr, missing))}, which "
                                 f"version {version or '(unversioned)'!r} of machine {machine.name!r} no longer "
                                 f"defines; {move}")
        return at

    def _record(self, cid: str) -> tuple[int, Record]:
        check_correlation_id(cid)
        if self.runtime is not None:
            self.runtime.catch_up()  # fire overdue timers first: they happened before this call
            self.runtime.heal(cid)   # and go on with what an earlier command left running
        found = freshest_record(self.wiring, cid)
        if found is None:
            later = "" if self.runtime else " (or not started yet: no worker has run its first step)"
            raise UnknownInstance(f"no instance {cid!r} in {', '.join(s.url for s in self.wiring.stores)}{later}")
        return found

    def _send(self, msg: Message) -> None:
        self.wiring.routes.bus.send(Envelope(msg.encode(), msg.correlation_id, msg.dedup_id))
        if self.runtime is not None:
            self.runtime.drive(msg.correlation_id)


def applied_view(record: Record, entry: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The status as it was right after the history ``entry`` that took an event: its
    state, value, status and steps. The context is not kept per step: it is shown when
    nothing has happened since (the record is still at that step), and left out rather
    than shown from a later moment otherwise (``fsm status`` shows the current one)."""
    view = status_view(record)
    rejected = bool(entry.get("rejected"))
    state = entry.get("from") if rejected or entry.get("to") is None else entry.get("to")
    view.update(state=state, steps=entry.get("step"), status=entry.get("status", view["status"]),
                value=entry.get("value", view["value"] if rejected else state), updated_at=entry.get("time"),
                last_error=entry.get("error"),
                event={"id": event_id, "position": entry.get("pos"), "name": entry.get("event"),
                       "applied": not rejected and not entry.get("error"), "error": entry.get("error")})
    if record.get("step") != entry.get("step"):
        del view["context"]
    return view


def status_view(record: Record) -> dict[str, Any]:
    error = record.get("last_error")
    chart = record.get("chart")
    parent = record.get("parent")
    name, cause = failure_of(record)
    return {"correlation_id": record["id"], "machine": record["machine"], "version": record.get("version") or "",
            "state": record["state"],
            "value": chart["value"] if isinstance(chart, dict) and "value" in chart else record["state"],
            "status": record["status"], "steps": record["step"], "retries": record["retries"],
            "context": record.get("context") or {},
            "last_error": error.get("message") if isinstance(error, dict) else error,
            "updated_at": _iso(record.get("updated_at")), "created_at": _iso(record.get("created_at")),
            "output": record.get("output") if record["status"] == Status.DONE else None,
            "error": name, "cause": cause,
            "parent": parent.get("id") if isinstance(parent, dict) else parent if isinstance(parent, str) else None,
            "children": _children(record)}


# What names an error in a message "Type: text" (an exception's type, ``States.Timeout``).
_ERROR_NAME = re.compile(r"[A-Za-z_][\w.]*")


def failure_of(record: Record) -> tuple[str | None, str | None]:
    """A failed instance's ``(error, cause)``: as its ``last_error`` names them, or else
    from its message ``Type: text`` (the type, and the text); ``(None, None)`` for an
    instance that has not failed."""
    if record.get("status") != Status.FAILED:
        return None, None
    info = record.get("last_error")
    info = info if isinstance(info, dict) else {"message": info} if isinstance(info, str) else {}
    message = str(info.get("message") or "")
    head, colon, rest = message.partition(": ")
    derived = bool(colon) and _ERROR_NAME.fullmatch(head) is not None
    error = info.get("error") or (head if derived else None)
    cause = info.get("cause")
    if cause is None:
        cause = rest if derived else message or None
    return error, cause


def _children(record: Record) -> list[str]:
    """The ids of the child instances the instance started (none before sub-machines)."""
    try:
        from ..join import child_ids
    except ImportError:
        return []
    return list(child_ids(record))


def first_context(machine: Any, value: Any) -> dict[str, Any]:
    """The first context of an instance started with ``value``: the machine's ``start``
    hook makes it, when it has one; otherwise ``value`` must be a JSON object, the
    context itself."""
    hook = getattr(machine, "start", None)
    if hook is not None:
        context = hook(json.loads(json.dumps(value, allow_nan=False)))
        if not isinstance(context, dict):
            raise TypeError(f"machine {machine.name!r}: its start hook made a {type(context).__name__}, "
                            "not a context (a dict)")
        return context
    if isinstance(value, dict):
        return dict(value)
    # Bad input rather than a bug (the CLI's usage error), hence ValueError.
    raise ValueError(f"machine {machine.name!r} starts from a JSON object (its first context), got a JSON "
                     f"{_json_kind(value)}")


def _json_kind(value: Any) -> str:
    return ("null" if value is None else "boolean" if isinstance(value, bool) else "number"
            if isinstance(value, (int, float)) else "string" if isinstance(value, str) else "array"
            if isinstance(value, list) else type(value).__name__)


def check_page(page: Any, page_size: Any) -> None:
    """``ValueError`` for a page that is not a whole number from 1 or a size not 1 to
    ``LARGEST_HISTORY_PAGE``."""
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise ValueError(f"page must be a whole number from 1, got {page!r}")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= LARGEST_HISTORY_PAGE:
        raise ValueError(f"page size must be a whole number from 1 to {LARGEST_HISTORY_PAGE}, got {page_size!r}")


def _history_len(store: Any, cid: str) -> int:
    """The history's length, from the store's ``history_len`` (stores written before it
    existed: from the whole history)."""
    counted = getattr(store, "history_len", None)
    return int(counted(cid)) if counted is not None else len(store.history(cid))


def _history_range(store: Any, cid: str, start: int, limit: int) -> list[dict[str, Any]]:
    """``limit`` entries from ``start``, read as a range where the store can."""
    if getattr(store, "history_len", None) is not None:
        return store.history(cid, start, limit)
    return store.history(cid)[start:start + limit]


def _iso(ts: float | None) -> str | None:
    return iso(ts) if ts else None
