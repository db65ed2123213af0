"""``fsm export --format asl``: a flat machine as an Amazon States Language definition.

What an exported definition means, state by state:

- The execution's input is the instance's first context. A ``Pass`` state first wraps it
  as ``{"context": ...}``, the document every other state passes along, so the context
  goes from state to state as an instance's does and is the execution's output.
- Each action (a state's entry, do and exit actions, a transition's actions) is a
  ``Task`` whose ``Resource`` is the action's dotted class path (no ARN: it names the
  Python class, as the YAML did; map it back with ``resources:`` under ``- asl:``). Its
  input (``Parameters``) is ``{"context": the context, "params": the YAML params}``; its
  result is what the action returns, the event name. A do task keeps it in the document
  as ``event`` (``ResultPath: $.event``); entry, exit and transition actions' results
  mean nothing to the machine and are dropped (``ResultPath: null``).
- A do action whose state has transitions on several events is followed by a ``Choice``
  on ``$.event`` that picks the transition; the event no transition takes goes to a
  ``Fail`` (``UnknownEvent``), as it fails an instance. With one event, the task goes
  straight on. A taken transition runs the source's exit action and the transition's
  actions (tasks of their own), then enters the target.
- A state's ``timeout`` is its do task's ``TimeoutSeconds`` with a ``Catch`` of
  ``States.Timeout`` taking the timeout transition; a state with nothing to do but a
  timeout is a ``Wait``. A machine's retries are each task's ``Retry``
  (``States.TaskFailed``, full jitter, the machine's delays rounded up to whole seconds).
- A final state runs its entry and do actions and is a ``Succeed`` whose output is the
  context.

Refused, naming the state: statecharts (nested, parallel and history states, invoked
actors and child instances, ``after`` and eventless transitions, targetless
transitions), guards, and states that wait for external events (ASL has no state an
outsider sends an event to).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from ..model import Action, Machine, State, Transition

UNKNOWN_EVENT = "UnknownEvent"
NAME_LIMIT = 80                     # characters in an ASL state name
ALL_TASK_ERRORS = "States.TaskFailed"   # every task error but States.Timeout


def register(command: Callable[..., Any]) -> None:
    """``fsm export MACHINE [FILE]`` (see :mod:`fsm.cli`)."""
    p = command("export", cmd_export, "print a flat machine as an Amazon States Language definition (JSON)",
                client=False)
    p.add_argument("machine", metavar="MACHINE", help="the machine to export")
    p.add_argument("file", metavar="FILE", nargs="?",
                   help="the machines' file (default: --config, $FSM_CONFIG, then ./fsm.yaml)")
    p.add_argument("--config", metavar="FILE", help="the machines' file, when FILE is not given")
    p.add_argument("--format", choices=("asl",), default="asl", help="asl: Amazon States Language (the default)")


def cmd_export(args: argparse.Namespace) -> int:
    from ..cli import OK, UsageError, _definitions

    machine = _definitions(args).machine(args.machine)
    try:
        document = to_asl(machine)
    except ExportRefused as exc:
        raise UsageError(f"machine {machine.name!r} cannot be written as ASL: {exc}") from None
    print(json.dumps(document, indent=2))
    return OK


class ExportRefused(ValueError):
    """The machine has something ASL cannot express; the message names the state."""


def to_asl(machine: Machine) -> dict[str, Any]:
    """The machine as an ASL definition (a JSON-able dict); :class:`ExportRefused` for a
    machine ASL cannot express (see the module docstring)."""
    _check(machine)
    return _Writer(machine).definition()


def _check(machine: Machine) -> None:
    if machine.start is not None or machine.output is not None:
        raise ExportRefused(f"it is already a Step Functions (ASL) machine ({machine.source})")
    if machine.xstate or machine.top is not None:
        raise ExportRefused(f"it is an XState machine ({machine.source}); export its YAML twin, if any")
    if machine.parallel:
        raise ExportRefused("its top level is parallel regions; ASL has no equivalent of a statechart")
    for state in machine.states.values():
        _check_state(machine, state)


def _check_state(machine: Machine, state: State) -> None:
    where = f"state {state.path!r}"
    if len(state.path) > NAME_LIMIT:
        raise ExportRefused(f"{where}: its name is longer than ASL's {NAME_LIMIT} characters")
    shape = ("is nested in another state" if state.parent else "has child states" if state.children
             else "is a history state" if state.history else "invokes an actor" if state.invoke
             else "runs child instances" if state.spawn else "")
    if shape:
        raise ExportRefused(f"{where} {shape}: ASL export takes flat machines only, not statecharts")
    for t in state.on:
        what = (f"has an eventless transition (to {t.target!r})" if not t.event
                else f"has an `after` transition on {t.event!r}" if t.delay is not None
                else f"has a guard on {t.event!r} ({_class_path(t.guard)})" if t.guard is not None
                else f"has a targetless transition on {t.event!r}" if t.target is None
                else f"has a transition on {t.event!r} to several targets" if len(t.targets) > 1
                else f"has a transition on {t.event!r} that does not re-enter its target" if not t.reenter
                else "")
        if what:
            raise ExportRefused(f"{where} {what}: ASL cannot express it")
    if len({t.event for t in state.on}) != len(state.on):
        raise ExportRefused(f"{where} has several transitions on one event: ASL cannot choose between them")
    for action in (state.entry_action, state.do_action, state.exit_action, *(a for t in state.on for a in t.actions)):
        if action is not None and _has_path_key(action.params):
            raise ExportRefused(f"{where}: action {action.name} has a params key ending in '.$', which ASL would "
                                "read as a path")
    waits_for = sorted(e for e in state.transitions if not (state.timeout and e == state.timeout_event))
    if not state.final and state.do_action is None and waits_for:
        raise ExportRefused(f"{where} waits for external events ({', '.join(waits_for)}): ASL has no state that "
                            "an event is sent to")
    if not state.final and state.do_action is None and not state.timeout:
        raise ExportRefused(f"{where} has no do action, no timeout and is not final: nothing would move it on")


class _Writer:
    """Builds the ``States`` of one machine, naming each ASL state after what it does."""

    def __init__(self, machine: Machine):
        self.machine = machine
        self.states: dict[str, dict[str, Any]] = {}
        self.later: dict[str, dict[str, Any]] = {}   # a state's transitions, written after it
        self.taken = set(machine.states)

    def definition(self) -> dict[str, Any]:
        machine = self.machine
        start = self._name("start")
        self.states[start] = {"Type": "Pass", "Comment": "the input is the first context",
                              "Parameters": {"context.$": "$"}, "Next": machine.initial}
        for state in machine.states.values():
            self._state(state)
        version = f" version {machine.version}" if machine.version else ""
        return {"Comment": f"machine {machine.name!r}{version} from {machine.source or 'an unnamed file'}, "
                           "exported by lambda-fsm (fsm export --format asl)",
                "StartAt": start, "States": self.states}

    # -- one state --------------------------------------------------------------------

    def _state(self, state: State) -> None:
        """The ASL states of one state: its first one is named after it."""
        steps: list[tuple[str, dict[str, Any]]] = []
        if state.entry_action is not None:
            steps.append(self._task(state, state.entry_action, "entry action"))
        if state.do_action is not None:
            steps.append(self._task(state, state.do_action, "do action", keeps_event=not state.final))
        ending = self._ending(state, steps[-1][1] if steps else None)
        if ending is not None:
            steps.append(ending)
        names = [state.path] + [self._name(f"{state.path}: {label}") for label, _ in steps[1:]]
        for index, ((label, body), name) in enumerate(zip(steps, names, strict=True)):
            body = dict(body)
            if index + 1 < len(names):
                body["Next"] = names[index + 1]
            self.states[name] = body
        self.states.update(self.later)
        self.later.clear()

    def _ending(self, state: State, last: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
        """What follows the state's actions: a Succeed, a Wait, a Choice, or nothing
        (the do task itself goes on to the one transition it can take)."""
        if state.final:
            return "done", {"Type": "Succeed", "Comment": f"{self._where(state)}: final", "OutputPath": "$.context"}
        timeout = state.transitions.get(state.timeout_event) if state.timeout else None
        if state.do_action is None:   # _check: only a timeout moves it on
            assert timeout is not None
            return "timeout", {"Type": "Wait", "Comment": f"{self._where(state)}: timeout after {state.timeout:g} s",
                               "Seconds": _whole_seconds(state.timeout), "Next": self._taking(state, timeout)}
        assert last is not None
        if timeout is not None:
            last["TimeoutSeconds"] = _whole_seconds(state.timeout)
            last["Catch"] = [{"ErrorEquals": ["States.Timeout"], "ResultPath": None,
                              "Next": self._taking(state, timeout)}]
        taken = [t for t in state.on if t is not timeout]
        if len(taken) == 1:
            last["Next"] = self._taking(state, taken[0])
            return None
        choices = [{"Variable": "$.event", "StringEquals": t.event, "Next": self._taking(state, t)} for t in taken]
        unknown = self._unknown_event(state)
        if not choices:
            last["Next"] = unknown
            return None
        return "event", {"Type": "Choice", "Comment": f"{self._where(state)}: the event its do action returned",
                         "Choices": choices, "Default": unknown}

    def _taking(self, state: State, t: Transition) -> str:
        """The name of the first ASL state of transition ``t``: its source's exit action
        and its own actions as tasks, in that order, then the target."""
        assert t.target is not None
        actions = [(state.exit_action, "exit action")] if state.exit_action is not None else []
        actions += [(action, "transition action") for action in t.actions]
        following = t.target
        for index, (action, label) in reversed(list(enumerate(actions))):
            name = self._name(f"{state.path} --{t.event}--> {t.target}: {label} {index + 1}")
            _, body = self._task(state, action, f"{label} on {t.event!r}")
            self.later[name] = {**body, "Next": following}
            following = name
        return following

    def _task(self, state: State, action: Action, label: str, keeps_event: bool = False) -> tuple[str, dict[str, Any]]:
        machine = self.machine
        body: dict[str, Any] = {
            "Type": "Task", "Comment": f"{self._where(state)}: {label} {action.name}",
            "Resource": _class_path(action),
            "Parameters": {"context.$": "$.context", "params": action.params},
            # A do action's event picks the transition; the other actions' results mean nothing.
            "ResultPath": "$.event" if keeps_event else None,
        }
        retries = state.max_retries if state.max_retries is not None else machine.max_retries
        if retries > 0:
            body["Retry"] = [{"ErrorEquals": [ALL_TASK_ERRORS], "MaxAttempts": retries,
                              "IntervalSeconds": _whole_seconds(machine.retry_base_delay), "BackoffRate": 2.0,
                              "MaxDelaySeconds": _whole_seconds(machine.retry_max_delay), "JitterStrategy": "FULL"}]
        return label.split(" on ")[0], body

    def _unknown_event(self, state: State) -> str:
        name = self._name(f"{state.path}: unknown event")
        events = ", ".join(sorted(e for e in state.transitions)) or "none"
        self.later[name] = {"Type": "Fail", "Comment": f"{self._where(state)}: an event no transition takes",
                             "Error": UNKNOWN_EVENT,
                             "Cause": f"the do action of state {state.path!r} returned an event it has no "
                                      f"transition on (it has: {events})"}
        return name

    # -- names ------------------------------------------------------------------------

    def _where(self, state: State) -> str:
        return f"state {state.path!r} of {self.machine.name!r}"

    def _name(self, wanted: str) -> str:
        """A state name no other state has, within ASL's 80 characters."""
        base = wanted if len(wanted) <= NAME_LIMIT else wanted[:NAME_LIMIT - 3] + "..."
        name, n = base, 1
        while name in self.taken:
            n += 1
            suffix = f" ({n})"
            name = base[:NAME_LIMIT - len(suffix)] + suffix
        self.taken.add(name)
        return name


def _class_path(obj: Any) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _has_path_key(value: Any) -> bool:
    if isinstance(value, dict):
        return any(str(key).endswith(".$") or _has_path_key(item) for key, item in value.items())
    return isinstance(value, list) and any(_has_path_key(item) for item in value)


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def exportable(machines: Iterable[Machine]) -> list[str]:
    """The names of the machines ``to_asl`` takes."""
    found = []
    for machine in machines:
        try:
            _check(machine)
        except ExportRefused:
            continue
        found.append(machine.name)
    return found
