"""The per-transition protocol on every store: duplicates, races, crashes, stale leases.

Each test drives a machine through the real Dispatcher against a real backend (see
``store_factory`` in conftest), delivering messages by hand to reproduce what Lambda
and SQS do in production: deliver twice, deliver to two workers at once, lose a worker
between two steps.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from protocol_kit import EFFECTS, Clock, HandBus, dispatcher, linear, run_to_end, start

from fsm.message import Message


def _cid() -> str:
    return uuid.uuid4().hex


def test_every_step_delivered_twice_runs_each_action_once(store_factory: Callable[[], Any]) -> None:
    machines, bus = linear(10), HandBus()
    d = dispatcher(machines, store_factory(), bus)
    cid = _cid()
    start(bus, "linear", cid, {"order": 7})
    results = []
    while (msg := bus.take()) is not None:
        results.append(d.handle(msg).result)
        results.append(d.handle(msg).result)  # the same message again, as SQS may deliver it
    # A redelivered message re-sends the outbox once; the copy is a duplicate as well.
    assert results.count("committed") == 10
    assert all(EFFECTS[(cid, f"s{i}")] == 1 for i in range(9))
    record = d.stores[0].get(cid)
    assert record["status"] == "done" and record["state"] == "s9" and record["step"] == 10
    assert record["context"]["order"] == 7 and record["context"]["s8"] == 8
    steps = [h["step"] for h in d.stores[0].history(cid)]
    assert steps == list(range(1, 11))


def test_out_of_order_redelivery_of_an_old_step_runs_nothing(store_factory: Callable[[], Any]) -> None:
    machines, bus = linear(5), HandBus()
    d = dispatcher(machines, store_factory(), bus)
    cid = _cid()
    start(bus, "linear", cid)
    first = bus.sent[0]
    run_to_end(d, bus)
    from fsm.message import decode

    assert d.handle(decode(first.body)).result == "duplicate"
    assert bus.sent == []  # the instance is done: nothing is re-sent
    assert sum(EFFECTS[(cid, f"s{i}")] for i in range(4)) == 4


def test_the_same_message_to_two_workers_runs_once(store_factory: Callable[[], Any]) -> None:
    machines = linear(3, pause=0.3)
    bus = HandBus()
    workers = [dispatcher(machines, store_factory(), bus) for _ in range(2)]
    cid = _cid()
    start(bus, "linear", cid)
    msg = bus.take()
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def work(d: Any) -> None:
        barrier.wait()
        outcomes.append(d.handle(msg).result)

    threads = [threading.Thread(target=work, args=(d,)) for d in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["busy", "committed"]
    assert EFFECTS[(cid, "s0")] == 1
    # The loser requeued the message with backoff instead of dropping it; it is now a duplicate.
    run_to_end(workers[0], bus)
    assert workers[0].stores[0].get(cid)["status"] == "done"
    assert EFFECTS[(cid, "s0")] == 1 and EFFECTS[(cid, "s1")] == 1


class CrashingStore:
    """Lets the acquire through, then kills the worker at its commit (a swap with history)."""

    def __init__(self, inner: Any):
        self.inner, self.url, self.armed = inner, inner.url, True

    def swap(self, cid: str, expect: Any, fields: Any, history: Any = ()) -> Any:
        if history and self.armed:
            self.armed = False
            raise SystemExit("worker killed between acquire and commit")
        return self.inner.swap(cid, expect, fields, history)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_worker_killed_between_acquire_and_commit(store_factory: Callable[[], Any]) -> None:
    machines, bus, clock = linear(4), HandBus(), Clock()
    cid = _cid()
    start(bus, "linear", cid)
    dispatcher(machines, store_factory(), bus).handle(bus.take())  # step 1 committed
    msg = bus.take()
    dying = dispatcher(machines, CrashingStore(store_factory()), bus, lease_timeout=30, clock=clock)
    try:
        dying.handle(msg)
    except SystemExit:
        pass
    survivor = dispatcher(machines, store_factory(), bus, lease_timeout=30, clock=clock)
    assert survivor.handle(msg).result == "busy"      # the dead worker's lease is still live
    bus.sent.clear()
    clock.now += 31                                  # ... until it expires: SQS redelivers
    assert survivor.handle(msg).result == "committed"
    run_to_end(survivor, bus)
    store = survivor.stores[0]
    assert store.get(cid)["status"] == "done"
    assert [h["step"] for h in store.history(cid)] == [1, 2, 3, 4]
    assert EFFECTS[(cid, "s1")] == 2                 # ran in the dead worker, then once more
    fences = store.get(cid)["context"]["fences"]
    assert fences == sorted(fences) and len(set(fences)) == len(fences)


def test_worker_killed_between_commit_and_send(store_factory: Callable[[], Any]) -> None:
    machines, bus = linear(4), HandBus()
    d = dispatcher(machines, store_factory(), bus)
    cid = _cid()
    start(bus, "linear", cid)
    msg = bus.take()
    bus.fail_next_send = True
    try:
        d.handle(msg)
    except SystemExit:
        pass
    assert bus.sent == []                            # committed, but its message never left
    assert d.handle(msg).result == "duplicate"       # the redelivery re-sends the outbox
    assert len(bus.sent) == 1
    run_to_end(d, bus)
    assert d.stores[0].get(cid)["status"] == "done"
    assert [h["step"] for h in d.stores[0].history(cid)] == [1, 2, 3, 4]
    assert all(EFFECTS[(cid, f"s{i}")] == 1 for i in range(3))


def test_a_stale_worker_cannot_commit(store_factory: Callable[[], Any]) -> None:
    machines, bus, clock = linear(3), HandBus(), Clock()
    cid = _cid()
    start(bus, "linear", cid)
    msg = bus.take()
    slow = dispatcher(machines, store_factory(), bus, lease_timeout=10, clock=clock)
    fast = dispatcher(machines, store_factory(), bus, lease_timeout=10, clock=clock)
    from fsm import lease as leases
    from fsm.owing import first_record

    got = leases.acquire(slow.stores[0], msg, "slow-worker", 10_000, int(clock.now * 1000),
                         lambda: first_record(msg, machines["linear"], clock.now))
    assert isinstance(got, leases.Lease)
    clock.now += 11                                  # the slow worker's lease expires
    assert fast.handle(msg).result == "committed"    # taken over, with a higher fence
    assert not leases.commit(slow.stores[0], got, {"state": "s1", "step": 1})
    record = fast.stores[0].get(cid)
    assert record["step"] == 1 and record["fence"] > got.fence


def test_a_redelivered_copy_of_a_resent_message_does_not_chain(store_factory: Callable[[], Any]) -> None:
    machines, bus = linear(6), HandBus()
    d = dispatcher(machines, store_factory(), bus)
    cid = _cid()
    start(bus, "linear", cid)
    msg = bus.take()
    d.handle(msg)
    d.handle(msg)                                    # duplicate: re-sends step 1 as a copy
    assert len(bus.sent) == 2
    run_to_end(d, bus)
    assert d.stores[0].get(cid)["status"] == "done"
    # the copy was a duplicate each time; it re-sent nothing, so each step ran once
    assert all(EFFECTS[(cid, f"s{i}")] == 1 for i in range(5))


def test_failure_then_retry_keeps_the_committed_context(store_factory: Callable[[], Any]) -> None:
    from config.loader import load_text

    machines = load_text("""
