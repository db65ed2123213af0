"""Where messages go: the routes, and the sends a commit makes over them.

:class:`Router` sends each message on the stream when the stream can hold its delay,
else on the retry bus, else into the timer store; collects the stream's messages of a
batch and sends them in the fewest requests (:meth:`Router.batched`); keeps the one
dead-letter path; and tells the notify feed. A bus fault while sending is a
``SendFailed`` (:func:`sending`): the commit stands, the message is redelivered, and
no store fails over.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import codec
from .errors import BackendError, RecoverableError, SendFailed
from .logs import log, redact
from .message import Kind, Message
from .model import Machine
from .ports import Envelope, EventBus, Metrics, TimerStore


@dataclass
class Routes:
    """Where messages go. ``bus`` is the stream; the rest are optional."""

    bus: EventBus
    retry: EventBus | None = None        # delays the stream cannot hold
    timers: TimerStore | None = None     # delays no bus can hold
    dead_letter: EventBus | None = None
    notify: EventBus | None = None


class Router:
    """Sends messages over ``routes``; ``metrics`` counts dead letters, ``clock`` dates
    the messages the timer store holds."""

    def __init__(self, routes: Routes, metrics: Metrics, clock: Callable[[], float]):
        self.routes = routes
        self.metrics = metrics
        self.clock = clock
        self._local = threading.local()  # per thread: the sends a batch collects

    def send(self, entries: Sequence[tuple[Message, float]]) -> None:
        """Send each message with its delay (seconds)."""
        with sending():
            for msg, delay in entries:
                self.route(msg, delay)

    def requeue(self, msg: Message, delay: float) -> None:
        """Send the message again after ``delay``. The requeued one is a copy: it is not the
        redelivery of a consumed message, so it must not re-send that message's outbox."""
        self.send([(msg.evolve(busy=msg.busy + 1, copy=msg.kind == Kind.STEP or msg.copy), delay)])

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Within it, messages for the stream are collected and sent at the end in the
        fewest requests (SendMessageBatch, PutRecords, PublishBatch): a Lambda batch of
        records makes one send, not one per record. Sending after every commit of the batch
        is safe: a send that fails fails the invocation, and each redelivered record finds
        its commit done and re-sends what it owes."""
        if getattr(self._local, "batch", None) is not None:
            yield  # already batching (nested)
            return
        self._local.batch = []
        try:
            yield
        finally:
            pending, self._local.batch = self._local.batch, None
        if pending:
            with sending():
                self.routes.bus.send_batch(pending)

    def batch_of_this_thread(self) -> list[Envelope] | None:
        """The messages the batch this thread works in collects (None: not batching)."""
        return getattr(self._local, "batch", None)

    @contextlib.contextmanager
    def sharing(self, batch: list[Envelope] | None) -> Iterator[None]:
        """Within it, this thread's messages go to ``batch``, another thread's
        :meth:`batched` collection (which sends them): the threads of one batch."""
        self._local.batch = batch
        try:
            yield
        finally:
            self._local.batch = None

    def route(self, msg: Message, delay: float) -> None:
        envelope = Envelope(msg.encode(), msg.correlation_id, msg.dedup_id, delay)
        if delay <= self.routes.bus.max_delay:
            batch = getattr(self._local, "batch", None)
            if batch is not None:
                batch.append(envelope)
            else:
                self.routes.bus.send(envelope)
        elif self.routes.retry is not None and delay <= self.routes.retry.max_delay:
            self.routes.retry.send(envelope)
        elif self.routes.timers is not None:
            self.routes.timers.add(msg.dedup_id, self.clock() + delay, envelope.body)
        else:
            raise BackendError(f"nowhere to hold a message for {delay:.0f} s: {self.routes.bus.url} "
                               f"holds at most {self.routes.bus.max_delay:.0f} s; add a standard SQS "
                               "queue or a DynamoDB timer table to settings `retry:`")

    def dead_letter_message(self, msg: Message, error: str) -> None:
        self.dead_letter(msg.encode(), error, machine=msg.machine, key=msg.correlation_id,
                         dedup_id=msg.dedup_id, kind=msg.kind)

    def dead_letter(self, body: str, reason: str, *, machine: str = "unknown", key: str = "dead-letter",
                    dedup_id: str | None = None, **where: Any) -> None:
        """The one dead-letter path: for a message that failed for good, a body that is
        no message, an event no handler recognises. Logged (the payload redacted),
        counted, and kept on the ``dead_letter`` bus when one is configured."""
        self.metrics.incr("DeadLetters", dims={"Machine": machine})
        log(logging.ERROR, "dead-lettered", reason=reason, payload=redact(body), machine=machine,
            correlation_id=key, to=getattr(self.routes.dead_letter, "url", None), **where)
        if self.routes.dead_letter is not None:
            digest = dedup_id or hashlib.sha256(body.encode()).hexdigest()
            with sending():
                self.routes.dead_letter.send(Envelope(body, key, digest))

    def notify(self, cid: str, machine: Machine, state: str | None, status: str, step: int) -> None:
        if self.routes.notify is None:
            return
        body = {"correlation_id": cid, "machine": machine.name, "state": state, "status": status, "step": step}
        try:
            self.routes.notify.send(Envelope(codec.dumps(body), cid, f"{cid}:{step}:{status}"))
        except BackendError as exc:  # a UI feed must not fail a committed transition
            log(logging.WARNING, "notify failed", correlation_id=cid, error=str(exc))


def kept_by_router(name: str) -> Any:
    """A property of the router's holder (``holder.router``) that is the router's
    attribute ``name``: set on either, both see it."""
    return property(lambda self: getattr(self.router, name), lambda self, value: setattr(self.router, name, value))


@contextlib.contextmanager
def sending() -> Iterator[None]:
    """A bus fault after the commit is a ``SendFailed``: redeliver, never switch stores."""
    try:
        yield
    except SendFailed:
        raise
    except RecoverableError as exc:
        raise SendFailed(str(exc)) from exc
