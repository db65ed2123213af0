"""ChaosWrapper: both fault kinds, their counts, and pass-through of everything else."""

from __future__ import annotations

import random

import pytest

from fsm.errors import RecoverableError
from fsm.ports import Envelope, NullMetrics
from sources.chaos import ChaosWrapper
from sources.memory import MemoryBus, MemoryStore


def env(n: int) -> Envelope:
    return Envelope(body=f"b{n}", key="k", dedup_id=f"d{n}")


def test_probability_zero_never_injects() -> None:
    bus = ChaosWrapper(MemoryBus(), 0.0, rng=random.Random(1))
    for n in range(50):
        bus.send(env(n))
    assert len(bus.target) == 50 and bus.injected == {"before": 0, "after": 0}


def test_before_faults_never_reach_the_target_after_faults_do() -> None:
    target = MemoryBus()
    bus = ChaosWrapper(target, 1.0, rng=random.Random(1))
    with pytest.raises(RecoverableError, match="never reached"):
        bus.send(env(1))
    assert len(target) == 0
    with pytest.raises(RecoverableError, match="response lost"):
        bus.send(env(2))
    assert [e.body for e in target.receive()] == ["b2"]
    assert bus.injected == {"before": 1, "after": 1}


def test_faults_split_evenly_and_are_reported() -> None:
    metrics = NullMetrics()
    kinds: list[str] = []
    metrics.incr = lambda name, value=1.0, unit="Count", dims=None: kinds.append(dims["Kind"])  # type: ignore
    store = ChaosWrapper(MemoryStore(), 0.3, rng=random.Random(7), counters=metrics)
    faults = 0
    for n in range(400):
        try:
            store.swap(f"c{n}", None, {"state": "a"})
        except RecoverableError:
            faults += 1
    assert 80 < faults < 160
    assert abs(store.injected["before"] - store.injected["after"]) <= 1
    assert sum(store.injected.values()) == faults == len(kinds)
    # every "after" fault still wrote the record; every "before" one did not
    written = sum(store.target.get(f"c{n}") is not None for n in range(400))
    assert written == 400 - store.injected["before"]


def test_seeded_rng_is_reproducible() -> None:
    def run() -> list[bool]:
        bus, out = ChaosWrapper(MemoryBus(), 0.5, rng=random.Random(42)), []
        for n in range(30):
            try:
                bus.send(env(n))
                out.append(True)
            except RecoverableError:
                out.append(False)
        return out
    assert run() == run()


def test_other_attributes_and_methods_pass_through() -> None:
    target = MemoryBus("memory://chaos")
    bus = ChaosWrapper(target, 1.0)
    assert bus.url == "memory://chaos" and bus.max_delay == target.max_delay
    assert bus.receive() == [] and bus.sent == 0    # not wrapped: never faults
    with pytest.raises(AttributeError):
        _ = bus.no_such_thing


def test_invalid_probability_is_rejected() -> None:
    with pytest.raises(ValueError):
        ChaosWrapper(MemoryBus(), 1.5)
