"""Machines as diagrams: Graphviz dot or Mermaid state diagrams.

A flat machine is one box per state. A statechart draws each compound state as a box
around its children (dot: a ``cluster`` subgraph, Mermaid: ``state X { ... }``) with
its own initial marker, each parallel state as a box of dashed regions (Mermaid: regions
separated by ``--``), history states as ``H`` / ``H*``. Mermaid cannot draw an edge
between states deep in two different boxes: such an edge ends at the box around its
target and its label names the state, ``LIGHTS (to lamp.lit)``.

Edges read ``EVENT [Guard] / Action``; eventless ones ``always``, delayed ones ``after
2s``, ``done`` ones ``done``. One that leaves its source active is marked ``(internal)``;
a targetless one is a self-loop, or a line in the label of a box (as are a box's internal
transitions to itself).
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import Action, Machine, State, Transition


def _label(action: Action | None) -> str:
    return action.name.rsplit(".", 1)[-1] if action else ""


def _names(actions: Iterable[Action]) -> str:
    return ", ".join(_label(a) for a in actions)


def _state_notes(state: State) -> list[str]:
    notes = [f"{kind}/ {_names(actions)}" for kind, actions in
             (("entry", state.entry), ("do", (state.do_action,) if state.do_action else ()), ("exit", state.exit))
             if actions]
    if state.invoke is not None:
        notes.append(f"invoke/ {_label(state.invoke.actor)} ({state.invoke.id})")
    if state.spawn is not None:
        limit = f", {state.spawn.max_concurrency} at once" if state.spawn.max_concurrency else ""
        notes.append(f"{'invoke' if state.spawn.single else 'children'}/ {', '.join(state.spawn.machines)}{limit}")
    if state.timeout:
        notes.append(f"timeout {state.timeout:g}s -> {state.timeout_event}")
    return notes


def _trigger(transition: Transition) -> str:
    """The event as a reader knows it: not the internal names of eventless, delayed and
    ``done`` transitions, nor an invoked actor's ``done`` / ``error`` events."""
    event = transition.event
    if event == "":
        return "always"
    if transition.delay is not None:
        return f"after {transition.delay:g}s"
    if event.startswith("xstate.done.state."):
        return "done"
    for prefix, shown in (("xstate.done.actor.", "done"), ("xstate.error.actor.", "error")):
        if event.startswith(prefix):
            return f"{shown} {event[len(prefix):]}"
    return event


class _Tree:
    """Where each state sits: the structure questions the diagrams ask."""

    def __init__(self, machine: Machine):
        self.machine = machine
        self.states = machine.states
        self.nested = machine.parallel or any(s.parent is not None or s.children for s in self.states.values())
        top = machine.top
        self.top = top if top is not None and (top.on or top.entry or top.exit) else None
        self._children: dict[str | None, list[State]] = {}
        for state in self.states.values():
            self._children.setdefault(state.parent, []).append(state)

    def children(self, path: str | None) -> list[State]:
        """A state's children (``None``: the top-level states), in document order."""
        return self._children.get(path, [])

    def boxed(self, path: str) -> bool:
        return bool(self.states[path].children)

    def within(self, path: str | None, ancestor: str) -> bool:
        """``path`` is ``ancestor`` or lies inside it."""
        while path is not None:
            if path == ancestor:
                return True
            path = self.states[path].parent if path in self.states else None
        return False

    def region(self, state: State) -> bool:
        """A region of a parallel state (or of a parallel machine)."""
        if state.history:
            return False
        return self.machine.parallel if state.parent is None else self.states[state.parent].parallel

    def internal(self, transition: Transition) -> bool:
        """The source stays active: targetless, or not re-entering and aimed at itself or inside."""
        if not transition.targets:
            return True
        return not transition.reenter and bool(transition.source) and all(
            self.within(t, transition.source) for t in transition.targets)

    def edge_label(self, transition: Transition) -> str:
        guard = f" [{_label(transition.guard)}]" if transition.guard is not None else ""
        action = f" / {_names(transition.actions)}" if transition.actions else ""
        return (_trigger(transition) + guard + action + (" (local)" if transition.local else "")
                + (" (internal)" if self.internal(transition) else ""))

    def initial_targets(self) -> list[str]:
        if self.machine.parallel:
            return [s.path for s in self.children(None) if not s.history]
        return [self.machine.initial]

    def chain(self, path: str) -> list[str]:
        """``path`` and its ancestors, outermost first."""
        found: list[str] = []
        current: str | None = path
        while current is not None:
            found.append(current)
            current = self.states[current].parent
        return found[::-1]

    def lifted(self, source: str, target: str) -> str:
        """Where a Mermaid edge from ``source`` to ``target`` ends. Mermaid cannot lay out
        an edge between states nested in two different boxes (its documentation says so,
        and the boxes come apart): when neither end is a child of the innermost box holding
        both, the edge ends at the box holding the target, one level down from there."""
        s, t = self.chain(source), self.chain(target)
        common = 0
        while common < min(len(s), len(t)) and s[common] == t[common]:
            common += 1
        if common in (len(s), len(t)) or s[common] == source or t[common] == target:
            return target
        return t[common]

    def initial_child(self, state: State) -> str:
        return state.initial_child or state.children[0]

    def noted(self, state: State, transition: Transition) -> bool:
        """A box lists the transitions that stay inside it without leaving it (targetless,
        or internal to itself: UML's internal transitions) rather than draw a loop on its
        border."""
        return (bool(state.children) or state is self.top) and self.internal(transition) and all(
            t == state.path for t in transition.targets)

    def transitions(self, state: State) -> list[tuple[Transition, str]]:
        """(transition, target path) per drawn edge: one per target; a targetless one
        loops on its source, unless its source is a box, which notes it."""
        return [(t, target) for t in state.on if not self.noted(state, t)
                for target in (t.targets or (state.path,))]

    def notes(self, state: State) -> list[str]:
        """The state's actions and timeout, and the transitions a box notes."""
        return _state_notes(state) + [self.edge_label(t) for t in state.on if self.noted(state, t)]


