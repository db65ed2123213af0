"""The statechart algorithm: SCXML's, as XState v5 implements it. Pure: no I/O.

One event is processed as a *macrostep*: select the enabled transitions (innermost active
state first, then document order; the first transition whose guard passes), remove
conflicting ones, then a *microstep*: exit the exit set innermost first (recording
history), run the transitions' actions, enter the entry set outermost first. Then, until
nothing is enabled: eventless transitions, and the ``done`` events raised by entering
final states. Do actions and invoked actors of the states still active at the end run
after that, and an event a do action returns is the next step (see
:mod:`fsm.engine`). The data it works on is :mod:`fsm.chart`'s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from . import join
from .chart import INVOKE, ROOT, Snapshot, Timer, call, chart_of, matches
from .errors import Failed, LocalHopLimit, TransitionError
from .model import Action, Context, Machine, State, Transition


class Interpreter:
    """Runs macrosteps over a mutable snapshot, calling user code through ``call``."""

    def __init__(self, machine: Machine, snapshot: Snapshot, context: Context, obj: dict[str, Any], stamp: int,
                 max_microsteps: int = 1000):
        self.machine = machine
        self.chart = chart_of(machine)
        self.snapshot = snapshot
        self.context = context
        self.obj = obj
        self.stamp = stamp
        self.max_microsteps = max_microsteps
        self.internal: deque[tuple[str, dict[str, Any]]] = deque()
        self.entered_now: list[str] = []   # entered during this macrostep, in entry order
        self.done = False
        self.output: Any = None
        self.starts: list[join.Start] = []   # children to start once this step commits
        self.stops: list[join.Stop] = []     # children to cancel once it commits

    # -- macrosteps -------------------------------------------------------------------

    def start(self) -> None:
        self._run(self.chart.entry(ROOT))
        to_enter: set[str] = set()
        self._add_descendants(ROOT if self.machine.parallel else self.machine.initial, to_enter)
        self._enter(to_enter)
        self._settle()
        self._activities()

    def event(self, name: str, data: Mapping[str, Any]) -> bool:
        """Process one event; ``False`` when no transition was enabled (nothing ran)."""
        self._current(name, data)
        if name == join.CHILD:
            return self._child_result(data)
        transitions = self.select(name, data)
        if transitions:
            self._microstep(transitions, data)
        # As in XState, eventless transitions are looked for even after an event nothing
        # took (their guards see the event).
        moved = self._settle()
        if not transitions and not moved:
            return False
        self._activities()
        return True

    def invoke(self, path: str) -> None:
        """Run the actor ``path`` invoked (a step of its own) and take its ``done``
        event. An actor whose state was left meanwhile is not run."""
        state = self.chart.states.get(path)
        if state is None or state.invoke is None or path not in self.snapshot.active:
            return
        self._current(INVOKE + path, {})
        output = state.invoke.actor.execute(self.context, self.obj)
        self.event(state.invoke.done_event, {"output": output})

    def _child_result(self, data: Mapping[str, Any]) -> bool:
        """A child's result: counted by its state's join (a copy, or one for a state
        since left, changes nothing); the join's end raises the state's ``done`` or
        ``error``, taken in this same step."""
        path = str(data.get("state") or "")
        state, found = self.chart.states.get(path), self.snapshot.joins.get(path)
        if state is None or state.spawn is None or found is None or path not in self.snapshot.active:
            return True
        settled = join.take_result(state.spawn, found, path, data)
        self.starts += settled.starts
        self.stops += settled.stops or []
        if settled.event is not None:
            del self.snapshot.joins[path]
            self._raise(path, *settled.event)
        self._settle()
        self._activities()
        return True

    def _raise(self, path: str, event: str, data: dict[str, Any]) -> None:
        """The end of a join: its ``done``, or an ``error`` that some active state must
        take (else the step fails for good, and so does the instance)."""
        if event == "error" and not self.select("error", data):
            raise Failed(data["error"], data.get("cause", ""))
        self.internal.append((event, data))

    def _open(self, path: str, state: State) -> None:
        """Entering a state that runs children: its plan, a fresh join, the first starts."""
        assert state.spawn is not None
        plan = state.spawn.plan(self.context, self.obj.get("event_data") or {})
        known = set(state.spawn.machines)
        for machine, _ in plan:
            if known and machine not in known:
                raise TransitionError(f"state {path!r} planned a child of machine {machine!r}; it may start "
                                      f"{', '.join(sorted(known))}")
        stamp = self.snapshot.entered[path]
        found, starts = join.open_join(state.spawn, plan, join.prefix(self.context.correlation_id, stamp,
                                                                      self.machine.order[path]), path, stamp)
        self.snapshot.joins[path] = found
        self.starts += starts
        if not plan:
            del self.snapshot.joins[path]
            self.internal.append((f"xstate.done.state.{path}", {"output": join.output(state.spawn, found)}))

    def _close(self, path: str) -> None:
        """Leaving a state that runs children: the ones not started yet never are, the
        running ones are cancelled."""
        found = self.snapshot.joins.pop(path, None)
        unsent = {s.child_id for s in self.starts if s.state == path}
        self.starts = [s for s in self.starts if s.state != path]
        if found is not None:
            self.stops += [s for s in join.running(found) if s.child_id not in unsent]

    def _current(self, name: str, data: Mapping[str, Any]) -> None:
        self.context.current_event = name
        self.obj["event_data"] = dict(data)

    def _activities(self) -> None:
        """Do actions and invoked actors of the states entered in this macrostep and
        still active, in entry order: a do action's event, and each actor's run, is a
        step of its own, queued."""
        for path in self.entered_now:
            state = self.chart.states[path]
            if path not in self.snapshot.active:
                continue
            if state.do_action is not None:
                self.context.current_state = state
                event = call(state.do_action, self.context, self.obj)
                if event is not None and not self.done:
                    self.snapshot.queue.append(event)
            if state.invoke is not None and not self.done:
                self.snapshot.queue.append(INVOKE + path)

    def _settle(self) -> int:
        """Eventless transitions (seeing the event being processed, as in XState), then
        the ``done`` events raised meanwhile, until nothing is enabled."""
        steps = 0
        data: Mapping[str, Any] = self.obj.get("event_data") or {}
        while not self.done:
            transitions = self.select(None, data)
            if not transitions:
                if not self.internal:
                    break
                name, data = self.internal.popleft()
                self._current(name, data)
                transitions = self.select(name, data)
                if not transitions:
                    continue
            steps += 1
            if steps > self.max_microsteps:
                raise LocalHopLimit(f"more than {self.max_microsteps} eventless or done transitions in one "
                                    "step: an `always` loop whose guards never stop it")
            self._microstep(transitions, data)
        if self.done:
            self._stop()
        return steps

    def _stop(self) -> None:
        """The machine reached its final state: every active state's exit actions run,
        innermost first, then the machine's own (SCXML's and XState's end)."""
        for path in self.chart.sort(self.snapshot.active, reverse=True):
            self._run(self.chart.exit(path), self.chart.states[path])
            if self.chart.states[path].spawn is not None:
                self._close(path)
        self._run(self.chart.exit(ROOT))

    # -- selection --------------------------------------------------------------------

    def select(self, event: str | None, data: Mapping[str, Any]) -> list[Transition]:
        """The enabled transitions for ``event`` (``None``: eventless ones), conflicts removed.

        For an event, XState walks the state value: a compound state offers the event to
        its active child first and takes it itself only when the child (and everything
        below) did not; a parallel state offers it to every region and takes it itself
        only when no region did. Eventless transitions are looked for from each active
        atomic state upwards, in document order."""
        if event is None:
            enabled: list[Transition] = []
            for atomic in [p for p in self.snapshot.active if self.chart.states[p].atomic]:
                for path in (atomic, *self.chart.proper_ancestors(atomic, None)):
                    found = self._first_enabled(path, None, data)
                    if found is not None:
                        if found not in enabled:
                            enabled.append(found)
                        break
            return self._without_conflicts(enabled)
        return self._without_conflicts(self._offer(ROOT, event, data))

    def _offer(self, path: str, event: str, data: Mapping[str, Any]) -> list[Transition]:
        found: list[Transition] = []
        active = self.snapshot.active
        if self.chart.parallel(path):
            for child in self.chart.children(path):
                if child in active:
                    found += self._offer(child, event, data)
        elif path == ROOT or self.chart.compound(path):
            for child in self.chart.children(path):
                if child in active:
                    found = self._offer(child, event, data)
                    break
        if found:
            return found
        own = self._first_enabled(path, event, data)
        return [own] if own is not None else []

    def _first_enabled(self, path: str, event: str | None, data: Mapping[str, Any]) -> Transition | None:
        """The first transition of the state whose guard passes: for an event, the ones on
        its exact name in document order, then wildcard ones, the longest descriptor first."""
        on = self.chart.on(path)
        if event is None:
            candidates = [t for t in on if t.event == "" and t.delay is None]
        else:
            exact = [t for t in on if t.event == event]
            wild = [t for t in on if t.event and t.event != event and matches(t.event, event)]
            candidates = exact + sorted(wild, key=lambda t: -len(t.event))
        for transition in candidates:
            if transition.guard is None or self._guard(transition, data):
                return transition
        return None

    def _guard(self, transition: Transition, data: Mapping[str, Any]) -> bool:
        guard = transition.guard
        assert guard is not None
        result = guard.check(self.context, data)
        if not isinstance(result, bool):
            raise TransitionError(f"{guard!r}.check returned {result!r}; a guard must return True or False")
        return result

    def _without_conflicts(self, enabled: list[Transition]) -> list[Transition]:
        kept: list[Transition] = []
        for t1 in enabled:
            exits1 = self._exit_set([t1])
            preempted, beaten = False, []
            for t2 in kept:
                if exits1 & self._exit_set([t2]):
                    if self.chart.descendant(t1.source, t2.source):
                        beaten.append(t2)
                    else:
                        preempted = True
                        break
            if not preempted:
                kept = [t for t in kept if t not in beaten] + [t1]
        return kept

    # -- the microstep ----------------------------------------------------------------

    def _microstep(self, transitions: list[Transition], data: Mapping[str, Any]) -> None:
        exits = self.chart.sort(self._exit_set(transitions), reverse=True)
        snap = self.snapshot
        # A re-entering transition of the machine itself exits and re-enters the machine
        # (its own exit and entry actions run), as in XState.
        root = any(t.source == ROOT and t.reenter and t.targets for t in transitions)
        for path in exits:
            for child in self.chart.states[path].children:
                kind = self.chart.states[child].history
                if kind == "deep":
                    snap.history[child] = self.chart.sort(
                        p for p in snap.active if self.chart.states[p].atomic and self.chart.descendant(p, path))
                elif kind == "shallow":
                    snap.history[child] = self.chart.sort(p for p in snap.active if self.chart.parent(p) == path)
        for path in exits:
            self._run(self.chart.states[path].exit, self.chart.states[path])
            if self.chart.states[path].spawn is not None:
                self._close(path)
            snap.active.pop(path, None)
            snap.entered.pop(path, None)
            if path in self.entered_now:
                self.entered_now.remove(path)
        if root:
            self._run(self.chart.exit(ROOT))
        for transition in transitions:
            self._run(transition.actions)
        if root:
            self._run(self.chart.entry(ROOT))
        to_enter: set[str] = set()
        for transition in transitions:
            domain = self._domain(transition)
            for target in transition.targets:
                # The target itself, unless it is the source and the domain of a transition
                # that does not re-enter (XState's computeEntrySet); then what lies below.
                if self.chart.states[target].history is not None or (
                        target == transition.source == domain and not transition.reenter):
                    self._add_below(target, to_enter)
                else:
                    self._add_descendants(target, to_enter)
            for target in self._effective_targets(transition):
                self._add_ancestors(target, domain, to_enter)
                if domain == ROOT and self.machine.parallel or domain != ROOT and self.chart.parallel(domain):
                    # XState: the regions of a parallel domain that nothing enters are
                    # entered by default (the domain itself stays active)
                    self._add_regions(domain, to_enter)
        self._enter(to_enter)
        self._repair()

    def _enter(self, to_enter: set[str]) -> None:
        snap = self.snapshot
        for path in self.chart.sort(to_enter):
            # A state already active is entered again when a restored history lies below
            # it (its entry actions run again, as in XState).
            state = self.chart.states[path]
            snap.active[path] = None
            snap.entered[path] = self.stamp
            if path not in self.entered_now:
                self.entered_now.append(path)
            self._run(state.entry, state)
            if state.spawn is not None:
                self._open(path, state)
            if not state.final:
                continue
            parent = self.chart.parent(path)
            if parent == ROOT:
                self.done = True
                return
            self.internal.append((f"xstate.done.state.{parent}", {}))
            grand = self.chart.parent(parent)
            if self.chart.parallel(grand) and grand != ROOT and self.in_final(grand):
                self.internal.append((f"xstate.done.state.{grand}", {}))
            elif grand == ROOT and self.machine.parallel and self.in_final(ROOT):
                self.done = True
                return

    def _repair(self) -> None:
        """Keep the configuration whole: an active state's ancestors are active. Only the
        XState corner of a history in a parallel state with nothing recorded exits a state
        and enters its regions without it; as in XState, it stays active, not re-entered."""
        for path in list(self.snapshot.active):
            for ancestor in self.chart.proper_ancestors(path, None):
                if ancestor != ROOT and ancestor not in self.snapshot.active:
                    self.snapshot.active[ancestor] = None
                    self.snapshot.entered[ancestor] = self.stamp

    def in_final(self, path: str) -> bool:
        if self.chart.compound(path):
            return any(self.chart.states[c].final and c in self.snapshot.active for c in self.chart.children(path))
        if self.chart.parallel(path):  # every region (a history pseudo-state is none)
            return all(self.in_final(c) for c in self.chart.children(path) if self.chart.states[c].history is None)
        return False

    # -- exit and entry sets ----------------------------------------------------------

    def _exit_set(self, transitions: list[Transition]) -> set[str]:
        found: set[str] = set()
        for transition in transitions:
            if not transition.targets:
                continue
            domain = self._domain(transition)
            found.update(p for p in self.snapshot.active if self.chart.descendant(p, domain))
        return found

    def _domain(self, transition: Transition) -> str:
        targets = self._effective_targets(transition)
        source = transition.source
        if not transition.reenter and all(t == source or self.chart.descendant(t, source) for t in targets):
            return source
        return self._lcca([source, *targets])

    def _lcca(self, paths: list[str]) -> str:
        """The least common proper ancestor (XState's: a parallel state can be one, so a
        re-entering transition into a region re-enters all its regions)."""
        head, rest = paths[0], paths[1:]
        for ancestor in self.chart.proper_ancestors(head, None):
            if all(self.chart.descendant(p, ancestor) for p in rest):
                return ancestor
        return ROOT

    def _effective_targets(self, transition: Transition) -> list[str]:
        found: list[str] = []
        for target in transition.targets:
            if self.chart.states[target].history:
                found.extend(self._history_targets(target))
            elif target not in found:
                found.append(target)
        return found

    def _history_targets(self, history: str) -> list[str]:
        recorded = self.snapshot.history.get(history)
        if recorded:
            return list(recorded)
        state = self.chart.states[history]
        default = [t for transition in state.on for t in transition.targets]
        parent = self.chart.parent(history)
        if not default and self.chart.parallel(parent):
            return [parent]  # XState: every region of the parallel parent, by default
        return default or [self.chart.initial_child(parent)]

    def _add_below(self, path: str, to_enter: set[str]) -> None:
        """What entering ``path`` enters below it, ``path`` itself left out."""
        had = path in to_enter
        self._add_descendants(path, to_enter)
        if not had and self.chart.states[path].history is None:
            to_enter.discard(path)

    def _add_descendants(self, path: str, to_enter: set[str]) -> None:
        if path == ROOT:
            for child in self.machine.roots:
                self._add_descendants(child, to_enter)
            return
        state = self.chart.states[path]
        if state.history:
            # Every recorded state's descendants first, then the ancestors: a parallel
            # ancestor then sees all restored regions and adds defaults only for the rest.
            parent = self.chart.parent(path)
            targets = self._history_targets(path)
            for target in targets:
                self._add_descendants(target, to_enter)
            for target in targets:
                self._add_ancestors(target, parent, to_enter)
            return
        to_enter.add(path)
        if state.compound:
            child = self.chart.initial_child(path)
            self._add_descendants(child, to_enter)
            self._add_ancestors(child, path, to_enter)
        elif state.parallel:
            self._add_regions(path, to_enter)

    def _add_ancestors(self, path: str, upto: str, to_enter: set[str]) -> None:
        for ancestor in self.chart.proper_ancestors(path, upto):
            if ancestor == ROOT:
                if self.machine.parallel:  # the machine's own regions
                    self._add_regions(ROOT, to_enter)
                break
            to_enter.add(ancestor)
            if self.chart.parallel(ancestor):
                self._add_regions(ancestor, to_enter)

    def _add_regions(self, parallel: str, to_enter: set[str]) -> None:
        """The regions of a parallel state that nothing enters yet, by default (a history
        pseudo-state among its children is no region)."""
        for child in self.chart.children(parallel):
            if self.chart.states[child].history is None and not any(
                    p == child or self.chart.descendant(p, child) for p in to_enter):
                self._add_descendants(child, to_enter)

    # -- user code --------------------------------------------------------------------

    def _run(self, actions: Iterable[Action], state: State | None = None) -> None:
        """Entry, exit and transition actions: their return value is not an event (only a
        do action's is), as it always was."""
        for action in actions:
            if state is not None:
                self.context.current_state = state
            call(action, self.context, self.obj)

    # -- after the macrostep ----------------------------------------------------------

    def timers(self) -> list[Timer]:
        """The delayed transitions (and YAML ``timeout``\\ s) of the states entered in this
        macrostep and still active, to be set durably."""
        found = []
        for path in self.entered_now:
            state = self.chart.states[path]
            stamp = self.snapshot.entered[path]
            if state.timeout:
                found.append(Timer(float(state.timeout), state.timeout_event, path, stamp))
            for transition in state.on:
                if transition.delay is not None and all(t.event != transition.event for t in found):
                    found.append(Timer(transition.delay, transition.event, path, stamp))
        return found
