"""The embedded local runtime: the in-process bus and the store's timers, driven by
the same Dispatcher that runs on Lambda (there is no separate local code path).

A command (``fsm run``, ``fsm send``, the client) is the only thing that runs instances
here, so a command also heals what an earlier one left behind: a process killed in the
middle of a transition loses the message it was handling and leaves its lease on the
record. :func:`holder_alive` recognises such a holder (this host, its process gone), and
:meth:`LocalRuntime.heal` sends the instance's owed message again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from ..dispatcher import Outcome
from ..errors import BackendError, RecoverableError
from ..logs import log
from ..ports import NextDue
from ..record import SETTLED, Record, Status
from .delivery import freshest_record, process, release_due_timers
from .wiring import Wiring

HOST = socket.gethostname()


def holder_alive(owner: str) -> bool:
    """False only for a lease taken by a process of this host that no longer exists
    (lease owners are ``HOST:PID:...``); anything else may be alive."""
    host, _, rest = owner.partition(":")
    pid = rest.split(":", 1)[0]
    if host != HOST or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but belongs to someone else
        return True
    return True


class LocalRuntime:
    def __init__(self, wiring: Wiring, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 on_outcome: Callable[[Outcome], None] | None = None):
        if not wiring.embedded:
            raise BackendError("the local runtime needs the embedded bus (no `stream:` in settings)")
        self.wiring = wiring
        self.bus = wiring.routes.bus
        self.clock = clock
        self.sleep = sleep
        self.on_outcome = on_outcome or (lambda outcome: None)

    def drain(self) -> int:
        """Handle every message now in the bus (and those they send); return how many."""
        handled = 0
        while True:
            envelopes = self.bus.receive(100)  # type: ignore[attr-defined]
            if not envelopes:
                return handled
            for envelope in envelopes:
                handled += 1
                outcome = process(self.wiring, envelope.body)
                if outcome is not None:
                    self.on_outcome(outcome)

    def catch_up(self) -> None:
        """Release the timers that are due and run what they start."""
        try:
            release_due_timers(self.wiring, self.clock())
        except RecoverableError as exc:  # timers wait for the next command; messages go on
            log(logging.WARNING, "releasing timers failed", error=str(exc))
        self.drain()

    def heal(self, cid: str) -> Record | None:
        """Send again what a running instance owes when nothing here will send it (its
        holder died, or the process that had its message exited), run it, and return its
        record as it then stands."""
        found = freshest_record(self.wiring, cid)
        if found is None or found[1]["status"] != Status.RUNNING or len(self.bus):  # type: ignore[arg-type]
            return found[1] if found else None
        index, record = found
        if self.wiring.dispatcher.resend_outbox(self.wiring.stores[index], record, self.clock(), grace=0.0):
            log(logging.WARNING, "continuing an instance an earlier command left running", correlation_id=cid,
                state=record.get("state"), step=record.get("step"))
            self.drain()
            found = freshest_record(self.wiring, cid)
        return found[1] if found else None

    def drive(self, cid: str, max_wait: float | None = None) -> Record | None:
        """Run until instance ``cid`` settles (waiting, done, failed, cancelled), sleeping
        through retry backoffs; returns its record. An instance that takes no events from
        outside (an ASL execution) settles only when it finishes: its waits are for its
        own timers and children."""
        deadline = None if max_wait is None else self.clock() + max_wait
        while True:
            self.catch_up()
            record = self.heal(cid)
            settled = record is None or record["status"] in SETTLED
            if settled and record is not None and record["status"] == Status.WAITING:
                machine = self.wiring.dispatcher.machines.get(record["machine"])
                settled = machine is None or machine.takes_events
            if settled or (deadline is not None and self.clock() >= deadline):
                self.wiring.metrics.flush()  # one command is one "invocation": one batch of metrics
                return record
            # Running, with nothing on the bus: its next message is a timer (a retry backoff).
            timers = self.wiring.routes.timers
            next_due = timers.next_due() if isinstance(timers, NextDue) else self.clock() + 0.25
            if next_due is None:
                self.wiring.metrics.flush()
                return record  # nothing will ever come: report where it stands
            self.sleep(max(0.0, min(next_due - self.clock(), 1.0)))
