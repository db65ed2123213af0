"""Logic shared by the stores: ``swap`` conditions evaluated in Python (memory, sqlite,
memcached) instead of inside the backend, and the inbox rules every store follows
(memory, sqlite and memcached apply them in Python; redis and DynamoDB inside the
backend, and check their replies with them)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fsm import codec
from fsm.errors import BackendError
from fsm.message import ID_PATTERN
from fsm.ports import Record, Scalar


def matches(current: Record | None, expect: Mapping[str, Scalar] | None) -> bool:
    if expect is None:
        return current is None
    if current is None:
        return False
    for name, value in expect.items():  # a plain loop: this runs twice per transition
        if current.get(name) != value:
            return False
    return True


def merged(current: Record | None, fields: Mapping[str, Any]) -> Record:
    record = dict(current or {})
    record.update(fields)
    return record


def dumps(value: Any) -> str:
    return codec.dumps(value)


INBOX, INBOX_END, PENDING = "inbox", "inbox_end", "pending"


def checked_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` as a plain dict, refused unless its ``id`` is an event id and ``at`` a
    finite number. Redis and DynamoDB find an id by its quoted text (``"id"``) in JSON,
    which is exact only because an event id holds no quote or backslash."""
    event_id, at = entry.get("id"), entry.get("at")
    if not isinstance(event_id, str) or not ID_PATTERN.fullmatch(event_id):
        raise BackendError(f"inbox entry id {event_id!r} must match {ID_PATTERN.pattern}")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        raise BackendError(f"inbox entry {event_id!r}: 'at' must be epoch seconds, got {at!r}")
    return dict(entry)


def is_duplicate(record: Record, event_id: str) -> bool:
    """The event was applied already (``event_ids``) or is waiting in the inbox."""
    applied = record.get("event_ids")
    if isinstance(applied, list) and event_id in applied:
        return True
    return any(isinstance(e, Mapping) and e.get("id") == event_id for e in record.get(INBOX) or ())


def appended(record: Record, entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fields an append of ``entry`` (see :func:`checked_entry`) changes in
    ``record``, or ``None`` for a duplicate. ``pending`` is only set when nothing is owed
    yet (0, null or absent): an earlier debt is older and the sweep must see that one."""
    if is_duplicate(record, entry["id"]):
        return None
    end = (record.get(INBOX_END) or 0) + 1
    fields: dict[str, Any] = {INBOX: [*(record.get(INBOX) or ()), {**entry, "pos": end}], INBOX_END: end}
    if not record.get(PENDING):
        fields[PENDING] = entry["at"]
    return fields


def expect_holds(current: Record | None, expect: Mapping[str, Scalar] | None) -> bool:
    """:func:`sources.base.matches`, with a missing ``inbox_end`` read as 0: records
    made before inboxes existed have none, and a swap expecting 0 must find them."""
    if current is not None and expect and INBOX_END in expect and INBOX_END not in current:
        wanted = expect[INBOX_END]
        if wanted == 0 and not isinstance(wanted, bool):
            current = {**current, INBOX_END: 0}
    return matches(current, expect)
