"""Running one step (and any local hops after it): pure, no I/O.

A step takes one event through the statechart algorithm (:mod:`fsm.interpreter`): the exit
actions of the states it leaves (innermost first), the transition's actions, the entry
actions of the states it enters (outermost first), eventless and ``done`` follow-ups,
then the do actions of the states entered. A do action's return value is the next
event: taken in this same step when every transition it can take is ``local``, else the
next step's message. For a flat machine this is the van Gurp/Bosch order: the old
state's exit action, the transition's action, the new state's entry action, its do action.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .chart import INVOKE, ROOT, Snapshot, Timer, chart_of, leaves, matches
from .errors import LocalHopLimit, UnknownEvent
from .interpreter import Interpreter
from .join import Start, Stop
from .model import Context, Machine
from .record import Status


@dataclass
class Hop:
    step: int            # transitions committed before this one
    source: str | None   # None for the start of an instance
    event: str | None
    target: str
    duration: float


@dataclass
class Run:
    state: str
    status: Status            # running | waiting | done
    next_event: str | None    # the event the next message carries (status running)
    hops: list[Hop] = field(default_factory=list)
    snapshot: Snapshot | None = None
    timers: list[Timer] = field(default_factory=list)
    handled: bool = True      # False: no transition was enabled for the event; nothing ran
    starts: list[Start] = field(default_factory=list)   # child instances to start (fsm.join)
    stops: list[Stop] = field(default_factory=list)     # child instances to cancel


def label(machine: Machine, snapshot: Snapshot | None) -> str | None:
    """The record's ``state``: the one active state of a flat machine, the active leaves
    of a statechart."""
    if snapshot is None:
        return None
    if not machine.chart and len(snapshot.active) == 1:
        return next(iter(snapshot.active))
    return leaves(machine, snapshot.active)


def run_transitions(machine: Machine, source: str | Snapshot | None, event: str | None, context: Context,
                    obj: dict[str, Any], max_local_hops: int = 100, data: dict[str, Any] | None = None,
                    clock: Any = time.perf_counter) -> Run:
    """Take ``event`` from ``source`` (a snapshot, or a flat machine's state name) and
    every local hop after it. ``source=None`` starts an instance.

    Exceptions from actions propagate (the caller retries the whole run). An external
    event no transition takes returns ``handled=False``; an event a do action returned
    that nothing takes raises :class:`UnknownEvent`.
    """
    snapshot = Snapshot.of(None, source, context.steps) if isinstance(source, str) else source
    hops: list[Hop] = []
    starts: list[Start] = []
    stops: list[Stop] = []
    start_step = context.steps
    data = dict(data or {})
    obj["event_data"] = data
    while True:
        began = clock()
        before = label(machine, snapshot)
        stamp = start_step + len(hops) + 1
        # A copy: a failed attempt leaves the caller's snapshot as committed.
        current = snapshot.copy() if snapshot is not None else Snapshot({})
        interpreter = Interpreter(machine, current, context, obj, stamp)
        if snapshot is None:
            context.current_event = None
            interpreter.start()
        elif event is not None and event.startswith(INVOKE):
            interpreter.invoke(event[len(INVOKE):])
        elif not interpreter.event(event or "", data):
            if not hops:
                return Run(before or "", Status.WAITING, None, [], snapshot, handled=False)
            raise UnknownEvent(event, before, _events(machine, current))
        snapshot = current
        # Children planned by an earlier local hop whose state this hop left are never started.
        kept = [s for s in starts if s.state in snapshot.joins and s.stamp == snapshot.joins[s.state]["stamp"]]
        unsent = {s.child_id for s in starts} - {s.child_id for s in kept}
        starts = kept + interpreter.starts
        stops = [s for s in stops + interpreter.stops if s.child_id not in unsent]
        hops.append(Hop(start_step + len(hops), before, event, label(machine, snapshot) or "",
                        clock() - began))
        context.steps = start_step + len(hops)
        timers = interpreter.timers()
        state = label(machine, snapshot) or ""
        if interpreter.done:
            snapshot.queue.clear()
            return Run(state, Status.DONE, None, hops, snapshot, [], starts=[], stops=stops)
        if not snapshot.queue:
            return Run(state, Status.WAITING, None, hops, snapshot, timers, starts=starts, stops=stops)
        event, data = snapshot.queue.pop(0), {}
        obj["event_data"] = data
        candidates = _candidates(machine, snapshot, event)
        if not event.startswith(INVOKE) and not candidates:
            raise UnknownEvent(event, state, _events(machine, snapshot))
        if event.startswith(INVOKE) or not all(t.local for t in candidates):
            return Run(state, Status.RUNNING, event, hops, snapshot, timers, starts=starts, stops=stops)
        if len(hops) >= max_local_hops:
            raise LocalHopLimit(f"more than {max_local_hops} local transitions in a row, last "
                                f"{state!r} --{event}-->; raise settings max_local_hops "
                                "or make a transition non-local")


def accepted_events(machine: Machine, snapshot: Snapshot | None) -> list[str]:
    """The events the active states have transitions on (guards aside), sorted."""
    return _events(machine, snapshot) if snapshot is not None else []


def accepts(machine: Machine, snapshot: Snapshot, event: str) -> bool:
    """Whether an active state (or the machine itself) has a transition on ``event``,
    guards aside."""
    return bool(_candidates(machine, snapshot, event))


def _candidates(machine: Machine, snapshot: Snapshot, event: str) -> list[Any]:
    chart = chart_of(machine)
    return [t for p in (*snapshot.active, ROOT) for t in chart.on(p) if t.event and matches(t.event, event)]


def retries_allowed(machine: Machine, snapshot: Snapshot | None) -> int:
    """The innermost active state's own ``max_retries``, else the machine's."""
    if snapshot is not None:
        chart = chart_of(machine)
        for path in chart.sort(snapshot.active, reverse=True):
            own = machine.states[path].max_retries
            if own is not None:
                return own
    return machine.max_retries


def error_event(machine: Machine, event: str | None) -> str:
    """The event a step that failed for good raises: the actor's error event for an
    invoked actor, else ``error``."""
    if event and event.startswith(INVOKE):
        state = machine.states.get(event[len(INVOKE):])
        if state is not None and state.invoke is not None:
            return state.invoke.error_event
    return "error"


def _events(machine: Machine, snapshot: Snapshot) -> list[str]:
    found = {e for p in snapshot.active for e in machine.states[p].external_events}
    if machine.top is not None:
        found.update(machine.top.external_events)
    return sorted(found)
