"""The message: everything one transition needs, as one JSON document.

A step message carries the committed context and the fence of the commit that produced
it, so a stream of them is a replayable log and a secondary store can continue an
instance from any of them. Event, timer and cancel messages come from outside and carry
no context; the dispatcher takes it from the store record.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from . import codec
from .errors import MalformedMessage

FORMAT = 1


class Kind(StrEnum):
    STEP = "step"      # an internal step: carries the context and its position
    EVENT = "event"    # an external event: applied at whatever step the instance is on
    TIMER = "timer"    # a state timeout or a scheduled wake-up, for the step that set it
    CANCEL = "cancel"
    WORK = "work"      # the instance's inbox has events: whoever gets the lease drains it


KINDS = tuple(Kind)
ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@dataclass(frozen=True)
class Message:
    machine: str
    correlation_id: str
    kind: str = Kind.STEP
    step: int = 0            # transitions committed before this message (step messages)
    retries: int = 0
    event: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] | None = None
    fence: int = 0           # fence token of the commit that sent it
    state: str | None = None  # state it was sent from (timers: the state that set it)
    event_id: str | None = None
    store: int = 0           # index of the store in use (failover is sticky per instance)
    copy: bool = False       # a re-send of an outbox message (see Dispatcher._duplicate)
    busy: int = 0            # times requeued because the lease was held
    reason: str | None = None
    version: str = ""        # the machine definition's declared version, if any
    sent_at: float = 0.0
    chart: dict[str, Any] | None = None  # statecharts: the snapshot a step starts from
    parent: dict[str, Any] | None = None  # a child's start: where its result goes (see fsm.join)
    v: int = FORMAT

    @property
    def position(self) -> tuple[int, int]:
        return (self.step, self.retries)

    @property
    def dedup_id(self) -> str:
        """Stable across re-sends of the same logical message (FIFO deduplication)."""
        if self.kind == Kind.STEP:
            return f"{self.correlation_id}:{self.step}:{self.retries}:{self.busy}"
        return f"{self.correlation_id}:{self.kind}:{self.event_id}:{self.busy}"

    def evolve(self, **changes: Any) -> Message:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A shallow dict: ``data`` and ``context`` are shared, not copied (this runs
        several times per transition; ``dataclasses.asdict`` deep-copies and was half of
        the engine's time)."""
        return self.__dict__.copy()

    def encode(self) -> str:
        """Compact JSON without the fields that hold their defaults (smaller messages,
        and less to check when they are read)."""
        return codec.dumps({k: v for k, v in self.__dict__.items() if v != _DEFAULTS.get(k, _MISSING)})


def new_event_id() -> str:
    return uuid.uuid4().hex


def check_event_id(event_id: str) -> str:
    if not isinstance(event_id, str) or not ID_PATTERN.fullmatch(event_id):
        raise MalformedMessage(f"event id {event_id!r} must match {ID_PATTERN.pattern}")
    return event_id


def check_correlation_id(cid: str) -> str:
    if not isinstance(cid, str) or not ID_PATTERN.fullmatch(cid):
        raise MalformedMessage(f"correlation id {cid!r} must match {ID_PATTERN.pattern}")
    return cid


_MISSING = object()
_DEFAULTS = {"kind": Kind.STEP, "step": 0, "retries": 0, "event": None, "data": {}, "context": None, "fence": 0,
             "state": None, "event_id": None, "store": 0, "copy": False, "busy": 0, "reason": None,
             "version": "", "chart": None, "parent": None, "v": FORMAT}
_NONE = type(None)
# field -> (accepted types, what to say when it is wrong): one pass checks a message
_CHECKS: dict[str, tuple[tuple[type, ...], str]] = {
    "machine": ((str,), "a string"), "correlation_id": ((str,), "a string"), "kind": ((str,), "a string"),
    "step": ((int,), "a non-negative integer"), "retries": ((int,), "a non-negative integer"),
    "fence": ((int,), "a non-negative integer"), "store": ((int,), "a non-negative integer"),
    "busy": ((int,), "a non-negative integer"), "event": ((str, _NONE), "a string or null"),
    "data": ((dict, _NONE), "an object"), "context": ((dict, _NONE), "an object"),
    "state": ((str, _NONE), "a string or null"), "event_id": ((str, _NONE), "a string or null"),
    "copy": ((bool,), "true or false"), "reason": ((str, _NONE), "a string or null"),
    "version": ((str,), "a string"), "sent_at": ((int, float), "a number"), "v": ((int,), "an integer"),
    "chart": ((dict, _NONE), "an object"), "parent": ((dict, _NONE), "an object"),
}


def decode(body: str | bytes | dict[str, Any]) -> Message:
    """Parse and check a message; anything wrong is a :class:`MalformedMessage`."""
    if isinstance(body, (str, bytes)):
        try:
            raw = codec.loads(body)
        except ValueError as exc:
            raise MalformedMessage(f"message is not JSON: {exc}") from None
    else:
        raw = body
    if not isinstance(raw, dict):
        raise MalformedMessage(f"message must be a JSON object, got {type(raw).__name__}")
    for name, value in raw.items():
        check = _CHECKS.get(name)
        if check is None:
            raise MalformedMessage(f"message has unknown field {name!r}; known: {', '.join(_CHECKS)}")
        types, wanted = check
        # Exact types (JSON gives exactly these): True is not an int here.
        if type(value) not in types or (type(value) is int and value < 0 and types == (int,)):
            # The type, never the value: a poison message's fields may hold anything.
            raise MalformedMessage(f"message field {name!r} must be {wanted}, got {_kind_of(value)}")
    if raw.get("v", FORMAT) != FORMAT:
        raise MalformedMessage(f"message format version {raw['v']!r}; this version reads {FORMAT}")
    if "machine" not in raw or "correlation_id" not in raw:
        raise MalformedMessage("message needs the fields 'machine' and 'correlation_id'")
    check_correlation_id(raw["correlation_id"])
    if raw.get("kind", Kind.STEP) not in KINDS:
        raise MalformedMessage(f"message kind is not one of {', '.join(KINDS)}")
    if raw.get("data") is None:
        raw["data"] = {}
    return Message(**raw)


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int) and value < 0:
        return "a negative integer"
    return f"a {type(value).__name__}" if not isinstance(value, str) else f"a string of {len(value)} characters"


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds, the format of every time we show."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