machines:
  - name: flaky
    max_retries: 2
    retry_base_delay: 0
    states:
      - {name: a, initial: true, do_action: protocol_kit.Record, transitions: [{event: next, target: b}]}
      - {name: b, do_action: tests_flaky.Fails, transitions: [{event: next, target: c}]}
      - {name: c, final: true}
""".replace("tests_flaky.Fails", "test_dispatch_protocol.Fails")).machines
    bus = HandBus()
    d = dispatcher(machines, store_factory(), bus)
    cid = _cid()
    start(bus, "flaky", cid, {"log": ["ordered"]})
    results = [o.result for o in run_to_end(d, bus)]
    assert results == ["committed", "retrying", "retrying", "failed"]
    record = d.stores[0].get(cid)
    assert record["status"] == "failed" and record["state"] == "a"
    assert "RuntimeError: kitchen on fire" in record["last_error"]["message"]
    assert record["failed_message"]["event"] == "next"
    assert "tainted" not in record["context"]        # failed attempts never leak into the context,
    assert record["context"]["log"] == ["ordered"]   # not even into nested values
    assert record["failed_message"]["context"]["log"] == ["ordered"]


def _fails_execute(self: Any, context: Any, obj: Any) -> None:
    context["tainted"] = True
    context["log"].append("tainted")
    raise RuntimeError("kitchen on fire")


from fsm import Action

Fails = type("Fails", (Action,), {"execute": _fails_execute})  # type: ignore[misc]


def test_external_event_is_applied_once_and_in_place(store_factory: Callable[[], Any]) -> None:
    from config.loader import load_text

    machines = load_text("""
