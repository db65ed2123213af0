#!/usr/bin/env python
"""What a statechart step costs next to a flat machine's (not a timed test: it prints figures).

    python bench/statecharts.py [--quick] [--events N] [--repeat N]

Four cases, each one instance on ``memory://`` driven through ``Dispatcher.handle`` with
an in-memory bus (``fsm.app.wiring.build``, as bench/roundtrips.py does):

- flat, internal step: a two-state loop whose do actions return the next event; each
  message is one transition (the flat record: no ``chart``);
- flat, external event: ``Client.send_event`` (read the record, append the event to the
  inbox, send the nudge), then the dispatch of the nudge, which applies it;
- nested, external event: the same, in a machine whose transition leaves a state three
  levels deep for another three levels deep (exit l3, l2, left; enter right, r2, r3);
- parallel, external event: the same, in a parallel state whose two regions both take
  the event (two transitions in one step).

Per case:

- microseconds per event: the best of ``--repeat`` runs of ``--events`` events, the whole
  path timed (taking the message off the bus, and for an external event the client's
  part too), on backends without the counting wrappers. The cases take turns run by run,
  so that a busy machine slows them alike; the process's CPU time is shown beside the
  wall-clock time, as it is the steadier of the two when other processes compete;
- backend round trips per event: every store call (swap, get, history, append) and bus
  send, counted with bench/roundtrips.py's helpers on a second instance, split into the
  client's part and the dispatch's;
- bytes: the instance's record after the event (as the store holds it, JSON) and the
  history entry the event added.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if __name__ == "__main__":
    # The YAML names actions as ``statecharts.Next``: resolve that to this very module.
    sys.modules.setdefault("statecharts", sys.modules[__name__])

from roundtrips import METER, CountingBus, Meter, Tally, count_methods

from config.loader import load_text
from config.settings import Settings
from fsm import Action, codec
from fsm.app.wiring import Wiring, build
from fsm.client import Client
from fsm.message import Message
from fsm.model import Context, Machine
from fsm.ports import Envelope

RUN = uuid.uuid4().hex[:8]   # every correlation id of this process starts with sc-RUN-
STORE_CALLS = ("swap", "get", "history", "append", "pending")


class Next(Action):
    """A no-op do action: returns ``next``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        return "next"


MACHINES = """
machines:
  - name: flat_loop
    states:
      - {name: a, initial: true, do_action: statecharts.Next, transitions: [{event: next, target: b}]}
      - {name: b, do_action: statecharts.Next, transitions: [{event: next, target: a}]}
  - name: flat_toggle
    states:
      - {name: a, initial: true, transitions: [{event: go, target: b}]}
      - {name: b, transitions: [{event: go, target: a}]}
  - name: nested
    states:
      - name: left
        initial: true
        states:
          - name: l2
            initial: true
            states:
              - {name: l3, initial: true, transitions: [{event: go, target: r3}]}
      - name: right
        states:
          - name: r2
            initial: true
            states:
              - {name: r3, initial: true, transitions: [{event: go, target: l3}]}
  - name: regions
    states:
      - name: both
        initial: true
        parallel: true
        states:
          - name: x
            states:
              - {name: x1, initial: true, transitions: [{event: go, target: x2}]}
              - {name: x2, transitions: [{event: go, target: x1}]}
          - name: y
            states:
              - {name: y1, initial: true, transitions: [{event: go, target: y2}]}
              - {name: y2, transitions: [{event: go, target: y1}]}
"""


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    machine: str
    external: bool     # an event sent by the client, not a do action's


CASES = (
    Case("flat-step", "flat: internal step (a do action's event)", "flat_loop", False),
    Case("flat-event", "flat: external event", "flat_toggle", True),
    Case("nested-event", "nested: external event, exits/enters 3 levels", "nested", True),
    Case("parallel-event", "parallel: external event, 2 regions take it", "regions", True),
)


