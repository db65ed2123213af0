"""Machines, actions and a hand-driven bus for protocol tests.

The bus keeps every message in a list and hands them out only when the test asks, so a
test can deliver a message twice, to two workers at once, or not at all (a crash).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from config.loader import load_text
from fsm import Action
from fsm.dispatcher import Dispatcher, Outcome, Routes
from fsm.message import Message, decode
from fsm.model import Machine
from fsm.ports import Envelope
from sources.memory import MemoryTimers

# (correlation id, state) -> how many times the state's do action ran: the side effects
# a user would notice if a transition ran twice.
EFFECTS: collections.Counter = collections.Counter()
_effects_lock = threading.Lock()


class Record(Action):
    """Counts its own runs, writes to the context, and moves on."""

    def execute(self, context: Any, obj: dict[str, Any]) -> str | None:
        with _effects_lock:
            EFFECTS[(context.correlation_id, context.current_state.name)] += 1
        context[context.current_state.name] = context.steps
        context.setdefault("fences", []).append(obj["fence_token"])
        pause = self.params.get("pause", 0)
        if pause:
            time.sleep(pause)
        return self.params.get("event", "next")


def linear(n: int = 10, name: str = "linear", pause: float = 0.0) -> dict[str, Machine]:
    states = []
    for i in range(n):
        last = i == n - 1
        states.append(
            f"      - name: s{i}\n"
            + ("        initial: true\n" if i == 0 else "")
            + ("        final: true\n" if last else
               f"        do_action: {{class: protocol_kit.Record, params: {{pause: {pause}}}}}\n"
               f"        transitions: [{{event: next, target: s{i + 1}}}]\n"))
    text = f"machines:\n  - name: {name}\n    max_retries: 3\n    states:\n" + "".join(states)
    return load_text(text).machines


class HandBus:
    """A bus that holds anything (delays included) until the test takes it."""

    max_delay = float("inf")

    def __init__(self) -> None:
        self.url = "hand://"
        self.sent: list[Envelope] = []
        self.fail_next_send = False

    def send(self, envelope: Envelope) -> None:
        if self.fail_next_send:
            self.fail_next_send = False
            raise SystemExit("worker killed before it could send")
        self.sent.append(envelope)

    def send_batch(self, envelopes: list[Envelope]) -> None:
        for e in envelopes:
            self.send(e)

    def take(self) -> Message | None:
        return decode(self.sent.pop(0).body) if self.sent else None


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def dispatcher(machines: dict[str, Machine], store: Any, bus: HandBus, **options: Any) -> Dispatcher:
    return Dispatcher(machines, [store], Routes(bus=bus, timers=MemoryTimers()), **options)


def start(bus: HandBus, machine: str, cid: str, context: dict[str, Any] | None = None) -> None:
    msg = Message(machine=machine, correlation_id=cid, context=context or {}, sent_at=time.time())
    bus.send(Envelope(msg.encode(), cid, msg.dedup_id))


def run_to_end(d: Dispatcher, bus: HandBus, limit: int = 100_000) -> list[Outcome]:
    outcomes = []
    for _ in range(limit):
        msg = bus.take()
        if msg is None:
            return outcomes
        outcomes.append(d.handle(msg))
    raise AssertionError("the instance did not settle")
