"""Leaner transitions on every store: ``concurrency: optimistic`` (no lease, one
conditional commit per step) and batched sends.

Exactly-once commits hold; an action may run twice when two copies of a step race (the
loser's result is discarded), which is the documented price of the mode.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from protocol_kit import EFFECTS, Clock, HandBus, dispatcher, linear, run_to_end, start

from fsm import lease as leases
from fsm.owing import first_record


class Counting:
    """Counts the store calls one message costs."""

    def __init__(self, store: Any) -> None:
        self.store, self.calls = store, []
        self.url = store.url

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.store, name)
        if name in ("swap", "get", "append", "history"):
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return target(*args, **kwargs)
            return counted
        return target


def test_a_step_is_one_conditional_commit_and_the_instance_finishes(store_factory: Callable[[], Any]) -> None:
    machines, bus = linear(8), HandBus()
    counting = Counting(store_factory())
    d = dispatcher(machines, counting, bus, optimistic=True)
    cid = uuid.uuid4().hex
    start(bus, "linear", cid, {"n": 1})
    outcome = d.handle(bus.take())  # the first step's commit creates the record
    assert outcome.result == "committed" and counting.calls == ["swap"]  # no acquire
    counting.calls.clear()
    outcome = d.handle(bus.take())
    assert outcome.result == "committed" and counting.calls == ["swap"]
    run_to_end(d, bus)
    record = counting.store.get(cid)
    assert (record["status"], record["step"], record["context"]["n"]) == ("done", 8, 1)
    assert [h["step"] for h in counting.store.history(cid)] == list(range(1, 9))
    assert record["lease_owner"] == "" and record["fence"] == 0     # no lease was ever taken


def test_a_start_taken_the_locked_way_and_not_committed_is_not_stuck(store_factory: Callable[[], Any]) -> None:
    """A worker took the first step the locked way (its lease made the record) and died
    before committing; the start's redelivery, optimistic, finds the record where the
    message is and goes the locked way: the lease, once expired, is taken over."""
    machines, bus = linear(3), HandBus()
    store = store_factory()
    clock = Clock()
    d = dispatcher(machines, store, bus, optimistic=True, clock=clock)
    cid = uuid.uuid4().hex
    start(bus, "linear", cid)
    msg = bus.take()
    got = leases.acquire(store, msg, "dead-worker", 1000, int(clock() * 1000), lambda: first_record(
        msg, machines["linear"], clock()))
    assert isinstance(got, leases.Lease) and store.get(cid)["step"] == 0
    clock.now += 5      # its lease has expired
    assert d.handle(msg).result == "committed"
    run_to_end(d, bus)
    assert store.get(cid)["status"] == "done"
    assert [h["step"] for h in store.history(cid)] == [1, 2, 3]


def test_a_copy_delivered_twice_commits_once(store_factory: Callable[[], Any]) -> None:
    machines, bus = linear(6), HandBus()
    d = dispatcher(machines, store_factory(), bus, optimistic=True)
    cid = uuid.uuid4().hex
    start(bus, "linear", cid)
    results = []
    while (msg := bus.take()) is not None:
        results.append(d.handle(msg).result)
        results.append(d.handle(msg).result)
    assert results.count("committed") == 6
    assert [h["step"] for h in d.stores[0].history(cid)] == list(range(1, 7))


def test_two_workers_racing_on_one_step_commit_it_once(store_factory: Callable[[], Any]) -> None:
    machines, bus = linear(3, pause=0.2), HandBus()
    workers = [dispatcher(machines, store_factory(), bus, optimistic=True) for _ in range(2)]
    cid = uuid.uuid4().hex
    start(bus, "linear", cid)
    workers[0].handle(bus.take())
    step = bus.take()
    results: list[str] = []
    threads = [threading.Thread(target=lambda w=w: results.append(w.handle(step).result)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["committed", "duplicate"]
    assert EFFECTS[(cid, "s1")] == 2  # both ran the action: the loser's result was discarded
    history = workers[0].stores[0].history(cid)
    assert [h["step"] for h in history] == [1, 2]  # but the step was committed once
    run_to_end(workers[0], bus)
    assert workers[0].stores[0].get(cid)["status"] == "done"


def test_a_failing_step_retries_and_fails_without_a_lease(store_factory: Callable[[], Any], tmp_path: Any,
                                                          monkeypatch: Any) -> None:
    from config.loader import load_text

    module = f"opt_boom_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("from fsm import Action\n\nclass Boom(Action):\n"
                                           "    def execute(self, context, obj):\n"
                                           "        raise RuntimeError('oven on fire')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    machines = load_text(f"""
machines:
  - name: flaky
    max_retries: 2
    retry_base_delay: 0
    states:
      - {{name: a, initial: true, do_action: protocol_kit.Record, transitions: [{{event: next, target: b}}]}}
      - {{name: b, do_action: {module}.Boom, transitions: [{{event: next, target: c}}]}}
      - {{name: c, final: true}}
""").machines
    bus = HandBus()
    d = dispatcher(machines, store_factory(), bus, optimistic=True)
    cid = uuid.uuid4().hex
    start(bus, "flaky", cid)
    outcomes = run_to_end(d, bus)
    record = d.stores[0].get(cid)
    assert record["status"] == "failed" and "oven on fire" in record["last_error"]["message"]
    assert [o.result for o in outcomes].count("retrying") == 2


def test_a_batch_of_records_sends_once_at_the_end(store_factory: Callable[[], Any]) -> None:
    """What a Lambda batch does (``intake.handle_records``): every record's commit, then one
    batched send for all their next messages."""
    machines, bus = linear(4), HandBus()
    d = dispatcher(machines, store_factory(), bus)
    ids = [uuid.uuid4().hex for _ in range(5)]
    for cid in ids:
        start(bus, "linear", cid)
    firsts = [bus.take() for _ in ids]
    batches: list[int] = []
    bus.send_batch = lambda envelopes: (batches.append(len(envelopes)), bus.sent.extend(envelopes))  # type: ignore
    bus.send = lambda envelope: (_ for _ in ()).throw(AssertionError("a single send inside a batch"))  # type: ignore
    with d.batched():
        for msg in firsts:
            assert d.handle(msg).result == "committed"
        assert bus.sent == []  # nothing sent before the batch ends
    assert batches == [5] and sorted(decode_cid(e.body) for e in bus.sent) == sorted(ids)


def decode_cid(body: str) -> str:
    from fsm.message import decode

    return decode(body).correlation_id