@dataclass
class Row:
    case: Case
    runs: list[float] = field(default_factory=list)       # wall-clock us per event, per run
    cpu_runs: list[float] = field(default_factory=list)   # process CPU us per event, per run
    client: Tally = field(default_factory=Tally)
    dispatch: Tally = field(default_factory=Tally)
    record_bytes: int = 0
    history_bytes: int = 0
    state: str = ""
    chart: bool = False
    error: str = ""


# ---- the instance under test -------------------------------------------------------------


class QuietBus(CountingBus):
    """The in-memory bus of bench/roundtrips.py without its counting, for the timed runs."""

    def send(self, envelope: Envelope) -> None:
        self.queue.append(envelope)

    def send_batch(self, envelopes: Sequence[Envelope]) -> None:
        self.queue.extend(envelopes)


class Driver:
    """One instance of one case's machine on its own ``memory://`` store and bus."""

    def __init__(self, machines: dict[str, Machine], case: Case, counted: bool):
        self.case = case
        self.bus = CountingBus() if counted else QuietBus(Meter())
        self.wiring: Wiring = build(machines, Settings(store=["memory://"]), bus=self.bus)
        self.store = self.wiring.stores[0]
        if counted:
            count_methods(self.store, "memory", STORE_CALLS)
        self.dispatcher = self.wiring.dispatcher
        self.client = Client(wiring=self.wiring)
        self.cid = f"sc-{RUN}-{case.key}-{uuid.uuid4().hex[:6]}"
        start = Message(machine=case.machine, correlation_id=self.cid, context={}, sent_at=time.time())
        self.dispatcher.handle(start)
        if case.external:
            self.drain()
            assert self.store.get(self.cid)["status"] == "waiting", self.store.get(self.cid)

    def drain(self) -> None:
        while self.bus.queue:
            msg = self.bus.take()
            assert msg is not None
            self.dispatcher.handle(msg)

    def step(self) -> None:
        """One event: the next internal step, or an external event sent and applied."""
        if self.case.external:
            self.client.send_event(self.cid, "go")
            self.drain()
        else:
            msg = self.bus.take()
            assert msg is not None
            self.dispatcher.handle(msg)

    def counted_step(self) -> tuple[Tally, Tally]:
        """One event, its client part and dispatch part counted apart."""
        client = Tally()
        if self.case.external:
            with METER.window() as client:
                self.client.send_event(self.cid, "go")
        with METER.window() as dispatch:
            if self.case.external:
                self.drain()
            else:
                msg = self.bus.take()
                assert msg is not None
                self.dispatcher.handle(msg)
        return client, dispatch

    def close(self) -> None:
        self.bus.clear()
        self.wiring.close()


def time_run(machines: dict[str, Machine], case: Case, events: int) -> tuple[float, float]:
    """Wall-clock and CPU microseconds per event of one run on a fresh, warmed-up instance."""
    driver = Driver(machines, case, counted=False)
    try:
        for _ in range(min(50, events)):
            driver.step()
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(events):
            driver.step()
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - wall
        return wall / events * 1e6, cpu / events * 1e6
    finally:
        driver.close()


def count_case(machines: dict[str, Machine], case: Case, row: Row, samples: int = 5) -> None:
    """Round trips of ``samples`` events after a warm-up one; they must not vary."""
    driver = Driver(machines, case, counted=True)
    try:
        driver.step()
        seen = [driver.counted_step() for _ in range(samples)]
        totals = {(c.total, d.total) for c, d in seen}
        if len(totals) != 1:
            row.error = f"round trips vary over {samples} events: {sorted(totals)}"
        row.client, row.dispatch = seen[-1]
        record = driver.store.get(driver.cid)
        assert record is not None
        row.record_bytes = len(codec.dumps(record).encode())
        row.history_bytes = len(codec.dumps(driver.store.history(driver.cid)[-1]).encode())
        row.state = str(record.get("state"))
        row.chart = bool(record.get("chart"))
    finally:
        driver.close()


