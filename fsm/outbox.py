"""What a commit owes: the outbox as the record keeps it (a step message without the
context, which is the record's own) and the copies a re-send rebuilds from it."""

from __future__ import annotations

from typing import Any

from .message import Kind, Message
from .record import Record


def entries(outbox: list[tuple[Message, float]], own: str) -> list[dict[str, Any]]:
    """The outbox as the record of instance ``own`` keeps it: its own step message without
    the context and chart, which are the record's (the record holds the context once).
    A child's first step keeps its context: it is the child's, not the record's."""
    return [{"message": lean(m, own), "delay": d} for m, d in outbox]


def lean(msg: Message, own: str) -> dict[str, Any]:
    kept = msg.to_dict()
    if msg.kind == Kind.STEP and msg.correlation_id == own:
        kept.pop("context", None)
        kept.pop("chart", None)
    return kept


def owed(record: Record) -> list[tuple[Message, float]]:
    """Copies of the messages a record owes, a step message's context and chart put back
    from the record (as committed with it)."""
    found = []
    for entry in record.get("outbox") or ():
        body = {**entry["message"], "copy": True}
        if body.get("kind", Kind.STEP) == Kind.STEP and body.get("correlation_id") == record["id"] \
                and "context" not in body:
            body["context"] = record.get("context") or {}
            chart = record.get("chart")
            body["chart"] = {k: v for k, v in chart.items() if k != "value"} if chart else None
        found.append((Message(**body), float(entry.get("delay") or 0.0)))
    return found
