"""Payload sizes: what a configured backend can hold, and the claim check for the rest.

A context (or event data) travels in records and messages. Above ``offload.threshold``
bytes it is kept in a payload store (S3), one object per committed step, and a small
checked reference travels instead. Without offload, a context larger than a configured
store or stream holds fails the instance at once, with the sizes: never a commit the
backend refuses and a message redelivered for ever.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from . import codec
from .errors import BackendError, PayloadTooLarge
from .ports import PayloadStore

OFFLOADED = "$offload"


def is_offloaded(value: Any) -> bool:
    return isinstance(value, dict) and OFFLOADED in value and set(value) == {OFFLOADED, "bytes", "sha256"}


@dataclass(frozen=True)
class Offload:
    """The claim check: payloads above ``threshold`` bytes go to ``store``."""

    store: PayloadStore
    threshold: int


@dataclass(frozen=True)
class Limits:
    """The largest record the stores take and the largest message the stream takes, in
    bytes (0: none), with the backends' names for messages."""

    record: int = 0
    message: int = 0
    record_names: tuple[str, ...] = ()
    message_names: tuple[str, ...] = ()


@dataclass
class Payloads:
    limits: Limits = Limits()
    offload: Offload | None = None

    def stow(self, cid: str, name: str, value: dict[str, Any]) -> dict[str, Any]:
        """``value`` itself, or, above the ``offload`` threshold, a reference to it kept in
        the payload store (one object per committed step and kind)."""
        if self.offload is None or not value:
            return value
        body = codec.dumps(value).encode()
        if len(body) <= self.offload.threshold:
            return value
        digest = hashlib.sha256(body).hexdigest()
        url = self.offload.store.put(f"{cid}/{name}-{digest[:16]}.json", body)
        return {OFFLOADED: url, "bytes": len(body), "sha256": digest}

    def fetch(self, value: dict[str, Any]) -> dict[str, Any]:
        """What a reference made by :meth:`stow` stands for; any other value as it is."""
        if not is_offloaded(value):
            return value
        if self.offload is None:
            raise BackendError(f"a payload is offloaded to {value[OFFLOADED]!r} but settings have no `offload:` "
                               "store to read it from")
        body = self.offload.store.get(value[OFFLOADED])
        if hashlib.sha256(body).hexdigest() != value["sha256"]:
            raise BackendError(f"the payload at {value[OFFLOADED]!r} is not the one the reference names "
                               "(its digest differs)")
        return codec.loads(body)

    def too_big(self, context: dict[str, Any], sends: bool, what: str = "context") -> PayloadTooLarge | None:
        """The context a step would commit (or another payload: ``what``), against the
        record and (when the step sends a message carrying it) the message limits of the
        configured backends."""
        limits = self.limits
        if not limits.record and not limits.message:
            return None
        size = len(codec.dumps(context).encode())
        # Room for the rest of the record (history, outbox, inbox) and of the message.
        for limit, names, kind, room in ((limits.record, limits.record_names, "record", 16 * 1024),
                                         (limits.message if sends else 0, limits.message_names, "message", 4096)):
            if limit and size + room > limit:
                return PayloadTooLarge(f"the {what} is {size:,} bytes; a {kind} on {', '.join(names)} holds at "
                                       f"most {limit:,} bytes (with {room // 1024} KB for the rest of it): set "
                                       f"`offload: {{store: s3://BUCKET/PREFIX}}` in settings to keep large {what}s "
                                       f"in S3, or keep large data out of the {what}")
        return None