# ---- report ------------------------------------------------------------------------------


def report(rows: list[Row], events: int, repeat: int, out: Callable[[str], None] = print) -> None:
    out(f"== statecharts: one event's cost on memory:// (Dispatcher.handle, in-memory bus), "
        f"{events} events per run, best of {repeat} ==")
    out(f"python {platform.python_version()} on {platform.machine()}")
    out("")
    base = next((min(r.cpu_runs) for r in rows if r.case.key == "flat-event" and r.cpu_runs), 0.0)
    head = (f"{'case':<46} {'us/event':>8} {'(wall)':>8} {'x flat':>6} {'round trips':>16} {'record B':>8} "
            f"{'history B':>9}")
    out(head)
    out("-" * len(head))
    for row in rows:
        if not row.cpu_runs:
            out(f"{row.case.title:<46} ERROR {row.error}")
            continue
        cpu = min(row.cpu_runs)
        client = str(row.client.total) if row.case.external else "-"
        trips = f"{client} + {row.dispatch.total} = {row.client.total + row.dispatch.total}"
        ratio = f"{cpu / base:.2f}" if base and row.case.external else "-"
        out(f"{row.case.title:<46} {cpu:>8.1f} {min(row.runs):>8.1f} {ratio:>6} {trips:>16} "
            f"{row.record_bytes:>8} {row.history_bytes:>9}")
    out("")
    out("us/event: the process's CPU time per event, best run (wall clock beside it); x flat: against the flat")
    out("external event. Round trips: client + dispatch = total, store calls (memory: one local transaction")
    out("each) and bus sends. Bytes: the record after the event, the history entry it added.")
    out("us/event (CPU) over the runs, min / median / max:")
    for row in rows:
        if row.cpu_runs:
            out(f"  {row.case.key:<16} {min(row.cpu_runs):.1f} / {statistics.median(row.cpu_runs):.1f} / "
                f"{max(row.cpu_runs):.1f}")
    out("breakdown per event:")
    for row in rows:
        parts = [f"dispatch {row.dispatch.describe()}"]
        if row.case.external:
            parts.insert(0, f"client {row.client.describe()}")
        out(f"  {row.case.key:<16} {'; '.join(parts)}")
    out("records after the event (state; statechart record with `chart`):")
    for row in rows:
        out(f"  {row.case.key:<16} {row.state!r}; {'chart' if row.chart else 'flat'}")
    errors = [row for row in rows if row.error]
    for row in errors:
        out(f"ERROR {row.case.key}: {row.error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast run: 200 events, one run per case")
    parser.add_argument("--events", type=int, help="events per timed run (default 2000; --quick 200)")
    parser.add_argument("--repeat", type=int, help="timed runs per case, the best kept (default 5; --quick 1)")
    args = parser.parse_args(argv)
    events = args.events or (200 if args.quick else 2000)
    repeat = args.repeat or (1 if args.quick else 5)
    machines = load_text(MACHINES, "bench/statecharts.py").machines
    rows = [Row(case) for case in CASES]
    broken: set[str] = set()
    for row in rows:
        try:
            count_case(machines, row.case, row)
        except Exception as exc:  # noqa: BLE001 - report it in the table, go on with the others
            row.error = f"{type(exc).__name__}: {exc}"
            broken.add(row.case.key)
    for _ in range(repeat):          # the cases take turns: a busy spell slows them all
        for row in rows:
            if row.case.key in broken:
                continue
            try:
                wall, cpu = time_run(machines, row.case, events)
            except Exception as exc:  # noqa: BLE001
                row.error = f"{type(exc).__name__}: {exc}"
                broken.add(row.case.key)
                continue
            row.runs.append(wall)
            row.cpu_runs.append(cpu)
    report(rows, events, repeat)
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
