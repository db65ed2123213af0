"""`fsm validate` and `fsm graph` as a user runs them: a real process, real files.

A bad file exits 2 and prints every problem as ``fsm COMMAND: FILE:LINE: message``, never a
traceback.
Lines a problem must be reported at carry a ``#!name`` marker in the YAML.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

ACTIONS = '''
from fsm import Action


class Work(Action):
    def execute(self, context, obj):
        return self.params.get("event")


class Plain:
    pass
'''


def fsm(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsm", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def markers(path: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for name in re.findall(r"#!(\w+)", line):
            found[name] = number
    return found


@pytest.fixture
def acts(tmp_path: Path) -> str:
    name = f"cli_acts_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(ACTIONS, encoding="utf-8")
    return name


def test_a_valid_file_prints_one_line_per_machine(tmp_path: Path, acts: str) -> None:
    write(tmp_path, "payments.yaml", f"""
    machines:
      - name: payments
        max_retries: 0
        states:
          - {{name: charge, initial: true, do_action: {acts}.Work, transitions: [{{event: ok, target: end}}]}}
          - {{name: end, final: true}}
    """)
    path = write(tmp_path, "fsm.yaml", f"""
    settings:
      store: [memory://]
    machines:
      - import: payments.yaml
      - name: orders
        max_retries: 3
        version: 1
        states:
          - name: new
            initial: true
            entry_action: {acts}.Work
            do_action: {{class: {acts}.Work, params: {{event: pay}}}}
            exit_action: {acts}.Work
            transitions:
              - {{target: paying, event: pay, action: {acts}.Work, local: true}}
          - name: paying
            timeout: 60
            transitions:
              - {{target: done, event: paid}}
              - {{target: done, event: timeout}}
          - {{name: done, final: true}}
    """)
    result = fsm(tmp_path, "validate", str(path))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"payments: 2 states, initial 'charge', 1 final, max_retries 0 ({tmp_path / 'payments.yaml'}:2)",
        f"orders: 3 states, initial 'new', 1 final, max_retries 3 ({path}:5)",
    ]


def test_every_problem_is_printed_and_the_exit_code_is_2(tmp_path: Path, acts: str) -> None:
    broken = write(tmp_path, "broken.yaml", """
    machines:
      - name: half
        states: [unclosed #!syntax
    """)
    loop = write(tmp_path, "loop.yaml", """
    machines:
      - import: fsm.yaml #!cycle
    """)
    main = write(tmp_path, "fsm.yaml", f"""
    machines:
      - import: broken.yaml
      - import: loop.yaml
      - import: absent.yaml #!missing_import
      - name: shop
        max_retries: "three" #!retries_type
        stats: [] #!unknown_key
        states:
          - name: new
            initial: true
            do_action: {acts}.Missing #!no_class
            exit_action: {acts}.Plain #!not_action
            entry_action: nowhere_{acts}.Work #!no_module
            transitions:
              - {{event: go, target: paid}}
              - {{event: go, target: new}} #!same_event
              - {{event: oops, target: nowhere}} #!unknown_target
          - name: paid
            initial: yes-please #!initial_type
            transitions: [{{event: ship, target: done}}]
          - name: done
            final: true
            transitions: [{{event: again, target: new}}] #!final_transitions
          - name: island #!unreachable
            transitions: [{{event: go, target: done}}]
          - {{name: done, final: true}} #!duplicate_state
      - name: empty
        states: [] #!no_initial
      - name: twins
        states:
          - {{name: one, initial: true, final: true}}
          - {{name: two, initial: true, final: true}} #!second_initial
      - name: shop #!duplicate_machine
        states:
          - {{name: only, initial: true, final: true}}
    """)
    expected = [
        (main, "missing_import", "import 'absent.yaml': file not found"),
        (main, "retries_type", "machine 'shop': 'max_retries' must be an integer, got 'three'"),
        (main, "unknown_key", "machine 'shop': unknown key 'stats' (did you mean 'states'?)"),
        (main, "no_class", f"machine 'shop', state 'new', do_action: cannot import '{acts}.Missing'"),
        (main, "not_action", f"machine 'shop', state 'new', exit_action: '{acts}.Plain' is not a subclass"),
        (main, "no_module", f"machine 'shop', state 'new', entry_action: cannot import 'nowhere_{acts}.Work': "
                            + f"ModuleNotFoundError: No module named 'nowhere_{acts}'"),
        (main, "same_event", "machine 'shop', state 'new': two transitions on event 'go'"),
        (main, "unknown_target", "machine 'shop', state 'new', transition on 'oops': unknown target state"),
        (main, "initial_type", "machine 'shop', state 'paid': 'initial' must be true or false, got 'yes-please'"),
        (main, "final_transitions", "machine 'shop', state 'done': a final state cannot have transitions"),
        (main, "unreachable", "machine 'shop', state 'island': unreachable from the initial state 'new'"),
        (main, "duplicate_state", "machine 'shop': duplicate state name 'done'"),
        (main, "no_initial", "machine 'empty': no initial state"),
        (main, "second_initial", "machine 'twins': several initial states ('one', 'two')"),
        (main, "duplicate_machine", "duplicate machine name 'shop'"),
        (broken, "syntax", "YAML syntax error: "),
        (loop, "cycle", f"import 'fsm.yaml' makes a cycle: {main} -> {loop} -> {main}"),
    ]
    result = fsm(tmp_path, "validate", "fsm.yaml")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    printed = result.stderr.splitlines()
    assert len(printed) == len(expected), result.stderr
    for path, marker, message in expected:
        relative = path.relative_to(tmp_path)
        prefix = f"fsm validate: {relative}:{markers(path)[marker]}: {message}"
        assert any(line.startswith(prefix) for line in printed), f"{prefix!r} not in:\n{result.stderr}"


def test_a_yaml_syntax_error_in_the_given_file(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:\n  - name: m\n    states:\n\t- name: a\n")
    result = fsm(tmp_path, "validate", str(path))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"fsm validate: {path}:4: YAML syntax error: ")
    assert "Traceback" not in result.stderr


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = fsm(tmp_path, "validate", "nope.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == "fsm validate: config file 'nope.yaml' not found (give one, or set FSM_CONFIG)"


def test_graph_as_a_command(tmp_path: Path, acts: str) -> None:
    path = write(tmp_path, "fsm.yaml", f"""
    machines:
      - name: m
        states:
          - {{name: a, initial: true, do_action: {acts}.Work, transitions: [{{event: go, target: b}}]}}
          - {{name: b, final: true}}
    """)
    result = fsm(tmp_path, "graph", str(path), "--format", "mermaid")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == ["stateDiagram-v2", "  [*] --> s0", '  state "a" as s0', "  s0 : do/ Work",
                                          "  s0 --> s1 : go", '  state "b" as s1', "  s1 --> [*]"]
