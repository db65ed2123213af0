"""The message: everything one transition needs, as one JSON document.

A step message carries the committed context and the fence of the commit that produced
it, so a stream of them is a replayable log and a secondary store can continue an
instance from any of them. Event, timer and cancel messages come from outside and carry
no context; the dispatcher takes it from the store record.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import MalformedMessage

FORMAT = 1
KINDS = ("step", "event", "timer", "cancel")
ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@dataclass(frozen=True)
class Message:
    machine: str
    correlation_id: str
    kind: str = "step"
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
    v: int = FORMAT

    @property
    def position(self) -> tuple[int, int]:
        return (self.step, self.retries)

    @property
    def dedup_id(self) -> str:
        """Stable across re-sends of the same logical message (FIFO deduplication)."""
        if self.kind == "step":
            return f"{self.correlation_id}:{self.step}:{self.retries}:{self.busy}"
        return f"{self.correlation_id}:{self.kind}:{self.event_id}:{self.busy}"

    def evolve(self, **changes: Any) -> Message:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)


def new_event_id() -> str:
    return uuid.uuid4().hex


def check_correlation_id(cid: str) -> str:
    if not isinstance(cid, str) or not ID_PATTERN.fullmatch(cid):
        raise MalformedMessage(f"correlation id {cid!r} must match {ID_PATTERN.pattern}")
    return cid


def decode(body: str | bytes | dict[str, Any]) -> Message:
    """Parse and check a message; anything wrong is a :class:`MalformedMessage`."""
    if isinstance(body, (str, bytes)):
        try:
            raw = json.loads(body)
        except ValueError as exc:
            raise MalformedMessage(f"message is not JSON: {exc}") from None
    else:
        raw = body
    if not isinstance(raw, dict):
        raise MalformedMessage(f"message must be a JSON object, got {type(raw).__name__}")
    if raw.get("v", FORMAT) != FORMAT:
        raise MalformedMessage(f"message format version {raw.get('v')!r}; this version reads {FORMAT}")
    known = Message.__dataclass_fields__
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise MalformedMessage(f"message has unknown fields {unknown}")
    for name in ("machine", "correlation_id"):
        if not isinstance(raw.get(name), str):
            raise MalformedMessage(f"message field {name!r} must be a string")
    check_correlation_id(raw["correlation_id"])
    if raw.get("kind", "step") not in KINDS:
        raise MalformedMessage(f"message kind {raw.get('kind')!r} is not one of {list(KINDS)}")
    for name in ("step", "retries", "fence", "store", "busy"):
        if not isinstance(raw.get(name, 0), int) or raw.get(name, 0) < 0:
            raise MalformedMessage(f"message field {name!r} must be a non-negative integer")
    for name in ("data", "context"):
        if raw.get(name) is not None and not isinstance(raw[name], dict):
            raise MalformedMessage(f"message field {name!r} must be an object")
    raw.setdefault("data", {})
    if raw.get("data") is None:
        raw["data"] = {}
    return Message(**raw)


def now() -> float:
    return time.time()
