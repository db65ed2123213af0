"""YAML -> checked -> frozen machines. Every problem is collected and reported as
``FILE:LINE: message``; nothing is checked later at run time.

A value of the wrong type is reported once and then treated as absent, so one mistake
does not crash the loader or set off a cascade of follow-on messages.

Input is treated as hostile: an imported file is read only inside the allowed folders
(:meth:`config.entries.EntryLoader.allowed_roots`), and a message never shows what an
imported file holds, only its keys and the type and size of a value that does not fit
(:mod:`config.messages`).

Here: files, machines, states, transitions, actions and keys. The entries that name
another file (``import:``, ``xstate:``, ``asl:``) are :mod:`config.entries`; the
statechart checks once a machine's states are built, :mod:`config.checks`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from fsm.errors import InvalidDefinition
from fsm.migrate import version_key
from fsm.model import Action, Guard, Machine, Migration, Spawn, State, Transition
from fsm.shadow import check_packages, hidden_note, shadow_note

from . import schema
from .checks import StateSource, check_graph
from .entries import EntryLoader
from .messages import described, masked, short, suggest
from .yamlsource import Located, LocatedList, Refused, load, plain

ACTION_KEYS = ("entry_action", "do_action", "exit_action")
SPAWN_KEYS = ("invoke", "map")  # config.spawn.BUILDERS's keys, in its order
_YAML_BOOLEANS = "; YAML reads unquoted yes, no, on, off, true and false as booleans: quote it"


@dataclass
class Definitions:
    machines: dict[str, Machine] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # "FILE:LINE: warning: ..." that do not stop a load

    def machine(self, name: str) -> Machine:
        if name not in self.machines:
            known = ", ".join(sorted(self.machines)) or "none"
            raise InvalidDefinition(f"unknown machine {name!r}; defined: {known}")
        return self.machines[name]


def load_file(path: str | Path, *, settings_file: str | None = None,
              environ: Mapping[str, str] | None = None) -> Definitions:
    """Load a config file (and its imports); raise one InvalidDefinition listing every problem.

    ``settings_file`` and ``environ`` (default ``FSM_SETTINGS`` and ``os.environ``) are
    only read for ``import_roots``, and only when an import lies outside the top file's folder."""
    loader = _Loader(settings_file, environ)
    loader.load(Path(path), stack=())
    return loader.finish()


def load_text(text: str, name: str = "<string>", *, settings_file: str | None = None,
              environ: Mapping[str, str] | None = None) -> Definitions:
    loader = _Loader(settings_file, environ)
    loader.load_text(text, Path(name), stack=())
    return loader.finish()


