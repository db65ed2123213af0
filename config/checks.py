"""The statechart checks of one machine's states, once every state is built: one initial
state at the top and in each compound state, every transition's target resolved to a
state's path, history and final states well formed, no state an instance could never
leave, and every state reachable from the initial one (or, in a parallel machine, from
its regions).

Every problem is reported through ``problem(path, line, message)``, at the line of the
YAML the state came from (:class:`StateSource`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from fsm.model import State

from . import schema
from .messages import suggest
from .yamlsource import Located

Problem = Callable[[Path, int, str], None]


@dataclass
class StateSource:
    """A built state with the YAML it came from, so graph checks can name lines."""

    state: State
    raw: Located
    transitions: list[Located]  # each transition's mapping, in document order
    doubtful: set[str]  # keys whose value was rejected; checks that rely on them are skipped


def check_graph(problem: Problem, path: Path, raw: Located, label: str, sources: dict[str, StateSource],
                complete: bool) -> str | None:
    """Resolve every target; return the initial state's path, after reporting every
    structural problem."""
    initial = check_initial(problem, path, raw, label, sources, None)
    for source in list(sources.values()):
        resolve_targets(problem, path, label, source, sources)
    for source in sources.values():
        check_state(problem, path, f"{label}, state {source.state.path!r}", source, sources)
    if initial is not None and complete:
        check_reachable(problem, path, label, initial, sources,
                        schema.value_or(raw, "parallel", schema.MACHINE, False))
    return initial


def check_initial(problem: Problem, path: Path, raw: Located, label: str, sources: dict[str, StateSource],
                  parent: str | None) -> str | None:
    children = {p: s for p, s in sources.items() if s.state.parent == parent}
    if parent is None and schema.value_or(raw, "parallel", schema.MACHINE, False):
        return next(iter(children), None)
    initials = [p for p, source in children.items() if source.state.initial]
    where = label if parent is None else f"{label}, state {parent!r}"
    if len(initials) > 1:
        second = children[initials[1]].raw
        problem(path, second.line_of("initial"), f"{where}: several initial states "
                f"({', '.join(repr(children[p].state.name) for p in initials)}); mark exactly one "
                "with `initial: true`")
    elif not initials and (children or parent is None) and not any("initial" in s.doubtful for s in children.values()):
        line = raw.line_of("states") if parent is None else sources[parent].raw.line_of("states")
        problem(path, line, f"{where}: no initial state; mark one with `initial: true`")
    return initials[0] if len(initials) == 1 else None


def resolve_targets(problem: Problem, path: Path, label: str, source: StateSource,
                    sources: dict[str, StateSource]) -> None:
    """Targets by dotted path (whole, or an ending unique in the machine), or by a
    name unique in the machine."""
    by_name: dict[str, list[str]] = {}
    for p, s in sources.items():
        by_name.setdefault(s.state.name, []).append(p)
    resolved = []
    state = source.state
    raws = source.transitions if not state.history else [source.raw] * len(state.on)
    for transition, raw in zip(state.on, raws, strict=False):
        target = transition.target
        if target is None or target in sources:
            resolved.append(transition)
            continue
        found = by_name.get(target, []) if "." not in target else \
            [p for p in sources if p.endswith("." + target)]  # a dotted path's unique ending
        where = f"{label}, state {state.path!r}" + (f", transition on {raw.get('event')!r}"
                                                     if isinstance(raw.get("event"), str) else "")
        if len(found) == 1:
            resolved.append(replace(transition, target=found[0], targets=(found[0],)))
            continue
        resolved.append(transition)  # reported below; kept so that no other check trips on it
        if found:
            problem(path, raw.line_of("target"), f"{where}: target {target!r} is ambiguous "
                    f"({', '.join(found)}); name it by its dotted path")
        else:
            problem(path, raw.line_of("target"), f"{where}: unknown target state {target!r}"
                    f"{suggest(target, list(sources) + list(by_name))}; states: {', '.join(sources)}")
    source.state = replace(state, on=tuple(resolved), transitions={})


def check_state(problem: Problem, path: Path, label: str, source: StateSource,
                sources: dict[str, StateSource]) -> None:
    state, raw = source.state, source.raw
    if state.history:
        if state.parent is None or raw.get("states") or raw.get("transitions"):
            problem(path, raw.line_of("history"), f"{label}: a history state sits inside a compound "
                    "or parallel state and has no states or transitions of its own (`target:` is "
                    "its default)")
        return
    if state.final and (raw.get("transitions") or raw.get("states")):
        key = "transitions" if raw.get("transitions") else "states"
        problem(path, raw.line_of(key), f"{label}: a final state cannot have {key} "
                "(entering it ends the instance or its region)")
    elif not state.final and state.atomic and not leaves_somehow(state, sources) \
            and not source.doubtful & {"final", "transitions"}:
        problem(path, raw.line_of("name"), f"{label}: not final and has no transitions, so an "
                "instance there could never leave; add a transition or `final: true`")
    if state.compound:
        check_initial(problem, path, raw, label.rsplit(", state ", 1)[0], sources, state.path)
    if state.timeout and state.timeout_event not in state.transitions:
        problem(path, raw.line_of("timeout"), f"{label}: has a timeout but no transition on its "
                f"timeout event {state.timeout_event!r}")


def leaves_somehow(state: State, sources: dict[str, StateSource]) -> bool:
    """An atomic state can be left through its own transitions or an ancestor's, or
    by its region finishing."""
    current: str | None = state.path
    while current is not None:
        if sources[current].state.on:
            return True
        current = sources[current].state.parent
    return False


def check_reachable(problem: Problem, path: Path, label: str, initial: str, sources: dict[str, StateSource],
                    parallel: bool) -> None:
    states = {p: s.state for p, s in sources.items()}
    seen: set[str] = set()
    todo = deque([p for p, s in states.items() if s.parent is None] if parallel else [initial])

    def enter(p: str) -> None:
        while p is not None and p not in seen:
            seen.add(p)
            todo.append(p)
            p = states[p].parent  # type: ignore[assignment]

    for p in list(todo):
        todo.remove(p)
        enter(p)
    while todo:
        state = states[todo.popleft()]
        nexts = [t for tr in state.on for t in tr.targets if t in states]
        if state.parallel or state.history:
            nexts += [c for c in (state.children if state.parallel else
                                  states[state.parent].children if state.parent else ())]
        elif state.compound and state.initial_child:
            nexts.append(state.initial_child)
        for p in nexts:
            enter(p)
    for p, source in sources.items():
        if p not in seen and not source.state.history:
            problem(path, source.raw.line_of("name"), f"{label}, state {p!r}: unreachable "
                    f"from the initial state {initial!r}")
