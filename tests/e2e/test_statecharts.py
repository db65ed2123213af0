"""Statecharts in YAML, driven as a user drives them: a machines file, actions in a
module beside it, events through the client on the embedded runtime.

The expected orders are SCXML's as XState v5 implements them (see the README's
statechart section): exit innermost first, transition actions, entry outermost first;
eventless transitions and ``done`` events before the next external event.
"""

from __future__ import annotations

import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from fsm.client import Client
from fsm.errors import EventRejected, InvalidDefinition

ACTIONS = '''
from fsm import Action, Guard


class Log(Action):
    def execute(self, context, obj):
        context.setdefault("log", []).append(self.params["tag"])


class Boom(Action):
    def execute(self, context, obj):
        context["attempts"] = context.get("attempts", 0) + 1
        raise RuntimeError("oven on fire")


class Emit(Action):
    def execute(self, context, obj):
        context.setdefault("log", []).append("do:" + self.params["event"])
        return self.params["event"]


class Inc(Action):
    def execute(self, context, obj):
        context["n"] = context.get("n", 0) + 1


class Below(Guard):
    def check(self, context, event_data):
        return context.get("n", 0) < self.params["max"]


class Size(Guard):
    def check(self, context, event_data):
        return event_data.get("size") == self.params["is"]
'''


@pytest.fixture(autouse=True)
def _own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded runtime keeps its store and timers under ./.fsm: one per test."""
    monkeypatch.chdir(tmp_path)


def client_for(tmp_path: Path, machines: str) -> tuple[Client, str]:
    module = f"chart_acts_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(ACTIONS)
    (tmp_path / "fsm.yaml").write_text(textwrap.dedent(machines).replace("acts.", f"{module}."))
    return Client(config=str(tmp_path / "fsm.yaml")), module


def log(tag: str) -> str:
    return f"{{class: acts.Log, params: {{tag: {tag}}}}}"


NESTED = f"""
machines:
  - name: order
    states:
      - name: idle
        initial: true
        exit_action: {log("ex:idle")}
        transitions: [{{event: BAKE, target: waiting, action: {log("t:bake")}}}]
      - name: bake
        entry_action: {log("en:bake")}
        exit_action: {log("ex:bake")}
        transitions:
          - {{event: PIZZA_READY, target: deliver, action: {log("t:ready")}}}
        states:
          - name: waiting
            initial: true
            entry_action: {log("en:waiting")}
            exit_action: {log("ex:waiting")}
            transitions: [{{event: OVEN, target: bake.oven}}]
          - name: oven
            entry_action: {log("en:oven")}
            exit_action: {log("ex:oven")}
            transitions: [{{event: BURNT, target: waiting}}]
      - name: deliver
        entry_action: {log("en:deliver")}
        transitions: [{{event: DELIVERED, target: done}}]
      - {{name: done, final: true}}
"""


def test_nested_states_order_and_an_event_handled_at_the_parent(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path, NESTED)
    cid = client.start("order")
    assert client.status(cid)["value"] == "idle"
    client.send_event(cid, "BAKE")
    status = client.status(cid)
    assert status["value"] == {"bake": "waiting"} and status["state"] == "bake.waiting"
    assert status["context"]["log"] == ["ex:idle", "t:bake", "en:bake", "en:waiting"]
    client.send_event(cid, "OVEN")
    assert client.status(cid)["value"] == {"bake": "oven"}
    client.send_event(cid, "PIZZA_READY")  # no sub-state takes it: the parent does
    status = client.status(cid)
    assert status["value"] == "deliver"
    assert status["context"]["log"][-5:] == ["en:oven", "ex:oven", "ex:bake", "t:ready", "en:deliver"]


def test_a_child_takes_an_event_before_its_parent(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path, NESTED.replace(
        "transitions: [{event: BURNT, target: waiting}]",
        "transitions: [{event: BURNT, target: waiting}, {event: PIZZA_READY, target: waiting}]"))
    cid = client.start("order")
    for event in ("BAKE", "OVEN", "PIZZA_READY"):
        client.send_event(cid, event)
    assert client.status(cid)["value"] == {"bake": "waiting"}


GUARDED = """
machines:
  - name: sizes
    states:
      - name: pick
        initial: true
        transitions:
          - {event: ORDER, target: small, guard: {class: acts.Size, params: {is: S}}}
          - {event: ORDER, target: large, guard: {class: acts.Size, params: {is: L}}}
          - {event: COUNT, target: pick, internal: true, action: acts.Inc, guard: {class: acts.Below, params: {max: 2}}}
      - {name: small, final: true}
      - {name: large, final: true}
