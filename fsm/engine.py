"""Running one transition (and any local hops after it): pure, no I/O.

Order, as in the van Gurp/Bosch paper: the old state's exit action, the transition's
action, the new state's entry action, then its do action, whose return value is the
next event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .errors import LocalHopLimit, TransitionError, UnknownEvent
from .model import Action, Context, Machine, State
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


def run_transitions(machine: Machine, source: str | None, event: str | None, context: Context,
                    obj: dict[str, Any], max_local_hops: int = 100,
                    clock: Any = time.perf_counter) -> Run:
    """Run the transition on ``event`` out of ``source`` and every local hop that follows.

    ``source=None`` starts an instance: the initial state's entry and do actions run.
    Exceptions from actions propagate (the caller retries the whole run); an event the
    state has no transition for raises :class:`UnknownEvent`.
    """
    hops: list[Hop] = []
    start_step = context.steps
    while True:
        began = clock()
        target, next_event = _one(machine, source, event, context, obj)
        hops.append(Hop(start_step + len(hops), source, event, target.name, clock() - began))
        context.steps = start_step + len(hops)
        if target.final:
            return Run(target.name, Status.DONE, None, hops)
        if next_event is None:
            return Run(target.name, Status.WAITING, None, hops)
        transition = target.transitions.get(next_event)
        if transition is None:
            raise UnknownEvent(next_event, target.name, target.events)
        if not transition.local:
            return Run(target.name, Status.RUNNING, next_event, hops)
        if len(hops) >= max_local_hops:
            raise LocalHopLimit(f"more than {max_local_hops} local transitions in a row, last "
                                f"{target.name!r} --{next_event}-->; raise settings max_local_hops "
                                "or make a transition non-local")
        source, event = target.name, next_event


def _one(machine: Machine, source: str | None, event: str | None, context: Context,
         obj: dict[str, Any]) -> tuple[State, str | None]:
    context.current_event = event
    if source is None:
        target = machine.states[machine.initial]
        transition_action = None
    else:
        state = machine.states[source]
        transition = state.transitions.get(event or "")
        if transition is None:
            raise UnknownEvent(event, state.name, state.events)
        target = machine.states[transition.target]
        context.current_state = state
        _call(state.exit_action, context, obj)
        transition_action = transition.action
    _call(transition_action, context, obj)
    context.current_state = target
    _call(target.entry_action, context, obj)
    return target, _call(target.do_action, context, obj)


def _call(action: Action | None, context: Context, obj: dict[str, Any]) -> str | None:
    if action is None:
        return None
    result = action.execute(context, obj)
    if result is not None and not isinstance(result, str):
        raise TransitionError(f"{action!r}.execute returned {result!r}; an event must be a string or None")
    return result
