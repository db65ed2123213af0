"""The rules of instance listing (``fsm.ports.InstanceIndex``) that every store follows.

- the order is ``updated_at`` descending, ties broken by id descending. ``updated_at``
  is compared as :func:`time_key`, fixed-width text to the microsecond, because redis
  and DynamoDB compare index keys as text;
- a page is read ``limit + 1`` deep from one index range per status (the status asked
  for, or all five: a store keeps an index per filter shape with the status in its key,
  so listing "every status" costs five bounded reads instead of a sixth index written
  at every commit). Records whose status is none of the five are never listed;
- the cursor is the (time key, id) of the page's last instance, and the next page is
  what sorts strictly after it. An instance updated while paging gets a newer key, so it
  moves before the cursor (to the first page) and is not returned again later; one that
  is not updated keeps its place. Paging therefore always moves forward and ends.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fsm.record import Status

LIST_STATUSES: tuple[str, ...] = tuple(Status)
MAX_LIST_LIMIT = 1000
_CURSOR_TIME = re.compile(r"[0-9]{0,13}\.[0-9]{6}")
T = TypeVar("T")


def time_key(ts: Any) -> str:
    """``updated_at`` as text whose order is time order (20 characters, microseconds;
    missing or negative is 0), the key every store sorts and pages by."""
    value = ts if isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts) else 0.0
    return f"{max(0.0, float(value)):020.6f}"


def encode_cursor(key: str, cid: str) -> str:
    """Readable and shell-safe (``1712345678.123456:order-17``), but opaque to callers."""
    return f"{key.lstrip('0')}:{cid}"


def decode_cursor(cursor: str) -> tuple[str, str]:
    stamp, _, cid = cursor.partition(":")
    if not cid or not _CURSOR_TIME.fullmatch(stamp):
        raise ValueError(f"cursor {cursor!r} is not one a listing returned; give the `next` of the previous page")
    return stamp.rjust(20, "0"), cid


@dataclass(frozen=True)
class ListQuery:
    """One checked page request: what each store turns into index range reads."""

    machine: str | None
    state: str | None
    statuses: tuple[str, ...]           # one range each: the status asked for, or all five
    since_key: str | None               # time_key(since): keys >= it
    after: tuple[str, str] | None       # (time key, id) of the previous page's last instance
    limit: int

    def admits(self, cid: str, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` belongs on this page: the filters, ``since`` and the cursor."""
        if record.get("status") not in self.statuses:
            return False
        if self.machine is not None and record.get("machine") != self.machine:
            return False
        if self.state is not None and record.get("state") != self.state:
            return False
        key = time_key(record.get("updated_at"))
        if self.since_key is not None and key < self.since_key:
            return False
        return self.after is None or (key, cid) < self.after


def list_query(*, machine: str | None, status: str | None, state: str | None, since: float | None,
               limit: int, cursor: str | None) -> ListQuery:
    """Check a listing's arguments (``ValueError`` names the bad one)."""
    if status is not None and status not in LIST_STATUSES:
        raise ValueError(f"status {status!r} is not a status; give one of {', '.join(LIST_STATUSES)}")
    if state is not None and machine is None:
        raise ValueError(f"state {state!r} needs a machine: state names belong to a machine")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit {limit!r} must be a whole number from 1 to {MAX_LIST_LIMIT}")
    if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))
                              or not math.isfinite(since)):
        raise ValueError(f"since {since!r} must be epoch seconds")
    statuses = LIST_STATUSES if status is None else (str(status),)
    return ListQuery(machine, state, statuses, None if since is None else time_key(since),
                     None if cursor is None else decode_cursor(cursor), limit)


def page_of(found: Iterable[tuple[str, str, T]], limit: int) -> tuple[list[T], str | None]:
    """The newest ``limit`` of ``(time key, id, item)`` read from several ranges (each
    read ``limit + 1`` deep), and the cursor when more follow. An id met twice (an
    eventually consistent index caught mid-move) is kept once, at its newer key."""
    page: list[tuple[str, str, T]] = []
    seen: set[str] = set()
    for entry in sorted(found, key=lambda entry: entry[:2], reverse=True):
        if entry[1] in seen:
            continue
        if len(page) == limit:      # one more than the page: the cursor leads somewhere
            return [item for _, _, item in page], encode_cursor(*page[-1][:2])
        seen.add(entry[1])
        page.append(entry)
    return [item for _, _, item in page], None
