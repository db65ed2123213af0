"""The client behind ``fsm.client``, the CLI and the handler's ECS reports: start
instances, send them events, ask where they are.

With a ``stream`` configured, messages go there and workers (Lambda or ``fsm worker``)
run them; without one, the embedded runtime runs them in this process until the instance
settles.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from config.loader import Definitions
from config.settings import Settings

from ..dispatcher import Outcome
from ..errors import EventRejected, InstanceError, UnknownInstance, UnknownMachine
from ..message import Kind, Message, check_correlation_id, iso, new_event_id
from ..model import check_json
from ..ports import Envelope
from ..record import FINISHED, Record, Status
from .delivery import freshest_record
from .local import LocalRuntime
from .wiring import App, Wiring


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
              correlation_id: str | None = None) -> str:
        """Start an instance; a given ``correlation_id`` makes it idempotent."""
        if machine not in self.machines:
            raise UnknownMachine(f"unknown machine {machine!r}; known: {', '.join(sorted(self.machines)) or 'none'}")
        cid = check_correlation_id(correlation_id) if correlation_id else uuid.uuid4().hex
        context = dict(context or {})
        check_json(context)
        self._send(Message(machine=machine, correlation_id=cid, context=context,
                           version=self.machines[machine].version, sent_at=time.time()))
        return cid

    def send_event(self, correlation_id: str, event: str, data: dict[str, Any] | None = None,
                   event_id: str | None = None) -> str:
        """Deliver an external event; fails fast when the snapshot shows it cannot apply."""
        index, record = self._record(correlation_id)
        if record["status"] in FINISHED:
            raise InstanceError(f"instance {correlation_id!r} is {record['status']}; it takes no events")
        state = self._machine_of(record).states.get(record["state"] or "")
        if state is None or event not in state.transitions:
            accepted = ", ".join(state.external_events) or "none" if state else "none yet"
            raise EventRejected(f"instance {correlation_id!r} is in state {record['state']!r}, which does "
                                f"not accept {event!r}; it accepts: {accepted}")
        data = dict(data or {})
        check_json(data)
        event_id = event_id or new_event_id()
        self._send(Message(machine=record["machine"], correlation_id=correlation_id, kind=Kind.EVENT,
                           step=record["step"], fence=record["fence"], event=event, data=data,
                           event_id=event_id, store=index, version=record.get("version", ""),
                           sent_at=time.time()))
        return event_id

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
        _, record = self._record(correlation_id)
        return status_view(record)

    def history(self, correlation_id: str) -> list[dict[str, Any]]:
        index, _ = self._record(correlation_id)
        return self.wiring.stores[index].history(correlation_id)

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
        machine = self.machines.get(record["machine"])
        if machine is None:
            raise UnknownMachine(f"instance {record['id']!r} runs machine {record['machine']!r}, which the "
                                 f"loaded config does not define (it has: {', '.join(sorted(self.machines))})")
        return machine

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


def status_view(record: Record) -> dict[str, Any]:
    error = record.get("last_error")
    return {"correlation_id": record["id"], "machine": record["machine"], "state": record["state"],
            "status": record["status"], "steps": record["step"], "retries": record["retries"],
            "context": record.get("context") or {},
            "last_error": error.get("message") if isinstance(error, dict) else error,
            "updated_at": _iso(record.get("updated_at")), "created_at": _iso(record.get("created_at"))}


def _iso(ts: float | None) -> str | None:
    return iso(ts) if ts else None
