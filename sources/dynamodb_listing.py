"""The DynamoDB store's listing: the listing attributes a swap writes, and
``list_instances``, which reads the listing indexes. :class:`InstanceListing` is a part
of :class:`sources.dynamodb.DynamoStore` (see :mod:`sources.dynamodb` for the table's
items and the swap, :mod:`sources.listing` for the rules every store follows).

Listing: a record carries ``list_s`` and ``list_m`` (see
``dynamodb_tables.list_partitions``: the prefix, a shard of ``list_shards``, and its
status; its machine and status) and ``list_at`` (``TIME|ID``, TIME the record's
``updated_at`` as :func:`~sources.memory.time_key` when its status last changed), the
keys of two sparse KEYS_ONLY GSIs, ``instances-by-status`` and ``instances-by-machine``,
sorted by ``list_at``. They are written only by a swap that creates the record or
changes its status (or machine): a listing is therefore ordered by the last change of
status, not by every update, and ``since`` applies to that time. A swap naming the status
the record already has writes none of them; to know, the adapter takes the current
status from the swap's ``expect`` when it names it (``concurrency: optimistic`` commits
do), else from the last reply that carried the record (the acquire's, in the dispatcher's
flow), and makes a value taken from there a condition of the write, so a stale memory
fails the write (which is then sent again with the values its failure returned) instead
of misfiling the record; a record it has seen nothing of is read first. A state filter
is served by the by-machine index, the records read a chunk at a time and kept when in
that state (a read cost, paid by listing only). The previous ``instances-by-state``
index (its key changed at every commit) is no longer written: a record's entry there
goes when its status next changes. ``list_instances`` queries the filter's index per
status and shard, ``limit + 1`` keys deep, merges them and reads the page's records with
BatchGetItem; a record whose ``list_at`` is no longer its entry's is left off.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fsm.ports import Record, Scalar

from .dynamodb_tables import (
    LIST_AT,
    LIST_BY_MACHINE,
    LIST_BY_STATE,
    LIST_BY_STATUS,
    LIST_INDEXES,
    list_partition,
    list_partitions,
    list_sort_key,
    paginate,
)
from .listing import ListQuery, list_query, page_of

LISTED = ("machine", "status")     # the values listing partitions are made of


class InstanceListing:
    """Listing for :class:`sources.dynamodb.DynamoStore` (see the module docstring):
    ``list_instances``, and the listing attributes of a swap (``_listing``)."""

    # provided by DynamoStore
    client: Any
    table: str
    url: str
    prefix: str
    list_shards: int
    _listed: dict[str, dict[str, Any]]

    if TYPE_CHECKING:
        def get(self, cid: str) -> Record | None: ...
        def _items(self, pks: list[str]) -> dict[str, dict[str, Any]]: ...
        def _decode(self, item: Mapping[str, Any] | None) -> Record | None: ...

    # -- reading the indexes ---------------------------------------------------------------

    def list_instances(self, *, machine: str | None = None, status: str | None = None,
                       state: str | None = None, since: float | None = None, limit: int = 50,
                       cursor: str | None = None) -> tuple[list[Record], str | None]:
        """One page, most recent change of status first (``list_at``): a Query of the
        filter's index per status and shard, ``limit + 1`` keys deep, then BatchGetItem
        of the page's records. With ``state``, the by-machine index is read further,
        its records a chunk at a time, until ``limit + 1`` of them are in that state.

        The indexes are eventually consistent and the records are read afresh: one whose
        ``list_at`` is no longer the entry's (its status changed since) or that no longer
        matches is left off the page, which can then come up short."""
        query = list_query(machine=machine, status=status, state=state, since=since, limit=limit, cursor=cursor)
        attribute = LIST_BY_MACHINE if machine is not None else LIST_BY_STATUS
        ranges = [list_partition(self.prefix, shard, *([machine, each] if machine is not None else [each]))
                  for each in query.statuses for shard in range(self.list_shards)]
        if state is not None:
            found = [entry for partition in ranges for entry in self._list_in_state(attribute, partition, query)]
            return page_of(found, query.limit)
        keys = [key for partition in ranges for key in self._list_range(attribute, partition, query)]
        page, after = page_of(((key, cid, (key, cid)) for key, cid in keys), query.limit)
        items = self._items([self.prefix + cid for _, cid in page])
        records = [self._listed_record(items.get(self.prefix + cid), key, cid, query) for key, cid in page]
        return [record for record in records if record is not None], after

    def _listed_record(self, item: Mapping[str, Any] | None, key: str, cid: str, query: ListQuery) -> Record | None:
        """The record of an index entry, if it still sorts there and matches the filters."""
        if item is None or item.get(LIST_AT, {}).get("S") != f"{key}|{cid}":
            return None
        record = self._decode(item)
        if record is None or record.get("status") not in query.statuses:
            return None
        if (query.machine is not None and record.get("machine") != query.machine) or \
                (query.state is not None and record.get("state") != query.state):
            return None
        return record

    def _list_in_state(self, attribute: str, partition: str, query: ListQuery) -> list[tuple[str, str, Record]]:
        """Up to ``limit + 1`` records of one by-machine partition in the query's state,
        newest first: the partition's entries read a chunk at a time, each chunk's
        records read and filtered (the read cost of a state filter, paid by listing)."""
        found: list[tuple[str, str, Record]] = []
        chunk: list[tuple[str, str]] = []
        for key, cid in self._list_entries(attribute, partition, query, None):
            chunk.append((key, cid))
            if len(chunk) < max(query.limit + 1, 25) and len(chunk) < 100:
                continue
            found += self._in_state(chunk, query)
            chunk = []
            if len(found) > query.limit:
                break
        if chunk and len(found) <= query.limit:
            found += self._in_state(chunk, query)
        return found[: query.limit + 1]

    def _in_state(self, chunk: list[tuple[str, str]], query: ListQuery) -> list[tuple[str, str, Record]]:
        items = self._items([self.prefix + cid for _, cid in chunk])
        return [(key, cid, record) for key, cid in chunk
                if (record := self._listed_record(items.get(self.prefix + cid), key, cid, query)) is not None]

    def _list_range(self, attribute: str, partition: str, query: ListQuery) -> list[tuple[str, str]]:
        """``(time key, id)`` of up to ``limit + 1`` entries of one index partition,
        newest first, after the cursor and from ``since``."""
        return list(self._list_entries(attribute, partition, query, query.limit + 1))

    def _list_entries(self, attribute: str, partition: str, query: ListQuery,
                      wanted: int | None) -> Iterator[tuple[str, str]]:
        """The entries of one index partition, newest first, after the cursor and from
        ``since``: up to ``wanted`` (None: all, read a Query page at a time)."""
        high = f"{query.after[0]}|{query.after[1]}" if query.after else None
        low = query.since_key
        values = {":p": {"S": partition}, **({":high": {"S": high}} if high else {}),
                  **({":low": {"S": low}} if low else {})}
        if high and low:        # BETWEEN includes the cursor's own entry: it is dropped below
            if high < low:
                return          # a cursor older than ``since``: nothing lies between them
            condition = "#p = :p AND #at BETWEEN :low AND :high"
        else:
            condition = "#p = :p AND #at < :high" if high else "#p = :p AND #at >= :low" if low else "#p = :p"
        request = {"TableName": self.table, "IndexName": LIST_INDEXES[attribute], "ScanIndexForward": False,
                   "KeyConditionExpression": condition, "Limit": min(1000, query.limit + 2),
                   "ExpressionAttributeNames": {"#p": attribute, **({"#at": LIST_AT} if high or low else {})},
                   "ExpressionAttributeValues": values}
        given = 0
        for item in paginate(self.client, "query", request, self.url,
                             limit=None if wanted is None else wanted + 1):
            key = item[LIST_AT]["S"]
            if key != high:
                yield key[:20], key[21:]
                given += 1
                if wanted is not None and given >= wanted:
                    return

    # -- what a swap writes ----------------------------------------------------------------

    def _listing(self, cid: str, expect: Mapping[str, Scalar] | None,
                 fields: Mapping[str, Any]) -> tuple[dict[str, str | None], dict[str, Any]]:
        """The listing attributes this swap sets (``None``: removes), and the values it
        took from what this store last saw of the record rather than from the swap
        (``guesses``, made conditions of the write: see the module docstring).

        The record moves in the listing indexes only when its status or machine changes
        (and when it is created): ``list_at`` is then the time of that change. A swap
        naming the status it already has writes nothing of the listing."""
        if expect is None:
            return self._list_attributes(cid, fields.get("machine"), fields.get("status"), fields, {}), {}
        named = [name for name in LISTED if name in fields]
        if not named:
            return {}, {}
        seen = self._listed.get(cid, {})
        wanted = LISTED if any(fields[name] != expect.get(name, seen.get(name)) for name in named) else named
        if any(name not in fields and name not in expect and name not in seen for name in wanted) or \
                any(name not in expect and name not in seen for name in named):
            self.get(cid)       # nothing seen of it yet: one read (a commit's acquire has seen it)
            seen = self._listed.get(cid, {})
        current = {name: expect[name] if name in expect else seen.get(name) for name in LISTED}
        guesses = {name: seen.get(name) for name in wanted if name not in expect and
                   (name in named or name not in fields)}
        if all(fields[name] == current[name] for name in named):
            return {}, guesses      # the record stays where it is listed
        return self._list_attributes(cid, fields.get("machine", current["machine"]),
                                     fields.get("status", current["status"]), fields, seen), guesses

    def _list_attributes(self, cid: str, machine: Any, status: Any, fields: Mapping[str, Any],
                         seen: Mapping[str, Any]) -> dict[str, str | None]:
        """Where a record with this machine and status is listed, from now on."""
        shard = zlib.crc32(cid.encode()) % self.list_shards
        attributes: dict[str, str | None] = {**list_partitions(self.prefix, shard, machine, status),
                                             LIST_BY_STATE: None}      # out of the previous by-state index
        listed = isinstance(status, str)
        at = fields.get("updated_at", seen.get("updated_at"))
        attributes[LIST_AT] = list_sort_key(time.time() if at is None else at, cid) if listed else None
        return attributes
