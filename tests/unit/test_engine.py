"""The engine, on machines loaded from YAML with actions in a module of the test's own.

Order per transition (van Gurp/Bosch): exit of the old state, the transition's action,
entry of the new state, its do action (whose result is the next event).
"""

from __future__ import annotations

import importlib
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from config.loader import Definitions, load_file
from fsm.engine import run_transitions
from fsm.errors import LocalHopLimit, TransitionError, UnknownEvent
from fsm.model import Context

ACTIONS = '''
from fsm import Action, max_retry_event


class Step(Action):
    """Records its tag and what the context looked like; returns params['event']."""

    def execute(self, context, obj):
        obj.setdefault("calls", []).append(self.params["tag"])
        obj.setdefault("seen", []).append({
            "tag": self.params["tag"], "correlation_id": context.correlation_id,
            "steps": context.steps, "retries": context.retries, "max_retries": context.max_retries,
            "machine_name": context.machine_name,
            "state": context.current_state.name if context.current_state else None,
            "event": context.current_event})
        return self.params.get("event")


class Flaky(Action):
    @max_retry_event("gave_up")
    def execute(self, context, obj):
        obj["attempts"] = obj.get("attempts", 0) + 1
        raise RuntimeError("still down")


class NotAnEvent(Action):
    def execute(self, context, obj):
        return 42
'''

MACHINES = '''
machines:
  - name: order
    max_retries: 2
    states:
      - name: a
        initial: true
        entry_action: {{class: {m}.Step, params: {{tag: entry a}}}}
        do_action: {{class: {m}.Step, params: {{tag: do a}}}}
        exit_action: {{class: {m}.Step, params: {{tag: exit a}}}}
        transitions:
          - {{event: go, target: b, action: {{class: {m}.Step, params: {{tag: action go}}}}}}
      - name: b
        entry_action: {{class: {m}.Step, params: {{tag: entry b}}}}
        do_action: {{class: {m}.Step, params: {{tag: do b}}}}
        exit_action: {{class: {m}.Step, params: {{tag: exit b}}}}
        transitions:
          - {{event: finish, target: c}}
      - name: c
        final: true
        entry_action: {{class: {m}.Step, params: {{tag: entry c}}}}
  - name: hops
    states:
      - name: a
        initial: true
        transitions: [{{event: go, target: b, local: true}}]
      - name: b
        do_action: {{class: {m}.Step, params: {{tag: do b, event: next}}}}
        transitions: [{{event: next, target: c, local: true}}]
      - name: c
        do_action: {{class: {m}.Step, params: {{tag: do c, event: onward}}}}
        transitions: [{{event: onward, target: d}}]
      - name: d
        do_action: {{class: {m}.Step, params: {{tag: do d, event: end}}}}
        transitions: [{{event: end, target: done, local: true}}]
      - {{name: done, final: true}}
  - name: loop
    states:
      - name: ping
        initial: true
        do_action: {{class: {m}.Step, params: {{tag: ping, event: hit}}}}
        transitions: [{{event: hit, target: pong, local: true}}]
      - name: pong
        do_action: {{class: {m}.Step, params: {{tag: pong, event: hit}}}}
        transitions: [{{event: hit, target: ping, local: true}}]
  - name: flaky
    max_retries: 2
    states:
      - name: calling
        initial: true
        do_action: {m}.Flaky
        transitions: [{{event: gave_up, target: compensated}}]
      - {{name: compensated, final: true}}
  - name: typo
    states:
      - name: a
        initial: true
        do_action: {{class: {m}.Step, params: {{tag: do a, event: bogus}}}}
        transitions:
          - {{event: go, target: z}}
          - {{event: stop, target: z}}
      - {{name: z, final: true}}
  - name: wrong_type
    states:
      - name: a
        initial: true
        do_action: {m}.NotAnEvent
        transitions: [{{event: go, target: z}}]
      - {{name: z, final: true}}
'''


@pytest.fixture
def defs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Definitions:
    module = f"engine_acts_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(ACTIONS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    path = tmp_path / "fsm.yaml"
    path.write_text(textwrap.dedent(MACHINES.format(m=module)), encoding="utf-8")
    return load_file(path)


def context_for(defs: Definitions, name: str, **fields: Any) -> Context:
    return Context({"order_id": 7}, correlation_id="cid-1", machine=defs.machine(name), **fields)


def test_a_new_instance_runs_the_initial_states_entry_then_do(defs: Definitions) -> None:
    obj: dict[str, Any] = {}
    run = run_transitions(defs.machine("order"), None, None, context_for(defs, "order"), obj)
    assert obj["calls"] == ["entry a", "do a"]
    assert (run.state, run.status, run.next_event) == ("a", "waiting", None)
    assert [(h.step, h.source, h.event, h.target) for h in run.hops] == [(0, None, None, "a")]


