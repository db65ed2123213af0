"""Primary/secondary routing over any list of event buses, written once.

Failover is decided by error *type*: a :class:`RecoverableError` (connection refused,
timeout, throttling, 5xx, a deleted queue) moves the message to the next bus, while a
plain :class:`BackendError` (an oversized or invalid message) would fail the same way
everywhere and is raised at once. A per-bus :class:`CircuitBreaker` stops us paying a
timeout on a dead primary for every message, but never stops a message being sent: when
every circuit is open, the buses are tried anyway.

Delays: ``max_delay`` is the primary's. A message due later than that belongs in the
timer store, which is the dispatcher's decision. This router only refuses to drop a
delay silently: a bus that cannot hold the delay is skipped, and if no bus can hold it
at all the send fails with a :class:`BackendError`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from fsm.errors import BackendError, PartialBatchError, RecoverableError
from fsm.ports import Envelope, EventBus, Metrics

Clock = Callable[[], float]

LOG = logging.getLogger("fsm.failover")


class CircuitBreaker:
    """Consecutive-failure breaker with a cool-down and a half-open trial.

    ``closed``: calls go through. After ``threshold`` consecutive failures it is
    ``open`` for ``cooldown`` seconds, then ``half-open``: calls go through again and
    the first success closes it, while a failure opens it for another cool-down. It is
    generic (no bus knowledge) so stores can wrap their primaries with it too.
    """

    def __init__(self, threshold: int = 3, cooldown: float = 30.0, clock: Clock = time.monotonic):
        if threshold < 1:
            raise ValueError("breaker threshold must be at least 1")
        self.threshold, self.cooldown, self.clock = threshold, cooldown, clock
        self.failures = 0
        self.opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "open" if self.clock() - self.opened_at < self.cooldown else "half-open"

    def allow(self) -> bool:
        """Whether a call should be attempted now."""
        return self.state != "open"

    def record_success(self) -> None:
        with self._lock:
            self.failures, self.opened_at = 0, None

    def record_failure(self) -> None:
        """Count one failure; returns nothing, read ``state`` to see whether it opened."""
        with self._lock:
            half_open = self._state() == "half-open"
            self.failures += 1
            if half_open or self.failures >= self.threshold:
                self.opened_at = self.clock()


class FailoverBus:
    """Sends on the first healthy bus of ``buses``; see the module docstring."""

    def __init__(self, buses: Sequence[EventBus], metrics: Metrics | None = None,
                 breaker_threshold: int = 3, breaker_cooldown: float = 30.0,
                 clock: Clock = time.monotonic,
                 log: logging.Logger = LOG):
        if not buses:
            raise ValueError("FailoverBus needs at least one bus")
        self.buses = list(buses)
        self.metrics = metrics
        self.log = log
        self.breakers = [CircuitBreaker(breaker_threshold, breaker_cooldown, clock)
                         for _ in self.buses]
        self.url = self.buses[0].url
        self.max_delay = self.buses[0].max_delay

    # ---- single messages -----------------------------------------------------------

    def send(self, envelope: Envelope) -> None:
        candidates = [i for i in self._order() if envelope.delay <= self.buses[i].max_delay]
        if not candidates:
            raise BackendError(f"no bus can hold a delay of {envelope.delay}s "
                               f"(longest: {max(b.max_delay for b in self.buses)}s); "
                               "long delays belong in the timer store")
        last: RecoverableError | None = None
        for i in candidates:
            bus = self.buses[i]
            try:
                bus.send(envelope)
            except RecoverableError as exc:
                last = exc
                self._failed_over(i, exc)
                continue
            self.breakers[i].record_success()
            return
        raise RecoverableError(f"send failed on every bus ({self._urls(candidates)})") from last

    # ---- batches -------------------------------------------------------------------

    def send_batch(self, envelopes: Sequence[Envelope]) -> None:
        """Each bus gets what the previous ones could not send; indices stay the caller's."""
        envelopes = list(envelopes)
        longest = max(b.max_delay for b in self.buses)
        too_long = [n for n, e in enumerate(envelopes) if e.delay > longest]
        if too_long:
            raise BackendError(f"entries {too_long} ask for a delay longer than any bus "
                               f"holds ({longest}s); long delays belong in the timer store")
        pending = list(range(len(envelopes)))
        last: Exception | None = None
        for i in self._order():
            if not pending:
                return
            bus = self.buses[i]
            here = [n for n in pending if envelopes[n].delay <= bus.max_delay]
            if not here:
                continue
            try:
                bus.send_batch([envelopes[n] for n in here])
            except PartialBatchError as exc:
                failed = sorted({here[k] for k in exc.failed})
                if not exc.recoverable:
                    # Everything not delivered is reported, including entries this bus
                    # could not hold and so never saw: none may go missing.
                    sent_here = set(here) - set(failed)
                    unsent = [n for n in pending if n not in sent_here]
                    raise PartialBatchError(unsent, recoverable=False, detail=str(exc)) from exc
                last = exc
                if len(failed) == len(here):
                    self._failed_over(i, exc)
                else:
                    self.breakers[i].record_success()
                    self._count_failover(bus.url, exc, len(failed))
                sent = set(here) - set(failed)
                pending = [n for n in pending if n not in sent]
                continue
            except RecoverableError as exc:
                last = exc
                self._failed_over(i, exc)
                continue
            self.breakers[i].record_success()
            pending = [n for n in pending if n not in set(here)]
        if pending:
            raise PartialBatchError(pending, recoverable=True,
                                    detail=f"failed on every bus: {last}") from last

    # ---- helpers -------------------------------------------------------------------

    def _order(self) -> list[int]:
        """Buses whose circuit lets calls through, in order, then the open ones.

        Open circuits go last rather than nowhere: a message is never refused just
        because every bus failed recently.
        """
        allowed = [i for i, b in enumerate(self.breakers) if b.allow()]
        return allowed + [i for i in range(len(self.buses)) if i not in allowed]

    def _failed_over(self, index: int, exc: Exception) -> None:
        breaker = self.breakers[index]
        was_open = breaker.state == "open"
        breaker.record_failure()
        url = self.buses[index].url
        if not was_open and breaker.state == "open":
            self.log.warning("circuit opened for %s for %.0fs", url, breaker.cooldown)
        self._count_failover(url, exc, 1)

    def _count_failover(self, url: str, exc: Exception, count: int) -> None:
        # The warning names the resource and the error class only: error texts from
        # some backends echo the message body back.
        self.log.warning("bus %s failed (%s); failing over", url, type(exc).__name__)
        if self.metrics is not None:
            self.metrics.incr("Failovers", float(count), dims={"Resource": url})

    def _urls(self, indices: Sequence[int]) -> str:
        return ", ".join(self.buses[i].url for i in indices)


