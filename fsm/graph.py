"""Machines as diagrams: Graphviz dot or Mermaid state diagrams."""

from __future__ import annotations

from .model import Action, Machine


def _label(action: Action | None) -> str:
    return action.name.rsplit(".", 1)[-1] if action else ""


def _state_notes(state) -> list[str]:
    notes = [f"{kind}/ {_label(a)}" for kind, a in
             (("entry", state.entry_action), ("do", state.do_action), ("exit", state.exit_action)) if a]
    if state.timeout:
        notes.append(f"timeout {state.timeout:g}s -> {state.timeout_event}")
    return notes


def to_dot(machine: Machine) -> str:
    lines = [f'digraph "{machine.name}" {{', "  rankdir=LR;", '  node [shape=box, style=rounded];',
             '  "__start" [shape=point];', f'  "__start" -> "{machine.initial}";']
    for state in machine.states.values():
        label = "\\n".join([state.name, *_state_notes(state)])
        shape = ", peripheries=2" if state.final else ""
        lines.append(f'  "{state.name}" [label="{label}"{shape}];')
        for t in state.transitions.values():
            edge = t.event + (f" / {_label(t.action)}" if t.action else "") + (" (local)" if t.local else "")
            lines.append(f'  "{state.name}" -> "{t.target}" [label="{edge}"];')
    lines.append("}")
    return "\n".join(lines)


def to_mermaid(machine: Machine) -> str:
    ids = {name: f"s{i}" for i, name in enumerate(machine.states)}
    lines = ["stateDiagram-v2", f"  [*] --> {ids[machine.initial]}"]
    for state in machine.states.values():
        lines.append(f'  state "{state.name}" as {ids[state.name]}')
        for note in _state_notes(state):
            lines.append(f"  {ids[state.name]} : {note}")
        for t in state.transitions.values():
            edge = t.event + (f" / {_label(t.action)}" if t.action else "") + (" (local)" if t.local else "")
            lines.append(f"  {ids[state.name]} --> {ids[t.target]} : {edge}")
        if state.final:
            lines.append(f"  {ids[state.name]} --> [*]")
    return "\n".join(lines)
