"""The object model: actions, max_retry_event, Context and the frozen flyweights."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from typing import Any

import pytest

from fsm import Action, Context, Machine, State, Transition, max_retry_event
from fsm.errors import ContextNotSerialisable, FsmError


class Echo(Action):
    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        return self.params.get("event")


class Failing(Action):
    @max_retry_event("gave_up")
    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        obj["calls"] = obj.get("calls", 0) + 1
        if self.params.get("fail", True):
            raise ConnectionError("backend down")
        return "fine"


def machine(max_retries: int = 3) -> Machine:
    states = {"a": State("a", initial=True, transitions={"go": Transition("go", "b")}),
              "b": State("b", final=True)}
    return Machine(name="orders", states=states, initial="a", max_retries=max_retries)


def test_an_action_keeps_its_name_and_a_copy_of_its_params() -> None:
    params = {"event": "go"}
    action = Echo("pkg.Echo", params)
    params["event"] = "changed"
    assert (action.name, action.params, repr(action)) == ("pkg.Echo", {"event": "go"}, "<Echo pkg.Echo>")
    assert Echo().name == "Echo" and Echo().params == {}


def test_the_base_action_must_be_subclassed() -> None:
    with pytest.raises(NotImplementedError, match="Action.execute"):
        Action().execute(Context(), {})


def test_the_model_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        machine().initial = "b"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        machine().state("a").final = True  # type: ignore[misc]
    assert machine().state("a").events == ["go"]


@pytest.mark.parametrize("retries", [0, 1, 2])
def test_max_retry_event_reraises_while_retries_remain(retries: int) -> None:
    context = Context(machine=machine(max_retries=3), retries=retries)
    with pytest.raises(ConnectionError):
        Failing().execute(context, {})


@pytest.mark.parametrize("max_retries", [0, 1, 5])
def test_max_retry_event_returns_the_event_on_the_last_retry_only(max_retries: int) -> None:
    obj: dict[str, Any] = {}
    if max_retries:
        with pytest.raises(ConnectionError):
            Failing().execute(Context(machine=machine(max_retries), retries=max_retries - 1), obj)
    assert Failing().execute(Context(machine=machine(max_retries), retries=max_retries), obj) == "gave_up"
    assert obj["calls"] == (2 if max_retries else 1)


def test_max_retry_event_leaves_a_success_alone() -> None:
    context = Context(machine=machine(max_retries=0))
    assert Failing(params={"fail": False}).execute(context, {}) == "fine"
    assert Failing.execute.__name__ == "execute"


def test_context_holds_user_data_and_system_attributes() -> None:
    m = machine(max_retries=4)
    state = m.state("a")
    context = Context({"order": 1}, correlation_id="cid-9", machine=m, steps=3, retries=2,
                      current_state=state, current_event="go")
    assert (context.correlation_id, context.steps, context.retries, context.max_retries,
            context.machine_name, context.current_state.name, context.current_event) == (
        "cid-9", 3, 2, 4, "orders", "a", "go")
    assert dict(context) == {"order": 1}
    assert context.user_data() == {"order": 1}


def test_a_bare_context_has_empty_defaults() -> None:
    context = Context()
    assert (context.correlation_id, context.machine_name, context.steps, context.retries,
            context.max_retries, context.current_state, context.current_event) == ("", "", 0, 0, 0, None, None)


def test_user_data_is_a_copy_that_is_json() -> None:
    context = Context({"items": [1, 2], "nested": {"ok": True}})
    data = context.user_data()
    data["items"].append(3)  # a shallow copy: the dict is new, the values are shared
    assert json.loads(json.dumps(data)) == data
    data["extra"] = 1
    assert "extra" not in context


@pytest.mark.parametrize("value, type_name", [({1, 2}, "set"), (object(), "object"), (math.nan, "float"),
                                              ({"deep": b"bytes"}, "dict")])
def test_user_data_names_the_key_that_is_not_json(value: object, type_name: str) -> None:
    context = Context({"fine": 1, "bad": value})
    with pytest.raises(ContextNotSerialisable) as caught:
        context.user_data()
    assert isinstance(caught.value, FsmError)
    assert caught.value.key == "bad"
    assert str(caught.value) == f"context key 'bad' holds a {type_name}, which is not JSON-serialisable"


def test_user_data_names_a_key_that_is_not_json_itself() -> None:
    with pytest.raises(ContextNotSerialisable, match="tuple"):
        Context({("a", "tuple"): 1}).user_data()


def test_a_non_string_key_is_refused_rather_than_turned_into_a_string() -> None:
    with pytest.raises(ContextNotSerialisable, match="1"):
        Context({1: "one"}).user_data()


def test_the_core_imports_no_yaml_or_cloud_client() -> None:
    code = ("import sys, fsm, fsm.model, fsm.engine, fsm.graph, fsm.errors, fsm.dispatcher, fsm.lease, "
            "fsm.message, fsm.ports; "
            "print(sorted(m for m in ('yaml', 'boto3', 'redis', 'pymemcache') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
