"""The entries of a ``machines:`` list, and the files they name: ``- import: file.yaml``
(its machines are added), ``- xstate: machine.json`` (:mod:`config.xstate`) and ``- asl:
flow.asl.json`` (:mod:`config.asl`); any other entry is a machine, which the loader builds.

A named file is looked for beside the file naming it, then in the current directory, and
read only inside the allowed folders: the top file's and settings ``import_roots``.

:class:`EntryLoader` is mixed into :class:`config.loader._Loader`, whose state and
reporting it uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsm.errors import InvalidDefinition
from fsm.model import Action, Guard

from . import schema
from .messages import short
from .settings import import_roots
from .yamlsource import Located, LocatedList, plain

if TYPE_CHECKING:
    from fsm.model import Machine

    from .loader import Definitions


class EntryLoader:
    """The entry kinds and file resolution of :class:`config.loader._Loader`."""

    # The loader's state, set in its __init__.
    result: Definitions
    _loaded: set[Path]
    _settings_file: str | None
    _environ: Mapping[str, str]
    _top: Path | None  # the file the user named; every other one is imported
    _top_settings: Mapping[str, Any]
    _roots: list[Path] | None

    if TYPE_CHECKING:  # the loader's own methods, used here
        def problem(self, where: Path, line: int, message: str) -> None: ...
        def shown(self, path: Path, value: Any) -> str: ...
        def check_keys(self, path: Path, raw: Located, allowed: dict[str, tuple[Any, str]], label: str,
                       required_for: str | None = None) -> set[str]: ...
        def parse(self, path: Path, text: str) -> Located | None: ...
        def load(self, path: Path, stack: tuple[Path, ...], at: tuple[Path, int] | None = None) -> None: ...
        def load_machine(self, path: Path, raw: Located) -> None: ...
        def machine_options(self, path: Path, raw: Located, label: str) -> dict[str, Any]: ...
        def instance(self, path: Path, line: int, spec: str, params: dict[str, Any], where: str,
                     base: type = Action) -> Any: ...
        def register(self, path: Path, raw: Located, name: str, version: str = "") -> bool: ...
        def add(self, machine: Machine) -> None: ...

    def load_entries(self, path: Path, entries: LocatedList, stack: tuple[Path, ...]) -> None:
        for index, item in enumerate(entries):
            if isinstance(item, Located) and "import" in item:
                if not self.check_keys(path, item, schema.IMPORT, "import", "import"):
                    self.load_import(path, item, stack)
            elif isinstance(item, Located) and "xstate" in item:
                self.load_xstate(path, item)
            elif isinstance(item, Located) and "asl" in item:
                self.load_asl(path, item)
            elif isinstance(item, Located):
                self.load_machine(path, item)
            else:
                self.problem(path, entries.line_at(index), "each entry of `machines:` must be a machine "
                             f"or `- import: file.yaml`, got {self.shown(path, item)}")

    def load_import(self, path: Path, item: Located, stack: tuple[Path, ...]) -> None:
        found = self.find(path, item, "import", stack)
        if found is not None and found.resolve() not in self._loaded:  # a diamond is loaded once
            self.load(found, stack, at=(path, item.line_of("import")))

    def find(self, path: Path, item: Located, key: str, stack: tuple[Path, ...] = ()) -> Path | None:
        """The file ``item[key]`` names, resolved beside the naming file, then (as
        aws-lambda-fsm did) in the current directory; a candidate outside the allowed
        folders is neither read nor even looked for, so a message cannot tell whether
        such a file exists."""
        name, line = item[key], item.line_of(key)
        label = f"{key} {short(name)}"
        looked: list[Path] = []
        outside: list[Path] = []
        target = None
        try:
            beside, in_cwd = path.parent / name, Path(name)
            for candidate in (beside, in_cwd) if beside.absolute() != in_cwd.absolute() else (beside,):
                if not self.allowed(candidate.resolve(), candidate is in_cwd, path, line, label):
                    outside.append(candidate.resolve())
                elif candidate.exists():
                    target = candidate
                    break
                else:
                    looked.append(candidate.absolute())
            resolved = target.resolve() if target else None
        except (OSError, ValueError) as exc:  # a NUL byte, a name too long for the system
            self.problem(path, line, f"{label}: not a usable file name ({type(exc).__name__})")
            return None
        if target is None or resolved is None:
            self.problem(path, line, _not_imported(label, looked, outside, self.readable_folders()))
            return None
        if resolved in stack:
            chain = " -> ".join(str(p) for p in (*stack[stack.index(resolved):], resolved))
            self.problem(path, line, f"{label} makes a cycle: {chain}")
            return None
        return target

    def read_entry(self, path: Path, item: Located, key: str) -> tuple[Path, Located] | None:
        """The JSON file an ``xstate:`` or ``asl:`` entry names, found like an import,
        read and parsed with its lines (``None``: the problem is reported)."""
        found = self.find(path, item, key)
        if found is None:
            return None
        try:
            text = found.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problem(path, item.line_of(key), f"cannot read {str(found)!r}: {type(exc).__name__}")
            return None
        self.result.files.append(str(found))
        doc = self.parse(found, text)
        return None if doc is None else (found, doc)

    def load_xstate(self, path: Path, item: Located) -> None:
        """``- xstate: order.json`` with ``actions:``, ``guards:`` and ``actors:`` mapping
        the names the JSON uses to classes (see :mod:`config.xstate`)."""
        from .xstate import XStateBuilder

        if self.check_keys(path, item, schema.XSTATE, "xstate entry", "xstate") & {"xstate"}:
            return
        read = self.read_entry(path, item, "xstate")
        if read is None:
            return
        found, doc = read
        name = item.get("name") or (doc.get("id") if isinstance(doc.get("id"), str) else None) or found.stem
        label = f"xstate machine {name!r}"
        tables = {kind: item.get(kind + "s") if isinstance(item.get(kind + "s"), dict) else {}
                  for kind in ("action", "guard", "actor")}

        def make(kind: str, impl: str, params: Any, line: int, where: str) -> Any:
            spec = tables[kind].get(impl)
            if spec is None:
                self.problem(found, line, f"{label}, {where}: {kind} {impl!r} is not mapped to a class; add "
                             f"`{impl}: module.Class` under `{kind}s:` in the entry at {path}:{item.line}")
                return None
            at = tables[kind].line_of(impl) if isinstance(tables[kind], Located) else item.line
            if isinstance(spec, dict):
                params, spec = {**plain(spec.get("params") or {}), **params}, spec.get("class")
            if not isinstance(spec, str):
                self.problem(path, at, f"{label}: {kind} {impl!r} must map to `module.Class`")
                return None
            return self.instance(path, at, spec, params, f"{label}, {kind} {impl!r}",
                                 Guard if kind == "guard" else Action)

        def problem(line: int, message: str) -> None:
            self.problem(found, line, f"{label}: {message}")

        options = self.machine_options(path, item, label)
        machine = XStateBuilder(doc, name, make, problem, options).build()
        if machine is not None and self.register(path, item, name, options["version"]):
            self.add(replace(machine, source=f"{found}:{doc.line}"))

    def load_asl(self, path: Path, item: Located) -> None:
        """``- asl: flow.asl.json`` with ``resources:`` mapping Task resources to classes
        (see :mod:`config.asl`)."""
        if self.check_keys(path, item, schema.ASL, "asl entry", "asl") & {"asl"}:
            return
        read = self.read_entry(path, item, "asl")
        if read is None:
            return
        found, doc = read
        stem = found.stem.removesuffix(".asl")
        name = item.get("name") or stem
        table = item.get("resources") if isinstance(item.get("resources"), Located) else Located()
        resources: dict[str, Any] = {}
        for key, spec in table.items():
            where, params = f"asl machine {name!r}, resource {str(key)!r}", {}
            if isinstance(spec, dict):
                params, spec = plain(spec.get("params") or {}), spec.get("class")
            if not isinstance(spec, str):
                self.problem(path, table.line_of(key), f"{where} must map to `module.Class` or {{class, params}}")
                resources[str(key)] = None
                continue
            resources[str(key)] = self.instance(path, table.line_of(key), spec, params, where)
        self.add_asl(found, doc, item, name, resources, path)

    def add_asl(self, found: Path, doc: Located, item: Located, name: str, resources: dict[str, Any],
                path: Path) -> None:
        """Compile the definition in ``found``; register its machine and the generated
        ones (branches, iterators)."""
        from .asl import compile_definition

        label = f"asl machine {name!r}"
        options = self.machine_options(path, item, label) if item is not doc else {"version": ""}

        def warn(line: int, message: str) -> None:
            self.result.warnings.append(f"{found}:{line}: warning: {message}")

        machines = compile_definition(doc, name, resources, lambda line, message: self.problem(found, line, message),
                                      warn, {"version": options["version"]})
        for machine in machines:
            if self.register(path, item, machine.name, options["version"]):
                self.add(replace(machine, source=f"{found}:{doc.line}"))

    def allowed(self, resolved: Path, in_cwd: bool, path: Path, line: int, label: str) -> bool:
        """Whether an import may read ``resolved`` (symlinks already followed): inside the
        top file's folder or ``import_roots``. The current-directory fallback may also read
        inside the current directory when that holds the top file: aws-lambda-fsm's case of
        running from a project's root, with the machines file in a subfolder."""
        top, cwd = self.top_folder(), Path.cwd().resolve()
        if resolved.is_relative_to(top) or (in_cwd and top.is_relative_to(cwd) and resolved.is_relative_to(cwd)):
            return True
        return any(resolved.is_relative_to(root) for root in self.allowed_roots(path, line, label))

    def top_folder(self) -> Path:
        """The folder the top file was named in (a symlinked top file does not move it)."""
        return (self._top or Path("fsm.yaml")).absolute().parent.resolve()

    def readable_folders(self) -> list[str]:
        top, cwd = self.top_folder(), Path.cwd().resolve()
        found = [f"{top} (the top file's)"]
        if top.is_relative_to(cwd) and top != cwd:
            found.append(f"{cwd} (the current directory, for names relative to it)")
        return found + [str(root) for root in self._roots or []]

    def allowed_roots(self, path: Path, line: int, label: str) -> list[Path]:
        """``import_roots`` from the settings layers, read once, and only when an import
        leaves the top file's folder: only then can a broken settings file stop the load."""
        if self._roots is None:
            try:
                self._roots = import_roots(self._top_settings, self._top or path, self._settings_file, self._environ)
            except InvalidDefinition as exc:
                self._roots = []
                self.problem(path, line, f"{label}: cannot read settings `import_roots`: {exc}")
        return self._roots


def _not_imported(label: str, looked: list[Path], outside: list[Path], folders: list[str]) -> str:
    if outside and not looked:
        return (f"{label}: {outside[0]} is outside the folders imports may read ({', '.join(folders)}); "
                "to allow it, add its folder to settings `import_roots` or FSM_IMPORT_ROOTS")
    return (f"{label}: file not found (looked for " + " and ".join(repr(str(p)) for p in looked)
            + (f"; not looked for {', '.join(repr(str(p)) for p in outside)}, outside the folders imports "
               "may read" if outside else "") + ")")
