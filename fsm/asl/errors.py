"""ASL errors, ``Retry`` and ``Catch``. Pure.

An error is a name and a cause. ``ErrorEquals`` matches a name exactly, or by the two
wildcards: ``States.ALL`` (every error) and ``States.TaskFailed`` (every error but
``States.Timeout``). Neither matches the terminal ``States.Runtime`` and
``States.DataLimitExceeded``, which nothing catches or retries. The first retrier whose
``ErrorEquals`` matches decides: another attempt while it has some left, after
``IntervalSeconds * BackoffRate ** n`` seconds (at most ``MaxDelaySeconds``, jittered
between 0 and that with ``JitterStrategy: FULL``); then the first matching catcher.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TERMINAL = frozenset({"States.Runtime", "States.DataLimitExceeded"})
WILDCARDS = frozenset({"States.ALL", "States.TaskFailed"})
# Every States.* name a definition may list in ErrorEquals.
KNOWN = frozenset({
    "States.ALL", "States.TaskFailed", "States.Timeout", "States.HeartbeatTimeout", "States.Permissions",
    "States.ResultPathMatchFailure", "States.ParameterPathFailure", "States.BranchFailed",
    "States.NoChoiceMatched", "States.IntrinsicFailure", "States.ExceedToleratedFailureThreshold",
    "States.ItemReaderFailed", "States.ResultWriterFailed", "States.QueryEvaluationError", "States.Runtime",
    "States.DataLimitExceeded", "States.Http.Socket"})


class AslError(Exception):
    """An error a state raises: ``error`` names it, ``cause`` says why; ``also`` are
    further names it matches (a heartbeat timeout is ``States.Timeout`` and matches
    ``States.HeartbeatTimeout``)."""

    def __init__(self, error: str, cause: str = "", also: Sequence[str] = ()):
        self.error, self.cause, self.also = error, cause, tuple(also)
        super().__init__(f"{error}: {cause}" if cause else error)

    def output(self) -> dict[str, str]:
        """What a catcher passes on: ``{"Error", "Cause"}``."""
        return {"Error": self.error, "Cause": self.cause}


def matches(names: Sequence[str], error: AslError) -> bool:
    if error.error in TERMINAL:
        return False
    for name in names:
        if name == error.error or name in error.also or name == "States.ALL":
            return True
        if name == "States.TaskFailed" and error.error != "States.Timeout":
            return True
    return False


@dataclass(frozen=True)
class Retrier:
    errors: tuple[str, ...]
    interval: float = 1.0
    max_attempts: int = 3
    backoff: float = 2.0
    max_delay: float | None = None
    jitter: bool = False

    def delay(self, attempt: int, rng: Any = random) -> float:
        """Seconds before retry number ``attempt + 1`` (``attempt`` retries already made)."""
        seconds = self.interval * self.backoff ** attempt
        if self.max_delay is not None:
            seconds = min(seconds, self.max_delay)
        if self.jitter:
            seconds = rng.uniform(0, seconds)
        return seconds


@dataclass(frozen=True)
class Catcher:
    errors: tuple[str, ...]
    next: str
    result_path: Any   # data.ABSENT, None or a reference path


@dataclass(frozen=True)
class Decision:
    """What an error leads to: ``retry`` (index of the retrier, seconds to wait), or
    ``catch`` (index of the catcher), or neither: the state fails."""

    retry: int | None = None
    delay: float = 0.0
    catch: int | None = None


def decide(error: AslError, retriers: Sequence[Retrier], catchers: Sequence[Catcher],
           attempts: Sequence[int], rng: Any = random) -> Decision:
    """``attempts[i]``: the retries retrier ``i`` has made in this visit of the state."""
    for index, retrier in enumerate(retriers):
        if matches(retrier.errors, error):
            made = attempts[index] if index < len(attempts) else 0
            if made < retrier.max_attempts:
                return Decision(retry=index, delay=retrier.delay(made, rng))
            break
    for index, catcher in enumerate(catchers):
        if matches(catcher.errors, error):
            return Decision(catch=index)
    return Decision()


def from_exception(exc: BaseException) -> AslError:
    """The ASL error an exception stands for: an :class:`AslError` or ``fsm.Failed`` as
    itself, anything else named after its class, its message the cause."""
    from fsm.errors import Failed

    if isinstance(exc, AslError):
        return exc
    if isinstance(exc, Failed):
        return AslError(exc.error, exc.cause)
    return AslError(type(exc).__name__, str(exc))
