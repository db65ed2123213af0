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

from fsm.client import Client

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
