"""FailoverBus and CircuitBreaker against scripted buses and an injected clock."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from fsm.errors import BackendError, PartialBatchError, RecoverableError
from fsm.ports import Envelope, NullMetrics
from sources.failover import CircuitBreaker, FailoverBus
from sources.memory import MemoryBus


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedBus:
    """A bus that fails while ``failing`` is set, and records what it delivered."""

    def __init__(self, url: str, max_delay: float = 900.0):
        self.url, self.max_delay = url, max_delay
        self.failing: BaseException | None = None
        self.fail_indices: list[int] = []   # per batch: which entries fail (recoverably)
        self.calls = 0
        self.delivered: list[Envelope] = []

    def send(self, envelope: Envelope) -> None:
        self.calls += 1
        if self.failing is not None:
            raise self.failing
        self.delivered.append(envelope)

    def send_batch(self, envelopes: Sequence[Envelope]) -> None:
        self.calls += 1
        if self.failing is not None:
            raise self.failing
        failed = [i for i in self.fail_indices if i < len(envelopes)]
        self.delivered.extend(e for i, e in enumerate(envelopes) if i not in failed)
        if failed:
            raise PartialBatchError(failed, recoverable=True)


def env(n: int, delay: float = 0.0) -> Envelope:
    return Envelope(body=f"body-{n}", key=f"cid-{n}", dedup_id=f"d-{n}", delay=delay)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def buses() -> tuple[ScriptedBus, ScriptedBus]:
    return ScriptedBus("arn:aws:sqs:us-east-1:1:primary"), ScriptedBus("arn:aws:sqs:us-east-1:1:secondary")


def test_attributes_come_from_the_primary(buses) -> None:
    router = FailoverBus(list(buses))
    assert router.url == buses[0].url and router.max_delay == 900.0


def test_sends_on_primary_when_healthy(buses) -> None:
    primary, secondary = buses
    FailoverBus([primary, secondary]).send(env(1))
    assert primary.delivered == [env(1)] and secondary.delivered == []


def test_recoverable_error_fails_over_counts_and_logs(buses, caplog) -> None:
    primary, secondary = buses
    primary.failing = RecoverableError("connection refused")
    metrics = NullMetrics()
    seen: list[dict] = []
    metrics.incr = lambda name, value=1.0, unit="Count", dims=None: seen.append(  # type: ignore[method-assign]
        {"name": name, "value": value, "dims": dims})
    with caplog.at_level(logging.WARNING, logger="fsm.failover"):
        FailoverBus([primary, secondary], metrics=metrics).send(env(1))
    assert secondary.delivered == [env(1)]
    assert seen == [{"name": "Failovers", "value": 1.0, "dims": {"Resource": primary.url}}]
    assert primary.url in caplog.text


def test_non_recoverable_error_is_raised_without_failover(buses) -> None:
    primary, secondary = buses
    primary.failing = BackendError("message too long")
    with pytest.raises(BackendError) as info:
        FailoverBus([primary, secondary]).send(env(1))
    assert not isinstance(info.value, RecoverableError)
    assert secondary.calls == 0


def test_all_failed_raises_recoverable_chained(buses) -> None:
    for bus in buses:
        bus.failing = RecoverableError(f"{bus.url} down")
    with pytest.raises(RecoverableError) as info:
        FailoverBus(list(buses)).send(env(1))
    assert isinstance(info.value.__cause__, RecoverableError)


def test_third_bus_is_used_in_order() -> None:
    first, second, third = (ScriptedBus(f"memory://{n}") for n in range(3))
    first.failing = second.failing = RecoverableError("down")
    FailoverBus([first, second, third]).send(env(1))
    assert (first.calls, second.calls, len(third.delivered)) == (1, 1, 1)


def test_circuit_opens_then_half_opens_then_closes(buses, clock) -> None:
    primary, secondary = buses
    router = FailoverBus([primary, secondary], breaker_threshold=3, breaker_cooldown=30.0, clock=clock)
    primary.failing = RecoverableError("timeout")
    for n in range(3):
        router.send(env(n))
    assert primary.calls == 3 and router.breakers[0].state == "open"

    router.send(env(3))                     # open: the primary is skipped
    assert primary.calls == 3 and len(secondary.delivered) == 4

    clock.now += 31                         # half-open: one trial goes to the primary
    primary.failing = None
    router.send(env(4))
    assert primary.calls == 4 and router.breakers[0].state == "closed"
    router.send(env(5))
    assert [e.body for e in primary.delivered] == ["body-4", "body-5"]


def test_half_open_failure_reopens_at_once(buses, clock) -> None:
    primary, secondary = buses
    router = FailoverBus([primary, secondary], breaker_threshold=2, breaker_cooldown=10.0, clock=clock)
    primary.failing = RecoverableError("timeout")
    router.send(env(1))
    router.send(env(2))
    clock.now += 11
    router.send(env(3))                     # the trial fails: open again, no threshold wait
    assert router.breakers[0].state == "open" and primary.calls == 3
    router.send(env(4))
    assert primary.calls == 3


def test_all_circuits_open_still_sends(buses, clock) -> None:
    primary, secondary = buses
    router = FailoverBus([primary, secondary], breaker_threshold=1, clock=clock)
    primary.failing = secondary.failing = RecoverableError("down")
    with pytest.raises(RecoverableError):
        router.send(env(1))
    assert all(b.state == "open" for b in router.breakers)
    primary.failing = None
    router.send(env(2))
    assert primary.delivered == [env(2)]


def test_open_primary_is_a_last_resort_when_secondary_fails(buses, clock) -> None:
    primary, secondary = buses
    router = FailoverBus([primary, secondary], breaker_threshold=1, clock=clock)
    primary.failing = RecoverableError("down")
    router.send(env(1))                     # primary opens
    primary.failing, secondary.failing = None, RecoverableError("down too")
    router.send(env(2))
    assert primary.delivered == [env(2)]


def test_delay_beyond_every_bus_is_refused_not_dropped(buses) -> None:
    with pytest.raises(BackendError) as info:
        FailoverBus(list(buses)).send(env(1, delay=901))
    assert not isinstance(info.value, RecoverableError)
    with pytest.raises(BackendError):
        FailoverBus(list(buses)).send_batch([env(1), env(2, delay=5000)])


def test_delayed_message_skips_a_bus_that_cannot_hold_it() -> None:
    primary, stream = ScriptedBus("arn:sqs:p"), ScriptedBus("arn:kinesis:s", max_delay=0)
    primary.failing = RecoverableError("down")
    with pytest.raises(RecoverableError):
        FailoverBus([primary, stream]).send(env(1, delay=60))
    assert stream.calls == 0
    FailoverBus([primary, stream]).send(env(2))
    assert stream.delivered == [env(2)]


def test_batch_partial_failures_go_to_the_next_bus(buses) -> None:
    primary, secondary = buses
    primary.fail_indices = [1, 3]
    batch = [env(n) for n in range(5)]
    FailoverBus([primary, secondary]).send_batch(batch)
    assert [e.body for e in primary.delivered] == ["body-0", "body-2", "body-4"]
    assert secondary.delivered == [batch[1], batch[3]]


def test_batch_entries_failing_everywhere_keep_original_indices(buses) -> None:
    primary, secondary = buses
    primary.fail_indices = [1, 3, 4]
    secondary.fail_indices = [1]            # index 1 of [1, 3, 4] is original entry 3
    with pytest.raises(PartialBatchError) as info:
        FailoverBus([primary, secondary]).send_batch([env(n) for n in range(5)])
    assert info.value.failed == [3] and info.value.recoverable
    delivered = {e.body for b in buses for e in b.delivered}
    assert delivered == {f"body-{n}" for n in (0, 1, 2, 4)}


def test_batch_whole_failure_moves_everything(buses) -> None:
    primary, secondary = buses
    primary.failing = RecoverableError("down")
    FailoverBus([primary, secondary]).send_batch([env(n) for n in range(3)])
    assert len(secondary.delivered) == 3


def test_batch_non_recoverable_partial_is_raised_at_once(buses) -> None:
    primary, secondary = buses

    def reject(envelopes: Sequence[Envelope]) -> None:
        raise PartialBatchError([0], recoverable=False, detail="too big")
    primary.send_batch = reject  # type: ignore[method-assign]
    with pytest.raises(PartialBatchError) as info:
        FailoverBus([primary, secondary]).send_batch([env(7), env(8)])
    assert info.value.failed == [0] and not info.value.recoverable
    assert secondary.calls == 0


def test_works_over_memory_buses() -> None:
    primary, secondary = MemoryBus("memory://a"), MemoryBus("memory://b")
    router = FailoverBus([primary, secondary])
    router.send_batch([env(n) for n in range(3)])
    assert [e.body for e in primary.receive()] == ["body-0", "body-1", "body-2"]


def test_breaker_counts_consecutive_failures_only(clock) -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=5.0, clock=clock)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 5
    assert breaker.state == "half-open" and breaker.allow()
    with pytest.raises(ValueError):
        CircuitBreaker(threshold=0)


def test_batch_non_recoverable_still_reports_entries_the_bus_never_saw() -> None:
    primary, stream = ScriptedBus("arn:sqs:p"), ScriptedBus("arn:kinesis:s", max_delay=0)
    primary.failing = RecoverableError("down")

    def reject(envelopes: Sequence[Envelope]) -> None:
        raise PartialBatchError([0], recoverable=False, detail="too big")
    stream.send_batch = reject  # type: ignore[method-assign]
    with pytest.raises(PartialBatchError) as info:
        FailoverBus([primary, stream]).send_batch([env(0, delay=60), env(1), env(2)])
    assert info.value.failed == [0, 1] and not info.value.recoverable   # 2 was sent
