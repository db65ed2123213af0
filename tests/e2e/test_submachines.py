"""Sub-machines and fan-out in YAML, driven as a user drives them: a machines file,
actions beside it, the client on the embedded runtime.

A state with ``invoke: {machine}`` runs one child instance; ``map: {items, machine}``
one per item. The state's ``done: true`` transition is taken when every child is done
(``output`` in the event data: the child's output, or the list of them in item order);
``error`` when one failed (``{"error", "cause"}``).
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from config.loader import load_file
from fsm.client import Client
from fsm.errors import InvalidDefinition

ACTIONS = '''
from fsm import Action, Failed


class Double(Action):
    def execute(self, context, obj):
        context["doubled"] = context["n"] * 2
        if context["n"] < 0:
            raise Failed("Negative", f"cannot double {context['n']}")
        return "ok"


class Keep(Action):
    """The parent keeps the done event's output."""
    def execute(self, context, obj):
        context["results"] = obj["event_data"].get("output")
        context["error"] = obj["event_data"].get("error")
        context["cause"] = obj["event_data"].get("cause")


class Hold(Action):
    def execute(self, context, obj):
        return None
'''

MACHINES = '''
machines:
  - name: double
    states:
      - {name: work, initial: true, do_action: acts.Double, transitions: [{event: ok, target: done}]}
      - {name: done, final: true}
  - name: held
    states:
      - {name: waiting, initial: true, transitions: [{event: go, target: done}]}
      - {name: done, final: true}
  - name: batch
    states:
      - name: fan
        initial: true
        map: {items: $.items, machine: double, max_concurrency: 2}
        transitions:
          - {done: true, target: finished, action: acts.Keep}
          - {event: error, target: broken, action: acts.Keep}
      - {name: finished, final: true}
      - {name: broken, final: true}
  - name: tolerant
    states:
      - name: fan
        initial: true
        map: {items: $.items, machine: double, tolerated_failures: 1}
        transitions:
          - {done: true, target: finished, action: acts.Keep}
          - {event: error, target: broken, action: acts.Keep}
      - {name: finished, final: true}
      - {name: broken, final: true}
  - name: single
    states:
      - name: call
        initial: true
        invoke: {machine: double}
        transitions: [{done: true, target: finished, action: acts.Keep}]
      - {name: finished, final: true}
  - name: shaped
    states:
      - name: call
        initial: true
        invoke: {machine: double, input: {n.$: $.order.total, note: fixed}}
        transitions: [{done: true, target: spread, action: acts.Keep}]
      - name: spread
        map: {items: $.numbers, machine: double, input: {n.$: $$.Map.Item.Value, at.$: $$.Map.Item.Index}}
        transitions: [{done: true, target: finished, action: acts.Keep}]
      - {name: finished, final: true}
  - name: strict
    states:
      - {name: call, initial: true, invoke: {machine: double}, transitions: [{done: true, target: finished}]}
      - {name: finished, final: true}
  - name: waiter
    states:
      - name: fan
        initial: true
        map: {items: $.items, machine: held}
        transitions:
          - {done: true, target: finished}
          - {event: stop, target: stopped}
      - {name: finished, final: true}
      - {name: stopped, final: true}
