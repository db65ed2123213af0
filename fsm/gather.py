"""Calls to one backend made by the threads of one batch, sent together.

A Lambda batch of records for different instances is handled by one thread per instance
(see ``fsm.app.intake``). A store that can send several calls in one round trip (redis: a
pipeline of scripts) hands each call to the batch's :class:`Gather` instead of sending it:
the call waits until every thread still working has a call waiting too (or a short window
has passed, so a thread busy elsewhere holds no one up), and then one of them sends them
all, in one request per backend, and each thread gets its own answer. A batch of 10 makes
one round trip for its 10 commits instead of 10.

The threads take turns: one runs at a time, and hands the turn on when it waits for an
answer (or ends). So the batch's Python code runs as it would in one thread, without
threads fighting for the interpreter, and only the waiting overlaps.

Outside a batch (no gather on this thread) a store calls its backend itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

# A backend's way of sending several requests at once: their answers in the same order,
# each an answer or the exception that request raised.
Flush = Callable[[Sequence[Any]], Sequence[Any]]

_local = threading.local()


def current() -> Gather | None:
    """The gather of the batch this thread works for, if any."""
    return getattr(_local, "gather", None)


class _Call:
    __slots__ = ("flush", "request", "answer", "done")

    def __init__(self, flush: Flush, request: Any):
        self.flush, self.request = flush, request
        self.answer: Any = None
        self.done = False


class Gather:
    """The calls of ``parties`` threads, sent together (see the module docstring)."""

    def __init__(self, parties: int, window: float = 0.02):
        self.active = parties
        self.window = window    # seconds a call waits for the others before it is sent anyway
        self.flushes = 0        # requests sent (each holding one or more calls): for benchmarks
        self._calls: list[_Call] = []
        self._cond = threading.Condition()
        self._turn = threading.Lock()

    @contextlib.contextmanager
    def party(self) -> Iterator[None]:
        """Run the block as one of the parties, in its turn: its store calls are
        gathered, and it stops counting as one when the block ends."""
        self._turn.acquire()
        _local.gather = self
        try:
            yield
        finally:
            _local.gather = None
            self._turn.release()
            with self._cond:
                self.active -= 1
                ready = bool(self._calls) and len(self._calls) >= self.active
            if ready:
                self._send()

    def call(self, flush: Flush, request: Any) -> Any:
        """``flush([request])[0]``, sent with the other parties' calls."""
        made = _Call(flush, request)
        with self._cond:
            self._calls.append(made)
            ready = len(self._calls) >= self.active
        self._turn.release()
        try:
            if not ready:
                with self._cond:
                    self._cond.wait_for(lambda: made.done, self.window)
            if not made.done:
                self._send()
            with self._cond:
                self._cond.wait_for(lambda: made.done)
        finally:
            self._turn.acquire()
        if isinstance(made.answer, BaseException):
            raise made.answer
        return made.answer

    def _send(self) -> None:
        """Send every call waiting, one request per backend; wake their threads."""
        with self._cond:
            calls, self._calls = self._calls, []
        if not calls:
            return
        by_backend: dict[Flush, list[_Call]] = {}
        for made in calls:
            by_backend.setdefault(made.flush, []).append(made)
        for flush, group in by_backend.items():
            try:
                answers = list(flush([made.request for made in group]))
            except BaseException as exc:  # noqa: BLE001 - every call of the request gets it
                answers = [exc] * len(group)
            self.flushes += 1
            with self._cond:
                for made, answer in zip(group, answers):
                    made.answer, made.done = answer, True
                self._cond.notify_all()
