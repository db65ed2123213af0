"""What the handler and the loader settle before the first event: the embedded bus is
refused inside Lambda, a backend lacking a capability the machines need is refused by
name, and every machines file's folder is searched for its own actions."""

from __future__ import annotations

import os
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


NO_SDK = """
import sys

class NoSdk:   # the SDK is an extra: `pip install -e .` alone does not bring it
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("boto3", "botocore"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoSdk())
from fsm.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [["run", "examples/pizza/fsm.yaml", "--machine", "pizza"],
                                  ["validate", "examples/pizza/fsm.yaml"], ["--help"]])
def test_the_readme_commands_work_without_the_aws_sdk_installed(tmp_path: Path, argv: list[str]) -> None:
    """README's first command on a fresh machine: `pip install -e .` brings no boto3, and
    every ``fsm`` command registers them all (``fsm cost`` included)."""
    root = Path(__file__).resolve().parents[2]
    args = [str(root / a) if a.startswith("examples/") else a for a in argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSM_")}
    done = subprocess.run([sys.executable, "-c", NO_SDK, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "botocore" not in done.stderr


# -- what a cold start loads and builds: each probe is a fresh process, as a container is ----

PROBE = """
import json, sys, time
from pathlib import Path

def sdk():
    return sorted(n for n in sys.modules if n.split(".")[0] in ("boto3", "botocore"))

def dynamodb():
    return sorted(n for n in sys.modules if n.startswith(("sources.dynamodb", "boto3.dynamodb")))

import fsm.handler as handler
seen = {"import": sdk()}
application = handler.app()
seen.update(load=sdk(), load_dynamodb=dynamodb())
from sources import aws   # imports no SDK itself
seen["built_at_load"] = dict(aws.clients_built)
from fsm.message import Message
event = json.loads(Path(sys.argv[1]).read_text())
version = application.wiring.dispatcher.machines["m"].version
event["Records"][0]["body"] = Message(machine="m", correlation_id="cold-1", context={}, version=version,
                                      sent_at=time.time()).encode()
event["Records"][0]["eventSourceARN"] = sys.argv[2]
reply = handler.lambda_handler(event)
seen.update(first=sdk(), first_dynamodb=dynamodb(), built_at_first=dict(aws.clients_built),
            failures=len(reply["batchItemFailures"]))
print(json.dumps(seen))
"""
GO = "from fsm import Action\n\nclass Go(Action):\n    def execute(self, context, obj):\n        return 'go'\n"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:orders"


def cold_process(tmp_path: Path, **env: str) -> dict:
    """Run PROBE in a new interpreter, as Lambda runs a new container, on an SQS record of
    the shape AWS documents (tests/events/sqs.json)."""
    import json
    import os
    import socket

    (tmp_path / "fsm.yaml").write_text(FLAT.replace("{name: a, initial: true,",
                                                    "{name: a, initial: true, do_action: cold_go.Go,"))
    (tmp_path / "cold_go.py").write_text(GO)
    with socket.socket() as sock:   # a port nothing listens on: AWS calls fail at once, locally
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FSM_", "AWS_"))}
    base.update(FSM_CONFIG=str(tmp_path / "fsm.yaml"), AWS_LAMBDA_FUNCTION_NAME="orders", FSM_LOG_LEVEL="CRITICAL",
                AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                AWS_ENDPOINT_URL=closed, FSM_AWS='{"connect_timeout": 1, "read_timeout": 1, "max_attempts": 1}')
    events = Path(__file__).resolve().parents[1] / "events" / "sqs.json"
    done = subprocess.run([sys.executable, "-c", PROBE, str(events), QUEUE], cwd=tmp_path, env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_configuration_without_aws_never_loads_the_aws_sdk(tmp_path: Path) -> None:
    seen = cold_process(tmp_path, FSM_STORE="memory://", FSM_STREAM="memory://")
    assert seen["failures"] == 0
    assert seen["import"] == seen["load"] == seen["first"] == []
    assert seen["built_at_first"] == {}


def test_an_sqs_stream_loads_the_sdk_on_its_first_send_and_nothing_of_dynamodb(tmp_path: Path) -> None:
    seen = cold_process(tmp_path, FSM_STORE="memory://", FSM_STREAM=QUEUE)
    assert seen["import"] == seen["load"] == []
    assert seen["built_at_load"] == {}
    assert seen["first"], "the first send builds the SQS client"
    assert seen["built_at_first"].get("sqs", 0) >= 1 and set(seen["built_at_first"]) == {"sqs"}
    assert seen["load_dynamodb"] == seen["first_dynamodb"] == []


def test_aws_adapters_build_no_client_until_their_first_call(tmp_path: Path) -> None:
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/orders"
    seen = cold_process(tmp_path, FSM_STORE=table, FSM_STREAM=QUEUE, FSM_METRICS='{"target": "cloudwatch"}')
    assert seen["import"] == []
    assert seen["built_at_load"] == {}      # the store, the bus and CloudWatch: none built yet
    assert seen["failures"] == 1            # nothing listens at the endpoint: the record comes back
    assert seen["built_at_first"].get("dynamodb") == 1   # built by the first call, the acquire