'''


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.chdir(tmp_path)
    module = f"sub_acts_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(ACTIONS)
    (tmp_path / "fsm.yaml").write_text(textwrap.dedent(MACHINES).replace("acts.", f"{module}."))
    return Client(config=str(tmp_path / "fsm.yaml"))


def items(*ns: int) -> dict[str, Any]:
    return {"items": [{"n": n} for n in ns]}


def test_a_map_collects_every_child_output_in_item_order(client: Client) -> None:
    cid = client.start("batch", items(1, 2, 3, 4, 5))
    status = client.status(cid)
    assert status["status"] == "done" and status["state"] == "finished"
    assert [r["doubled"] for r in status["context"]["results"]] == [2, 4, 6, 8, 10]
    assert status["children"] == [f"{cid}:1.0:{i}" for i in range(5)]
    for index, child in enumerate(status["children"]):
        seen = client.status(child)
        assert seen["status"] == "done" and seen["parent"] == cid
        assert seen["context"]["n"] == index + 1


def test_an_empty_map_is_done_at_once(client: Client) -> None:
    status = client.status(client.start("batch", {"items": []}))
    assert status["status"] == "done" and status["context"]["results"] == []


def test_a_failed_child_raises_error_on_the_parent_with_its_error_and_cause(client: Client) -> None:
    status = client.status(client.start("batch", items(1, -2, 3)))
    assert status["state"] == "broken"
    assert status["context"]["error"] == "Negative" and status["context"]["cause"] == "cannot double -2"


def test_tolerated_failures_leave_the_failed_slot_and_finish(client: Client) -> None:
    status = client.status(client.start("tolerant", items(1, -2, 3)))
    assert status["state"] == "finished"
    results = status["context"]["results"]
    assert results[0]["doubled"] == 2 and results[2]["doubled"] == 6
    assert results[1] == {"Error": "Negative", "Cause": "cannot double -2"}
    beyond = client.status(client.start("tolerant", items(-1, -2, 3)))
    assert beyond["state"] == "broken" and beyond["context"]["error"] == "States.ExceedToleratedFailureThreshold"


def test_an_invoked_child_gives_its_output_to_the_parent(client: Client) -> None:
    status = client.status(client.start("single", {"n": 21}))
    assert status["state"] == "finished" and status["context"]["results"]["doubled"] == 42


def test_inputs_are_templates_over_the_parents_context(client: Client) -> None:
    cid = client.start("shaped", {"order": {"total": 5}, "numbers": [7, 8]})
    status = client.status(cid)
    assert status["state"] == "finished"
    assert [(r["n"], r["at"], r["doubled"]) for r in status["context"]["results"]] == [(7, 0, 14), (8, 1, 16)]
    first = client.status(status["children"][0])
    assert first["context"] == {"n": 5, "note": "fixed", "doubled": 10}


def test_a_template_path_the_context_lacks_fails_at_once_naming_it(client: Client) -> None:
    status = client.status(client.start("shaped", {"numbers": []}))
    assert status["status"] == "failed" and status["retries"] == 1
    assert status["error"] == "States.Runtime" and "$.order.total" in status["cause"]


def test_a_map_or_invoke_naming_an_unknown_machine_or_a_bad_path_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(textwrap.dedent("""
        machines:
          - name: m
            states:
              - name: a
                initial: true
                map: {items: "$.[", machine: nowhere, max_concurrency: -1}
                transitions: [{done: true, target: b}]
              - name: c
                invoke: {machine: ghost, input: {x.$: "$.(("}}
                transitions: [{done: true, target: b}]
              - {name: b, final: true}
        """))
    with pytest.raises(InvalidDefinition) as caught:
        load_file(tmp_path / "bad.yaml")
    text = str(caught.value)
    assert "bad.yaml:7:" in text and "max_concurrency" in text
    assert "items" in text and "$.[" in text
    assert "machine 'ghost' is not defined" in text and "bad.yaml:10:" in text
    assert "x.$" in text


def test_a_parent_without_an_error_transition_fails_with_the_childs_error(client: Client) -> None:
    status = client.status(client.start("strict", {"n": -1}))
    assert status["status"] == "failed"
    assert status["error"] == "Negative" and status["cause"] == "cannot double -1"


def test_leaving_the_state_cancels_the_children_still_running(client: Client) -> None:
    cid = client.start("waiter", items(1, 2, 3))
    children = client.status(cid)["children"]
    assert [client.status(c)["status"] for c in children] == ["waiting"] * 3
    client.send_event(children[1], "go")                # one finishes: counted, the others still wait
    assert client.status(cid)["status"] == "waiting"
    client.send_event(cid, "stop")
    assert client.status(cid)["state"] == "stopped"
    assert [client.status(c)["status"] for c in children] == ["cancelled", "done", "cancelled"]


def test_cancelling_the_parent_cancels_its_children(client: Client) -> None:
    cid = client.start("waiter", items(1, 2))
    client.cancel(cid)
    assert [client.status(c)["status"] for c in client.status(cid)["children"]] == ["cancelled", "cancelled"]


@pytest.mark.slow
def test_a_thousand_item_map_finishes_with_every_result_once(client: Client) -> None:
    cid = client.start("batch", items(*range(1000)))
    status = client.status(cid)
    assert status["status"] == "done"
    assert [r["doubled"] for r in status["context"]["results"]] == [2 * n for n in range(1000)]
    assert len(set(status["children"])) == 1000
