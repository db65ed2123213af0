"""``fsm export --format asl``: flat YAML machines as Amazon States Language.

Every machine of the examples either exports to a definition the ``asl-validator`` npm
package accepts, or is refused with one line naming the state ASL cannot express. The
validator runs in node from ``tests/xstate`` (``npm ci`` there installs it beside
xstate); without node the validator tests skip, except in CI (``CI`` set), where they
fail. An exported definition also loads back through the ASL loader (``- asl:`` with
``resources:``) and runs there to the same final state.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fsm.app.export import ExportRefused, to_asl
from fsm.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
XSTATE = ROOT / "tests" / "xstate"
VALIDATOR = XSTATE / "node_modules" / "asl-validator" / "package.json"
# Flat machines of the examples that must export (the rest are refused, naming a state).
MUST_EXPORT = {"flaky", "tracer", "thumbnails"}
REFUSED = {"signup": "state 'awaiting_verification' waits for external events",
           "approval": "state 'awaiting_manager' waits for external events",
           "pizza": "state 'ordering' has child states",
           "order": "it is already a Step Functions (ASL) machine"}


# ---- the validator ------------------------------------------------------------------------


def need_node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is required in CI (CI is set) to check exported ASL with asl-validator")
        pytest.skip("node is not installed (asl-validator runs on node)")
    if not VALIDATOR.exists():
        install_validator()
    return node


def install_validator() -> None:
    """``npm install`` in tests/xstate (as its harness does for xstate), under the
    harness's lock so parallel workers install once; never ``npm ci`` here, which would
    remove node_modules under another worker's feet."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("asl-validator is missing from tests/xstate/node_modules and npm is not installed "
                    "(run `cd tests/xstate && npm ci`)")
    lock_path = Path(tempfile.gettempdir()) / f"lambda-fsm-xstate-{zlib.crc32(str(XSTATE).encode()):08x}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not VALIDATOR.exists():
                done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=XSTATE, check=False,
                                      capture_output=True, text=True, timeout=300)
                if done.returncode != 0 or not VALIDATOR.exists():
                    pytest.fail(f"npm install failed in {XSTATE}:\n{done.stdout}\n{done.stderr}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# The package's own CLI flag --no-arn-check is not passed through (4.0.0 reads a property
# commander never sets), so the library is called directly. Resources are dotted class
# paths, not ARNs: the ARN check is off, every other check (paths included) on.
VALIDATE_JS = """
const validate = require("asl-validator");
let text = "";
process.stdin.on("data", (chunk) => { text += chunk; });
process.stdin.on("end", () => {
  const out = JSON.parse(text).map(({ name, definition }) => {
    const { isValid, errorsText } = validate(definition, { checkArn: false, checkPaths: true });
    return { name, isValid, errors: isValid ? "" : errorsText("\\n") };
  });
  process.stdout.write(JSON.stringify(out));
});
"""


def validate(definitions: dict[str, Any]) -> dict[str, str]:
    """Each definition's validator errors ("" for a valid one), in one node process."""
    node = need_node()
    jobs = [{"name": name, "definition": definition} for name, definition in definitions.items()]
    done = subprocess.run([node, "-e", VALIDATE_JS], input=json.dumps(jobs), cwd=XSTATE, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return {found["name"]: found["errors"] for found in json.loads(done.stdout)}


# ---- the examples -------------------------------------------------------------------------


def example_machines() -> list[tuple[Path, str]]:
    """(file, machine) for every machine the examples' fsm.yaml files define by name."""
    found = []
    for path in sorted(EXAMPLES.glob("*/fsm.yaml")):
        for item in yaml.safe_load(path.read_text(encoding="utf-8")).get("machines") or []:
            if "name" in item:
                found.append((path, item["name"]))
    return found


def export_with_the_cli(path: Path, machine: str) -> subprocess.CompletedProcess[str]:
    """``fsm export`` in the example's folder, in a process of its own (the examples'
    action modules, ``actions.py`` among them, must not be imported into the tests)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env = {k: v for k, v in env.items() if not k.startswith("FSM_")}
    return subprocess.run([sys.executable, "-m", "fsm", "export", machine, path.name], cwd=path.parent, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def exported() -> dict[str, Any]:
    """Each example machine's ``fsm export`` outcome: the definition, or the error line."""
    found: dict[str, Any] = {}
    for path, machine in example_machines():
        done = export_with_the_cli(path, machine)
        if done.returncode == 0:
            assert done.stderr == ""
            found[machine] = json.loads(done.stdout)
        else:
            assert (done.returncode, done.stdout) == (2, "") and len(done.stderr.splitlines()) == 1, done
            found[machine] = done.stderr.strip()
    return found


def test_every_example_exports_or_is_refused_naming_the_state(exported: dict[str, Any]) -> None:
    assert MUST_EXPORT <= {name for name, value in exported.items() if isinstance(value, dict)}
    for name, value in exported.items():
        if isinstance(value, str):
            assert value.startswith(f"fsm export: machine {name!r} cannot be written as ASL: "), value
            assert REFUSED.get(name, "state '") in value, value


def test_the_exported_examples_are_valid_asl(exported: dict[str, Any]) -> None:
    definitions = {name: value for name, value in exported.items() if isinstance(value, dict)}
    errors = validate(definitions)
    assert errors == {name: "" for name in definitions}


def test_the_validator_is_not_a_rubber_stamp() -> None:
    """A Choice without Choices and a Next to nowhere are caught (so a pass means something)."""
    broken = {"StartAt": "a", "States": {"a": {"Type": "Task", "Resource": "m.C", "Next": "nowhere"},
                                         "b": {"Type": "Choice", "Choices": []}}}
    assert validate({"broken": broken})["broken"] != ""


# ---- what an export says ------------------------------------------------------------------

ACTIONS = """
from fsm import Action, Guard


class Pick(Action):
    '''Returns the event its params name; under the ASL loader the params come in the
    task's input (the resources mapping gives the class alone).'''

    def execute(self, context, obj):
        given = obj.get("input")
        params = given["params"] if isinstance(given, dict) and "params" in given else self.params
        return params.get("event")


class Note(Action):
    def execute(self, context, obj):
        return None


class Always(Guard):
    def check(self, context, data):
        return True
"""
ROUTE = """
machines:
  - name: route
    max_retries: 2
    retry_base_delay: 0.2
    retry_max_delay: 3
    states:
      - name: pick
        initial: true
        entry_action: export_acts.Note
        do_action: {class: export_acts.Pick, params: {event: left}}
        exit_action: export_acts.Note
        transitions:
          - {event: left, target: cooling, action: export_acts.Note}
          - {event: right, target: right}
      - name: cooling
        timeout: 0.5
        transitions:
          - {event: timeout, target: slow}
      - name: slow
        timeout: 90
        do_action: {class: export_acts.Pick, params: {event: done}}
        transitions:
          - {event: done, target: left}
          - {event: timeout, target: right}
      - name: left
        entry_action: export_acts.Note
        final: true
      - {name: right, final: true}
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "export_acts.py").write_text(ACTIONS, encoding="utf-8")
    (tmp_path / "fsm.yaml").write_text(ROUTE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in os.environ if n.startswith("FSM_")]:
        monkeypatch.delenv(name)
    yield tmp_path


def export(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main(["export", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else out, err


def test_tasks_choices_waits_and_the_end(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, asl, err = export(capsys, "route", "fsm.yaml")
    assert (code, err) == (0, "")
    states = asl["States"]
    assert asl["StartAt"] == "start" and states["start"] == {
        "Type": "Pass", "Comment": "the input is the first context", "Parameters": {"context.$": "$"}, "Next": "pick"}
    assert "machine 'route' from fsm.yaml:" in asl["Comment"]
    entry, do = states["pick"], states["pick: do action"]
    assert (entry["Type"], entry["Resource"], entry["ResultPath"], entry["Next"]) == (
        "Task", "export_acts.Note", None, "pick: do action")
    assert do["Parameters"] == {"context.$": "$.context", "params": {"event": "left"}}
    assert (do["ResultPath"], do["Next"]) == ("$.event", "pick: event")
    assert do["Retry"] == [{"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 2, "IntervalSeconds": 1,
                            "BackoffRate": 2.0, "MaxDelaySeconds": 3, "JitterStrategy": "FULL"}]
    assert do["Comment"] == "state 'pick' of 'route': do action export_acts.Pick"
    choice = states["pick: event"]
    assert choice["Type"] == "Choice" and choice["Default"] == "pick: unknown event"
    left, right = choice["Choices"]
    assert (left["Variable"], left["StringEquals"], right["StringEquals"], right["Next"]) == (
        "$.event", "left", "right", "pick --right--> right: exit action 1")
    exit_task = states[left["Next"]]     # the exit action, then the transition's action, then the target
    assert exit_task["Resource"] == "export_acts.Note" and "exit action" in exit_task["Comment"]
    action_task = states[exit_task["Next"]]
    assert "transition action on 'left'" in action_task["Comment"] and action_task["Next"] == "cooling"
    assert states["cooling"] == {"Type": "Wait", "Comment": "state 'cooling' of 'route': timeout after 0.5 s",
                                 "Seconds": 1, "Next": "slow"}
    slow = states["slow"]
    assert (slow["TimeoutSeconds"], slow["Next"]) == (90, "left")
    assert slow["Catch"] == [{"ErrorEquals": ["States.Timeout"], "ResultPath": None, "Next": "right"}]
    assert states["left"]["Next"] == "left: done"
    assert states["left: done"] == {"Type": "Succeed", "Comment": "state 'left' of 'route': final",
                                    "OutputPath": "$.context"}
    assert states["right"]["Type"] == "Succeed"
    fail = states["pick: unknown event"]
    assert (fail["Type"], fail["Error"]) == ("Fail", "UnknownEvent") and "left, right" in fail["Cause"]
    assert validate({"route": asl})["route"] == ""


REFUSALS = [
    (("- {name: a, initial: true, do_action: export_acts.Pick, transitions: [{event: go, target: b, "
      "guard: export_acts.Always}]}\n      - {name: b, final: true}"),
     "state 'a' has a guard on 'go' (export_acts.Always): ASL cannot express it"),
    ("- {name: a, initial: true, transitions: [{after: 5, target: b}]}\n      - {name: b, final: true}",
     "state 'a' "),
    ("- {name: a, initial: true, transitions: [{always: true, target: b}]}\n      - {name: b, final: true}",
     "state 'a' "),
    (("- {name: a, initial: true, do_action: export_acts.Pick, transitions: [{event: go, target: b}, "
      "{event: poke, action: export_acts.Note}]}\n      - {name: b, final: true}"),
     "state 'a' has a targetless transition on 'poke'"),
    ("- {name: a, initial: true, transitions: [{event: GO, target: b}]}\n      - {name: b, final: true}",
     "state 'a' waits for external events (GO): ASL has no state that an event is sent to"),
    (("- {name: a, initial: true, transitions: [{event: go, target: b}], "
      "states: [{name: in, initial: true}]}\n      - {name: b, final: true}"),
     "state 'a' has child states: ASL export takes flat machines only"),
]


@pytest.mark.parametrize("states, message", REFUSALS)
def test_what_asl_cannot_express_is_refused_naming_the_state(folder: Path, capsys: pytest.CaptureFixture[str],
                                                             states: str, message: str) -> None:
    (folder / "other.yaml").write_text(f"machines:\n  - name: other\n    states:\n      {states}\n",
                                       encoding="utf-8")
    code, out, err = export(capsys, "other", "--config", "other.yaml")
    assert (code, out) == (2, "") and len(err.splitlines()) == 1, err
    assert err.startswith("fsm export: machine 'other' cannot be written as ASL: " + message), err


def test_an_unknown_machine_or_file_is_a_usage_error(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = export(capsys, "nope", "fsm.yaml")
    assert code == 2 and err.startswith("fsm export: unknown machine 'nope'; defined: route")
    code, _, err = export(capsys, "route", "missing.yaml")
    assert code == 2 and "'missing.yaml' not found" in err


def test_to_asl_raises_export_refused(folder: Path) -> None:
    from config.loader import load_text

    nested = ROUTE.replace("      - {name: right, final: true}",
                           "      - {name: right, states: [{name: inner, initial: true, final: true}]}")
    machine = load_text(nested, "x.yaml").machines["route"]
    with pytest.raises(ExportRefused, match="state 'right' has child states"):
        to_asl(machine)


# ---- back through the ASL loader ----------------------------------------------------------


def test_the_export_loads_back_and_runs_through_the_asl_loader(folder: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``- asl:`` with each task's resource mapped to its class: the definition loads, and
    runs to the final state the YAML machine reaches, with the context as its output."""
    pytest.importorskip("config.asl")
    code, asl, _ = export(capsys, "route", "fsm.yaml")
    quick = {**asl, "States": {**asl["States"], "cooling": {**asl["States"]["cooling"], "Seconds": 0}}}
    (folder / "route.asl.json").write_text(json.dumps(quick), encoding="utf-8")
    resources = sorted({s["Resource"] for s in asl["States"].values() if s["Type"] == "Task"})
    (folder / "back.yaml").write_text("machines:\n  - asl: route.asl.json\n    name: back\n    resources:\n"
                                      + "".join(f"      {r}: {r}\n" for r in resources), encoding="utf-8")
    assert main(["validate", "back.yaml"]) == 0
    capsys.readouterr()
    code = main(["run", "back.yaml", "--input", '{"n": 1}', "--json", "--store", "sqlite:///back.db"])
    status = json.loads(capsys.readouterr().out)
    assert (code, status["status"], status["output"]) == (0, "done", {"n": 1}), status
    assert main(["history", status["correlation_id"], "--config", "back.yaml", "--store", "sqlite:///back.db",
                 "--json"]) == 0
    visited = [entry["to"] for entry in json.loads(capsys.readouterr().out)]
    assert "slow" in visited and "left" in visited and "right" not in visited
