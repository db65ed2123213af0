"""The join of a map, on every store: exactly once under duplicate deliveries, children
finishing in any order, and a worker lost between its commit and its send.

Messages are delivered by hand (see ``protocol_kit``): every message twice, in a
shuffled order, so children finish interleaved and each child's result reaches the
parent's inbox twice (the second copy is refused by the inbox, or ignored by the join).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol_kit import EFFECTS, Clock, HandBus, dispatcher, run_to_end, start

from config.loader import load_file, load_text
from fsm import Action
from fsm.message import decode

MACHINES = """
machines:
  - name: item
    states:
      - {name: work, initial: true, do_action: protocol_kit.Record, transitions: [{event: next, target: done}]}
      - {name: done, final: true}
  - name: fan
    states:
      - name: spread
        initial: true
        map: {items: $.items, machine: item, max_concurrency: 3}
        transitions: [{done: true, target: joined}]
      - {name: joined, final: true}
"""


def run_shuffled(d: Any, bus: HandBus, rng: random.Random, twice: bool = True) -> None:
    """Deliver every message (twice), picking the next one at random."""
    for _ in range(100_000):
        if not bus.sent:
            return
        envelope = bus.sent.pop(rng.randrange(len(bus.sent)))
        msg = decode(envelope.body)
        d.handle(msg)
        if twice:
            d.handle(msg)
    raise AssertionError("the instances did not settle")


def test_a_map_joins_once_under_duplicates_and_any_finishing_order(store_factory: Callable[[], Any]) -> None:
    machines, bus = load_text(MACHINES).machines, HandBus()
    d = dispatcher(machines, store_factory(), bus)
    cid = uuid.uuid4().hex
    start(bus, "fan", cid, {"items": [{"k": i} for i in range(12)]})
    run_shuffled(d, bus, random.Random(7))
    record = d.stores[0].get(cid)
    assert record["status"] == "done" and record["state"] == "joined"
    output = [h for h in d.stores[0].history(cid) if h["to"] == "joined"]
    assert len(output) == 1                                  # the join completed once
    children = [f"{cid}:1.0:{i}" for i in range(12)]
    assert all(EFFECTS[(c, "work")] == 1 for c in children)  # each child's action ran once
    # one step per child result, plus the start and the join
    assert record["step"] == 1 + 12
    for index, child in enumerate(children):
        assert d.stores[0].get(child)["context"]["k"] == index


def test_a_lost_send_after_a_childs_last_commit_is_healed_by_redelivery(store_factory: Callable[[], Any]) -> None:
    machines, bus = load_text(MACHINES).machines, HandBus()
    d = dispatcher(machines, store_factory(), bus)
    cid = uuid.uuid4().hex
    start(bus, "fan", cid, {"items": [{"k": 0}, {"k": 1}]})
    lost = 0
    while (msg := bus.take()) is not None:
        finishing = msg.correlation_id == f"{cid}:1.0:0" and msg.step == 1
        bus.fail_next_send = finishing          # the child's last commit: its result never leaves
        try:
            d.handle(msg)
        except SystemExit:
            lost += 1
            assert d.stores[0].get(msg.correlation_id)["status"] == "done"
            assert d.handle(msg).result == "duplicate"   # SQS redelivers: the outbox is re-sent
    assert lost == 1
    record = d.stores[0].get(cid)
    assert record["status"] == "done" and record["step"] == 3


def test_children_finishing_at_the_same_moment_on_four_workers_join_once(store_factory: Callable[[], Any]) -> None:
    machines, bus = load_text(MACHINES).machines, HandBus()
    workers = [dispatcher(machines, store_factory(), bus) for _ in range(4)]
    cid = uuid.uuid4().hex
    start(bus, "fan", cid, {"items": [{"k": i} for i in range(16)]})
    errors: list[BaseException] = []
    finished = threading.Event()

    def work(d: Any) -> None:
        while not finished.is_set():
            try:
                envelope = bus.sent.pop(0)
            except IndexError:
                time.sleep(0.002)
                continue
            try:
                msg = decode(envelope.body)
                d.handle(msg)
                d.handle(msg)           # and once more, as a redelivery would
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in workers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (workers[0].stores[0].get(cid) or {}).get("status") != "done":
        time.sleep(0.05)
    finished.set()
    for t in threads:
        t.join(10)
    assert not errors
    record = workers[0].stores[0].get(cid)
    assert record["status"] == "done" and record["step"] == 1 + 16
    assert all(EFFECTS[(f"{cid}:1.0:{i}", "work")] == 1 for i in range(16))


ASL = {
    "StartAt": "Both",
    "States": {
        "Both": {
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "Each", "States": {"Each": {
                    "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2,
                    "ItemProcessor": {"StartAt": "Work", "States": {"Work": {"Type": "Task", "Resource": "work",
                                                                             "End": True}}},
                    "End": True}}},
                {"StartAt": "Side", "States": {"Side": {"Type": "Pass", "Result": "side", "End": True}}},
            ],
            "End": True,
        }
    },
}


class Work(Action):
    """An ASL task: counts its runs per item, doubles the item."""

    def execute(self, context: Any, obj: dict[str, Any]) -> Any:
        with LOCK:
            EFFECTS[("asl", context.correlation_id)] += 1
        return obj["input"] * 2


LOCK = threading.Lock()


def test_an_asl_parallel_of_a_map_joins_once_under_duplicates(store_factory: Callable[[], Any],
                                                              tmp_path: Path) -> None:
    (tmp_path / "both.asl.json").write_text(json.dumps(ASL))
    (tmp_path / "fsm.yaml").write_text("machines:\n  - asl: both.asl.json\n    resources: {work: "
                                       "test_join_contract.Work}\n")
    machines, bus = load_file(tmp_path / "fsm.yaml").machines, HandBus()
    d = dispatcher(machines, store_factory(), bus)
    cid = uuid.uuid4().hex
    context = machines["both"].start({"items": [1, 2, 3, 4, 5]})
    start(bus, "both", cid, context)
    run_shuffled(d, bus, random.Random(3))
    record = d.stores[0].get(cid)
    assert record["status"] == "done" and record["output"] == [[2, 4, 6, 8, 10], "side"]
    runs = [n for (kind, child), n in EFFECTS.items() if kind == "asl" and child.startswith(cid)]
    assert sorted(runs) == [1] * 5                  # each item's task ran once


class DiesAtTheJoin:
    """Kills the worker at the parent's commit of a child's result, after the acquire."""

    def __init__(self, inner: Any, parent: str):
        self.inner, self.url, self.parent, self.armed = inner, inner.url, parent, True

    def swap(self, cid: str, expect: Any, fields: Any, history: Any = ()) -> Any:
        if self.armed and cid == self.parent and history and fields.get("step", 0) >= 2:
            self.armed = False
            raise SystemExit("worker killed while joining a child's result")
        return self.inner.swap(cid, expect, fields, history)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_worker_killed_while_joining_a_result_loses_nothing_and_counts_once(
        store_factory: Callable[[], Any]) -> None:
    machines, bus, clock = load_text(MACHINES).machines, HandBus(), Clock()
    cid = uuid.uuid4().hex
    dying = dispatcher(machines, DiesAtTheJoin(store_factory(), cid), bus, lease_timeout=30, clock=clock)
    survivor = dispatcher(machines, store_factory(), bus, lease_timeout=30, clock=clock)
    start(bus, "fan", cid, {"items": [{"k": 0}, {"k": 1}]})
    killed = None
    while (msg := bus.take()) is not None:
        if killed is None:
            try:
                dying.handle(msg)
            except SystemExit:
                killed = msg
        else:
            survivor.handle(msg)
    assert killed is not None and survivor.stores[0].get(cid)["status"] == "waiting"   # stuck on a held lease
    clock.now += 31                                                  # the lease expires; SQS redelivers
    survivor.handle(killed)
    run_to_end(survivor, bus)
    record = survivor.stores[0].get(cid)
    assert record["status"] == "done" and record["step"] == 3        # the start and two results, once each
    assert all(EFFECTS[(f"{cid}:1.0:{i}", "work")] == 1 for i in range(2))
