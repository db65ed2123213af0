"""lambda-fsm runs XState machine configs exactly as XState v5 does.

Every machine -- hand-written SCXML classics and an order orchestrator in
``tests/xstate/machines/``, plus seeded random machines from ``tests/xstate/gen.py`` -- runs
under the real ``xstate`` (``tests/xstate/run.mjs``, all of them in ONE node process) and
under lambda-fsm through its public client (embedded runtime, memory store), with the same
named actions and guards (``tests/xstate/impl.py``). After start and after every event the
state value and the context must be equal. An event lambda-fsm rejects
(:class:`fsm.errors.EventRejected`) must be one XState ignored, leaving value and context
as they were. The comparison stops once XState reports the machine done (or in error).

The context's ``log`` records every entry (``+path``), exit (``-path``) and transition
action (``t<n>``, ``a<n>`` eventless, ``d<n>`` onDone, ``od``/``oe`` invoke done/error) in
the order they ran, so the order of exits and entries is compared as well.

On a mismatch the failure message holds the machine JSON, the events and both traces (with
the transitions XState took at each step). ``FSM_XSTATE_SCALE=N`` compares N times as many
random machines. Semantics: ``docs/xstate-semantics-notes.md``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
XSTATE_DIR = ROOT / "tests" / "xstate"
if str(XSTATE_DIR) not in sys.path:
    sys.path.insert(0, str(XSTATE_DIR))

import gen
import harness

# Every test here shares the one node run; keep them on one xdist worker.
pytestmark = pytest.mark.xdist_group("xstate")

SCALE = int(os.environ.get("FSM_XSTATE_SCALE", "1"))
ACTIONS = {"inc": "impl.Inc", "log": "impl.Log", "setFromEvent": "impl.SetFromEvent",
           "setFromOutput": "impl.SetFromOutput"}
GUARDS = {"countBelow": "impl.CountBelow", "eventValueIs": "impl.EventValueIs", "yes": "impl.Yes", "no": "impl.No"}
ACTORS = {"fetchOk": "impl.FetchOk", "fetchFail": "impl.FetchFail"}


def hand_written() -> list[tuple[str, dict[str, Any]]]:
    jobs = []
    for path in sorted((XSTATE_DIR / "machines").glob("*.json")):
        data = json.loads(path.read_text())
        jobs.append((path.stem, {"machine": data["machine"], "cases": data["cases"]}))
    return jobs


JOBS = hand_written() + gen.equivalence_jobs(SCALE)


@pytest.fixture(scope="session")
def xstate_installed() -> None:
    """npm-installs xstate into tests/xstate when missing; FAILS without node/npm."""
    try:
        harness.ensure_installed()
    except harness.ReferenceUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def reference(xstate_installed: None) -> dict[str, dict[str, Any]]:
    """XState's traces of every machine, from one node process."""
    results = harness.run_batch([job for _, job in JOBS])
    return {name: result for (name, _), result in zip(JOBS, results)}


def uses(config: dict[str, Any], key: str) -> bool:
    return key in config or any(uses(child, key) for child in (config.get("states") or {}).values())


def machines_file(tmp: Path, machine: dict[str, Any]) -> Path:
    (tmp / "machine.json").write_text(json.dumps(machine))
    entry: dict[str, Any] = {"xstate": "machine.json", "actions": ACTIONS, "guards": GUARDS}
    if uses(machine, "invoke"):
        entry["actors"] = ACTORS
        entry["max_retries"] = 0      # a failing actor is an error at once, no backoff
    path = tmp / "machines.yaml"
    # YAML is a superset of JSON
    path.write_text(json.dumps({"machines": [entry]}, indent=1))
    return path


