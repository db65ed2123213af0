"""Store failover with real faults: the primary's port closed from the start, its table
missing, and its server killed in the middle of a run. Every instance must complete on
the secondary, each step committed once, and every switch counted."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from config.loader import load_text
from config.settings import Settings
from fsm import Action
from fsm.app.wiring import build
from fsm.client import Client
from fsm.ports import NullMetrics

RUNS: dict[tuple[str, int], int] = {}
KILL: dict[str, Any] = {}
_lock = threading.Lock()


class Step(Action):
    """Counts raw executions per (instance, step); may kill the primary at one step."""

    def execute(self, context: Any, obj: dict[str, Any]) -> str:
        with _lock:
            RUNS[(context.correlation_id, context.steps)] = RUNS.get((context.correlation_id, context.steps), 0) + 1
        if KILL.get("at") == (context.correlation_id, context.steps):
            del KILL["at"]
            KILL.pop("server").stop()
        context.setdefault("path", []).append(context.current_state.name)
        return "next"


MACHINES = load_text("""
machines:
  - name: six
    states:
""" + "".join(f"""
      - name: s{i}
        {"initial: true" if i == 0 else ""}
        {"final: true" if i == 5 else "do_action: test_store_failover.Step"}
        {"" if i == 5 else f"transitions: [{{event: next, target: s{i + 1}}}]"}
""" for i in range(6))).machines


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_for(stores: list[str], settings: dict[str, Any] | None = None) -> tuple[Client, NullMetrics]:
    metrics = NullMetrics()
    wiring = build(MACHINES, Settings(store=stores, **(settings or {})), metrics=metrics)
    return Client(wiring=wiring), metrics


def check_completed(client: Client, ids: list[str]) -> None:
    for cid in ids:
        status = client.status(cid)
        assert status["status"] == "done", status
        assert status["context"]["path"] == [f"s{i}" for i in range(5)]


def test_redis_primary_refusing_connections_from_the_start(memcached_url: str) -> None:
    primary = f"redis://127.0.0.1:{closed_port()}/0"
    client, metrics = client_for([primary, memcached_url])
    ids = [client.start("six", {}, f"closed-{uuid.uuid4().hex[:8]}-{n}") for n in range(3)]
    check_completed(client, ids)
    assert all(RUNS[(cid, step)] == 1 for cid in ids for step in range(5))
    # Only each instance's first message tried the primary: the rest carry the switch.
    assert metrics.counts["Failovers"] == 3


def test_dynamodb_primary_table_missing(fresh_moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sources.dynamodb_tables import create_tables

    monkeypatch.setenv("AWS_ENDPOINT_URL", fresh_moto_url)
    missing = "arn:aws:dynamodb:us-east-1:123456789012:table/never-created"
    secondary = "arn:aws:dynamodb:us-east-1:123456789012:table/fsm-secondary"
    create_tables(secondary)
    client, metrics = client_for([missing, secondary], {"aws": {"max_attempts": 1}})
    ids = [client.start("six", {}, f"missing-{n}") for n in range(2)]
    check_completed(client, ids)
    assert all(RUNS[(cid, step)] == 1 for cid in ids for step in range(5))
    assert metrics.counts["Failovers"] == 2
    history = client.history(ids[0])
    assert [h["to"] for h in history] == [f"s{i}" for i in range(6)]


def test_redis_primary_killed_mid_run(private_redis: Callable[..., Any], memcached_url: str) -> None:
    url, server = private_redis()
    cid = f"killed-{uuid.uuid4().hex[:8]}"
    KILL.update(at=(cid, 3), server=server)          # the action of step 4 stops the primary
    client, metrics = client_for([url, memcached_url])
    client.start("six", {}, cid)
    check_completed(client, [cid])
    # Steps before the kill ran once; the step whose commit hit the dead server ran again
    # on the secondary (its first run never committed); the rest ran once.
    assert [RUNS[(cid, step)] for step in range(5)] == [1, 1, 1, 2, 1]
    assert metrics.counts["Failovers"] == 1
    history = client.history(cid)                    # the secondary's part of it
    assert [h["step"] for h in history] == [4, 5, 6]
