"""Dispatcher options a user turns on in settings: notify, retention, the overdue sweep."""

from __future__ import annotations

import json
import uuid

from protocol_kit import Clock, HandBus, linear, run_to_end, start

from fsm.dispatcher import Dispatcher, Routes
from sources.memory import MemoryStore, MemoryTimers


def test_notify_gets_one_small_message_per_commit() -> None:
    bus, feed, store = HandBus(), HandBus(), MemoryStore()
    d = Dispatcher(linear(3), [store], Routes(bus=bus, timers=MemoryTimers(), notify=feed))
    cid = uuid.uuid4().hex
    start(bus, "linear", cid, {"secret": "not for the feed"})
    run_to_end(d, bus)
    updates = [json.loads(e.body) for e in feed.sent]
    assert [(u["state"], u["status"], u["step"]) for u in updates] == [
        ("s0", "running", 1), ("s1", "running", 2), ("s2", "done", 3)]
    assert all(u["correlation_id"] == cid and u["machine"] == "linear" for u in updates)
    assert all("secret" not in e.body for e in feed.sent)


def test_retention_sets_expiry_after_the_last_change() -> None:
    bus, store, clock = HandBus(), MemoryStore(), Clock()
    d = Dispatcher(linear(2), [store], Routes(bus=bus, timers=MemoryTimers()), retention_days=2, clock=clock)
    cid = uuid.uuid4().hex
    start(bus, "linear", cid)
    run_to_end(d, bus)
    assert store.get(cid)["expires_at"] == int(clock.now + 2 * 86400)


def test_no_retention_means_no_expiry() -> None:
    bus, store = HandBus(), MemoryStore()
    d = Dispatcher(linear(2), [store], Routes(bus=bus, timers=MemoryTimers()))
    cid = uuid.uuid4().hex
    start(bus, "linear", cid)
    run_to_end(d, bus)
    assert store.get(cid)["expires_at"] == 0


def test_a_message_lost_on_the_bus_is_re_sent_once_overdue() -> None:
    bus, store, clock = HandBus(), MemoryStore(), Clock()
    d = Dispatcher(linear(4), [store], Routes(bus=bus, timers=MemoryTimers()), resend_after=30, clock=clock)
    cid = uuid.uuid4().hex
    start(bus, "linear", cid)
    d.handle(bus.take())
    bus.sent.clear()                                  # the queue was deleted with step 1 in it
    assert store.get(cid)["pending"] == clock.now
    assert d.resend_overdue() == 0                    # not overdue yet: it may be on its way
    clock.now += 31
    assert d.resend_overdue() == 1
    run_to_end(d, bus)
    record = store.get(cid)
    assert record["status"] == "done" and record["pending"] == 0
    assert d.resend_overdue() == 0                    # nothing owed any more


def test_an_event_that_arrives_after_the_end_is_recorded_as_rejected() -> None:
    from fsm.message import Message

    bus, store = HandBus(), MemoryStore()
    d = Dispatcher(linear(2), [store], Routes(bus=bus, timers=MemoryTimers()))
    cid = uuid.uuid4().hex
    start(bus, "linear", cid)
    run_to_end(d, bus)
    late = Message(machine="linear", correlation_id=cid, kind="event", event="next", event_id="late-1")
    assert d.handle(late).result == "rejected"
    record = store.get(cid)
    assert record["status"] == "done"                 # unchanged
    assert "instance is done" in record["last_error"]["message"]
    assert store.history(cid)[-1]["rejected"] is True
    assert d.handle(late).result == "duplicate"       # the same event again: already recorded
    assert d.metrics.counts["RejectedEvents"] == 1


def test_a_send_that_fails_after_the_commit_does_not_switch_stores() -> None:
    """Both buses down after the commit: the message is redelivered and re-sends; the
    instance must not be started over on the secondary store."""
    import pytest

    from fsm.errors import RecoverableError, SendFailed

    class DownBus(HandBus):
        down = True

        def send(self, envelope):  # type: ignore[no-untyped-def]
            if self.down:
                raise RecoverableError("bus down")
            super().send(envelope)

    bus, primary, secondary = DownBus(), MemoryStore(), MemoryStore()
    d = Dispatcher(linear(3), [primary, secondary], Routes(bus=bus, timers=MemoryTimers()))
    cid = uuid.uuid4().hex
    bus.down = False
    start(bus, "linear", cid)
    msg = bus.take()
    bus.down = True
    with pytest.raises(SendFailed):
        d.handle(msg)
    assert primary.get(cid)["step"] == 1 and secondary.get(cid) is None
    bus.down = False
    assert d.handle(msg).result == "duplicate"        # the redelivery re-sends what was owed
    run_to_end(d, bus)
    assert primary.get(cid)["status"] == "done" and secondary.get(cid) is None


def test_the_sweep_heals_an_instance_whose_worker_and_message_were_both_lost() -> None:
    """A worker took the lease and died, and the message it held vanished with its
    queue: the lease expires, and the sweep's copy takes the instance over."""
    from fsm import lease as leases

    bus, store, clock = HandBus(), MemoryStore(), Clock()
    d = Dispatcher(linear(3), [store], Routes(bus=bus, timers=MemoryTimers()), resend_after=30,
                   lease_timeout=10, clock=clock)
    cid = uuid.uuid4().hex
    start(bus, "linear", cid)
    d.handle(bus.take())
    lost = bus.take()                                 # step 1's message, taken by the doomed worker
    got = leases.acquire(store, lost, "doomed", 10_000, int(clock.now * 1000), dict)
    assert isinstance(got, leases.Lease)
    clock.now += 31
    assert d.resend_overdue() == 1
    run_to_end(d, bus)
    assert store.get(cid)["status"] == "done"
