"""State timeouts on every timer backend, with an injected clock: a timeout longer than
any bus can hold (SQS: 900 s) goes to the timer store and fires only if the instance is
still in the state it was set for."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from config.loader import load_text
from config.settings import Settings
from fsm.app.wiring import build
from fsm.client import Client

MACHINES = load_text("""
machines:
  - name: signup
    states:
      - name: waiting_for_click
        initial: true
        timeout: 3600
        transitions:
          - {event: CLICK, target: verified}
          - {event: RESEND, target: waiting_for_click}
          - {event: timeout, target: expired}
      - {name: verified, final: true}
      - {name: expired, final: true}
""").machines


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", "redis", "dynamodb"])
def client(request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    kind = request.param
    if kind == "memory":
        store = "memory://"
    elif kind == "sqlite":
        store = f"sqlite:///{tmp_path / 'fsm.db'}"
    elif kind == "redis":
        store = request.getfixturevalue("redis_url")
    else:
        from sources.dynamodb_tables import create_tables

        monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("moto_url"))
        store = f"arn:aws:dynamodb:us-east-1:123456789012:table/timers-{uuid.uuid4().hex[:8]}"
        create_tables(store)
    clock = Clock()
    wiring = build(MACHINES, Settings(store=[store]))
    wiring.dispatcher.clock = clock
    c = Client(wiring=wiring)
    c.runtime.clock = clock
    c.clock = clock
    yield c
    wiring.close()


def test_a_timeout_longer_than_any_bus_delay_fires_from_the_timer_store(client: Any) -> None:
    cid = client.start("signup", {}, f"t-{uuid.uuid4().hex}")
    assert client.status(cid)["status"] == "waiting"
    client.clock.now += 3599
    client.runtime.catch_up()
    assert client.status(cid)["state"] == "waiting_for_click"     # not yet
    client.clock.now += 2
    client.runtime.catch_up()
    status = client.status(cid)
    assert (status["status"], status["state"]) == ("done", "expired")
    assert client.history(cid)[-1]["event"] == "timeout"


def test_an_event_first_makes_the_timer_stale(client: Any) -> None:
    cid = client.start("signup", {}, f"t-{uuid.uuid4().hex}")
    client.send_event(cid, "CLICK")
    client.clock.now += 7200
    client.runtime.catch_up()
    status = client.status(cid)
    assert (status["status"], status["state"]) == ("done", "verified")
    assert [h["event"] for h in client.history(cid)] == [None, "CLICK"]


def test_re_entering_the_state_restarts_its_timeout(client: Any) -> None:
    cid = client.start("signup", {}, f"t-{uuid.uuid4().hex}")
    client.clock.now += 3000
    client.send_event(cid, "RESEND")                  # back into the same state: a new timeout
    client.clock.now += 1000                          # the first timeout is due: ignored
    client.runtime.catch_up()
    assert client.status(cid)["state"] == "waiting_for_click"
    client.clock.now += 2700                          # the second one is due
    client.runtime.catch_up()
    assert client.status(cid)["state"] == "expired"
    assert [h["event"] for h in client.history(cid)] == [None, "RESEND", "timeout"]
