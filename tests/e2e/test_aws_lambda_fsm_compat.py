"""aws-lambda-fsm machines and actions, run by the ``fsm`` command without edits.

Each test writes an aws-lambda-fsm-style ``fsm.yaml`` and its actions in a module
literally named ``actions.py`` beside it (as aws-lambda-fsm's own examples do), their
classes subclassing ``aws_lambda_fsm.action.Action``, and drives them with
``python -m fsm`` in that folder, one process per command as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from aws_lambda_fsm.action import Action
from aws_lambda_fsm.fsm import Context

ROOT = Path(__file__).resolve().parents[2]
TRACER = ROOT / "examples" / "tracer"
OK, FAILED, BAD_INPUT = 0, 1, 2

MACHINES = """
machines:

- name: api
  max_retries: 0

  states:

  - name: first
    initial: true
    entry_action: aws_lambda_fsm.action.Action
    do_action: actions.Record
    exit_action: aws_lambda_fsm.action.Action
    transitions:
    - target: second
      action: aws_lambda_fsm.action.Action
      event: recorded

  - name: second
    do_action: actions.GiveUp
    transitions:
    - target: done
      event: gave_up

  - name: done
    final: true

- name: unsupported
  states:
  - name: only
    initial: true
    do_action: actions.Touch
    transitions:
    - target: end
      event: touched
  - name: end
    final: true
"""

ACTIONS = '''
from aws_lambda_fsm.action import Action, max_retry_event


class Record(Action):
    """aws-lambda-fsm's constructor, and the context API its actions use."""

    def __init__(self, name, event=None):
        super(Record, self).__init__(name, event)
        self.label = name.upper()

    def execute(self, context, obj):
        context["seen"] = {
            "label": self.label, "name": context.name, "correlation_id": context.correlation_id,
            "state": context.current_state.name, "steps": context.steps, "retries": context.retries,
            "max_retries": context.max_retries, "system": context.system_context(),
            "user_keys": sorted(context.user_context()), "is_dict": isinstance(context, dict),
            "fence_token": obj["fence_token"], "action": context.current_action.name,
        }
        del context["scratch"]
        context["items"].append(3)
        return "recorded"


class GiveUp(Action):
    @max_retry_event("gave_up")
    def execute(self, context, obj):
        raise RuntimeError("the service is down")


class Touch(Action):
    def execute(self, context, obj):
        if context["what"] == "attribute":
            return context.current_transition.name
        return obj["lambda_context"]
