"""The inbox's messages: what an external event becomes in an instance's inbox, and the
nudge that makes a worker drain it (see the README's ordered inbox)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from .message import ID_PATTERN, Kind, Message, new_event_id
from .ports import InstanceStore
from .record import Record


def inbox_entry(msg: Message, now: float) -> dict[str, Any]:
    """What the inbox keeps of an external event or a timer."""
    entry: dict[str, Any] = {"id": msg.event_id or new_event_id(), "kind": msg.kind, "event": msg.event,
                             "at": msg.sent_at or now}
    if msg.data:
        entry["data"] = msg.data
    if msg.state:
        entry["state"] = msg.state
    if msg.kind == Kind.TIMER:
        entry["stamp"] = msg.step
    return entry


def work_message(record: Record, store: int) -> Message:
    """The nudge that makes a worker drain an instance's inbox: unique per inbox end, so
    a FIFO queue does not drop the nudge for a later event as a duplicate of an earlier one."""
    return Message(machine=record["machine"], correlation_id=record["id"], kind=Kind.WORK, step=record.get("step", 0),
                   fence=record.get("fence", 0), store=store, event_id=f"inbox-{record.get('inbox_end', 0)}",
                   version=record.get("version", ""))


def store_index(stores: Sequence[InstanceStore], store: InstanceStore) -> int:
    return next((i for i, s in enumerate(stores) if s is store), 0)


def timer_id(state: str, stamp: int, event: str) -> str:
    """A timer's event id: the same for every copy of one timer, new for each visit."""
    text = f"after-{stamp}-{state}-{event}"
    if ID_PATTERN.fullmatch(text):
        return text
    return f"after-{stamp}-" + hashlib.sha256(text.encode()).hexdigest()[:32]