class _Loader(EntryLoader):
    def __init__(self, settings_file: str | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.result = Definitions()
        self._found: list[tuple[str, int, str]] = []
        self._machine_at: dict[tuple[str, str], str] = {}
        self._versions: dict[str, dict[str, Machine]] = {}
        self._children: list[tuple[Path, int, str, str]] = []  # (file, line, where, machine) to check at the end
        self._loaded: set[Path] = set()
        self._settings_file = settings_file
        self._environ = os.environ if environ is None else environ
        self._top: Path | None = None  # the file the user named; every other one is imported
        self._top_settings: Mapping[str, Any] = {}
        self._roots: list[Path] | None = None

    def shown(self, path: Path, value: Any) -> str:
        """A value for a message. The top file's own values are shown, cut short: the user
        named that file. An imported one's are described by type and size only, since it
        may be any file the import reached (a key file, ``/etc/shadow``)."""
        return short(value) if path == self._top else described(value)

    def problem(self, where: Path, line: int, message: str) -> None:
        self._found.append((str(where), line, message))

    def finish(self) -> Definitions:
        """Raise every problem, in file order then line order, or return the definitions."""
        for path, line, where, name in self._children:
            if name not in self._versions:
                self.problem(path, line, f"{where}: machine {name!r} is not defined; defined: "
                             f"{', '.join(sorted(self._versions)) or 'none'}")
        for name, versions in self._versions.items():
            if len(versions) > 1 and not all(v.lstrip("-").isdigit() for v in versions):
                first = next(iter(versions.values()))
                self.problem(Path(first.source.rsplit(":", 1)[0]), int(first.source.rsplit(":", 1)[1]),
                             f"machine {name!r} has versions {', '.join(map(repr, versions))}: several versions of "
                             "one machine must be integers, so that the highest is the one new instances start on")
                continue
            ordered = sorted(versions, key=version_key)
            self.result.machines[name] = replace(versions[ordered[-1]], versions=dict(versions))
        if not self._found:
            return self.result
        order = {name: index for index, name in reversed(list(enumerate(self.result.files)))}
        found = sorted(self._found, key=lambda f: (order.get(f[0], len(order)), f[1]))
        raise InvalidDefinition([f"{where}:{line}: {message}" for where, line, message in found])

    # -- files ------------------------------------------------------------------------

    def load(self, path: Path, stack: tuple[Path, ...], at: tuple[Path, int] | None = None) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            where, line = at or (path, 0)
            if isinstance(exc, UnicodeDecodeError):  # its message quotes the offending byte
                reason = f"not UTF-8 text (at byte {exc.start})"
            else:
                reason = exc.strerror or type(exc).__name__
            self.problem(where, line, f"cannot read {str(path)!r}: {reason}")
            return
        self.load_text(text, path, stack)

    def load_text(self, text: str, path: Path, stack: tuple[Path, ...]) -> None:
        if self._top is None:
            self._top = path
        if path.is_file():
            search_beside(path)
        self.result.files.append(str(path))
        self._loaded.add(path.resolve())
        doc = self.parse(path, text)
        if doc is None:
            return
        if path.suffix == ".json" and "StartAt" in doc and "States" in doc:  # one ASL definition, by itself
            stem = path.stem.removesuffix(".asl")
            self.add_asl(path, doc, doc, stem, {}, path)
            return
        self.check_keys(path, doc, schema.TOP_LEVEL, "top level")
        if "settings" in doc:
            self.load_settings(path, doc, imported=bool(stack))
        machines = doc.get("machines")
        if machines is None:
            self.problem(path, doc.line_of("machines"), "missing `machines:` list")
        elif isinstance(machines, LocatedList):
            self.load_entries(path, machines, stack + (path.resolve(),))

    def parse(self, path: Path, text: str) -> Located | None:
        try:
            doc = load(text)
        except yaml.YAMLError as exc:
            self.yaml_problem(path, text, exc)
            return None
        if not isinstance(doc, Located):
            # Not even a mapping: most likely not a machines file at all, so no content.
            found = "it is empty" if doc is None else f"got {described(doc)}"
            self.problem(path, getattr(doc, "line", 1), f"the file must be a mapping with a `machines:` list; {found}")
        return doc if isinstance(doc, Located) else None

    def yaml_problem(self, path: Path, text: str, exc: yaml.YAMLError) -> None:
        kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        mark, context = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark else 1
        if isinstance(exc, yaml.reader.ReaderError):  # no mark, only a character offset
            reason = "a control character, which YAML does not allow"
            line = text.count("\n", 0, exc.position) + 1
        else:  # str(exc) would quote the offending line: the problem alone, or the error's type
            reason = getattr(exc, "problem", None) or type(exc).__name__
        if context and context.line + 1 != line and kind == "YAML syntax error":
            reason += f" ({exc.context} that began at line {context.line + 1})"  # type: ignore[attr-defined]
            if line > len(text.splitlines()):  # the end of the file is no place to look
                line = context.line + 1
        if path != self._top and not isinstance(exc, Refused):
            reason = masked(reason)
        self.problem(path, line, f"{kind}: {reason}")

    def load_settings(self, path: Path, doc: Located, imported: bool) -> None:
        if imported:
            self.problem(path, doc.line_of("settings"), "`settings:` is only read from the top file, "
                         "not from an imported one; move it there")
        elif isinstance(doc["settings"], dict):
            self.result.settings = plain(doc["settings"])
            self._top_settings = doc["settings"]  # with lines, for `import_roots` messages

    # -- machines and states ----------------------------------------------------------

    def load_machine(self, path: Path, raw: Located) -> None:
        name = raw.get("name")
        named = isinstance(name, str) and bool(name)
        label = f"machine {name!r}" if named else "unnamed machine"
        doubtful = self.check_keys(path, raw, schema.MACHINE, label, "machine")
        options = self.machine_options(path, raw, label)
        registered = named and self.register(path, raw, name, options["version"])
        sources: dict[str, StateSource] = {}
        complete = self.load_states(path, raw, label, None, sources)
        if "states" in doubtful:
            return
        initial = check_graph(self.problem, path, raw, label, sources, complete)
        migrations = self.load_migrations(path, raw, label)
        if registered and initial is not None:
            self.add(Machine(
                name=name, states={p: s.state for p, s in sources.items()}, initial=initial,
                source=f"{path}:{raw.line}", parallel=schema.value_or(raw, "parallel", schema.MACHINE, False),
                migrations=migrations, **options))

    def register(self, path: Path, raw: Located, name: str, version: str = "") -> bool:
        """One definition per (name, version); several versions of one machine may live
        side by side (instances keep the version they started on)."""
        same = [at for (other, other_version), at in self._machine_at.items()
                if other == name and (other_version == version or not other_version or not version)]
        if same:
            self.problem(path, raw.line_of("name") if "name" in raw else raw.line, f"duplicate machine name {name!r} "
                         f"(first defined at {same[0]})" + ("; several definitions of one machine need distinct "
                                                           "`version:`s" if version else ""))
            return False
        self._machine_at[(name, version)] = f"{path}:{raw.line}"
        return True

    def add(self, machine: Machine) -> None:
        self._versions.setdefault(machine.name, {})[machine.version] = machine

    def load_migrations(self, path: Path, raw: Located, label: str) -> tuple[Migration, ...]:
        items = raw.get("migrations")
        if not isinstance(items, LocatedList):
            return ()
        found = []
        for index, item in enumerate(items):
            if not isinstance(item, Located):
                self.problem(path, items.line_at(index), f"{label}: each migration must be a mapping with `from:`")
                continue
            where = f"{label}, migration from {item.get('from')!r}"
            if self.check_keys(path, item, schema.MIGRATION, where, "migration"):
                continue
            states = item.get("states") or {}
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in states.items()):
                self.problem(path, item.line_of("states"), f"{where}: `states` maps old state paths to new ones "
                             "(strings)")
                continue
            found.append(Migration(str(item["from"]), dict(states), self.load_action(path, item, "action", where)))
        return tuple(found)

    def machine_options(self, path: Path, raw: Located, label: str) -> dict[str, Any]:
        options = {key: schema.value_or(raw, key, schema.MACHINE, default)
                   for key, default in schema.MACHINE_DEFAULTS.items()}
        for key in ("max_retries", "retry_base_delay", "retry_max_delay"):
            problem = schema.out_of_range(key, options[key])
            if problem:
                self.problem(path, raw.line_of(key), f"{label}: {key!r} {problem}")
                options[key] = schema.MACHINE_DEFAULTS[key]
        return {**options, "retry_base_delay": float(options["retry_base_delay"]),
                "retry_max_delay": float(options["retry_max_delay"]), "version": str(options["version"])}

    def load_states(self, path: Path, raw: Located, label: str, parent: str | None,
                    sources: dict[str, StateSource]) -> bool:
        """Add ``raw``'s states (and, depth first, their children) to ``sources`` by path,
        a parent before its children; return whether every one could be built."""
        items = raw.get("states")
        if not isinstance(items, LocatedList):
            return False
        complete, siblings = True, {}
        for index, item in enumerate(items):
            source = self.load_state(path, item, label, parent) if isinstance(item, Located) else None
            if source is None:
                if not isinstance(item, Located):
                    self.problem(path, items.line_at(index), f"{label}: each state must be a mapping, "
                                 f"got {self.shown(path, item)}")
                complete = False
                continue
            state = source.state
            if state.name in siblings:
                self.problem(path, item.line_of("name"), f"{label}: duplicate state name "
                             f"{state.name!r} (first at line {siblings[state.name]})")
                continue
            siblings[state.name] = item.line_of("name")
            sources[state.path] = source
            complete = complete and "transitions" not in source.doubtful
            if isinstance(item.get("states"), LocatedList):
                complete = self.load_states(path, item, f"{label}, state {state.path!r}", state.path,
                                            sources) and complete
                children = tuple(p for p, s in sources.items() if s.state.parent == state.path)
                initial = [p for p in children if sources[p].state.initial]
                sources[state.path].state = replace(state, children=children,
                                                    initial_child=initial[0] if len(initial) == 1 else None)
        return complete

    def load_state(self, path: Path, raw: Located, machine: str, parent: str | None) -> StateSource | None:
        name = raw.get("name")
        named = isinstance(name, str) and bool(name)
        label = f"{machine}, state {name!r}" if named else f"{machine}, unnamed state"
        doubtful = self.check_keys(path, raw, schema.STATE, label, "state")
        if named and ("." in name or "," in name):
            self.problem(path, raw.line_of("name"), f"{label}: a state name cannot hold '.' or ',' "
                         "(a dotted path names a nested state)")
            return None
        actions = {key: self.load_action(path, raw, key, label) for key in ACTION_KEYS}
        spawn = self.load_spawn(path, raw, label)
        own = f"{parent}.{name}" if parent and named else name
        transitions, complete = self.load_transitions(path, raw, label, own if named else "")
        if not complete:
            doubtful.add("transitions")
        timeout = self.number(path, raw, "timeout", label, schema.STATE)
        retries = schema.value_or(raw, "max_retries", schema.STATE, None)
        if retries is not None and schema.out_of_range("max_retries", retries):
            self.problem(path, raw.line_of("max_retries"), f"{label}: 'max_retries' "
                         f"{schema.out_of_range('max_retries', retries)}")
            retries = None
        history = schema.value_or(raw, "history", schema.STATE, None)
        if history is not None and history not in ("shallow", "deep"):
            self.problem(path, raw.line_of("history"), f"{label}: 'history' must be shallow or deep, "
                         f"got {self.shown(path, history)}")
            history = None
        if not named:
            return None
        default = schema.value_or(raw, "target", schema.STATE, None)
        on = tuple(t for t, _ in transitions)
        if history and default:
            on = (Transition("", default, source=own),)
        state = State(name=name, initial=schema.value_or(raw, "initial", schema.STATE, False),
                      final=schema.value_or(raw, "final", schema.STATE, False), on=on,
                      timeout=timeout, timeout_event=schema.value_or(raw, "timeout_event", schema.STATE, "timeout"),
                      path=own, parent=parent, parallel=schema.value_or(raw, "parallel", schema.STATE, False),
                      history=history, max_retries=retries, spawn=spawn, **actions)
        return StateSource(state, raw, [r for _, r in transitions], doubtful)

    def load_spawn(self, path: Path, raw: Located, label: str) -> Spawn | None:
        """``invoke: {machine, input}`` or ``map: {items, machine, ...}`` (see config.spawn);
        the machine it names is checked once every file is loaded."""
        given = [key for key in SPAWN_KEYS if isinstance(raw.get(key), Located)]
        if len(given) > 1:
            self.problem(path, raw.line_of(given[1]), f"{label}: a state has `invoke` or `map`, not both")
            return None
        if not given:
            return None
        # Only now: config.spawn brings fsm.asl, which a config without invoke or map never needs.
        from . import spawn

        key = given[0]
        item, (allowed, build) = raw[key], spawn.BUILDERS[key]
        where = f"{label}, {key}"
        doubtful = self.check_keys(path, item, allowed, where, key)
        for name, low, high in (("max_concurrency", 0, 10_000), ("tolerated_failures", 0, 1_000_000),
                                ("tolerated_failure_percentage", 0, 100)):
            value = item.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
                self.problem(path, item.line_of(name), f"{where}: {name!r} must be from {low} to {high}, got {value}")
                doubtful.add(name)
        for problem in (spawn.check_template(item["input"]) if "input" not in doubtful and
                        item.get("input") is not None else []):
            self.problem(path, item.line_of("input"), f"{where}: {problem}")
            doubtful.add("input")
        if key == "map" and "items" not in doubtful:
            from fsm.asl import paths

            try:
                paths.parse(item["items"])
            except paths.PathError as exc:
                self.problem(path, item.line_of("items"), f"{where}: items: {exc}")
                doubtful.add("items")
        if "machine" not in doubtful:
            self._children.append((path, item.line_of("machine"), where, item["machine"]))
        return None if doubtful else build(plain(item))

    def number(self, path: Path, raw: Located, key: str, label: str, allowed: dict[str, Any]) -> float | None:
        value = schema.value_or(raw, key, allowed, None)
        problem = schema.out_of_range(key, value) if value is not None else None
        if problem:
            self.problem(path, raw.line_of(key), f"{label}: {key!r} {problem}")
            return None
        return value

    def load_transitions(self, path: Path, raw: Located, label: str,
                         owner: str) -> tuple[list[tuple[Transition, Located]], bool]:
        """The state's transitions in document order (targets as written; resolved once
        every state is known), and whether every one could be built."""
        built: list[tuple[Transition, Located]] = []
        items = raw.get("transitions")
        if not isinstance(items, LocatedList):
            return built, items is None
        complete, unguarded = True, {}
        for index, item in enumerate(items):
            if not isinstance(item, Located):
                self.problem(path, items.line_at(index), f"{label}: each transition must be a mapping "
                             f"with `event:` and `target:`, got {self.shown(path, item)}")
                complete = False
                continue
            event = item.get("event")
            where = f"{label}, transition on {event!r}" if isinstance(event, str) else f"{label}, transition"
            doubtful = self.check_keys(path, item, schema.TRANSITION, where, "transition")
            action = self.load_action(path, item, "action", where)
            guard = self.load_action(path, item, "guard", where, base=Guard)
            delay = self.number(path, item, "after", where, schema.TRANSITION)
            triggers = [k for k in ("event", "after", "always", "done") if item.get(k) not in (None, False)]
            if len(triggers) != 1 and not doubtful & {"event", "after", "always", "done"}:
                self.problem(path, item.line, f"{where}: give exactly one of `event:`, `after: SECONDS`, "
                             "`always: true` or `done: true`"
                             f"{' (it has ' + ', '.join(triggers) + ')' if triggers else ''}")
                doubtful.add("event")
            if doubtful & {"event", "target", "after", "always", "done"}:
                complete = False
                continue
            if delay is not None:
                event = f"xstate.after.{round(delay * 1000)}.{owner}"
            elif item.get("always"):
                event = ""
            elif item.get("done"):
                event = f"xstate.done.state.{owner}"
            shown = ("`always`" if event == "" else f"event {item.get('event')!r}" if item.get("event")
                     else "`done`" if item.get("done") else f"`after: {delay:g}`")
            if event in unguarded:
                self.problem(path, item.line, f"{label}: two transitions on {shown} (the first at line "
                             f"{unguarded[event]}); the first has no guard, so the second could never be "
                             "taken: give the first a `guard:` or remove one")
                continue
            if "guard" not in item:
                unguarded[event] = item.line
            reenter = not schema.value_or(item, "internal", schema.TRANSITION, False)
            built.append((Transition(event, item.get("target"), action,
                                     schema.value_or(item, "local", schema.TRANSITION, False), guard, reenter,
                                     delay=delay, source=owner), item))
        return built, complete

    # -- actions and keys -------------------------------------------------------------

    def load_action(self, path: Path, raw: Located, key: str, label: str, base: type = Action) -> Any:
        """``key: dotted.Class`` or ``key: {class: dotted.Class, params: {...}}``: an
        Action (or, with ``base=Guard``, a Guard)."""
        spec, where, line, params = raw.get(key), f"{label}, {key}", raw.line_of(key), {}
        if isinstance(spec, Located):
            if self.check_keys(path, spec, schema.ACTION, where, "action") & {"class", "params"}:
                return None
            spec, line, params = spec["class"], spec.line_of("class"), plain(spec.get("params") or {})
        if not isinstance(spec, str):  # absent, or a wrong type check_keys has reported
            return None
        return self.instance(path, line, spec, params, where, base)

    def instance(self, path: Path, line: int, spec: str, params: dict[str, Any], where: str,
                 base: type = Action) -> Any:
        cls = self.import_action(path, line, spec, where, base)
        if cls is None:
            return None
        try:
            return cls(name=spec, params=params)
        except Exception as exc:  # noqa: BLE001 - a user's constructor may raise anything
            self.problem(path, line, f"{where}: cannot create {spec!r}: {type(exc).__name__}: {exc}")
            return None

    def import_action(self, path: Path, line: int, dotted: str, label: str, base: type = Action) -> type | None:
        module_name, _, class_name = dotted.rpartition(".")
        if not module_name or not class_name:
            self.problem(path, line, f"{label}: {dotted!r} is not a dotted path like `module.ClassName`")
            return None
        try:
            module, failure = importlib.import_module(module_name), ""
        except Exception as exc:  # noqa: BLE001 - any import failure is a definition error
            module, failure = None, f"{type(exc).__name__}: {exc}"
        shadowed = shadow_note(module_name)  # one of our modules, reached through a user's
        if module is None or shadowed:
            self.problem(path, line, f"{label}: cannot import {dotted!r}: {shadowed or failure}")
            return None
        cls = getattr(module, class_name, None)
        if cls is None:
            public = [n for n in dir(module) if not n.startswith("_")]
            self.problem(path, line, f"{label}: cannot import {dotted!r}: module {module_name!r} has no "
                         f"{class_name!r}{suggest(class_name, public)}{hidden_note(module_name)}")
        elif not (isinstance(cls, type) and issubclass(cls, base)):
            kind = "a class" if isinstance(cls, type) else f"a {type(cls).__name__}"
            self.problem(path, line, f"{label}: {dotted!r} is not a subclass of fsm.{base.__name__} (it is {kind})")
        elif base is Action and cls.execute is Action.execute:
            self.problem(path, line, f"{label}: {dotted!r} does not implement execute(context, obj)")
        elif base is Guard and cls.check is Guard.check:
            self.problem(path, line, f"{label}: {dotted!r} does not implement check(context, event_data)")
        else:
            return cls
        return None

    def check_keys(self, path: Path, raw: Located, allowed: dict[str, tuple[Any, str]], label: str,
                   required_for: str | None = None) -> set[str]:
        """Report unknown keys, wrong types and missing required keys; return the keys whose
        value cannot be used (wrong type or missing)."""
        doubtful: set[str] = set()
        for key, value in raw.items():
            if key not in allowed:
                self.problem(path, raw.line_of(key), f"{label}: unknown key {short(key)}"
                             f"{suggest(str(key), allowed)}; allowed: {', '.join(allowed)}")
            elif value is not None and not schema.accepts(value, allowed[key][0]):
                self.problem(path, raw.line_of(key), f"{label}: {key!r} must be "
                             f"{schema.describe_type(allowed[key][0])}, got {self.shown(path, value)} "
                             f"({allowed[key][1]})"
                             + (_YAML_BOOLEANS if isinstance(value, bool) else ""))
                doubtful.add(key)
        for key in schema.REQUIRED.get(required_for or "", ()):
            if key not in doubtful and raw.get(key) in (None, ""):
                self.problem(path, raw.line_of(key), f"{label}: missing required key {key!r} "
                             f"({allowed[key][1]})")
                doubtful.add(key)
        return doubtful


def search_beside(path: Path) -> None:
    """Put the folder of a machines file first on ``sys.path``, so that the actions it
    names import from beside it: each imported file's folder too, not only the top one's.
    First, not merely on it: the current directory may hold a module of the same name
    (an ``actions.py`` beside ``fsm.yaml`` run from a checkout, which has our ``actions``)."""
    folder = str(path.resolve().parent)
    if sys.path[:1] != [folder]:
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
        check_packages()  # a config.py or sources.py there would now stand in for ours