machines:
  - name: wait
    states:
      - {name: a, initial: true, transitions: [{event: go, target: b}, {event: stop, target: c}]}
      - {name: b, do_action: protocol_kit.Record, transitions: [{event: next, target: c}]}
      - {name: c, final: true}
""").machines
    bus = HandBus()
    d = dispatcher(machines, store_factory(), bus)
    cid = _cid()
    start(bus, "wait", cid)
    run_to_end(d, bus)
    record = d.stores[0].get(cid)
    assert record["status"] == "waiting"
    event = Message(machine="wait", correlation_id=cid, kind="event", event="go", event_id="e-1",
                    data={"who": "kitchen"}, step=record["step"], fence=record["fence"])
    assert d.handle(event).result == "committed"
    assert d.handle(event).result == "duplicate"     # the same event id again
    run_to_end(d, bus)
    record = d.stores[0].get(cid)
    assert record["status"] == "done" and record["context"]["who"] == "kitchen"
    assert EFFECTS[(cid, "b")] == 1


WAITS_AFTER_ONE_STEP = """
machines:
  - name: waits
    states:
      - {name: a, initial: true, do_action: protocol_kit.Record, transitions: [{event: next, target: b}]}
      - {name: b, transitions: [{event: go, target: c}, {event: nope, target: c}]}
      - {name: c, final: true}
