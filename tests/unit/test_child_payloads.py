"""A child's output larger than the bus can carry: with the payload offload it travels
to the parent as a reference; without, the child fails at once, naming the size, the
limit and the setting (its parent hears of the failure): never a message the bus
refuses for ever."""

from __future__ import annotations

import uuid
from typing import Any

from protocol_kit import HandBus, run_to_end, start

from config.loader import load_text
from fsm import Action
from fsm.dispatcher import Dispatcher, Routes
from fsm.payloads import Limits, Offload, Payloads
from sources.memory import MemoryPayloads, MemoryStore, MemoryTimers


class Ok(Action):
    def execute(self, context: Any, obj: dict[str, Any]) -> str:
        return "ok"


class Big(Action):
    """On the last transition: the output is large, no message carries the context."""

    def execute(self, context: Any, obj: dict[str, Any]) -> None:
        context["blob"] = "x" * 300_000


MACHINES = """
machines:
  - name: big
    states:
      - name: make
        initial: true
        do_action: test_child_payloads.Ok
        transitions: [{event: ok, target: done, action: test_child_payloads.Big}]
      - {name: done, final: true}
  - name: parent
    states:
      - name: call
        initial: true
        invoke: {machine: big, input: {}}
        transitions: [{done: true, target: finished}, {event: error, target: broken}]
      - {name: finished, final: true}
      - {name: broken, final: true}
"""
SQS = Limits(message=256 * 1024, message_names=("SQS",))


def run(payloads: Payloads) -> tuple[MemoryStore, str]:
    bus, store = HandBus(), MemoryStore()
    d = Dispatcher(load_text(MACHINES).machines, [store], Routes(bus=bus, timers=MemoryTimers()), payloads=payloads)
    cid = uuid.uuid4().hex
    start(bus, "parent", cid)
    run_to_end(d, bus)
    return store, cid


def test_with_offload_a_large_child_output_reaches_the_parent_as_a_reference() -> None:
    objects = MemoryPayloads()
    store, cid = run(Payloads(SQS, Offload(objects, threshold=64 * 1024)))
    record = store.get(cid)
    assert record["status"] == "done" and record["state"] == "finished"
    assert any(url.startswith(f"memory://{cid}:") and "output" in url for url in objects.objects)


def test_without_offload_the_child_fails_at_once_saying_what_fixes_it() -> None:
    store, cid = run(Payloads(SQS))
    record = store.get(cid)
    assert record["state"] == "broken"
    child = store.get(f"{cid}:1.0:0")
    assert child["status"] == "failed" and child["retries"] == 1
    message = child["last_error"]["message"]
    assert "output is" in message and "262,144" in message and "offload" in message
