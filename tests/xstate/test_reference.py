"""The XState reference side on its own: run.mjs, the recorded traces of the hand-written
machines, the generator (accepted by xstate, bounded, deterministic, covering every
feature) and impl.py mirroring run.mjs. None of it needs the Python statechart engine."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import gen
import harness

pytestmark = pytest.mark.xdist_group("xstate")
MACHINES = sorted((HERE / "machines").glob("*.json"))


@pytest.fixture(scope="module")
def installed() -> None:
    try:
        harness.ensure_installed()
    except harness.ReferenceUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def generated(installed: None) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    jobs = gen.equivalence_jobs()
    results = harness.run_batch([{"machine": j["machine"], "cases": j["cases"]} for _, j in jobs])
    return [(name, job, result) for (name, job), result in zip(jobs, results)]


def test_xstate_version_is_the_pinned_one(installed: None) -> None:
    pinned = json.loads((HERE / "package.json").read_text())["dependencies"]["xstate"]
    installed_version = json.loads((HERE / "node_modules" / "xstate" / "package.json").read_text())["version"]
    assert installed_version == pinned


@pytest.mark.parametrize("path", MACHINES, ids=lambda p: p.stem)
def test_hand_written_machine_matches_recorded_trace(path: Path, installed: None) -> None:
    data = json.loads(path.read_text())
    [result] = harness.run_batch([{"machine": data["machine"], "cases": data["cases"]}])
    assert "error" not in result, result
    for case, expected in zip(result["cases"], data["expect"], strict=True):
        got, prev = [], 0
        for step in case:
            log = step["context"]["log"]
            got.append({"event": (step.get("event") or {}).get("type"), "value": step["value"],
                        "status": step["status"], "count": step["context"]["count"], "log": log[prev:]})
            prev = len(log)
        assert got == expected


def test_single_machine_input_and_refused_machine(installed: None) -> None:
    request = {"machine": {"id": "m", "context": {"count": 0}, "initial": "a", "states": {
        "a": {"on": {"E": {"target": "b", "actions": ["inc"]}}}, "b": {"type": "final"}}},
        "cases": [{"events": [{"type": "X"}, {"type": "E"}]}]}
    done = subprocess.run(["node", str(harness.RUNNER)], input=json.dumps(request), capture_output=True,
                          text=True, check=True, cwd=HERE)
    [case] = json.loads(done.stdout)["cases"]
    assert [(s["value"], s["context"]["count"], s["status"]) for s in case] == [
        ("a", 0, "active"), ("a", 0, "active"), ("b", 1, "done")]
    assert case[1]["micro"] == [] and case[2]["micro"] == [["E", ["#m.a->#m.b"]]]
    [refused] = harness.run_batch([{"machine": {"initial": "a", "states": {"a": {"on": {"E": "nowhere"}}}}}])
    assert "Invalid transition" in refused["error"]


def test_endless_eventless_loop_fails_the_case_instead_of_hanging(installed: None) -> None:
    [result] = harness.run_batch([{"machine": {"context": {"count": 0}, "initial": "a", "states": {
        "a": {"always": {"actions": ["inc"]}}}}}])
    assert "Infinite loop" in result["cases"][0][0]["error"]


def test_generator_is_deterministic() -> None:
    for seed in (0, 7, 1234):
        a, b = gen.generate(seed), gen.generate(seed)
        assert a == b and json.loads(json.dumps(a)) == a
    assert gen.generate(1) != gen.generate(2)


def test_generated_machines_are_accepted_and_settle(generated) -> None:
    for name, job, result in generated:
        assert "error" not in result, (name, result)
        for case in result["cases"]:
            assert len(case) == len(job["cases"][0]["events"]) + 1 or case[-1]["status"] != "active", name
            for step in case:
                assert "error" not in step, (name, step)
                assert step["status"] in ("active", "done"), (name, step)


def test_ignored_events_change_nothing(generated) -> None:
    """An event XState takes no transition for leaves value and context as they were: the
    generator keeps eventless guards independent of the event, so lambda-fsm rejecting
    such an event (EventRejected) is the same outcome."""
    ignored = 0
    for name, _, result in generated:
        for case in result["cases"]:
            for before, step in itertools.pairwise(case):
                if not step["micro"]:
                    ignored += 1
                    assert (step["value"], step["context"]) == (before["value"], before["context"]), name
    assert ignored > 100


def test_generated_machines_cover_every_feature(generated) -> None:
    static, dynamic = Counter(), Counter()
    for _, job, result in generated:
        static.update(job["features"])
        seen = set()
        for case in result["cases"]:
            for step in case:
                if step["status"] == "done":
                    seen.add("machine-done")
                for event, transitions in step["micro"]:
                    for prefix in ("xstate.done.state", "xstate.done.actor", "xstate.error.actor"):
                        if event.startswith(prefix):
                            seen.add(prefix)
                    if len(transitions) > 1:
                        seen.add("several-transitions")
                    for t in transitions:
                        if t.endswith(" (always)"):
                            seen.add("eventless")
                            t = t.removesuffix(" (always)")
                        source, _, target = t.partition("->")
                        if re.search(r"\.(h|hd)(,|\+|$)", target):
                            seen.add("history-taken")
                        if target.removesuffix("+reenter") == source:
                            seen.add("self-reenter" if t.endswith("+reenter") else "self")
        dynamic.update(seen)
    for feature in ("parallel", "depth:3", "final", "onDone:compound", "onDone:parallel", "always",
                    "history:shallow", "history:deep", "history-target", "target:sibling",
                    "target:sibling.child", "target:.child", "target:#id", "target:history-shallow",
                    "target:history-deep", "self:reenter", "self:no-reenter", "reenter:true", "targetless",
                    "shared-event", "guard:countBelow", "guard:eventValueIs", "guard:yes", "guard:no",
                    "wildcard", "invoke:fetchOk", "invoke:fetchFail"):
        assert static[feature] >= 5, (feature, static)
    for feature in ("machine-done", "eventless", "xstate.done.state", "xstate.done.actor", "xstate.error.actor",
                    "several-transitions", "history-taken", "self", "self-reenter"):
        assert dynamic[feature] >= 3, (feature, dynamic)


def test_impl_mirrors_run_mjs() -> None:
    import impl

    from fsm import Context

    ctx = Context({"count": 0, "log": [], "last": None})
    log_before = ctx["log"]
    impl.Inc("inc").execute(ctx, {"event_data": {}})
    impl.Log("log", {"tag": "x"}).execute(ctx, {"event_data": {}})
    impl.SetFromEvent("setFromEvent").execute(ctx, {"event_data": {"value": 2}})
    assert dict(ctx) == {"count": 1, "log": ["x"], "last": 2} and log_before == []
    impl.SetFromEvent("setFromEvent").execute(ctx, {"event_data": {}})
    impl.SetFromOutput("setFromOutput").execute(ctx, {"event_data": {"output": {"ok": True}}})
    assert ctx["last"] == {"ok": True}
    assert impl.CountBelow("countBelow", {"max": 2}).check(ctx, {}) is True
    assert impl.CountBelow("countBelow", {"max": 1}).check(ctx, {}) is False
    is1 = impl.EventValueIs("eventValueIs", {"v": 1})
    assert is1.check(ctx, {"value": 1}) and is1.check(ctx, {"value": 1.0})
    assert not is1.check(ctx, {"value": True}) and not is1.check(ctx, {}) and not is1.check(ctx, {"value": "1"})
    assert impl.Yes().check(ctx, {}) and not impl.No().check(ctx, {})
    assert impl.FetchOk().execute(ctx, {}) == {"ok": True}
    with pytest.raises(RuntimeError):
        impl.FetchFail().execute(ctx, {})
