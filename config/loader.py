"""YAML -> checked -> frozen machines. Every problem is collected and reported as
``FILE:LINE: message``; nothing is checked later at run time."""

from __future__ import annotations

import difflib
import importlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fsm.errors import InvalidDefinition
from fsm.model import Action, Machine, State, Transition

from . import schema
from .yamlsource import Located, load


@dataclass
class Definitions:
    machines: dict[str, Machine] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def machine(self, name: str) -> Machine:
        if name not in self.machines:
            known = ", ".join(sorted(self.machines)) or "none"
            raise InvalidDefinition(f"unknown machine {name!r}; defined: {known}")
        return self.machines[name]


def load_file(path: str | Path) -> Definitions:
    """Load a config file (and its imports); raise one InvalidDefinition listing every problem."""
    loader = _Loader()
    loader.load(Path(path), stack=())
    if loader.problems:
        raise InvalidDefinition(loader.problems)
    return loader.result


def load_text(text: str, name: str = "<string>") -> Definitions:
    loader = _Loader()
    loader.load_text(text, Path(name), stack=())
    if loader.problems:
        raise InvalidDefinition(loader.problems)
    return loader.result


class _Loader:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.result = Definitions()
        self._machine_at: dict[str, str] = {}
        self._target_lines: dict[tuple[str, str, str], int] = {}

    def problem(self, where: Path, line: int, message: str) -> None:
        self.problems.append(f"{where}:{line}: {message}")

    # -- files ------------------------------------------------------------------------

    def load(self, path: Path, stack: tuple[Path, ...], at: tuple[Path, int] | None = None) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            where, line = at or (path, 0)
            self.problem(where, line, f"cannot read {str(path)!r}: {exc.strerror or exc}")
            return
        self.load_text(text, path, stack)

    def load_text(self, text: str, path: Path, stack: tuple[Path, ...]) -> None:
        self.result.files.append(str(path))
        try:
            doc = load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else 0
            self.problem(path, line, f"YAML syntax error: {getattr(exc, 'problem', None) or exc}")
            return
        if not isinstance(doc, Located):
            self.problem(path, 1, "the file must be a mapping with a `machines:` list")
            return
        self.check_keys(path, doc, schema.TOP_LEVEL, "top level")
        if "settings" in doc and not stack:
            self.result.settings = dict(doc["settings"] or {})
        machines = doc.get("machines")
        if machines is None:
            self.problem(path, doc.line, "missing `machines:` list")
            return
        for item in machines if isinstance(machines, list) else ():
            if isinstance(item, Located) and "import" in item:
                self.check_keys(path, item, schema.IMPORT, "import")
                self.load_import(path, item, stack + (path.resolve(),))
            elif isinstance(item, Located):
                self.load_machine(path, item)
            else:
                self.problem(path, getattr(machines, "line", 0), "each entry of `machines:` must be a mapping")

    def load_import(self, path: Path, item: Located, stack: tuple[Path, ...]) -> None:
        name = item["import"]
        line = item.line_of("import")
        if not isinstance(name, str):
            self.problem(path, line, "`import:` must be a file name")
            return
        target = path.parent / name
        if not target.exists() and Path(name).exists():
            target = Path(name)  # where aws-lambda-fsm looked: the current directory
        if target.resolve() in stack:
            chain = " -> ".join(str(p) for p in stack + (target.resolve(),))
            self.problem(path, line, f"import cycle: {chain}")
            return
        self.load(target, stack, at=(path, line))

    # -- machines ---------------------------------------------------------------------

    def load_machine(self, path: Path, raw: Located) -> None:
        name = raw.get("name")
        label = f"machine {name!r}"
        self.check_keys(path, raw, schema.MACHINE, label, "machine")
        if not isinstance(name, str):
            return
        if name in self._machine_at:
            self.problem(path, raw.line_of("name"), f"duplicate machine name {name!r} "
                         f"(first defined at {self._machine_at[name]})")
            return
        self._machine_at[name] = f"{path}:{raw.line}"
        states: dict[str, State] = {}
        state_lines: dict[str, int] = {}
        for item in raw.get("states") or []:
            if not isinstance(item, Located):
                self.problem(path, raw.line_of("states"), f"{label}: each state must be a mapping")
                continue
            state = self.load_state(path, item, label)
            if state is None:
                continue
            if state.name in states:
                self.problem(path, item.line_of("name"), f"{label}: duplicate state name {state.name!r}")
                continue
            states[state.name] = state
            state_lines[state.name] = item.line
        retries = raw.get("max_retries", 5)
        if isinstance(retries, int) and retries < 0:
            self.problem(path, raw.line_of("max_retries"), f"{label}: max_retries must be 0 or more")
        for key in ("retry_base_delay", "retry_max_delay"):
            if isinstance(raw.get(key), schema.NUMBER) and raw[key] < 0:
                self.problem(path, raw.line_of(key), f"{label}: {key} must be 0 or more")
        initial = self.check_graph(path, raw, label, states, state_lines)
        if initial is None:
            return
        self.result.machines[name] = Machine(
            name=name, states=states, initial=initial, max_retries=retries,
            retry_base_delay=float(raw.get("retry_base_delay", 1.0)),
            retry_max_delay=float(raw.get("retry_max_delay", 60.0)),
            version=str(raw.get("version", "")), source=f"{path}:{raw.line}")

    def load_state(self, path: Path, raw: Located, machine: str) -> State | None:
        name = raw.get("name")
        label = f"{machine}, state {name!r}"
        self.check_keys(path, raw, schema.STATE, label, "state")
        if not isinstance(name, str):
            return None
        actions = {key: self.load_action(path, raw, key, label)
                   for key in ("entry_action", "do_action", "exit_action")}
        transitions: dict[str, Transition] = {}
        for item in raw.get("transitions") or []:
            if not isinstance(item, Located):
                self.problem(path, raw.line_of("transitions"), f"{label}: each transition must be a mapping")
                continue
            event = item.get("event")
            tlabel = f"{label}, transition on {event!r}"
            if not self.check_keys(path, item, schema.TRANSITION, tlabel, "transition"):
                continue
            if event in transitions:
                self.problem(path, item.line_of("event"), f"{label}: two transitions on event {event!r}")
                continue
            transitions[event] = Transition(event=event, target=item["target"],
                                            action=self.load_action(path, item, "action", tlabel),
                                            local=bool(item.get("local", False)))
            self._target_lines[(machine, name, event)] = item.line_of("target")
        if raw.get("timeout") is not None and raw["timeout"] <= 0:
            self.problem(path, raw.line_of("timeout"), f"{label}: timeout must be more than 0 seconds")
        return State(name=name, initial=bool(raw.get("initial", False)), final=bool(raw.get("final", False)),
                     transitions=transitions, timeout=raw.get("timeout"),
                     timeout_event=raw.get("timeout_event", "timeout"), **actions)

    def check_graph(self, path: Path, raw: Located, label: str, states: dict[str, State],
                    lines: dict[str, int]) -> str | None:
        before = len(self.problems)
        initials = [s.name for s in states.values() if s.initial]
        if not initials:
            self.problem(path, raw.line, f"{label}: no initial state (mark one with `initial: true`)")
        elif len(initials) > 1:
            self.problem(path, lines[initials[1]], f"{label}: several initial states: {', '.join(initials)}")
        for state in states.values():
            if state.final and state.transitions:
                self.problem(path, lines[state.name], f"{label}: final state {state.name!r} has transitions")
            if not state.final and not state.transitions:
                self.problem(path, lines[state.name], f"{label}: state {state.name!r} is not final and has "
                             "no transitions, so an instance there could never leave")
            if state.timeout and state.timeout_event not in state.transitions:
                self.problem(path, lines[state.name], f"{label}: state {state.name!r} has a timeout but no "
                             f"transition on its timeout event {state.timeout_event!r}")
            for event, transition in state.transitions.items():
                if transition.target not in states:
                    line = self._target_lines.get((label, state.name, event), lines[state.name])
                    self.problem(path, line, f"{label}, state {state.name!r}: transition on {event!r} goes to "
                                 f"unknown state {transition.target!r}{_suggest(transition.target, states)}")
        if len(initials) == 1:
            seen, todo = {initials[0]}, deque([initials[0]])
            while todo:
                for transition in states[todo.popleft()].transitions.values():
                    if transition.target in states and transition.target not in seen:
                        seen.add(transition.target)
                        todo.append(transition.target)
            for name in states:
                if name not in seen:
                    self.problem(path, lines[name], f"{label}: state {name!r} is unreachable from the "
                                 f"initial state {initials[0]!r}")
        return initials[0] if len(self.problems) == before and initials else None

    # -- actions and keys ---------------------------------------------------------------

    def load_action(self, path: Path, raw: Located, key: str, label: str) -> Action | None:
        spec = raw.get(key)
        if spec is None:
            return None
        line = raw.line_of(key)
        params: dict[str, Any] = {}
        if isinstance(spec, Located):
            if not self.check_keys(path, spec, schema.ACTION, f"{label}, {key}", "action"):
                return None
            spec, params = spec["class"], dict(spec.get("params") or {})
        cls = self.import_action(path, line, spec, f"{label}, {key}")
        return cls(name=spec, params=params) if cls else None

    def import_action(self, path: Path, line: int, dotted: str, label: str) -> type[Action] | None:
        module_name, _, class_name = dotted.rpartition(".")
        if not module_name:
            self.problem(path, line, f"{label}: {dotted!r} is not a dotted path like `module.ClassName`")
            return None
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import failure is a definition error
            self.problem(path, line, f"{label}: cannot import {dotted!r}: {type(exc).__name__}: {exc}")
            return None
        cls = getattr(module, class_name, None)
        if cls is None:
            self.problem(path, line, f"{label}: module {module_name!r} has no {class_name!r}")
            return None
        if not (isinstance(cls, type) and issubclass(cls, Action)):
            self.problem(path, line, f"{label}: {dotted!r} is not a subclass of fsm.Action")
            return None
        return cls

    def check_keys(self, path: Path, raw: Located, allowed: dict[str, tuple[Any, str]], label: str,
                   required_for: str | None = None) -> bool:
        ok = True
        for key, value in raw.items():
            if key not in allowed:
                self.problem(path, raw.line_of(str(key)), f"{label}: unknown key {key!r}"
                             f"{_suggest(str(key), allowed)}; allowed: {', '.join(allowed)}")
                ok = False
            elif value is not None and not _is_a(value, allowed[key][0]):
                self.problem(path, raw.line_of(key), f"{label}: {key!r} must be {_type_name(allowed[key][0])} "
                             f"({allowed[key][1]}), got {value!r}")
                ok = False
        for key in schema.REQUIRED.get(required_for or "", ()):
            if key not in raw:
                self.problem(path, raw.line, f"{label}: missing required key {key!r}")
                ok = False
        return ok


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_a(value: Any, types: Any) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):  # YAML `true` is an int to Python; only bool keys take it
        return bool in types
    return isinstance(value, types)


def _type_name(types: Any) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {int: "an integer", float: "a number", str: "a string", dict: "a mapping", list: "a list",
             bool: "true or false"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))
