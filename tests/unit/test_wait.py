"""``actions.wait.Sleep``: its contract with the dispatcher, and a whole sleeping instance.

Sleep cannot reach the bus itself (actions see only the context and ``obj``), so it
leaves ``obj["schedule"]`` for the dispatcher, which commits a timer message with the
transition, as it does for a state's ``timeout:``. The end-to-end tests use a fake clock
shared by the dispatcher and the embedded runtime, so nothing really sleeps.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from actions.wait import Sleep
from config.loader import load_text
from config.settings import Settings
from fsm import Action, Context
from fsm.client import Client
from fsm.errors import InvalidDefinition


class Go(Action):
    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        return "go"


MACHINE = """
machines:
  - name: napper
    states:
      - name: a
        initial: true
        do_action: test_wait.Go
        transitions: [{event: go, target: waits}]
      - name: waits
        do_action: {class: actions.wait.Sleep, params: {seconds: 0.2, event: wake}}
        transitions: [{event: wake, target: b}]
      - {name: b, final: true}
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_sleep_asks_for_a_timer_and_settles() -> None:
    obj: dict[str, Any] = {"fence_token": 3}
    result = Sleep("actions.wait.Sleep", {"seconds": 5, "event": "wake"}).execute(Context(), obj)
    assert result is None
    assert obj["schedule"] == {"event": "wake", "delay": 5.0}


def test_sleep_params_are_checked_when_the_machine_loads() -> None:
    bad = MACHINE.replace("{seconds: 0.2, event: wake}", "{seconds: soon, event: wake}")
    with pytest.raises(InvalidDefinition, match=r"<string>:\d+: .*seconds` must be a number"):
        load_text(bad)
    with pytest.raises(InvalidDefinition, match="`event` must name the event"):
        Sleep("s", {"seconds": 1})
    with pytest.raises(InvalidDefinition, match="unknown params \\['secs'\\]"):
        Sleep("s", {"secs": 1, "seconds": 1, "event": "wake"})


def test_a_sleeping_instance_wakes_and_finishes() -> None:
    client = Client(settings=Settings(store=["memory://"]), definitions=load_text(MACHINE))
    assert client.runtime is not None
    clock = FakeClock()
    client.runtime.clock = clock
    client.wiring.dispatcher.clock = clock
    cid = client.start("napper")
    assert client.status(cid)["state"] == "waits" and client.status(cid)["status"] == "waiting"
    clock.now += 0.1
    client.runtime.catch_up()
    assert client.status(cid)["status"] == "waiting", "woke before its time"
    clock.now += 0.15
    client.runtime.catch_up()
    status = client.status(cid)
    assert (status["state"], status["status"]) == ("b", "done")


def test_a_wake_up_is_ignored_once_the_state_was_left() -> None:
    """An external event that comes first moves the instance on; the old wake-up must not
    then push it out of the next state, which here accepts the same event."""
    text = MACHINE.replace("transitions: [{event: wake, target: b}]",
                           "transitions: [{event: wake, target: b}, {event: skip, target: c}]")
    text += "      - {name: c, transitions: [{event: wake, target: b}]}\n"
    client = Client(settings=Settings(store=["memory://"]), definitions=load_text(text))
    assert client.runtime is not None
    clock = FakeClock()
    client.runtime.clock = clock
    client.wiring.dispatcher.clock = clock
    cid = client.start("napper")
    client.send_event(cid, "skip")
    clock.now += 1.0
    client.runtime.catch_up()
    status = client.status(cid)
    assert (status["state"], status["status"]) == ("c", "waiting")
    assert [h["event"] for h in client.history(cid)] == [None, "go", "skip"]
