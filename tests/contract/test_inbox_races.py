"""Races around the inbox's nudges, on every store (found by the multi-process inbox
tests in tests/integration/test_inbox_concurrency.py):

- a nudge built while another worker held the lease, delivered after that worker drained
  the inbox and let go, must give the lease back at once (it kept it for lease_timeout);
- a nudge that arrives between two internal steps (running, lease free) must leave the
  instance alone: the chain's settling commit drains the event, judged where it settles.
"""

from __future__ import annotations

import time
from typing import Any

from protocol_kit import HandBus, start

from config.loader import load_text
from fsm import Action
from fsm.dispatcher import Dispatcher, Routes
from fsm.inbox import work_message
from fsm.message import Kind, Message
from sources.memory import MemoryTimers

HOOK: dict[str, Any] = {}


class AppendMeanwhile(Action):
    """A second sender, while the holder applies e1: appends e2 and builds its nudge
    from the record append returned, as ``Client.send_event`` does."""

    def execute(self, context: Any, obj: dict[str, Any]) -> None:
        if obj["event_data"].get("n") == 1:
            after = HOOK["store"].append(context.correlation_id, {"id": "e2", "kind": "event", "event": "item",
                                                                   "at": time.time(), "data": {"n": 2}})
            HOOK["nudge"] = work_message(after.record, 0)


MACHINES = load_text(f"""
machines:
  - name: tally
    states:
      - name: open
        initial: true
        transitions: [{{event: item, target: open, action: {__name__}.AppendMeanwhile}}]
""").machines


def event(n: int) -> Message:
    return Message(machine="tally", correlation_id="c1", kind=Kind.EVENT, event="item", data={"n": n},
                   event_id=f"e{n}")


def test_a_late_nudge_does_not_keep_the_lease(store: Any) -> None:
    HOOK["store"], bus = store, HandBus()
    d = Dispatcher(MACHINES, [store], Routes(bus=bus, timers=MemoryTimers()))   # Lambda: no holder_alive
    start(bus, "tally", "c1")
    d.handle(bus.take())
    assert d.handle(event(1)).result == "committed"        # applies e1, then e2 (appended meanwhile)
    assert store.get("c1")["event_ids"] == ["e1", "e2"] and not store.get("c1")["lease_owner"]
    d.handle(HOOK["nudge"])                                 # the second sender's nudge, arriving now
    assert not store.get("c1")["lease_owner"], "a nudge that found nothing to do kept the lease"
    assert d.handle(event(3)).result == "committed"         # today: "queued" for 960 s


CHAIN = load_text("""
machines:
  - name: chain
    states:
      - {name: idle, initial: true, transitions: [{event: go, target: busy}]}
      - {name: busy, do_action: protocol_kit.Record, transitions: [{event: next, target: settled}]}
      - {name: settled, transitions: [{event: poke, target: poked}]}
      - {name: poked, final: true}
""").machines


def test_a_nudge_between_internal_steps_waits_for_the_chain(store: Any) -> None:
    bus = HandBus()
    d = Dispatcher(CHAIN, [store], Routes(bus=bus, timers=MemoryTimers()))
    start(bus, "chain", "c2")
    d.handle(bus.take())
    go = Message(machine="chain", correlation_id="c2", kind=Kind.EVENT, event="go", event_id="g")
    assert d.handle(go).result == "committed"            # idle -> busy; the next step is on its way
    assert store.get("c2")["status"] == "running"
    after = store.append("c2", {"id": "p", "kind": "event", "event": "poke", "at": time.time()}).record
    assert d.handle(work_message(after, 0)).result == "queued"   # not taken mid-chain
    assert d.handle(bus.take()).result == "committed"    # busy -> settled, then poke drained there
    record = store.get("c2")
    assert (record["status"], record["state"], record["inbox"]) == ("done", "poked", [])
    assert [(h["from"], h["event"], h["to"]) for h in store.history("c2")][-3:] == [
        ("idle", "go", "busy"), ("busy", "next", "settled"), ("settled", "poke", "poked")]
