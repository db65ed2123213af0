"""XState v5 machine configs (JSON), loaded unchanged into the one statechart model.

A machines file entry names the JSON and maps its named implementations to classes::

    - xstate: order.json
      actions: {addPizzaToItems: pizza.AddPizza}
      guards: {hasItems: pizza.HasItems}
      actors: {orderPizzaFromKitchen: pizza.OrderFromKitchen}

The JSON is read with the same located reader as YAML (JSON is YAML), so a problem is
reported as ``order.json:LINE``. What XState reads, this reads: ``id``, ``initial``
(a key, or ``{target, actions}``), ``states``, ``on``, ``entry``, ``exit``, ``always``,
``after`` (milliseconds), ``type: parallel|final|history``, ``history``, ``target`` (a
history's default), ``invoke`` (``src``, ``id``, ``onDone``, ``onError``), ``onDone``,
``guard``, ``reenter``, ``context``; ``description``, ``meta``, ``tags`` and ``output``
are accepted and ignored. Targets resolve as in XState: ``"x"`` and ``"x.y"`` from the
source's parent, ``".x"`` from the source, ``"#id"`` and ``"#id.x"`` by id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fsm.model import Action, Invoke, Machine, State, Transition

from .yamlsource import Located, LocatedList, plain

STATE_KEYS = {"id", "initial", "states", "on", "entry", "exit", "always", "after", "type", "history", "target",
              "invoke", "onDone", "description", "meta", "tags", "output", "context"}
ROOT_ONLY = {"context", "version", "predictableActionArguments", "schemas", "types"}
TRANSITION_KEYS = {"target", "actions", "guard", "reenter", "description", "meta"}
INVOKE_KEYS = {"src", "id", "onDone", "onError", "input", "systemId", "description"}

Problem = Callable[[int, str], None]
Make = Callable[[str, str, Any, int, str], Any]  # (kind, name, params, line, where) -> instance


@dataclass
class _Node:
    path: str
    raw: Located
    parent: _Node | None
    children: dict[str, _Node] = field(default_factory=dict)


class XStateBuilder:
    """One XState config -> a :class:`Machine`. ``make`` turns a named implementation
    into an instance (it reports unmapped names and import failures itself);
    ``problem(line, message)`` collects problems."""

    def __init__(self, doc: Located, name: str, make: Make, problem: Problem, options: dict[str, Any]):
        self.doc, self.name, self.make, self.problem, self.options = doc, name, make, problem, options
        self.ids: dict[str, _Node] = {}
        self.states: dict[str, State] = {}

    def build(self) -> Machine | None:
        root = _Node("", self.doc, None)
        self.check_keys(self.doc, STATE_KEYS | ROOT_ONLY, "the machine")
        self.walk(root)
        nodes = self.flatten(root)
        for node in nodes:
            if node.path:
                self.states[node.path] = self.state(node)
        top = self.state(root)
        kind = self.doc.get("type")
        initial = self.initial_of(root)
        if not self.states:
            self.problem(self.doc.line, "the machine has no `states`")
            return None
        if kind != "parallel" and initial is None:
            return None
        context = self.doc.get("context")
        if context is not None and not isinstance(context, dict):
            self.problem(self.doc.line_of("context"), "`context` must be an object")
            context = {}
        return Machine(name=self.name, states=self.states, initial=initial or next(iter(self.states)),
                       parallel=kind == "parallel", xstate=True, context=plain(context or {}), top=top,
                       **self.options)

    # -- structure --------------------------------------------------------------------

    def walk(self, node: _Node) -> None:
        own_id = node.raw.get("id")
        key = f"#{own_id}" if isinstance(own_id, str) else f"#{self.machine_id()}" + (
            f".{node.path}" if node.path else "")
        self.ids[key] = node
        states = node.raw.get("states")
        if states is None:
            return
        if not isinstance(states, Located):
            self.problem(node.raw.line_of("states"), f"{self.where(node)}: `states` must be an object")
            return
        for child_name, child_raw in states.items():
            where = f"state {child_name!r}"
            if not isinstance(child_raw, Located):
                self.problem(states.line_of(child_name), f"{where} must be an object")
                continue
            if "." in str(child_name) or "," in str(child_name) or str(child_name).startswith("#"):
                self.problem(states.line_of(child_name), f"{where}: a state key cannot hold '.', ',' or "
                             "start with '#'")
                continue
            child = _Node(f"{node.path}.{child_name}" if node.path else str(child_name), child_raw, node)
            node.children[str(child_name)] = child
            self.check_keys(child_raw, STATE_KEYS, self.where(child))
            self.walk(child)

    def machine_id(self) -> str:
        value = self.doc.get("id")
        return value if isinstance(value, str) else "(machine)"

    def flatten(self, node: _Node) -> list[_Node]:
        found = [node]
        for child in node.children.values():
            found += self.flatten(child)
        return found

    def initial_of(self, node: _Node) -> str | None:
        if not node.children or node.raw.get("type") == "parallel":
            return None
        initial = node.raw.get("initial")
        if isinstance(initial, Located):
            initial = initial.get("target")
        if not isinstance(initial, str) or initial not in node.children:
            if node.raw.get("type") not in ("final", "history"):
                shown = "missing" if initial is None else repr(initial)
                self.problem(node.raw.line_of("initial"), f"{self.where(node)}: `initial` is {shown}; it must "
                             f"name one of its states: {', '.join(node.children)}")
            return None
        return node.children[initial].path

    def state(self, node: _Node) -> State:
        raw, kind = node.raw, node.raw.get("type")
        if kind not in (None, "atomic", "compound", "parallel", "final", "history"):
            self.problem(raw.line_of("type"), f"{self.where(node)}: unknown `type` {kind!r}; use parallel, "
                         "final or history")
        history = None
        if kind == "history":
            flavour = raw.get("history", "shallow")
            history = "deep" if flavour == "deep" else "shallow"
        on = list(self.transitions_of(node))
        if kind == "history" and raw.get("target") is not None:  # a path from the history's parent
            on = [self.transition(node, "", raw.get("target"), raw.line_of("target"))]
        invoke = self.invoke_of(node, on)
        return State(name=node.path.rsplit(".", 1)[-1] if node.path else self.name, path=node.path,
                     parent=node.parent.path or None if node.parent else None,
                     children=tuple(c.path for c in node.children.values()) if kind != "history" else (),
                     parallel=kind == "parallel", final=kind == "final", history=history,
                     initial_child=self.initial_of(node) if node.path else None,
                     on=tuple(t for t in on if t is not None),
                     entry=self.actions(raw.get("entry"), raw.line_of("entry"), self.where(node) + " entry"),
                     exit=self.actions(raw.get("exit"), raw.line_of("exit"), self.where(node) + " exit"),
                     invoke=invoke)

    # -- transitions ------------------------------------------------------------------

    def transitions_of(self, node: _Node) -> list[Transition | None]:
        raw, found = node.raw, []
        on = raw.get("on")
        if on is not None:
            if isinstance(on, Located):
                for event, spec in on.items():
                    found += self.specs(node, str(event), spec, on.line_of(event))
            else:
                self.problem(raw.line_of("on"), f"{self.where(node)}: `on` must be an object of events")
        if raw.get("always") is not None:
            found += self.specs(node, "", raw["always"], raw.line_of("always"))
        after = raw.get("after")
        if isinstance(after, Located):
            for delay, spec in after.items():
                try:
                    ms = float(delay)
                except (TypeError, ValueError):
                    self.problem(after.line_of(delay), f"{self.where(node)}: `after` delay {delay!r} must be a "
                                 "number of milliseconds (named delays are not supported)")
                    continue
                event = f"xstate.after.{delay}.{node.path}"
                found += [None if t is None else _with(t, delay=ms / 1000) for t in
                          self.specs(node, event, spec, after.line_of(delay))]
        if raw.get("onDone") is not None and node.path:
            found += self.specs(node, f"xstate.done.state.{node.path}", raw["onDone"], raw.line_of("onDone"))
        return found

    def specs(self, node: _Node, event: str, spec: Any, line: int) -> list[Transition | None]:
        items = spec if isinstance(spec, list) else [spec]
        return [self.transition(node, event, item, getattr(spec, "item_lines", [line] * len(items))[i]
                                if isinstance(spec, LocatedList) else line)
                for i, item in enumerate(items)]

    def transition(self, node: _Node, event: str, spec: Any, line: int) -> Transition | None:
        where = f"{self.where(node)}, transition on {event or 'always'!r}"
        if spec is None or isinstance(spec, (str, list)):
            spec = {"target": spec}
        elif not isinstance(spec, dict):
            self.problem(line, f"{where}: a transition must be a target string or an object")
            return None
        if isinstance(spec, Located):
            self.check_keys(spec, TRANSITION_KEYS, where)
            line = spec.line
        targets = spec.get("target")
        targets = [] if targets is None else targets if isinstance(targets, list) else [targets]
        resolved = []
        for target in targets:
            path = self.resolve(node, target, line, where)
            if path is None:
                return None
            resolved.append(path)
        guard = spec.get("guard")
        guard = self.implementation("guard", guard, line, where) if guard is not None else None
        return Transition(event, resolved[0] if resolved else None, guard=guard,
                          reenter=bool(spec.get("reenter", False)), targets=tuple(resolved),
                          actions=self.actions(spec.get("actions"), line, where), source=node.path)

    def resolve(self, node: _Node, target: Any, line: int, where: str) -> str | None:
        if not isinstance(target, str) or not target:
            self.problem(line, f"{where}: a target must be a non-empty string")
            return None
        if target.startswith("#"):
            head, _, rest = target.partition(".")
            base = self.ids.get(head)
            found = self.descend(base, rest) if base is not None else None
            # an id may itself hold dots (the default ids do): try the longest known prefix
            if found is None:
                for key, candidate in self.ids.items():
                    if target == key or target.startswith(key + "."):
                        found = self.descend(candidate, target[len(key) + 1:])
                        if found is not None:
                            break
        elif target.startswith("."):
            found = self.descend(node, target[1:])
        else:
            found = self.descend(node.parent, target) if node.parent is not None else None
        if found is None or not found.path:
            self.problem(line, f"{where}: unknown target {target!r}")
            return None
        return found.path

    @staticmethod
    def descend(node: _Node | None, path: str) -> _Node | None:
        for part in path.split(".") if path else ():
            if node is None:
                return None
            node = node.children.get(part)
        return node

    def invoke_of(self, node: _Node, on: list[Transition | None]) -> Invoke | None:
        spec = node.raw.get("invoke")
        if spec is None:
            return None
        if isinstance(spec, list):
            if len(spec) != 1:
                self.problem(node.raw.line_of("invoke"), f"{self.where(node)}: one `invoke` per state is supported")
                return None
            spec = spec[0]
        if not isinstance(spec, Located) or not isinstance(spec.get("src"), str):
            self.problem(node.raw.line_of("invoke"), f"{self.where(node)}: `invoke` needs `src`, the actor's name")
            return None
        self.check_keys(spec, INVOKE_KEYS, f"{self.where(node)} invoke")
        actor = self.make("actor", spec["src"], {}, spec.line_of("src"), f"{self.where(node)} invoke")
        invoke_id = spec.get("id") if isinstance(spec.get("id"), str) else f"0.{self.machine_id()}.{node.path}"
        invoke = Invoke(invoke_id, actor) if actor is not None else None
        for key, event in (("onDone", f"xstate.done.actor.{invoke_id}"), ("onError", f"xstate.error.actor.{invoke_id}")):
            if spec.get(key) is not None:
                on += self.specs(node, event, spec[key], spec.line_of(key))
        return invoke

    # -- implementations --------------------------------------------------------------

    def actions(self, spec: Any, line: int, where: str) -> tuple[Action, ...]:
        if spec is None:
            return ()
        items = spec if isinstance(spec, list) else [spec]
        found = [self.implementation("action", item, line, where) for item in items]
        return tuple(a for a in found if a is not None)

    def implementation(self, kind: str, spec: Any, line: int, where: str) -> Any:
        params: Any = {}
        if isinstance(spec, dict):
            line = getattr(spec, "line", line)
            params, spec = spec.get("params") or {}, spec.get("type")
        if not isinstance(spec, str):
            self.problem(line, f"{where}: a {kind} must be a name or {{type, params}}")
            return None
        return self.make(kind, spec, plain(params), line, where)

    def check_keys(self, raw: Located, allowed: set[str], where: str) -> None:
        for key in raw:
            if key not in allowed:
                self.problem(raw.line_of(key), f"{where}: unknown key {key!r}; XState keys here: "
                             f"{', '.join(sorted(allowed))}")

    def where(self, node: _Node) -> str:
        return f"state {node.path!r}" if node.path else "the machine"


def _with(transition: Transition, **changes: Any) -> Transition:
    from dataclasses import replace

    return replace(transition, **changes)
