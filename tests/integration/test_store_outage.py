"""A store outage in the middle of a run, with real servers: the primary store (redis or a
DynamoDB table on moto_server) is cut off while instances are at different steps, they
go on on the secondary (a DynamoDB table), and the primary comes back with its data, each
of its records still owing the message it was waiting for. Then everything that could
continue an instance there is thrown at it (the old messages redelivered, the re-send
sweep long after). Every step must be committed on one store only, every action's effect
happen once per step, and the primary's records be retired.

moto_server keeps its data in memory, so the outage is played by a TCP proxy between the
store client and the server (``tcp_proxy.py``): down, it refuses connections and resets
the open ones, as a dead server does; up again, the server behind it has everything.
redis goes through one too (``test_split_brain.py`` kills a real redis -9 and restarts it
from its append-only file). ``test_a_commit_cut_off_*`` cuts the primary in the middle of
a commit, the case the commit's re-read after a lost answer exists for.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from protocol_kit import EFFECTS, Clock, HandBus, linear, run_to_end, start
from tcp_proxy import TcpProxy

from fsm.dispatcher import Dispatcher, Routes
from fsm.errors import RecoverableError
from fsm.ports import NullMetrics
from sources.dynamodb import DynamoStore
from sources.dynamodb_tables import create_tables
from sources.memory import MemoryTimers
from sources.redis import RedisStore

ACCOUNT = "123456789012"
FAST = {"connect_timeout": 0.5, "read_timeout": 2, "max_attempts": 1}   # fail over at once, no retries
STEPS = 8           # linear(8): s0..s7, 8 commits, 7 actions


def table(name: str) -> str:
    return f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{name}-{uuid.uuid4().hex[:8]}"


def dynamo(moto: str, through: TcpProxy | None = None) -> DynamoStore:
    """A table on ``moto`` (created directly), its client going through ``through``."""
    url = table("outage")
    create_tables(url, endpoint_url=moto)
    return DynamoStore(url, endpoint_url=through.url("http") if through else moto, aws=FAST)


@pytest.fixture
def proxies() -> Iterator[Callable[[str], TcpProxy]]:
    made: list[TcpProxy] = []

    def make(server_url: str) -> TcpProxy:
        parts = urlsplit(server_url)
        proxy = TcpProxy((parts.hostname or "127.0.0.1", int(parts.port or 0)))
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def primaries(kind: str, private_moto: str, private_redis: Callable[..., Any],
              proxies: Callable[[str], TcpProxy]) -> tuple[Any, TcpProxy]:
    if kind == "redis":
        url, _ = private_redis()
        proxy = proxies(url)
        return RedisStore(proxy.url("redis", "/0"), prefix=f"outage:{uuid.uuid4().hex[:8]}:", socket_timeout=1.0,
                          connect_timeout=0.5), proxy
    proxy = proxies(private_moto)
    return dynamo(private_moto, proxy), proxy


def committed_steps(store: Any, cid: str) -> list[int]:
    return [h["step"] for h in store.history(cid) if not h.get("error")]


@pytest.mark.parametrize("kind", ["redis", "dynamodb"])
def test_a_primary_cut_off_mid_run_and_back_with_its_data_never_continues_an_instance(
        kind: str, private_moto: str, private_redis: Callable[..., Any],
        proxies: Callable[[str], TcpProxy]) -> None:
    primary, proxy = primaries(kind, private_moto, private_redis, proxies)
    secondary = dynamo(private_moto)
    machines, bus, clock, metrics = linear(STEPS), HandBus(), Clock(), NullMetrics()
    d = Dispatcher(machines, [primary, secondary], Routes(bus=bus, timers=MemoryTimers()), metrics=metrics,
                   clock=clock, resend_after=60.0)
    ids = [f"outage-{kind}-{uuid.uuid4().hex[:8]}-{n}" for n in range(4)]
    for cid in ids:
        start(bus, "linear", cid)
    # Mid-run: instance n has committed n + 2 steps on the primary when the primary goes.
    for _ in range(2 * len(ids)):
        d.handle(bus.take())
    for n, cid in enumerate(ids):
        for _ in range(n):
            nxt = next(i for i, e in enumerate(bus.sent) if cid in e.body)
            bus.sent.insert(0, bus.sent.pop(nxt))
            d.handle(bus.take())
    owed = [bus.take() for _ in ids]
    assert sorted(m.step for m in owed) == [2, 3, 4, 5] and all(m.store == 0 for m in owed)
    at_cut = {m.correlation_id: m.step for m in owed}

    proxy.down()                                 # the primary is gone: refused, connections reset
    for msg in owed:
        d.handle(msg)                            # fails over: each continues on the secondary
    run_to_end(d, bus)
    assert all(secondary.get(cid)["status"] == "done" for cid in ids)
    assert metrics.counts["Failovers"] >= len(ids)

    proxy.up()                                   # back, with every record as it was
    stale = {cid: primary.get(cid) for cid in ids}
    assert all(r["step"] == at_cut[cid] and r["status"] == "running" and r["outbox"] for cid, r in stale.items())
    for msg in owed:                             # the old messages, redelivered
        assert d.handle(msg).result in ("duplicate", "stale")
    clock.now += 3600                            # the primary's outboxes are long overdue
    assert d.resend_overdue() == 0               # nothing re-sent from a stale record
    run_to_end(d, bus)
    for cid in ids:
        retired = primary.get(cid)
        assert retired["step"] == at_cut[cid] and retired["pending"] == 0 and retired["outbox"] == []
        on_primary, on_secondary = committed_steps(primary, cid), committed_steps(secondary, cid)
        assert on_primary == list(range(1, at_cut[cid] + 1))                   # each step once ...
        assert on_secondary == list(range(at_cut[cid] + 1, STEPS + 1))         # ... on one store only
        assert all(EFFECTS[(cid, f"s{i}")] == 1 for i in range(STEPS - 1))     # each action once
    assert metrics.counts["Retired"] >= len(ids)
    assert metrics.counts["Transitions"] == sum(STEPS for _ in ids)            # counted once each


class CutAfterCommit:
    """The primary's client: the commit of step ``at`` reaches the server, and then the
    server is cut off before its answer comes back (the proxy resets the connection);
    ``back_after`` seconds later it is back (never, with ``None``)."""

    def __init__(self, store: Any, proxy: TcpProxy, at: int, back_after: float | None):
        self.store, self.proxy, self.at, self.back_after = store, proxy, at, back_after
        self.timer: threading.Timer | None = None

    def swap(self, cid: str, expect: Any, fields: Any, history: Any = ()) -> Any:
        result = self.store.swap(cid, expect, fields, history)
        if fields.get("step") == self.at and expect and expect.get("lease_owner") and self.proxy.serving:
            self.proxy.down()
            if self.back_after is not None:
                self.timer = threading.Timer(self.back_after, self.proxy.up)
                self.timer.start()
            raise RecoverableError("connection reset by peer (after the write)")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def cut_run(kind: str, back_after: float | None, private_moto: str, private_redis: Callable[..., Any],
            proxies: Callable[[str], TcpProxy]) -> tuple[str, Any, Any, NullMetrics, TcpProxy]:
    inner, proxy = primaries(kind, private_moto, private_redis, proxies)
    primary = CutAfterCommit(inner, proxy, 3, back_after)
    secondary = dynamo(private_moto)
    bus, clock, metrics = HandBus(), Clock(), NullMetrics()
    d = Dispatcher(linear(STEPS), [primary, secondary], Routes(bus=bus, timers=MemoryTimers()), metrics=metrics,
                   clock=clock)
    cid = f"cut-{kind}-{uuid.uuid4().hex[:8]}"
    start(bus, "linear", cid)
    d.handle(bus.take())
    d.handle(bus.take())
    outcome = d.handle(bus.take())                   # step 2 -> 3: lands, then the primary is cut off
    if primary.timer is not None:
        primary.timer.join()
    run_to_end(d, bus)
    if back_after is None:                           # back after the run, with its data
        proxy.up()
        clock.now += 3600
        assert d.resend_overdue() == 0
        run_to_end(d, bus)
    assert outcome.result == "committed"
    return cid, inner, secondary, metrics, proxy


@pytest.mark.parametrize("kind", ["redis", "dynamodb"])
def test_a_commit_cut_off_after_it_landed_stands_when_the_primary_answers_again(
        kind: str, private_moto: str, private_redis: Callable[..., Any],
        proxies: Callable[[str], TcpProxy]) -> None:
    """The primary back within the re-reads after the lost answer (a short cut): the
    commit is known to have landed, so it stands: counted once, its message sent at once,
    no failover, nothing run twice."""
    cid, inner, secondary, metrics, _ = cut_run(kind, 0.1, private_moto, private_redis, proxies)
    assert inner.get(cid)["status"] == "done" and secondary.get(cid) is None
    assert committed_steps(inner, cid) == list(range(1, STEPS + 1))
    assert all(EFFECTS[(cid, f"s{i}")] == 1 for i in range(STEPS - 1))
    assert metrics.counts["Transitions"] == STEPS and "Failovers" not in metrics.counts


@pytest.mark.parametrize("kind", ["redis", "dynamodb"])
def test_a_commit_cut_off_for_good_runs_its_step_again_on_the_secondary(
        kind: str, private_moto: str, private_redis: Callable[..., Any],
        proxies: Callable[[str], TcpProxy]) -> None:
    """The primary stays away: nothing can tell whether the commit landed, so the message
    fails over and its step runs again on the secondary. This is the one step an outage
    can make run (and be committed) twice, once per store; the instance then continues on
    the secondary only, the primary's copy is retired when it is back, and the counter
    counts the step once (the lost answer was never counted)."""
    cid, inner, secondary, metrics, _ = cut_run(kind, None, private_moto, private_redis, proxies)
    assert secondary.get(cid)["status"] == "done"
    assert committed_steps(inner, cid) == [1, 2, 3]
    assert committed_steps(secondary, cid) == list(range(3, STEPS + 1))
    assert inner.get(cid)["outbox"] == [] and inner.get(cid)["pending"] == 0     # retired
    assert [EFFECTS[(cid, f"s{i}")] for i in range(STEPS - 1)] == [1, 1, 2, 1, 1, 1, 1]
    assert metrics.counts["Transitions"] == STEPS and metrics.counts["Failovers"] == 1