# -- Graphviz dot ---------------------------------------------------------------------


def _dot(text: str) -> str:
    """Text inside a dot double-quoted string (names come from YAML and may hold quotes)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _dot_left(lines: list[str]) -> str:
    """Lines of a dot label, each left-justified (``\\l``), as a cluster's label sits left."""
    return "".join(_dot(line) + "\\l" for line in lines)


def _cluster(path: str) -> str:
    return _dot(f"cluster_{path}")


def _anchor(tree: _Tree, path: str) -> str:
    """The node edges to and from a boxed state attach to (clipped at its box): a
    compound state's initial marker, a parallel state's invisible point."""
    return f"__start:{path}" if tree.states[path].compound else f"__regions:{path}"


def _dot_node(tree: _Tree, state: State) -> str:
    if state.history:
        return f'"{_dot(state.path)}" [label="{"H*" if state.history == "deep" else "H"}", shape=circle];'
    label = _dot("\n".join([state.name, *_state_notes(state)]))
    extra = ", peripheries=2" if state.final else ""
    if tree.region(state):
        extra += ', style="rounded,dashed"'
    return f'"{_dot(state.path)}" [label="{label}"{extra}];'


def _dot_box(tree: _Tree, state: State, indent: str, lines: list[str]) -> None:
    if not tree.boxed(state.path):
        lines.append(indent + _dot_node(tree, state))
        return
    inner = indent + "  "
    name = f"{state.name} (parallel)" if state.parallel else state.name
    style = "rounded,dashed" if tree.region(state) else "rounded"
    lines.append(f'{indent}subgraph "{_cluster(state.path)}" {{')
    lines.append(f'{inner}label="{_dot_left([name, *tree.notes(state)])}";')
    lines.append(f'{inner}labeljust=l; style="{style}";')
    anchor = _dot(_anchor(tree, state.path))
    if state.compound:
        lines.append(f'{inner}"{anchor}" [shape=point];')
    else:
        lines.append(f'{inner}"{anchor}" [shape=point, style=invis];')
    for child in tree.children(state.path):
        _dot_box(tree, child, inner, lines)
    lines.append(f"{indent}}}")


def _dot_edge(tree: _Tree, source: str | None, target: str, attrs: list[str]) -> str:
    """An edge between two states (``source`` ``None``: the machine's start point, a
    path starting with ``__``: a given node); a boxed end attaches to its anchor and is
    clipped at its box, unless the other end lies inside that box."""
    tail = source if source is not None else "__start"
    head = target
    if source in tree.states and tree.boxed(source):
        tail = _anchor(tree, source)
        if not tree.within(target, source):
            attrs = [*attrs, f'ltail="{_cluster(source)}"']
    if tree.boxed(target):
        head = _anchor(tree, target)
        if source is None or source not in tree.states or not tree.within(source, target):
            attrs = [*attrs, f'lhead="{_cluster(target)}"']
    shown = f" [{', '.join(attrs)}]" if attrs else ""
    return f'"{_dot(tail)}" -> "{_dot(head)}"{shown};'


