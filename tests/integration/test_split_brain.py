"""No split brain after a store outage: an instance lives on exactly one store.

A real redis primary is killed (SIGKILL, AOF on) in the middle of a run; the instances go
on on a real redis secondary; the primary is restarted and comes back with its records
as they were, each still owing the message it was waiting for. Then everything that
could continue an instance there is thrown at it: the stale messages redelivered, the
re-send sweep (which finds the primary's overdue outboxes), timers of the old store. The
instance must continue on the secondary only: every step committed on one store, every
action run once per step, the stale records retired.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from conftest import Server, answers, free_port
from protocol_kit import EFFECTS, Clock, HandBus, linear, run_to_end, start

from fsm.dispatcher import Dispatcher, Routes
from fsm.ports import NullMetrics
from sources.memory import MemoryTimers
from sources.redis import RedisStore


def start_redis(port: int, folder: Path) -> Server:
    """redis-server with an append-only file fsynced on every write, in ``folder``."""
    command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
               "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    return Server("redis-server", command, lambda: answers(port, b"PING\r\n", (b"+PONG",)),
                  folder / f"redis-{port}.log")


def test_a_redis_primary_killed_and_restarted_never_continues_an_instance(tmp_path: Path,
                                                                           redis_url: str) -> None:
    primary_port, folder = free_port(), tmp_path / "primary"
    folder.mkdir()
    server = start_redis(primary_port, folder)
    prefix = f"split:{uuid.uuid4().hex[:8]}:"
    primary = RedisStore(f"redis://127.0.0.1:{primary_port}/0", prefix=prefix, socket_timeout=0.5,
                         connect_timeout=0.5)
    secondary = RedisStore(redis_url, prefix=prefix)
    machines, bus, clock, metrics = linear(8), HandBus(), Clock(), NullMetrics()
    d = Dispatcher(machines, [primary, secondary], Routes(bus=bus, timers=MemoryTimers()), metrics=metrics,
                   clock=clock, resend_after=60.0)
    ids = [f"split-{uuid.uuid4().hex[:8]}-{n}" for n in range(5)]
    try:
        for cid in ids:
            start(bus, "linear", cid)
        for _ in range(3 * len(ids)):               # three steps each, on the primary
            d.handle(bus.take())
        owed = [bus.take() for _ in ids]            # each instance's next message, step 3
        assert all(m is not None and m.step == 3 and m.store == 0 for m in owed)

        server.process.kill()                       # kill -9: no shutdown, no last write
        server.process.wait(5)
        for msg in owed:
            d.handle(msg)                           # fails over: continues on the secondary
        run_to_end(d, bus)
        assert all(secondary.get(cid)["status"] == "done" for cid in ids)

        server = start_redis(primary_port, folder)  # back, from its append-only file
        stale = {cid: primary.get(cid) for cid in ids}
        assert all(r["step"] == 3 and r["status"] == "running" and r["outbox"] for r in stale.values())
        for msg in owed:                            # the old messages, redelivered
            assert d.handle(msg).result in ("duplicate", "stale")
        clock.now += 3600                           # the primary's outboxes are long overdue
        assert d.resend_overdue() == 0              # nothing re-sent from a stale record
        run_to_end(d, bus)
        for cid in ids:
            retired = primary.get(cid)
            assert retired["step"] == 3 and retired["pending"] == 0 and retired["outbox"] == []
            on_primary = {h["step"] for h in primary.history(cid)}
            on_secondary = {h["step"] for h in secondary.history(cid) if "error" not in h}
            assert on_primary == {1, 2, 3} and on_secondary == {4, 5, 6, 7, 8}  # each step on one store
            assert all(EFFECTS[(cid, f"s{i}")] == 1 for i in range(7))      # each action once
        assert metrics.counts["Retired"] >= len(ids)
    finally:
        server.stop()
