"""A statechart's data: an instance's position (:class:`Snapshot`), the machine's tree
(:class:`Chart`), and the state value in XState's shape. Pure: no I/O. The algorithm that
moves a snapshot is :mod:`fsm.interpreter`.

An instance's position is a :class:`Snapshot`: its *configuration* (every active state,
compound ancestors included), the history it recorded, and the step at which each active
state was entered (a delayed transition's timer names that step, so a timer set by an
earlier visit is recognised as stale). A flat machine is the special case of a
configuration with one state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .errors import TransitionError
from .model import Action, Context, Machine, Transition

ROOT = ""  # the machine itself, the ancestor of every top-level state
INVOKE = "xstate.invoke:"  # a queued step that runs the actor of the state named after it


@dataclass
class Snapshot:
    # Active states in the order they were entered (XState's `_nodes`: eventless
    # transitions are looked for in this order); a dict used as an ordered set.
    active: dict[str, None]
    history: dict[str, list[str]] = field(default_factory=dict)
    entered: dict[str, int] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)   # events do actions raised, not yet taken
    joins: dict[str, dict[str, Any]] = field(default_factory=dict)  # per state running children (fsm.join)

    @classmethod
    def of(cls, chart: Mapping[str, Any] | None, state: str | None, step: int) -> Snapshot | None:
        """The snapshot a record holds: its ``chart`` field, or (flat machines) its state."""
        if chart:
            return cls(dict.fromkeys(chart.get("active") or ()), {k: list(v) for k, v in (chart.get("history") or {}).items()},
                       dict(chart.get("entered") or {}), list(chart.get("queue") or ()),
                       codec.copy(chart["joins"]) if chart.get("joins") else {})
        if state is None:
            return None
        return cls({state: None}, {}, {state: step})

    def copy(self) -> Snapshot:
        return Snapshot(dict(self.active), {k: list(v) for k, v in self.history.items()}, dict(self.entered),
                        list(self.queue), codec.copy(self.joins) if self.joins else {})

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"active": list(self.active), "entered": dict(sorted(self.entered.items()))}
        if self.history:
            data["history"] = self.history
        if self.queue:
            data["queue"] = list(self.queue)
        if self.joins:
            data["joins"] = self.joins
        return data


@dataclass(frozen=True)
class Timer:
    delay: float
    event: str
    state: str
    stamp: int          # the step at which ``state`` was entered


class Chart:
    """The structure questions of one machine (ancestry, document order), cached per
    machine: machines are built once per process and never change."""

    def __init__(self, machine: Machine):
        self.machine = machine
        self.states = machine.states
        self.order = machine.order

    def parent(self, path: str) -> str:
        parent = self.states[path].parent
        return ROOT if parent is None else parent

    def children(self, path: str) -> tuple[str, ...]:
        return self.machine.roots if path == ROOT else self.states[path].children

    def proper_ancestors(self, path: str, upto: str | None = None) -> list[str]:
        """Ancestors of ``path``, innermost first, stopping before ``upto`` (``None``:
        up to and including the root)."""
        found: list[str] = []
        if path == ROOT or path == upto:
            return found
        current = self.parent(path)
        while current != upto:
            found.append(current)
            if current == ROOT:
                break
            current = self.parent(current)
        return found

    def descendant(self, path: str, ancestor: str) -> bool:
        """``path`` is a proper descendant of ``ancestor``."""
        if ancestor == ROOT:
            return path != ROOT
        return path != ancestor and path.startswith(ancestor + ".") and self._below(path, ancestor)

    def _below(self, path: str, ancestor: str) -> bool:
        current = self.states[path].parent
        while current is not None:
            if current == ancestor:
                return True
            current = self.states[current].parent
        return False

    def on(self, path: str) -> tuple[Transition, ...]:
        if path == ROOT:
            return self.machine.top.on if self.machine.top is not None else ()
        return self.states[path].on

    def entry(self, path: str) -> tuple[Action, ...]:
        if path == ROOT:
            return self.machine.top.entry if self.machine.top is not None else ()
        return self.states[path].entry

    def exit(self, path: str) -> tuple[Action, ...]:
        if path == ROOT:
            return self.machine.top.exit if self.machine.top is not None else ()
        return self.states[path].exit

    def compound(self, path: str) -> bool:
        if path == ROOT:
            return not self.machine.parallel
        return self.states[path].compound

    def parallel(self, path: str) -> bool:
        return self.machine.parallel if path == ROOT else self.states[path].parallel

    def initial_child(self, path: str) -> str:
        if path == ROOT:
            return self.machine.initial
        state = self.states[path]
        return state.initial_child or state.children[0]

    def sort(self, paths: Iterable[str], reverse: bool = False) -> list[str]:
        return sorted(paths, key=self.order.__getitem__, reverse=reverse)


_CHARTS: dict[int, Chart] = {}


def chart_of(machine: Machine) -> Chart:
    found = _CHARTS.get(id(machine))
    if found is None or found.machine is not machine:
        found = _CHARTS[id(machine)] = Chart(machine)
    return found


def matches(descriptor: str, event: str) -> bool:
    """XState's event descriptors: the exact name, ``*`` for any event, and ``a.*`` for
    ``a`` and every event under it (``a.b``, ``a.b.c``)."""
    if descriptor == event or descriptor == "*":
        return True
    if descriptor.endswith(".*"):
        stem = descriptor[:-2]
        return event == stem or event.startswith(stem + ".")
    return False


def call(action: Action | None, context: Context, obj: dict[str, Any]) -> str | None:
    if action is None:
        return None
    result = action.execute(context, obj)
    if result is not None and not isinstance(result, str):
        raise TransitionError(f"{action!r}.execute returned {result!r}; an event must be a string or None")
    return result


def value(machine: Machine, active: Mapping[str, None] | set[str]) -> Any:
    """The state value in XState's shape: ``"idle"``, ``{"bake": "waiting"}``,
    ``{"pay": "done", "kitchen": "baking"}``."""
    chart = chart_of(machine)

    def of(path: str) -> Any:
        children = chart.children(path)
        if chart.parallel(path):
            return {chart.states[c].name: (of(c) if not chart.states[c].atomic else {}) for c in children
                    if chart.states[c].history is None}
        for child in children:
            if child in active:
                state = chart.states[child]
                return state.name if state.atomic else {state.name: of(child)}
        return {}

    return of(ROOT)


def leaves(machine: Machine, active: Mapping[str, None] | set[str]) -> str:
    """The record's ``state`` for a statechart: its active atomic states' paths."""
    chart = chart_of(machine)
    return ",".join(chart.sort(p for p in active if chart.states[p].atomic))