"""


def test_guards_are_tried_in_document_order_and_no_pass_is_a_rejection(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path, GUARDED)
    cid = client.start("sizes")
    client.send_event(cid, "ORDER", {"size": "M"})
    history = client.history(cid)
    assert history[-1]["rejected"] and "no guard" in history[-1]["error"]
    for _ in range(4):
        client.send_event(cid, "COUNT")
    assert client.status(cid)["context"]["n"] == 2  # the guard stopped it at two
    client.send_event(cid, "ORDER", {"size": "L"})
    assert client.status(cid)["state"] == "large"


PARALLEL = f"""
machines:
  - name: shop
    states:
      - name: work
        initial: true
        parallel: true
        transitions: [{{done: true, target: shipped, action: {log("t:done")}}}]
        states:
          - name: pay
            states:
              - {{name: due, initial: true, transitions: [{{event: PAID, target: pay.settled}}]}}
              - {{name: settled, final: true, entry_action: {log("en:settled")}}}
          - name: kitchen
            states:
              - {{name: baking, initial: true, transitions: [{{event: READY, target: kitchen.ready}}]}}
              - {{name: ready, final: true, entry_action: {log("en:ready")}}}
      - {{name: shipped, final: true}}
"""


def test_parallel_regions_and_their_done(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path, PARALLEL)
    cid = client.start("shop")
    assert client.status(cid)["value"] == {"work": {"pay": "due", "kitchen": "baking"}}
    client.send_event(cid, "READY")
    assert client.status(cid)["value"] == {"work": {"pay": "due", "kitchen": "ready"}}
    assert client.status(cid)["status"] == "waiting"
    client.send_event(cid, "PAID")
    status = client.status(cid)
    assert status["status"] == "done" and status["value"] == "shipped"
    assert status["context"]["log"] == ["en:ready", "en:settled", "t:done"]


def test_a_parallel_state_with_a_history_child_is_done_when_its_regions_are(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path, PARALLEL.replace(
        "          - name: kitchen\n", "          - {name: back, history: deep}\n          - name: kitchen\n"))
    cid = client.start("shop")
    client.send_event(cid, "READY")
    client.send_event(cid, "PAID")
    assert client.status(cid)["value"] == "shipped"


HISTORY = """
machines:
  - name: player
    states:
      - name: powered
        initial: true
        transitions: [{event: POWER, target: standby}]
        states:
          - name: tape
            initial: true
            states:
              - {name: playing, initial: true, transitions: [{event: PAUSE, target: paused}]}
              - {name: paused, transitions: [{event: PLAY, target: playing}]}
            transitions: [{event: RADIO, target: radio}]
          - {name: radio, transitions: [{event: TAPE, target: tape}]}
          - {name: hist, history: KIND}
      - {name: standby, transitions: [{event: POWER, target: powered.hist}]}
"""


@pytest.mark.parametrize("kind, restored", [("deep", {"powered": {"tape": "paused"}}),
                                            ("shallow", {"powered": {"tape": "playing"}})])
def test_history_restores_what_was_active(tmp_path: Path, kind: str, restored: Any) -> None:
    client, _ = client_for(tmp_path, HISTORY.replace("KIND", kind))
    cid = client.start("player")
    client.send_event(cid, "PAUSE")
    client.send_event(cid, "POWER")
    assert client.status(cid)["value"] == "standby"
    client.send_event(cid, "POWER")
    assert client.status(cid)["value"] == restored


EVENTLESS = """
machines:
  - name: count
    states:
      - name: loop
        initial: true
        transitions:
          - {always: true, target: loop, action: acts.Inc, guard: {class: acts.Below, params: {max: 5}}}
          - {always: true, target: end}
      - {name: end, final: true}
  - name: forever
    states:
      - name: spin
        initial: true
        transitions: [{always: true, target: spin, action: acts.Inc}]
"""


def test_eventless_transitions_run_until_none_is_enabled_and_loops_are_bounded(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path, EVENTLESS)
    cid = client.start("count")
    status = client.status(cid)
    assert (status["status"], status["state"], status["context"]["n"]) == ("done", "end", 5)
    cid = client.start("forever")
    status = client.status(cid)
    assert status["status"] == "failed" and "always" in status["last_error"]


ERRORS = f"""
machines:
  - name: oven
    max_retries: 5
    states:
      - name: cooking
        initial: true
        transitions: [{{event: error, target: refund, action: {log("t:error")}}}]
        states:
          - name: heat
            initial: true
            max_retries: 1
            transitions: [{{event: GO, target: cooking.burning}}]
          - name: burning
            entry_action: acts.Boom
            transitions: [{{event: GO, target: cooking.heat}}]
      - {{name: refund, final: true}}
