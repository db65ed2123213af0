"""Fault injection around any adapter, to prove the no-lost-message invariant.

Two kinds of fault matter and are injected in equal numbers:

- ``before``: the call never reached the backend (connection refused). Retrying is
  trivially safe.
- ``after``: the backend applied the call but the caller never heard back (a timeout
  on the response). This is the hard case: the retry must be recognised as a
  duplicate (a store swap whose condition now fails, a bus message sent twice).

Both surface as :class:`RecoverableError`, exactly what a real adapter raises, so the
dispatcher and :class:`~sources.failover.FailoverBus` cannot tell chaos from an outage.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any

from fsm.errors import RecoverableError
from fsm.ports import Metrics

# Every primitive of the store, timer and bus ports; ``close`` and attributes pass through.
WRAPPED_METHODS = frozenset({"swap", "append", "get", "history", "add", "due", "remove", "send", "send_batch"})


class ChaosWrapper:
    def __init__(self, target: Any, probability: float, *, rng: random.Random | None = None,
                 counters: Metrics | None = None):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"fault probability must be within [0, 1], got {probability}")
        self.target = target
        self.probability = probability
        self.rng = rng if rng is not None else random.Random()
        self.counters = counters
        self.injected = {"before": 0, "after": 0}

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on the wrapper itself, so ``target``,
        # ``injected`` and friends never reach here.
        attribute = getattr(self.target, name)
        if name in WRAPPED_METHODS and callable(attribute):
            return self._faulty(name, attribute)
        return attribute

    def _faulty(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            kind = self._draw()
            if kind == "before":
                raise self._fault(kind, name)
            result = method(*args, **kwargs)
            if kind == "after":
                raise self._fault(kind, name)
            return result
        return call

    def _draw(self) -> str | None:
        """``None`` for no fault; otherwise alternate kinds so each gets exactly half."""
        if self.rng.random() >= self.probability:
            return None
        return "before" if self.injected["before"] <= self.injected["after"] else "after"

    def _fault(self, kind: str, method: str) -> RecoverableError:
        self.injected[kind] += 1
        if self.counters is not None:
            self.counters.incr("FaultsInjected", dims={"Kind": kind})
        where = getattr(self.target, "url", type(self.target).__name__)
        lost = "never reached the backend" if kind == "before" else "was applied, response lost"
        return RecoverableError(f"chaos: injected fault in {method} on {where} ({lost})")

    def __repr__(self) -> str:
        return f"ChaosWrapper({self.target!r}, probability={self.probability})"