class FailoverTimers:
    """Timer stores in preference order, for when timers live in the stores themselves.

    A timer goes to the first store that takes it; due timers are read from every store
    that answers, so timers written before a failover still fire. A store that is down is
    skipped (an error is raised only when none answers).
    """

    def __init__(self, timers: Sequence[Any]):
        if not timers:
            raise ValueError("FailoverTimers needs at least one timer store")
        self.timers = list(timers)
        self.url = self.timers[0].url

    def add(self, timer_id: str, due: float, body: str) -> None:
        self._first("add", timer_id, due, body)

    def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        answered = self._each("due", now, limit, collect=lambda pairs: found.update((p[0], p) for p in pairs))
        if not answered:
            raise RecoverableError(f"no timer store answered: {', '.join(t.url for t in self.timers)}")
        return list(found.values())[:limit]

    def remove(self, timer_id: str) -> None:
        self._each("remove", timer_id)  # a copy left behind fires again and is a duplicate

    def next_due(self) -> float | None:
        dues: list[float] = []
        for timers in self.timers:
            if not hasattr(timers, "next_due"):
                return time.time() + 0.25  # cannot tell: look again soon
            with contextlib.suppress(RecoverableError):
                due = timers.next_due()
                if due is not None:
                    dues.append(due)
        return min(dues, default=None)

    def _first(self, method: str, *args: Any) -> Any:
        error: RecoverableError | None = None
        for timers in self.timers:
            try:
                return getattr(timers, method)(*args)
            except RecoverableError as exc:
                error = exc
        assert error is not None
        raise error

    def _each(self, method: str, *args: Any, collect: Any = None) -> int:
        answered = 0
        for timers in self.timers:
            try:
                result = getattr(timers, method)(*args)
            except RecoverableError:
                continue
            answered += 1
            if collect is not None:
                collect(result)
        return answered
