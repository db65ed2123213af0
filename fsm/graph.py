"""Machines as diagrams: Graphviz dot or Mermaid state diagrams."""

from __future__ import annotations

from .model import Action, Machine, State, Transition


def _label(action: Action | None) -> str:
    return action.name.rsplit(".", 1)[-1] if action else ""


def _state_notes(state: State) -> list[str]:
    notes = [f"{kind}/ {_label(a)}" for kind, a in
             (("entry", state.entry_action), ("do", state.do_action), ("exit", state.exit_action)) if a]
    if state.timeout:
        notes.append(f"timeout {state.timeout:g}s -> {state.timeout_event}")
    return notes


def _edge_label(transition: Transition) -> str:
    action = f" / {_label(transition.action)}" if transition.action else ""
    return transition.event + action + (" (local)" if transition.local else "")


def _dot(text: str) -> str:
    """Text inside a dot double-quoted string (names come from YAML and may hold quotes)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(machine: Machine) -> str:
    lines = [f'digraph "{_dot(machine.name)}" {{', "  rankdir=LR;", "  node [shape=box, style=rounded];",
             '  "__start" [shape=point];', f'  "__start" -> "{_dot(machine.initial)}";']
    for state in machine.states.values():
        label = _dot("\n".join([state.name, *_state_notes(state)]))
        shape = ", peripheries=2" if state.final else ""
        lines.append(f'  "{_dot(state.name)}" [label="{label}"{shape}];')
        for t in state.transitions.values():
            lines.append(f'  "{_dot(state.name)}" -> "{_dot(t.target)}" [label="{_dot(_edge_label(t))}"];')
    lines.append("}")
    return "\n".join(lines)


def _mermaid(text: str) -> str:
    """One line of Mermaid text: quotes become entity codes, newlines spaces."""
    return text.replace('"', "#quot;").replace("\n", " ")


def to_mermaid(machine: Machine) -> str:
    # Mermaid ids must be plain words; the real names go in `state "name" as id`.
    ids = {name: f"s{i}" for i, name in enumerate(machine.states)}
    lines = ["stateDiagram-v2", f"  [*] --> {ids[machine.initial]}"]
    for state in machine.states.values():
        lines.append(f'  state "{_mermaid(state.name)}" as {ids[state.name]}')
        for note in _state_notes(state):
            lines.append(f"  {ids[state.name]} : {_mermaid(note)}")
        for t in state.transitions.values():
            lines.append(f"  {ids[state.name]} --> {ids[t.target]} : {_mermaid(_edge_label(t))}")
        if state.final:
            lines.append(f"  {ids[state.name]} --> [*]")
    return "\n".join(lines)
