"""ASL definitions through the loader (config.asl): what they compile to, and every
problem reported at its line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from config.loader import load_file
from fsm.errors import InvalidDefinition

ACTIONS = '''
from fsm import Action


class Echo(Action):
    def execute(self, context, obj):
        return obj["input"]
'''


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    return textwrap.dedent(text).lstrip("\n")[: textwrap.dedent(text).lstrip("\n").index(needle)].count("\n") + 1


def test_a_json_definition_loads_by_itself(tmp_path: Path) -> None:
    path = write(tmp_path, "hello.asl.json",
                 json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}))
    machine = load_file(path).machine("hello")
    assert machine.initial == "P" and machine.xstate and machine.max_retries == 0
    assert machine.start({"a": 1})["$"] == {"a": 1} and machine.output({"$": 5}) == 5
    assert next((t.event, t.target, t.local) for t in machine.states["P"].on) == ("next", "(end)", True)
    assert machine.states["(end)"].final


def test_parallel_and_map_compile_to_generated_machines(tmp_path: Path) -> None:
    write(tmp_path, "acts.py", ACTIONS)
    write(tmp_path, "flow.asl.json", json.dumps({"StartAt": "Fan", "States": {
        "Fan": {"Type": "Parallel", "Next": "Each", "Retry": [{"ErrorEquals": ["States.ALL"]}],
                "Branches": [{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "echo", "End": True}}},
                             {"StartAt": "B", "States": {"B": {"Type": "Pass", "End": True}}}]},
        "Each": {"Type": "Map", "MaxConcurrency": 2, "ToleratedFailureCount": 1, "End": True,
                 "ItemProcessor": {"StartAt": "In", "States": {"In": {
                     "Type": "Map", "Iterator": {"StartAt": "Deep", "States": {"Deep": {"Type": "Succeed"}}},
                     "End": True}}}}}}))
    config = write(tmp_path, "fsm.yaml", """
        machines:
          - asl: flow.asl.json
            resources: {echo: acts.Echo}
    """)
    machines = load_file(config).machines
    assert sorted(machines) == ["flow", "flow/Each", "flow/Each/In", "flow/Fan/0", "flow/Fan/1"]
    flow = machines["flow"]
    assert flow.initial == "Fan (input)"
    assert list(flow.states) == ["Fan (input)", "Fan", "Fan (output)", "Each (input)", "Each", "Each (output)", "(end)"]
    fan = flow.states["Fan"]
    assert fan.spawn is not None and fan.spawn.machines == ("flow/Fan/0", "flow/Fan/1")
    assert {t.event: t.target for t in fan.on} == {"xstate.done.state.Fan": "Fan (output)", "error": "Fan (output)"}
    assert {t.event: t.target for t in flow.states["Fan (output)"].on}["retry"] == "Fan (input)"
    assert {t.event: t.target for t in flow.states["Fan (output)"].on}["next"] == "Each (input)"
    each = flow.states["Each"].spawn
    assert each is not None and (each.max_concurrency, each.tolerated_failures, each.machines) == (2, 1, ("flow/Each",))
    task = machines["flow/Fan/0"].states["A"]
    assert all(not t.local for t in task.on)


def test_names_with_dots_and_commas_are_made_safe(tmp_path: Path) -> None:
    path = write(tmp_path, "odd.json", json.dumps({"StartAt": "a.b", "States": {
        "a.b": {"Type": "Pass", "Next": "a,b"}, "a,b": {"Type": "Pass", "Next": "a_b"}, "a_b": {"Type": "Succeed"}}}))
    machine = load_file(path).machine("odd")
    assert list(machine.states) == ["a_b", "a_b~2", "a_b~3", "(end)"]
    assert machine.states["a_b"].on[0].target == "a_b~2"


BAD = """
{
  "StartAt": "Start",
  "States": {
    "Start": {"Type": "Pass", "Next": "Nowhere"},
    "Orphan": {"Type": "Pass", "End": true},
    "Both": {"Type": "Pass", "Next": "Start", "End": true},
    "Neither": {"Type": "Wait"},
    "Picky": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": "one", "Next": "Start"}]},
    "Paths": {"Type": "Pass", "InputPath": "x.y", "Parameters": {"a.$": "States.Unknown(1)"}, "End": true},
    "Typo": {"Type": "Task", "Resource": "not-mapped", "TimeoutSecondz": 3, "End": true},
    "Retries": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f", "End": true,
                "Retry": [{"ErrorEquals": ["States.ALL", "X"], "MaxAttempts": -1}],
                "Catch": [{"ErrorEquals": ["States.Bogus"], "Next": "Ghost"}]},
    "Kind": {"Type": "Sleep"}
  }
}
"""


def test_every_problem_is_reported_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", BAD)
    with pytest.raises(InvalidDefinition) as caught:
        load_file(path)
    problems = caught.value.problems
    expected = {
        '"Nowhere"': "`Next` 'Nowhere' is not a state of this definition",
        '"Orphan"': "state 'Orphan': unreachable from `StartAt` 'Start'",
        '"Both"': "give exactly one of `Next` and `End: true`",
        '"Neither"': "give exactly one of `Seconds`, `SecondsPath`, `Timestamp`, `TimestampPath`",
        '"Choices"': "`NumericEquals` must be a number, got string",
        '"InputPath"': "`InputPath`: invalid JSONPath 'x.y'",
        '"Parameters"': "unknown intrinsic function 'States.Unknown'",
        '"Resource": "not-mapped"': "`Resource` 'not-mapped' is not mapped to a class",
        '"TimeoutSecondz"': "unknown key 'TimeoutSecondz' for a Task state",
        '"MaxAttempts"': "`MaxAttempts` must be an integer of at least 0, got -1",
        '"ErrorEquals": ["States.ALL"': "`States.ALL` must stand alone",
        '"ErrorEquals": ["States.Bogus"]': "unknown error name 'States.Bogus'",
        '"Kind"': "`Type` must be one of Task, Pass, Choice, Wait, Succeed, Fail, Parallel, Map, got 'Sleep'",
    }
    for needle, message in expected.items():
        line = line_of(BAD, needle)
        assert any(p.startswith(f"{path}:{line}: ") and message in p for p in problems), (needle, line, problems)
    assert any("`Next` 'Ghost' is not a state" in p for p in problems)


def test_a_choice_without_default_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", json.dumps({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsPresent": True, "Next": "D"}]},
        "D": {"Type": "Succeed"}}}))
    warnings = load_file(path).warnings
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}:1: warning: ") and "no `Default`" in warnings[0]


def test_entry_problems_are_located_in_the_machines_file(tmp_path: Path) -> None:
    write(tmp_path, "flow.asl.json", json.dumps({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "work", "End": True}}}))
    config = write(tmp_path, "fsm.yaml", """
        machines:
          - asl: flow.asl.json
            resources: {work: nowhere.Work}
            colour: red
    """)
    with pytest.raises(InvalidDefinition) as caught:
        load_file(config)
    text = "\n".join(caught.value.problems)
    assert f"{config}:3: asl machine 'flow', resource 'work': cannot import 'nowhere.Work'" in text
    assert f"{config}:4: asl entry: unknown key 'colour'" in text