"""


def test_a_stale_step_copy_for_a_waiting_instance_runs_nothing_and_writes_nothing(
        store_factory: Callable[[], Any]) -> None:
    """A copy of an old step message, for the step a waiting instance is at, carrying a
    fence below the stored one (an event's acquire raised it since): no user code, no
    write, counted."""
    from config.loader import load_text

    machines, bus = load_text(WAITS_AFTER_ONE_STEP).machines, HandBus()
    d = dispatcher(machines, store_factory(), bus)
    cid = _cid()
    start(bus, "waits", cid, {"kept": 1})
    run_to_end(d, bus)
    waiting = d.stores[0].get(cid)
    assert waiting["status"] == "waiting" and waiting["state"] == "b"
    # An external event the state rejects still takes the lease once: the fence goes up.
    rejected = Message(machine="waits", correlation_id=cid, kind="event", event="unknown", event_id="e-1")
    assert d.handle(rejected).result == "rejected"
    before = d.stores[0].get(cid)
    assert before["fence"] > waiting["fence"]
    stale = Message(machine="waits", correlation_id=cid, step=before["step"], fence=waiting["fence"],
                    state="a", event="next", context={"kept": "overwritten"})
    runs = EFFECTS[(cid, "a")]
    assert d.handle(stale).result == "stale"
    assert d.handle(stale.evolve(fence=before["fence"])).result == "stale"  # waiting: stale at any fence
    assert EFFECTS[(cid, "a")] == runs
    assert d.stores[0].get(cid) == before                  # not a byte written
    assert d.metrics.counts["StaleMessages"] == 2          # type: ignore[attr-defined]


def test_a_stale_step_copy_for_a_running_instance_is_dropped_once_the_fence_moved_on(
        store_factory: Callable[[], Any]) -> None:
    """A worker took the step's lease (fence up) and gave it back without committing (Ctrl-C):
    an older copy of the step's message is stale; the re-sent outbox, which carries the new
    fence, goes on."""
    from fsm import lease as leases

    machines, bus = linear(4), HandBus()
    d = dispatcher(machines, store_factory(), bus)
    cid = _cid()
    start(bus, "linear", cid)
    d.handle(bus.take())                                   # step 0 committed; step 1 owed
    owed = bus.take()
    store = d.stores[0]
    got = leases.acquire(store, owed, "worker-x", 60_000, 0, dict)
    assert isinstance(got, leases.Lease)
    assert leases.release(store, got)
    assert d.handle(owed).result == "stale" and EFFECTS[(cid, "s1")] == 0
    record = store.get(cid)
    assert record["lease_owner"] == "" and record["fence"] == got.fence
    assert d.resend_outbox(store, record, force=True) == 1
    run_to_end(d, bus)
    assert store.get(cid)["status"] == "done"
    assert all(EFFECTS[(cid, f"s{i}")] == 1 for i in range(3))


def test_behind_a_backlog_the_sweep_resends_an_owed_message_once_per_resend_after(
        store_factory: Callable[[], Any]) -> None:
    """The owed message sits in a slow queue: the sweep sends one copy per ``resend_after``
    however often it runs, and the copies, arriving as duplicates, re-send nothing."""
    from fsm.ports import PendingIndex

    store = store_factory()
    if not isinstance(store, PendingIndex):
        pytest.skip("memcached keeps no pending index, so there is no sweep (see test_pending_index)")
    machines, bus, clock = linear(3), HandBus(), Clock()
    d = dispatcher(machines, store, bus, clock=clock, resend_after=60.0)
    cid = _cid()
    start(bus, "linear", cid)
    d.handle(bus.take())                      # step 0 committed; step 1 owed, stuck in the backlog
    owed = bus.take()
    sent = []
    for _ in range(12):                       # every 15 s for three minutes
        clock.now += 15
        d.resend_overdue()
        while (copy := bus.take()) is not None:
            sent.append(copy)
    assert len(sent) == 2                     # at 75 s and at 150 s: once per resend_after
    assert d.handle(owed).result == "committed"
    assert [d.handle(c).result for c in sent] == ["duplicate", "duplicate"]
    assert [m.step for m in iter(bus.take, None)] == [2]   # the copies re-sent nothing


def test_a_start_lost_with_its_worker_and_its_queue_is_found_by_the_sweep(store_factory: Callable[[], Any]) -> None:
    """The first acquire made the record, the worker died before its commit, and the queue
    holding the start message was deleted: the record owes that message, so the re-send
    sweep finds it once the lease has expired and the instance runs to its end."""
    from fsm.ports import PendingIndex

    machines, bus, clock = linear(3), HandBus(), Clock()
    store = store_factory()
    if not isinstance(store, PendingIndex):
        pytest.skip("no pending index: the store cannot be swept (memcached; see healing_gaps)")
    cid = _cid()
    start(bus, "linear", cid)
    msg = bus.take()
    try:
        dispatcher(machines, CrashingStore(store_factory()), bus, lease_timeout=30, clock=clock).handle(msg)
    except SystemExit:
        pass
    assert bus.sent == [] and store.get(cid)["step"] == 0     # the message is gone with the queue
    sweeper = dispatcher(machines, store_factory(), bus, lease_timeout=30, resend_after=60, clock=clock)
    assert sweeper.resend_overdue() == 0                     # not overdue yet, and the lease is live
    clock.now += 61
    assert sweeper.resend_overdue() == 1
    run_to_end(sweeper, bus)
    record = store.get(cid)
    assert record["status"] == "done" and record["step"] == 3
    assert EFFECTS[(cid, "s1")] == 1 and EFFECTS[(cid, "s0")] == 2   # s0 ran in the dead worker too