def python_trace(config_path: Path, machine_id: str, case: dict[str, Any], steps: int) -> list[dict[str, Any]]:
    """lambda-fsm's view after start and after each of the first ``steps - 1`` events."""
    from fsm.client import Client
    from fsm.errors import EventRejected

    client = Client(config=str(config_path))
    cid = client.start(machine_id, case.get("context"))
    trace = [view(client.status(cid))]
    for event in case["events"][:steps - 1]:
        data = {k: v for k, v in event.items() if k != "type"}
        try:
            client.send_event(cid, event["type"], data)
            rejected = False
        except EventRejected:
            rejected = True
        except Exception as exc:  # noqa: BLE001 -- shown in the failure, beside XState's trace
            trace.append({"value": None, "context": None, "status": None, "event": event,
                          "error": f"{type(exc).__name__}: {exc}"})
            break
        trace.append({**view(client.status(cid)), "event": event, "rejected": rejected})
    return trace


def view(status: dict[str, Any]) -> dict[str, Any]:
    return {"value": status.get("value"), "context": status.get("context"), "status": status.get("status")}


def xstate_steps(case_trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps to compare: up to and including the first one not ``active``."""
    out = []
    for step in case_trace:
        out.append(step)
        if step["status"] != "active":
            break
    return out


def render(trace: list[dict[str, Any]]) -> str:
    """One step a line pair: the event, status, value, then the context without its log
    and the log entries this step added (the entries and exits in order)."""
    lines, prev_log = [], []
    for i, step in enumerate(trace):
        event = step.get("event")
        head = "start" if event is None else json.dumps(event)
        context = dict(step.get("context") or {})
        log = context.pop("log", None)
        added = log[len(prev_log):] if isinstance(log, list) and log[:len(prev_log)] == prev_log else log
        prev_log = log if isinstance(log, list) else []
        extra = ""
        if step.get("rejected"):
            extra += "  [rejected]"
        if step.get("micro"):
            extra += "\n       xstate took " + json.dumps(step["micro"])
        if step.get("error"):
            extra += f"\n       error {step['error']}"
        lines.append(f"  {i:2d} {head:28s} {step.get('status')} value={json.dumps(step.get('value'))}\n"
                     f"       context={json.dumps(context)} log+={json.dumps(added)}{extra}")
    return "\n".join(lines)


@pytest.mark.parametrize("name", [name for name, _ in JOBS])
def test_equivalent_to_xstate(name: str, reference: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    job = dict(JOBS)[name]
    result = reference[name]
    if "error" in result:
        # The generator only keeps machines xstate accepts; a refusal here is a generator bug.
        pytest.fail(f"xstate refuses machine {name}: {result['error']}\n{json.dumps(job['machine'])}")
    machine = job["machine"]
    config_path = machines_file(tmp_path, machine)
    for index, (case, xs_trace) in enumerate(zip(job["cases"], result["cases"])):
        expected = xstate_steps(xs_trace)
        assert not any("error" in step for step in expected), f"xstate run failed: {expected[-1].get('error')}"
        actual = python_trace(config_path, machine["id"], case, len(expected))
        problems = []
        for i, (xs, py) in enumerate(zip(expected, actual)):
            if py["value"] != xs["value"] or py["context"] != xs["context"]:
                what = [k for k in ("value", "context") if py[k] != xs[k]]
                problems.append(f"step {i}: {' and '.join(what)} differ")
                break
            if (xs["status"] == "done") != (py["status"] == "done"):
                problems.append(f"step {i}: status {py['status']!r}, XState {xs['status']!r}")
                break
            if py.get("rejected") and (xs["value"] != expected[i - 1]["value"]
                                       or xs["context"] != expected[i - 1]["context"]):
                problems.append(f"step {i}: lambda-fsm rejected an event XState took")
                break
        if len(actual) != len(expected):
            problems.append(f"lambda-fsm gave {len(actual)} steps, XState {len(expected)}")
        if problems:
            pytest.fail(
                f"{name} case {index}: {'; '.join(problems)}\n"
                f"machine: {json.dumps(machine)}\n"
                f"events: {json.dumps(case['events'])}\n"
                f"XState:\n{render(expected)}\n"
                f"lambda-fsm:\n{render(actual)}",
                pytrace=False)
