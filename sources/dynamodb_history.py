"""The DynamoDB store's history: carried in the record item, paged out into history
page items, and read back. :class:`HistoryPaging` is a part of
:class:`sources.dynamodb.DynamoStore` (see :mod:`sources.dynamodb` for the table's
items and the swap, :mod:`sources.dynamodb_items` for how attributes are written).

History is carried in the record and paged out. The record item holds ``history_len``
(entries ever written) and ``history_tail``, a List of the latest entries' JSON texts
(S, or B packed with the history dictionary when smaller: ~48 bytes for the dispatcher's
~114), numbered ``history_len - len + 1`` to ``history_len``; a swap appends its entries
with ``list_append`` and adds their count to ``history_len`` in the same UpdateItem, so
appending needs no knowledge of the record and no condition. Older entries are in history
pages: items ``h#%012d-%012d`` % (n, m) holding entries n to m as one JSON array
(``entries``, S or packed B). The previous version wrote each swap's entries as such an
item, keyed ``h#%012d`` % n, in a transaction with the record, and carried none: its
records (``history_len`` and no ``history_tail``) need nothing done, their items read as
pages.

A page goes out when a swap finds, from the record as this store last saw it (the
acquire's reply, in the dispatcher's flow), that the carried entries hold at least
``PAGE_MIN_BYTES`` (200) and keeping them would put the item past the 1 KB write units
it needs without them, or that they reach ``CARRY_MAX_BYTES`` (16 KB) or
``CARRY_MAX_ENTRIES`` (16). The swap then first PutItems them as the page keyed by their
first and last numbers (unconditional: an entry's number never changes, so a key always
holds the same entries) and then makes its UpdateItem set ``history_tail`` to its own
entries alone, on condition that the record still has the ``history_len`` and the number
of carried entries it saw (a stale view fails, and the swap is made again with the
values the failure returned).
So an entry is written once into the record and once into a page, and the extra round
trip is one PutItem per page (1 write unit). Carried entries cost no write unit while
they fit the room left in the record's last unit; a record with less room than
``PAGE_MIN_BYTES`` carries them into its next unit until they make a page, and pays one
unit more per write meanwhile (so a page is never a PutItem per commit). ``fsm cost``,
SQS + DynamoDB, ``concurrency: optimistic``, table write units per transition with
``PAGE_MIN_BYTES`` 0 / 100 / 200 / 256: 200-byte context 1.2 / 1.2 / 1.2 / 1.4, 1 KB 2.2
at each, 4 KB 2.3 / 2.3 / 2.3 / 2.38. A swap appends without a page-out only while the record carries fewer than
``CARRY_MAX_ENTRIES`` (a condition of its write): a swap that has seen nothing of the
record (a commit in ``concurrency: optimistic`` on a container that did not make the
instance's previous one) lets the record carry up to ~2 KB of typical entries, and the
one that finds the limit reached gets the record in the failure's reply and pages out.
One swap's own entries are always carried in full: they must fit in the item.

``history`` reads the partition with one Query (pages sort before ``record``) and takes
entries 1 to ``history_len - len(history_tail)`` from the pages, each number once, then
the carried ones. A crash between a page's PutItem and the swap that drops its entries
leaves them both in a page and in the record: the record's numbering says they are
carried, and the page's copy is not read; a page written again holds the same entries,
and one written by a handle whose view was stale (its swap then fails) holds a prefix
of a page a rival wrote, under a key of its own, never over it. Without a record (deleted),
``history`` returns what the pages hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from .aws import classify
from .dynamodb_items import (
    HISTORY_LEN,
    HISTORY_SK,
    HISTORY_TAIL,
    NULL_REMOVED,
    RECORD_SK,
    Page,
    Seen,
    attr_size,
    count_of,
    encode,
    entry_attr,
    number_attr,
    page_entries,
    tail_of,
    texts_size,
    units,
)
from .dynamodb_pending import positive
from .dynamodb_tables import TTL

# Paging out the carried history (see the module docstring): a page goes out at the first
# swap where keeping it would put the record item in one more write unit (1 KB), once it
# holds PAGE_MIN_BYTES; always once it holds CARRY_MAX_BYTES or CARRY_MAX_ENTRIES. Every
# swap appending without a page-out may do so only while the record carries fewer than
# CARRY_MAX_ENTRIES (a condition of its write), which bounds what a swap that has not seen
# the record (nothing to decide on) lets it carry. PAGE_MIN_BYTES trades round trips for
# write units: 0 never lets carried entries cost a unit, but pages out at every commit
# when the record's last unit has room for one entry and not two; 200 makes a page at
# least ~4 of the dispatcher's packed entries, carrying them across a unit boundary
# meanwhile (see the module docstring for the figures).
PAGE_MIN_BYTES = 200
CARRY_MAX_BYTES = 16 * 1024
CARRY_MAX_ENTRIES = 16


class HistoryPaging:
    """History paging and reading of :class:`sources.dynamodb.DynamoStore` (see the module
    docstring): ``history`` and ``history_len``, and the page-out a swap makes before its
    write (``_page_out``, ``_put_page``), decided on what the store last saw of the record
    (its ``_seen``, see :mod:`sources.dynamodb`)."""

    # provided by DynamoStore
    client: Any
    table: str
    url: str
    prefix: str
    page_size: int | None
    _seen: dict[str, Seen]

    if TYPE_CHECKING:
        def _key(self, cid: str, sk: str) -> dict[str, Any]: ...
        def _pages(self, operation: str, request: dict[str, Any]) -> Iterable[dict[str, Any]]: ...

    # -- reading history -------------------------------------------------------------------

    def history(self, cid: str, start: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries ``start`` to ``start + limit`` (0-based; ``limit`` None: to the end),
        each once, in order.

        The whole history is one Query of the instance's partition (see
        :meth:`_whole_history`). A range reads the record's ``history_len`` and carried
        entries first (GetItem), which say which entry numbers are carried and which are
        in pages, then only the pages that can hold the range's paged numbers: a Query
        newest first of the items whose first number is at most the range's last, which
        stops once it holds every number it needs (pages are immutable and a page always
        goes out before the swap that stops carrying its entries, so the pages a record
        counts as paged are there when the record says so)."""
        start = max(0, start)
        if start == 0 and limit is None:
            return self._whole_history(cid)
        carried = self._history_head(cid)
        if carried is None:     # no record: what the pages hold
            kept = self._whole_history(cid)
            return kept[start:] if limit is None else kept[start:start + max(0, limit)]
        total, tail = carried
        paged = total - len(tail)
        first = start + 1                                                   # entry numbers, from 1
        last = total if limit is None else min(total, start + max(0, limit))
        if first > last:
            return []
        wanted = range(first, min(last, paged) + 1)
        found = self._paged_entries(cid, wanted) if wanted else {}
        return ([found[n] for n in wanted if n in found]
                + [json.loads(text) for text in tail[max(0, first - paged - 1):max(0, last - paged)]])

    def history_len(self, cid: str) -> int:
        """Entries ever written: the record's ``history_len`` (one GetItem); without a
        record, how many its history items hold."""
        carried = self._history_head(cid)
        return carried[0] if carried is not None else len(self._whole_history(cid))

    def _history_head(self, cid: str) -> tuple[int, list[str]] | None:
        """The record's ``history_len`` and carried entries' texts; None without a record."""
        try:
            item = self.client.get_item(TableName=self.table, Key=self._key(cid, RECORD_SK), ConsistentRead=True,
                                        ProjectionExpression="#len, #tail",
                                        ExpressionAttributeNames={"#len": HISTORY_LEN, "#tail": HISTORY_TAIL}
                                        ).get("Item")
        except (BotoCoreError, ClientError) as exc:
            raise classify(exc, self.url) from exc
        return None if item is None else (count_of(item, HISTORY_LEN), tail_of(item))

    def _paged_entries(self, cid: str, wanted: range) -> dict[int, Any]:
        """The paged entries numbered in ``wanted`` (see :meth:`history`)."""
        query: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True, "ScanIndexForward": False,
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :low AND :high",
            "ProjectionExpression": "#sk, #entries",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk", "#entries": "entries"},
            # ``h#N`` (the previous layout) and ``h#N-M`` sort before ``h#N-~``, and after it
            # every key whose first number is above N.
            "ExpressionAttributeValues": {":pk": {"S": self.prefix + cid}, ":low": {"S": HISTORY_SK},
                                          ":high": {"S": f"{HISTORY_SK}{wanted[-1]:012d}-~"}},
            "Limit": self.page_size or max(2, min(100, len(wanted) // CARRY_MAX_ENTRIES + 2)),
        }
        found: dict[int, Any] = {}
        for item in self._pages("query", query):
            first, entries = _first_number(item["sk"]["S"]), page_entries(item)
            if not first or entries is None:
                continue
            for offset, entry in enumerate(entries):
                if first + offset in wanted:
                    found.setdefault(first + offset, entry)
            if len(found) == len(wanted):
                break
        return found

    def _whole_history(self, cid: str) -> list[dict[str, Any]]:
        """Every entry once, in order: one Query of the instance's partition reads its
        history items (``h#`` sorts before ``record``) and then the record, whose
        ``history_len`` and carried entries say which numbers the items must supply (see
        the module docstring). Without a record, what its history items hold."""
        query: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "KeyConditionExpression": "#pk = :pk",
            "ProjectionExpression": "#sk, #entries, #len, #tail",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk", "#entries": "entries", "#len": HISTORY_LEN,
                                         "#tail": HISTORY_TAIL},
            "ExpressionAttributeValues": {":pk": {"S": self.prefix + cid}},
        }
        if self.page_size:
            query["Limit"] = self.page_size
        paged: dict[int, Any] = {}      # entry number -> entry
        record: Mapping[str, Any] | None = None
        for item in self._pages("query", query):
            sk = item["sk"]["S"]
            if sk == RECORD_SK:
                record = item
            elif sk.startswith(HISTORY_SK) and _first_number(sk) and page_entries(item) is not None:
                first = _first_number(sk)
                for offset, entry in enumerate(page_entries(item) or ()):
                    paged.setdefault(first + offset, entry)    # a page written twice holds the same entries
        if record is None:
            return [paged[n] for n in sorted(paged)]
        tail = tail_of(record)
        paged_up_to = count_of(record, HISTORY_LEN) - len(tail)   # the carried entries come after
        return [paged[n] for n in sorted(paged) if n <= paged_up_to] + [json.loads(text) for text in tail]

    # -- paging history out ----------------------------------------------------------------

    def _page_out(self, cid: str, fields: Mapping[str, Any], entries: Sequence[str],
                  listing: Mapping[str, str | None]) -> Page | None:
        """The carried entries to move out before this swap, if it is time (see the
        module docstring); decided on the record as this store last saw it, which the
        swap then makes a condition of its write."""
        seen = self._seen.get(cid)
        if seen is None or not seen.tail:
            return None
        carried, new = texts_size(seen.tail), texts_size(entries)
        if len(seen.tail) < CARRY_MAX_ENTRIES and carried + new <= CARRY_MAX_BYTES:
            if carried < PAGE_MIN_BYTES:
                return None
            base = self._size_after(seen, fields, listing) + len(HISTORY_TAIL) + 3
            if units(base + carried + new) <= units(base + new):
                return None     # carrying them costs this write (and the next ones) no extra unit
        return Page(seen.history_len - len(seen.tail) + 1, list(seen.tail), seen.history_len)

    def _size_after(self, seen: Seen, fields: Mapping[str, Any], listing: Mapping[str, str | None]) -> int:
        """The size of the record item after this swap, its carried history left out
        (close enough: it only decides when a page goes out)."""
        sizes = dict(seen.sizes)
        for name, value in fields.items():
            if name in NULL_REMOVED and value is None:
                sizes.pop(name, None)
            else:
                sizes[name] = len(name.encode()) + attr_size(encode(name, value))
        for name, value in listing.items():
            if value is None:
                sizes.pop(name, None)
            else:
                sizes[name] = len(name.encode()) + len(value.encode())
        return sum(sizes.values())

    def _put_page(self, cid: str, page: Page, fields: Mapping[str, Any]) -> None:
        """Write carried entries as the history page keyed by their first and last
        numbers: an unconditional PutItem. An entry's number never changes, so the same
        key always holds the same entries: writing it again (a retry, a crash before the
        swap that drops them) puts them back unchanged, and a handle paging out on a
        stale view (it then loses its swap) writes fewer entries under another key
        instead of over the page a rival wrote."""
        if "expires_at" in fields:
            expires = fields["expires_at"]
            ttl = int(expires) if positive(expires) else 0
        else:
            seen = self._seen.get(cid)
            ttl = seen.ttl if seen is not None else 0
        last = page.first + len(page.texts) - 1
        item = {**self._key(cid, f"{HISTORY_SK}{page.first:012d}-{last:012d}"),
                "entries": entry_attr("[" + ",".join(page.texts) + "]")}
        if ttl > 0:
            item[TTL] = number_attr(ttl)
        try:
            self.client.put_item(TableName=self.table, Item=item)
        except (BotoCoreError, ClientError) as exc:
            raise classify(exc, self.url) from exc


def _first_number(sk: str) -> int:
    """The number of the first entry of a history item: ``h#%012d-%012d`` (a page) or
    ``h#%012d`` (the previous layout, one item per swap); 0 for anything else."""
    first = sk[len(HISTORY_SK):].split("-", 1)[0]
    return int(first) if first.isdigit() else 0


def stale_tail(item: Mapping[str, Any], entries: Sequence[str], page: Page | None) -> bool:
    """Whether what a failed swap assumed of the record's carried history was wrong."""
    if not entries:
        return False
    carried = len(tail_of(item))
    if page is None:
        return carried >= CARRY_MAX_ENTRIES
    return count_of(item, HISTORY_LEN) != page.known or carried != len(page.texts)
