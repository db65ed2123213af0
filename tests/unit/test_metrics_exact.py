"""The counters are exact under single faults: a commit whose write lands but whose answer
is lost (chaos ``after``, a timeout on the response) is still counted once, its actions
ran once, and what it owes is sent at once, without waiting for a redelivery.

The dispatcher reads the record again after an ambiguous commit error; these tests drive
every commit path through a store that writes and then raises (or raises without
writing), locked and optimistic, internal steps and inbox events, and compare the
``Transitions`` count with the transitions the history holds.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from protocol_kit import EFFECTS, Clock, HandBus, linear, start

from config.loader import load_text
from fsm import Action
from fsm.dispatcher import Dispatcher, Routes
from fsm.errors import RecoverableError
from fsm.message import Kind, Message, decode
from fsm.ports import Envelope, NullMetrics
from sources.memory import MemoryStore, MemoryTimers

TAKEN: collections.Counter = collections.Counter()   # (instance, event id) -> runs of the event's action


class Take(Action):
    def execute(self, context: Any, obj: dict[str, Any]) -> None:
        TAKEN[(context.correlation_id, obj["message"].get("event_id"))] += 1
        context["n"] = context.get("n", 0) + 1


TALLY = load_text(f"""
machines:
  - name: tally
    states:
      - name: open
        initial: true
        transitions: [{{event: item, target: open, action: {__name__}.Take}}]
