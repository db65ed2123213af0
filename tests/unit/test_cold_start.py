"""What the handler and the loader settle before the first event: the embedded bus is
refused inside Lambda, a backend lacking a capability the machines need is refused by
name, and every machines file's folder is searched for its own actions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from config.loader import load_text
from config.settings import Settings
from fsm.app.wiring import build, load_for_lambda
from fsm.errors import InvalidDefinition

FLAT = """\
machines:
  - name: m
    states:
      - {name: a, initial: true, transitions: [{event: go, target: b}]}
      - {name: b, final: true}
"""
WAITS = """\
machines:
  - name: reminder
    states:
      - name: waiting
        initial: true
        timeout: 3600
        transitions: [{event: timeout, target: reminded}]
      - {name: reminded, final: true}
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fsm.yaml"
    path.write_text(FLAT)
    for name in ("FSM_STREAM", "FSM_STORE", "FSM_SETTINGS", "FSM_ALLOW_EMBEDDED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FSM_CONFIG", str(path))
    monkeypatch.setenv("FSM_STORE", "memory://")
    return path


def test_in_lambda_without_a_stream_the_cold_start_says_which_setting_to_add(
        config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders")
    with pytest.raises(InvalidDefinition, match=r"no `stream:` is configured.*FSM_STREAM"):
        load_for_lambda()


def test_in_lambda_with_a_stream_the_cold_start_loads(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders")
    monkeypatch.setenv("FSM_STREAM", "arn:aws:sqs:us-east-1:123456789012:orders")
    application = load_for_lambda()
    assert not application.wiring.embedded
    assert application.wiring.routes.bus.url == "arn:aws:sqs:us-east-1:123456789012:orders"


def test_outside_lambda_the_embedded_bus_is_fine(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    assert load_for_lambda().wiring.embedded


def test_a_state_timeout_with_nowhere_durable_to_hold_it_is_refused_naming_both() -> None:
    definitions = load_text(WAITS, "waits.yaml")
    with pytest.raises(InvalidDefinition) as caught:
        build(definitions.machines, Settings(store=["memcached://127.0.0.1:1"]))
    message = str(caught.value)
    assert "state 'waiting'" in message and "timeout: 3600" in message
    assert "memcached://127.0.0.1:1 holds no timers" in message and "`retry:`" in message


@pytest.mark.parametrize("settings", [
    Settings(store=["memory://"]),                                   # everything in one process
    Settings(store=["sqlite:///:memory:"]),                          # timers in the same file
    Settings(store=["memcached://127.0.0.1:1"], retry=["arn:aws:dynamodb:us-east-1:1:table/t"]),
])
def test_a_state_timeout_with_a_timer_store_loads(settings: Settings) -> None:
    assert build(load_text(WAITS).machines, settings).routes.timers is not None


def test_an_imported_file_finds_its_actions_beside_itself(tmp_path: Path) -> None:
    (tmp_path / "team").mkdir()
    (tmp_path / "fsm.yaml").write_text("machines:\n  - import: team/orders.yaml\n")
    (tmp_path / "team" / "orders.yaml").write_text(textwrap.dedent("""\
        machines:
          - name: orders
            states:
              - {name: a, initial: true, do_action: team_actions.Go, transitions: [{event: go, target: b}]}
              - {name: b, final: true}
        """))
    (tmp_path / "team" / "team_actions.py").write_text(
        "from fsm import Action\n\nclass Go(Action):\n    def execute(self, context, obj):\n        return 'go'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-m", "fsm", "run", str(tmp_path / "fsm.yaml"), "--machine", "orders",
                           "--store", "memory://"], cwd=elsewhere, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "done in state b" in done.stdout