def test_exit_then_transition_action_then_entry_then_do(defs: Definitions) -> None:
    obj: dict[str, Any] = {}
    run = run_transitions(defs.machine("order"), "a", "go", context_for(defs, "order", steps=1), obj)
    assert obj["calls"] == ["exit a", "action go", "entry b", "do b"]
    assert (run.state, run.status) == ("b", "waiting")
    assert [(h.step, h.source, h.event, h.target) for h in run.hops] == [(1, "a", "go", "b")]


def test_entering_a_final_state_ends_the_instance(defs: Definitions) -> None:
    obj: dict[str, Any] = {}
    run = run_transitions(defs.machine("order"), "b", "finish", context_for(defs, "order"), obj)
    assert obj["calls"] == ["exit b", "entry c"]
    assert (run.state, run.status, run.next_event) == ("c", "done", None)


def test_the_context_tells_actions_where_they_are(defs: Definitions) -> None:
    obj: dict[str, Any] = {}
    context = context_for(defs, "order", steps=4, retries=1)
    run_transitions(defs.machine("order"), "a", "go", context, obj)
    common = {"correlation_id": "cid-1", "steps": 4, "retries": 1, "max_retries": 2, "machine_name": "order",
              "event": "go"}
    assert obj["seen"] == [{**common, "tag": "exit a", "state": "a"},
                           {**common, "tag": "action go", "state": "a"},
                           {**common, "tag": "entry b", "state": "b"},
                           {**common, "tag": "do b", "state": "b"}]
    assert context.steps == 5 and context.current_state.name == "b" and context.current_event == "go"
    assert dict(context) == {"order_id": 7}


def test_local_transitions_run_in_the_same_call_and_a_normal_one_stops(defs: Definitions) -> None:
    obj: dict[str, Any] = {}
    context = context_for(defs, "hops")
    run = run_transitions(defs.machine("hops"), "a", "go", context, obj)
    assert obj["calls"] == ["do b", "do c"]
    assert (run.state, run.status, run.next_event) == ("c", "running", "onward")
    assert [(h.step, h.source, h.event, h.target) for h in run.hops] == [(0, "a", "go", "b"), (1, "b", "next", "c")]
    assert [seen["steps"] for seen in obj["seen"]] == [0, 1]  # each hop sees the steps before it
    assert context.steps == 2

    run = run_transitions(defs.machine("hops"), "c", "onward", context, obj)
    assert (run.state, run.status) == ("done", "done")
    assert [h.target for h in run.hops] == ["d", "done"] and context.steps == 4


def test_a_local_loop_hits_the_hop_limit(defs: Definitions) -> None:
    obj: dict[str, Any] = {}
    with pytest.raises(LocalHopLimit) as caught:
        run_transitions(defs.machine("loop"), None, None, context_for(defs, "loop"), obj, max_local_hops=5)
    assert isinstance(caught.value, TransitionError)
    assert "more than 5 local transitions in a row" in str(caught.value)
    assert "max_local_hops" in str(caught.value)
    assert obj["calls"] == ["ping", "pong", "ping", "pong", "ping"]


def test_an_event_the_state_has_no_transition_for_runs_nothing(defs: Definitions) -> None:
    obj: dict[str, Any] = {}
    run = run_transitions(defs.machine("order"), "a", "finish", context_for(defs, "order"), obj)
    assert (run.handled, run.state, run.hops) == (False, "a", [])
    assert "calls" not in obj  # the dispatcher records the rejection; no action ran


def test_a_do_action_returning_an_unknown_event(defs: Definitions) -> None:
    with pytest.raises(UnknownEvent) as caught:
        run_transitions(defs.machine("typo"), None, None, context_for(defs, "typo"), {})
    assert (caught.value.event, caught.value.state, sorted(caught.value.allowed)) == ("bogus", "a", ["go", "stop"])
    assert str(caught.value) == "state 'a' has no transition on event 'bogus'; it accepts: go, stop"


def test_a_do_action_must_return_a_string_or_none(defs: Definitions) -> None:
    from fsm.errors import TransitionError

    # A TransitionError fails the instance at once: retrying the same code cannot help.
    with pytest.raises(TransitionError, match="an event must be a string or None"):
        run_transitions(defs.machine("wrong_type"), None, None, context_for(defs, "wrong_type"), {})


@pytest.mark.parametrize("retries", [0, 1])
def test_max_retry_event_reraises_before_the_last_retry(defs: Definitions, retries: int) -> None:
    obj: dict[str, Any] = {}
    with pytest.raises(RuntimeError, match="still down"):
        run_transitions(defs.machine("flaky"), None, None, context_for(defs, "flaky", retries=retries), obj)
    assert obj["attempts"] == 1


def test_max_retry_event_turns_the_last_retrys_exception_into_the_event(defs: Definitions) -> None:
    obj: dict[str, Any] = {}
    run = run_transitions(defs.machine("flaky"), None, None, context_for(defs, "flaky", retries=2), obj)
    assert obj["attempts"] == 1
    assert (run.state, run.status, run.next_event) == ("calling", "running", "gave_up")
    run = run_transitions(defs.machine("flaky"), "calling", "gave_up", context_for(defs, "flaky"), obj)
    assert (run.state, run.status) == ("compensated", "done")