""").machines


def is_commit(expect: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> bool:
    """A commit: it expects the holder's lease (locked) or writes a free lease on the
    position it saw (optimistic). An acquire expects a free lease and takes one."""
    if expect is None:
        return False
    return bool(expect.get("lease_owner")) or (fields.get("lease_owner") == "" and "step" in expect)


class LostAnswers:
    """Every ``every``-th commit fails: ``after`` writes it and then raises (the answer
    lost), otherwise it raises without writing (never reached)."""

    def __init__(self, target: Any, every: int = 3, after: bool = True, reads_fail: bool = False):
        self.target, self.every, self.after, self.reads_fail = target, every, after, reads_fail
        self.commits = self.faults = 0

    def swap(self, cid: str, expect: Mapping[str, Any] | None, fields: Mapping[str, Any],
             history: Sequence[Mapping[str, Any]] = ()) -> Any:
        if is_commit(expect, fields):
            self.commits += 1
            if self.commits % self.every == 0:
                self.faults += 1
                if self.after:
                    self.target.swap(cid, expect, fields, history)
                    raise RecoverableError("injected: the commit was applied, its answer lost")
                raise RecoverableError("injected: the commit never reached the store")
        return self.target.swap(cid, expect, fields, history)

    def get(self, cid: str) -> Any:
        if self.reads_fail:
            raise RecoverableError("injected: the store cannot be read")
        return self.target.get(cid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def drive(d: Dispatcher, bus: HandBus, clock: Clock, limit: int = 20_000) -> int:
    """Deliver everything; a message whose handling raised is redelivered (at the end of
    the queue, as SQS does after its backoff). A message that finds the lease held by a
    commit that never landed waits for it to expire. Returns the redeliveries."""
    redelivered = 0
    for _ in range(limit):
        if not bus.sent:
            return redelivered
        envelope = bus.sent.pop(0)
        try:
            outcome = d.handle(decode(envelope.body))
        except RecoverableError:
            bus.sent.append(envelope)
            redelivered += 1
            continue
        if outcome.result == "busy":
            clock.now += 2.0
    raise AssertionError("the instances did not settle")


def committed(store: Any, cid: str) -> int:
    """Transitions the history holds: not failed attempts, rejections or cancellations."""
    return sum(1 for h in store.history(cid)
               if not h.get("error") and not h.get("rejected") and not h.get("cancelled"))


def linear_run(optimistic: bool, after: bool, every: int = 3, instances: int = 6, steps: int = 8
               ) -> tuple[list[str], MemoryStore, LostAnswers, NullMetrics, int]:
    inner = MemoryStore()
    store = LostAnswers(inner, every=every, after=after)
    bus, clock, metrics = HandBus(), Clock(), NullMetrics()
    d = Dispatcher(linear(steps), [store], Routes(bus=bus, timers=MemoryTimers()), metrics=metrics, clock=clock,
                   lease_timeout=1.0, optimistic=optimistic)
    ids = [f"exact-{uuid.uuid4().hex[:8]}-{n}" for n in range(instances)]
    for cid in ids:
        start(bus, "linear", cid)
    redelivered = drive(d, bus, clock)
    assert all(inner.get(cid)["status"] == "done" for cid in ids)
    return ids, inner, store, metrics, redelivered


@pytest.mark.parametrize("optimistic", [False, True], ids=["locked", "optimistic"])
def test_a_commit_whose_answer_is_lost_is_counted_once_and_its_actions_ran_once(optimistic: bool) -> None:
    ids, inner, store, metrics, redelivered = linear_run(optimistic, after=True)
    assert store.faults >= 10
    total = sum(committed(inner, cid) for cid in ids)
    assert total == len(ids) * 8                         # the initial step and 7 moves each
    assert metrics.counts["Transitions"] == total            # exact: every landed commit counted once
    assert redelivered == 0                                  # each went on at once: nothing to heal
    assert "Duplicates" not in metrics.counts
    assert all(EFFECTS[(cid, f"s{i}")] == 1 for cid in ids for i in range(7))  # each action once per step


@pytest.mark.parametrize("optimistic", [False, True], ids=["locked", "optimistic"])
def test_a_commit_that_never_landed_is_raised_and_counted_once_when_it_does(optimistic: bool) -> None:
    ids, inner, store, metrics, redelivered = linear_run(optimistic, after=False)
    assert store.faults >= 10 and redelivered == store.faults   # not mistaken for a landed commit
    total = sum(committed(inner, cid) for cid in ids)
    assert total == len(ids) * 8
    assert metrics.counts["Transitions"] == total
    # Each step committed once; a step whose commit never landed ran again on redelivery
    # (the last step runs no action: s7 is final).
    runs = [EFFECTS[(cid, f"s{i}")] for cid in ids for i in range(7)]
    assert min(runs) == 1 and 0 < sum(runs) - len(runs) <= store.faults


def test_an_unreadable_store_after_a_lost_answer_raises_as_before() -> None:
    """The record cannot be read back: the commit is ambiguous, so the error is raised and
    the message redelivered (it then finds its step committed: nothing lost)."""
    inner = MemoryStore()
    store = LostAnswers(inner, every=1, after=True, reads_fail=True)
    bus, clock = HandBus(), Clock()
    d = Dispatcher(linear(3), [store], Routes(bus=bus, timers=MemoryTimers()), clock=clock)
    cid = f"unreadable-{uuid.uuid4().hex[:8]}"
    start(bus, "linear", cid)
    with pytest.raises(RecoverableError, match="answer lost"):
        d.handle(bus.take())
    assert inner.get(cid)["step"] == 1                   # it did land


def event(cid: str, n: int) -> Message:
    return Message(machine="tally", correlation_id=cid, kind=Kind.EVENT, event="item", data={"n": n},
                   event_id=f"e{n}")


@pytest.mark.parametrize("every", [1, 2, 3])
def test_inbox_commits_whose_answer_is_lost_are_counted_once(every: int) -> None:
    inner = MemoryStore()
    store = LostAnswers(inner, every=every, after=True)
    bus, clock, metrics = HandBus(), Clock(), NullMetrics()
    d = Dispatcher(TALLY, [store], Routes(bus=bus, timers=MemoryTimers()), metrics=metrics, clock=clock,
                   lease_timeout=1.0)
    ids = [f"inbox-{uuid.uuid4().hex[:8]}-{n}" for n in range(3)]
    for cid in ids:
        start(bus, "tally", cid)
    drive(d, bus, clock)
    for n in range(5):
        for cid in ids:
            msg = event(cid, n)
            bus.send(Envelope(msg.encode(), cid, msg.dedup_id))
    drive(d, bus, clock)
    assert store.faults >= 5
    for cid in ids:
        record = inner.get(cid)
        assert record["context"]["n"] == 5 and record["inbox"] == [] and not record["lease_owner"]
        assert all(TAKEN[(cid, f"e{n}")] == 1 for n in range(5))   # each event's action once
    total = sum(committed(inner, cid) for cid in ids)
    assert metrics.counts["Transitions"] == total == 3 * 5 + sum(
        1 for cid in ids for h in inner.history(cid) if h.get("event") is None and not h.get("error"))


def test_a_lost_answer_on_a_failed_attempt_counts_one_retry() -> None:
    """``Retries`` is exact too: the failed attempt's commit landed, its answer was lost."""
    machines = load_text(f"""
machines:
  - name: flaky
    max_retries: 5
    retry_base_delay: 0
    retry_max_delay: 0
    states:
      - {{name: a, initial: true, do_action: {__name__}.FailTwice, transitions: [{{event: next, target: b}}]}}
      - {{name: b, final: true}}
""").machines
    inner = MemoryStore()
    store = LostAnswers(inner, every=1, after=True)
    bus, clock, metrics = HandBus(), Clock(), NullMetrics()
    d = Dispatcher(machines, [store], Routes(bus=bus, timers=MemoryTimers()), metrics=metrics, clock=clock)
    cid = f"flaky-{uuid.uuid4().hex[:8]}"
    start(bus, "flaky", cid)
    assert drive(d, bus, clock) == 0
    assert inner.get(cid)["status"] == "done"
    assert FAILS[cid] == 3 and metrics.counts["Retries"] == 2 and metrics.counts["Transitions"] == 2


FAILS: collections.Counter = collections.Counter()


class FailTwice(Action):
    def execute(self, context: Any, obj: dict[str, Any]) -> str:
        FAILS[context.correlation_id] += 1
        if FAILS[context.correlation_id] <= 2:
            raise RuntimeError("not yet")
        return "next"