"""


def test_an_action_failing_for_good_raises_error_to_an_ancestor(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path.joinpath(), ERRORS.replace("max_retries: 5\n", "max_retries: 5\n    retry_base_delay: 0\n"))
    cid = client.start("oven")
    client.send_event(cid, "GO")
    status = client.status(cid)
    assert status["status"] == "done" and status["state"] == "refund"
    assert status["context"]["log"] == ["t:error"]
    # the state's own max_retries (1), not the machine's (5): two attempts
    assert status["context"].get("error", "").startswith("RuntimeError: oven on fire")
    attempts = [h for h in client.history(cid) if h.get("error")]
    assert len(attempts) == 2


DELAYED = """
machines:
  - name: timer
    states:
      - name: a
        initial: true
        transitions: [{after: 0.3, target: late}, {event: LEAVE, target: b}]
      - {name: b, transitions: [{event: BACK, target: a}]}
      - {name: late, final: true}
"""


def test_a_delayed_transition_is_cancelled_by_leaving_and_set_again_on_return(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path, DELAYED)
    cid = client.start("timer")
    client.send_event(cid, "LEAVE")
    time.sleep(0.4)
    assert client.status(cid)["state"] == "b"  # the first visit's timer fired, stale
    client.send_event(cid, "BACK")
    time.sleep(0.4)
    assert client.status(cid)["state"] == "late"


def test_targets_by_unique_name_or_dotted_path_and_ambiguous_names_are_refused(tmp_path: Path) -> None:
    machines = """
    machines:
      - name: twins
        states:
          - name: a
            initial: true
            transitions: [{event: GO, target: x}]
            states:
              - {name: x, initial: true, transitions: [{event: E, target: b}]}
          - name: b
            states:
              - {name: x, initial: true, transitions: [{event: E, target: a}]}
    """
    with pytest.raises(InvalidDefinition) as caught:
        client_for(tmp_path, machines)
    assert "target 'x' is ambiguous (a.x, b.x); name it by its dotted path" in str(caught.value)
    client, _ = client_for(tmp_path, machines.replace("target: x}", "target: b.x}"))
    cid = client.start("twins")
    client.send_event(cid, "GO")
    assert client.status(cid)["value"] == {"b": "x"}


def test_send_fails_fast_only_when_no_active_state_takes_the_event(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path, NESTED)
    cid = client.start("order")
    with pytest.raises(EventRejected) as caught:
        client.send_event(cid, "PIZZA_READY")
    assert "accepts: BAKE" in str(caught.value)
    client.send_event(cid, "BAKE")
    client.send_event(cid, "PIZZA_READY")  # now the parent takes it
    assert client.status(cid)["value"] == "deliver"


DO_CHAIN = f"""
machines:
  - name: chain
    states:
      - name: a
        initial: true
        transitions: [{{event: START, target: b}}, {{event: LATE, target: a, action: {log("late@a")}}}]
      - name: b
        do_action: {{class: acts.Emit, params: {{event: next}}}}
        transitions: [{{event: next, target: c}}, {{event: LATE, target: b, action: {log("late@b")}}}]
      - name: c
        transitions: [{{event: LATE, target: done, action: {log("late@c")}}}]
      - {{name: done, final: true}}
"""


def test_an_event_sent_while_internal_steps_run_waits_its_turn(tmp_path: Path) -> None:
    """Run to completion: LATE is judged in c, where the chain settles, not in b."""
    client, _ = client_for(tmp_path, DO_CHAIN)
    cid = client.start("chain")
    store = client.wiring.stores[0]
    # START and LATE both in the inbox before anything drains it
    store.append(cid, {"id": "e1", "kind": "event", "event": "START", "at": time.time()})
    store.append(cid, {"id": "e2", "kind": "event", "event": "LATE", "at": time.time()})
    client.send_event(cid, "LATE", event_id="e2")  # a duplicate id: not appended again; nudges
    status = client.status(cid)
    assert status["state"] == "done"
    assert status["context"]["log"] == ["do:next", "late@c"]


def test_send_wait_returns_the_status_right_after_its_own_event(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path, NESTED)
    cid = client.start("order")
    seen = client.send_event(cid, "BAKE", wait=5)
    assert seen["value"] == {"bake": "waiting"} and seen["event"]["applied"] is True
    assert seen["event"]["position"] == 1
    client.send_event(cid, "OVEN")
    assert client.send_event(cid, "BURNT", wait=5)["event"]["position"] == 3
    client, _ = client_for(tmp_path, GUARDED)
    cid = client.start("sizes")
    rejected = client.send_event(cid, "ORDER", {"size": "M"}, wait=5)
    assert rejected["event"]["applied"] is False and rejected["value"] == "pick"
    assert "no guard" in rejected["event"]["error"]