'''


def fsm(cwd: Path, *args: str, expect: int = OK) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSM_")}
    done = subprocess.run([sys.executable, "-m", "fsm", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == expect, (f"fsm {' '.join(args)} exited {done.returncode}, expected {expect}\n"
                                       f"stdout: {done.stdout}\nstderr: {done.stderr}")
    return done


def run(cwd: Path, machine: str, context: dict[str, Any], expect: int = OK) -> dict[str, Any]:
    """``fsm run`` on the folder's ``fsm.yaml``, in a store of the test's own; the status."""
    done = fsm(cwd, "run", "fsm.yaml", "--machine", machine, "--store", f"sqlite:///{cwd}/x.sqlite3",
               "--context", json.dumps(context), "--json", expect=expect)
    return json.loads(done.stdout.strip().splitlines()[-1])


def project(tmp_path: Path, machines: str = MACHINES, actions: str = ACTIONS) -> Path:
    (tmp_path / "fsm.yaml").write_text(textwrap.dedent(machines).lstrip(), encoding="utf-8")
    (tmp_path / "actions.py").write_text(textwrap.dedent(actions).lstrip(), encoding="utf-8")
    return tmp_path


def test_the_tracer_example_runs_beside_its_actions_py(tmp_path: Path) -> None:
    for name in ("fsm.yaml", "actions.py"):
        shutil.copy(TRACER / name, tmp_path / name)
    status = run(tmp_path, "tracer", {"laps": 4})
    assert (status["status"], status["state"], status["steps"]) == ("done", "finished", 5)
    context = status["context"]
    assert context["trace"] == ["ping@0", "pong@1", "ping@2", "pong@3"]
    assert context["report"] == {"machine": "tracer", "correlation_id": status["correlation_id"],
                                 "laps": 4, "retries": 0}


def test_an_aws_lambda_fsm_action_sees_the_context_api_it_was_written_for(tmp_path: Path) -> None:
    status = run(project(tmp_path), "api", {"scratch": 1, "items": [1, 2]})
    assert (status["status"], status["state"]) == ("done", "done")
    context = status["context"]
    assert "scratch" not in context and context["items"] == [1, 2, 3]  # changes are committed
    seen = context["seen"]
    cid = status["correlation_id"]
    assert seen == {
        "label": "ACTIONS.RECORD", "name": "api", "correlation_id": cid, "state": "first", "steps": 0,
        "retries": 0, "max_retries": 0, "user_keys": ["items", "scratch"], "is_dict": True,
        "fence_token": seen["fence_token"], "action": "actions.Record",
        "system": {"machine_name": "api", "correlation_id": cid, "current_state": "first",
                   "current_event": None, "steps": 0, "retries": 0, "max_retries": 0},
    }
    assert isinstance(seen["fence_token"], int)


MISSING = {
    "attribute": "context.current_transition is aws-lambda-fsm's, and lambda-fsm has no counterpart: "
                 "use context.current_state and context.current_event",
    "key": "obj['lambda_context'] is aws-lambda-fsm's, and lambda-fsm has no counterpart",
}


@pytest.mark.parametrize("what", sorted(MISSING))
def test_what_lambda_fsm_lacks_fails_the_instance_at_once_with_what_to_use(tmp_path: Path, what: str) -> None:
    status = run(project(tmp_path), "unsupported", {"what": what}, expect=FAILED)
    # One failed attempt of the five retries allowed: retrying cannot help.
    assert (status["status"], status["retries"]) == ("failed", 1), status
    assert MISSING[what] in status["last_error"]


def test_an_aws_lambda_fsm_module_lambda_fsm_lacks_is_named_at_the_yaml_line(tmp_path: Path) -> None:
    project(tmp_path, actions="from aws_lambda_fsm.aws import get_connection\n" + ACTIONS)
    err = fsm(tmp_path, "validate", "fsm.yaml", expect=BAD_INPUT).stderr
    assert "fsm.yaml:11: machine 'api', state 'first', do_action: cannot import 'actions.Record': " \
           "UnsupportedModule: aws_lambda_fsm.aws is part of aws-lambda-fsm that lambda-fsm does not provide" in err
    assert "boto3.client" in err


def test_our_ready_made_action_behind_the_users_actions_py_is_named_at_the_yaml_line(tmp_path: Path) -> None:
    sleeping = MACHINES.replace("do_action: actions.GiveUp",
                                "do_action: {class: actions.wait.Sleep, params: {seconds: 1, event: gave_up}}")
    project(tmp_path, machines=sleeping)
    err = fsm(tmp_path, "validate", "fsm.yaml", expect=BAD_INPUT).stderr
    assert err.count("fsm.yaml:") == 1, err
    assert f"fsm.yaml:19: machine 'api', state 'second', do_action: cannot import 'actions.wait.Sleep': " \
           f"{tmp_path / 'actions.py'} is imported as 'actions' and hides lambda-fsm's own 'actions' package" in err


def test_an_actions_own_unit_test_written_for_aws_lambda_fsm_still_passes() -> None:
    """Such tests build aws-lambda-fsm's Context, or pass a plain dict, and call execute."""

    class Increment(Action):
        def execute(self, context: Any, obj: dict[str, Any]) -> str:
            context["count"] = context.get("count", 0) + 1
            return "done" if context.retries < context.max_retries else "late"

    context = Context("tracer", initial_system_context={"retries": 1}, initial_user_context={"count": 1},
                      max_retries=3)
    assert Increment("tests.Increment").execute(context, {}) == "done"
    assert (dict(context), context.name, context.steps, len(context.correlation_id)) == ({"count": 2}, "tracer", 0, 32)
    plain = {"count": 5}
    assert Increment("tests.Increment").execute(plain, {}) == "done" and plain == {"count": 6}