def _dot_edges(tree: _Tree, state: State) -> list[str]:
    if state.history:  # its default: where it goes when nothing was recorded
        return ["  " + _dot_edge(tree, state.path, target, ["style=dashed"])
                for t in state.on for target in t.targets]
    return ["  " + _dot_edge(tree, state.path, target, [f'label="{_dot(tree.edge_label(t))}"'])
            for t, target in tree.transitions(state)]


def to_dot(machine: Machine) -> str:
    tree = _Tree(machine)
    lines = [f'digraph "{_dot(machine.name)}" {{', "  rankdir=LR;"]
    if tree.nested:
        # compound: edges clipped at cluster borders (lhead/ltail); newrank: dot 2.x
        # fails ("trouble in init_rank") on some such edges between nested clusters without it
        lines.append("  compound=true; newrank=true;")
    lines += ["  node [shape=box, style=rounded];", '  "__start" [shape=point];']
    lines += ["  " + _dot_edge(tree, None, target, []) for target in tree.initial_targets()]
    if not tree.nested:
        for state in machine.states.values():
            lines.append("  " + _dot_node(tree, state))
            lines += _dot_edges(tree, state)
    else:
        for state in tree.children(None):
            _dot_box(tree, state, "  ", lines)
        for state in machine.states.values():
            if state.compound:
                lines.append("  " + _dot_edge(tree, _anchor(tree, state.path), tree.initial_child(state), []))
            lines += _dot_edges(tree, state)
    if tree.top is not None:
        top = tree.top
        label = _dot("\n".join([f"{machine.name} (any state)", *tree.notes(top)]))
        lines.append(f'  "__machine" [shape=note, label="{label}"];')
        lines += ["  " + _dot_edge(tree, "__machine", target, [f'label="{_dot(tree.edge_label(t))}"'])
                  for t in top.on for target in t.targets]
    lines.append("}")
    return "\n".join(lines)


# -- Mermaid --------------------------------------------------------------------------


def _mermaid(text: str) -> str:
    """One line of Mermaid text: quotes become entity codes, newlines spaces."""
    return text.replace('"', "#quot;").replace("\n", " ")


def to_mermaid(machine: Machine) -> str:
    # Mermaid ids must be plain words; the real names go in `state "name" as id`.
    tree = _Tree(machine)
    ids = {name: f"s{i}" for i, name in enumerate(machine.states)}
    lines = ["stateDiagram-v2"] + [f"  [*] --> {ids[t]}" for t in tree.initial_targets()]
    # Mermaid makes a state the child of the block an edge naming it is written in, so
    # an edge goes inside a block only between two children of it (and not across the
    # regions of a parallel state); every other edge comes after the blocks, at the top.
    # An edge between states deep in two different boxes ends at the target's box (see
    # _Tree.lifted), its label naming the state inside.
    across: list[str] = []

    def edges(state: State, indent: str) -> list[str]:
        found = []
        for t, target in tree.transitions(state):
            drawn = tree.lifted(state.path, target)
            label = "" if state.history else tree.edge_label(t)
            if drawn != target:
                label += f" (to {target[len(drawn) + 1:]})"
            line = f"{ids[state.path]} --> {ids[drawn]}" + (f" : {_mermaid(label)}" if label else "")
            sibling = tree.states[drawn].parent == state.parent
            if sibling and (state.parent is None or not tree.states[state.parent].parallel):
                found.append(indent + line)
            else:
                across.append("  " + line)
        return found

    def block(state: State, indent: str) -> None:
        sid = ids[state.path]
        name = ("H*" if state.history == "deep" else "H") if state.history else state.name
        lines.append(f'{indent}state "{_mermaid(name)}" as {sid}')
        for note in tree.notes(state):
            lines.append(f"{indent}{sid} : {_mermaid(note)}")
        if state.children:
            inner = indent + "  "
            lines.append(f"{indent}state {sid} {{")
            if state.compound:
                lines.append(f"{inner}[*] --> {ids[tree.initial_child(state)]}")
            regions = 0
            for child in tree.children(state.path):
                if state.parallel and not child.history:
                    if regions:
                        lines.append(f"{inner}--")
                    regions += 1
                block(child, inner)
            lines.append(f"{indent}}}")
        lines.extend(edges(state, indent))
        if state.final:
            lines.append(f"{indent}{sid} --> [*]")

    for state in tree.children(None):
        block(state, "  ")
    if tree.top is not None:
        lines.append(f'  state "{_mermaid(machine.name)} (any state)" as top')
        for note in tree.notes(tree.top):
            lines.append(f"  top : {_mermaid(note)}")
        for t in tree.top.on:
            for target in t.targets:
                lines.append(f"  top --> {ids[target]} : {_mermaid(tree.edge_label(t))}")
    return "\n".join(lines + across)
