"""`fsm graph`: dot and Mermaid diagrams show every state, action and edge."""

from __future__ import annotations

import importlib
import logging
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsm.cli import main
from fsm.graph import to_dot, to_mermaid
from fsm.model import Action, Machine, State, Transition


class Noop(Action):
    def execute(self, context, obj):  # type: ignore[no-untyped-def]
        return None


@pytest.fixture(autouse=True)
def keep_fsm_logger() -> Iterator[None]:
    """`main` points the fsm logger at the (captured) stderr; put it back for later tests."""
    logger = logging.getLogger("fsm")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def machine_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    module = f"graph_acts_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent("""
        from fsm import Action

        class Charge(Action):
            def execute(self, context, obj):
                return "charged"

        class Greet(Action):
            def execute(self, context, obj):
                return None

        class Cleanup(Action):
            def execute(self, context, obj):
                return None

        class Refund(Action):
            def execute(self, context, obj):
                return None
    """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))  # also undoes the CLI's own sys.path additions
    importlib.invalidate_caches()
    path = tmp_path / "fsm.yaml"
    path.write_text(textwrap.dedent(f"""
        machines:
          - name: orders
            states:
              - name: new
                initial: true
                entry_action: {module}.Greet
                do_action: {{class: {module}.Charge, params: {{amount: 3}}}}
                exit_action: {module}.Cleanup
                transitions:
                  - {{event: charged, target: shipped, local: true}}
                  - {{event: cancel, target: cancelled, action: {module}.Refund}}
              - name: shipped
                timeout: 30
                transitions:
                  - {{event: timeout, target: cancelled}}
                  - {{event: delivered, target: done}}
              - {{name: cancelled, final: true}}
              - {{name: done, final: true}}
          - name: other
            states:
              - {{name: only, initial: true, final: true}}
    """), encoding="utf-8")
    return path


def graph(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["graph", str(path), *extra]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def test_dot_shows_states_actions_and_edges(machine_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = graph(machine_file, capsys, "--machine", "orders")
    assert out.startswith('digraph "orders" {')
    assert '"__start" -> "new";' in out
    assert '"new" [label="new\\nentry/ Greet\\ndo/ Charge\\nexit/ Cleanup"];' in out
    assert '"shipped" [label="shipped\\ntimeout 30s -> timeout"];' in out
    assert '"cancelled" [label="cancelled", peripheries=2];' in out
    assert '"new" -> "shipped" [label="charged (local)"];' in out
    assert '"new" -> "cancelled" [label="cancel / Refund"];' in out
    assert '"shipped" -> "done" [label="delivered"];' in out
    assert "other" not in out


def test_mermaid_shows_states_actions_and_edges(machine_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = graph(machine_file, capsys, "--format", "mermaid", "--machine", "orders")
    lines = out.splitlines()
    assert lines[:2] == ["stateDiagram-v2", "  [*] --> s0"]
    for line in ['  state "new" as s0', "  s0 : entry/ Greet", "  s0 : do/ Charge", "  s0 : exit/ Cleanup",
                 '  state "shipped" as s1', "  s1 : timeout 30s -> timeout", "  s0 --> s1 : charged (local)",
                 "  s0 --> s2 : cancel / Refund", "  s1 --> s3 : delivered", "  s2 --> [*]", "  s3 --> [*]"]:
        assert line in lines, line


def test_every_machine_is_drawn_when_none_is_named(machine_file: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = graph(machine_file, capsys)
    assert 'digraph "orders"' in out and 'digraph "other"' in out


def test_an_unknown_machine_lists_the_known_ones(machine_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(machine_file), "--machine", "nope"]) == 2
    assert "unknown machine 'nope'; defined: orders, other" in capsys.readouterr().err


def test_quotes_in_names_do_not_break_the_diagrams() -> None:
    odd = 'say "hi"'
    machine = Machine(name='m "1"', initial=odd, states={
        odd: State(name=odd, initial=True, do_action=Noop("x.Noop"),
                   transitions={'go "now"': Transition('go "now"', "end")}),
        "end": State(name="end", final=True)})
    dot = to_dot(machine)
    assert 'digraph "m \\"1\\"" {' in dot
    assert '"say \\"hi\\"" -> "end" [label="go \\"now\\""];' in dot
    mermaid = to_mermaid(machine)
    assert 'state "say #quot;hi#quot;" as s0' in mermaid
    assert "s0 --> s1 : go #quot;now#quot;" in mermaid
