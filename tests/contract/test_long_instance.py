"""One instance making 5,000 transitions on each store: the per-transition cost (round
trips, and the size of what each round trip carries) must not grow with its age."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from protocol_kit import HandBus, dispatcher, start

from config.loader import load_text
from fsm import Action

STEPS = int(os.environ.get("FSM_LONG_STEPS", "5000"))
# moto's DynamoDB (in-process and moto_server alike) gets slower with every item a table
# holds, ~30 ms a swap by step 1,000: our own cost per transition is what this test checks
# (round trips and payload sizes), so DynamoDB runs a shorter instance here (long enough
# for dozens of history page-outs); bench/roundtrips.py --long runs it to 5,000.
DYNAMODB_STEPS = int(os.environ.get("FSM_LONG_STEPS", "400"))


class Loop(Action):
    def execute(self, context: Any, obj: Any) -> str:
        context["n"] = context.get("n", 0) + 1
        return "again" if context["n"] < self.params["times"] else "enough"


class CountingStore:
    def __init__(self, inner: Any):
        self.inner, self.url, self.swaps, self.sizes = inner, inner.url, 0, []

    def swap(self, cid: str, expect: Any, fields: Any, history: Any = ()) -> Any:
        self.swaps += 1
        # The shape of what is written: digits collapsed, so counters and timestamps
        # gaining digits do not count as growth, and anything accumulating does.
        self.sizes.append(len(re.sub(r"\d+", "0", json.dumps(fields))))
        return self.inner.swap(cid, expect, fields, history)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.slow  # thousands of transitions per store: a cost check, not a quick one
def test_five_thousand_transitions_cost_the_same_at_the_end(store_factory: Callable[[], Any],
                                                            request: Any) -> None:
    steps = DYNAMODB_STEPS if "dynamodb" in request.node.name else STEPS
    machines = load_text(f"""
machines:
  - name: looper
    states:
      - name: loop
        initial: true
        do_action: {{class: test_long_instance.Loop, params: {{times: {steps}}}}}
        transitions: [{{event: again, target: loop}}, {{event: enough, target: end}}]
      - {{name: end, final: true}}
""").machines
    bus, store = HandBus(), CountingStore(store_factory())
    d = dispatcher(machines, store, bus)
    cid = uuid.uuid4().hex
    start(bus, "looper", cid)
    swaps_per_message = []
    while (msg := bus.take()) is not None:
        before = store.swaps
        assert d.handle(msg).result == "committed"
        swaps_per_message.append(store.swaps - before)
    record = store.get(cid)
    assert record["status"] == "done" and record["step"] == steps + 1 and record["context"]["n"] == steps
    assert set(swaps_per_message) == {2}           # acquire + commit, at step 1 as at step 5,000
    early, late = store.sizes[10:20], store.sizes[-20:-10]
    assert max(late) == max(early)                 # nothing accumulates in the record
    history = store.history(cid)
    assert len(history) == steps + 1 and history[-1]["to"] == "end"
    assert [h["step"] for h in history] == list(range(1, steps + 2))
