"""``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME``: the instance store (records and history).

Single-table design, so one table (and one IAM grant) serves a deployment:

=====================  ==========================  ==========================================
item                   pk                          sk
=====================  ==========================  ==========================================
instance record        PREFIX + correlation id     ``record`` (with its latest history entries)
history page           PREFIX + correlation id     ``h#%012d-%012d`` % (first, last entry number);
                                                   ``h#%012d`` % first: the previous version's
timer                  PREFIX + ``timer#`` + id    ``timer``  (``sources.dynamodb_timers``)
stream checkpoint      PREFIX + ``ckpt#`` + id     ``checkpoint`` (``sources.dynamodb_checkpoints``)
=====================  ==========================  ==========================================

Record fields are attributes: ``str`` fields as S, ``int``/``float`` fields as N, ``json``
fields (and unknown ones) as JSON text in S, ``None`` as NULL; see ``RECORD_FIELDS``.

``swap`` is one conditional UpdateItem (ALL_NEW on success, ALL_OLD on a failed
condition), history or not: never a transaction, unless ``checkpoint_items`` asks for one
(below).

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

Kinesis checkpoints (``writes_checkpoints``): a commit's ``checkpoint`` field is the
instance's last stream position, in the record, written by the commit's own UpdateItem;
``fsm resume`` reads it from there, so a dispatcher whose checkpoint table is this table
(same prefix) writes nothing of its own. ``checkpoint_items=True`` also puts the position
as the item :class:`~sources.dynamodb_checkpoints.DynamoCheckpoints` reads, in one
TransactWriteItems with the record update (twice the write units, plus the item's), for
when ``fsm resume`` must find the position after the record itself is gone; only swaps
whose ``checkpoint`` names a shard (a message read from Kinesis: the only kind of position
``fsm resume`` can read from) do that. ``write_checkpoints=False``: the dispatcher writes
the checkpoint items itself, as for another table.

What a transition pays: DynamoDB bills an UpdateItem by the larger of the
item before and after it (1 KB units), and each global index whose entry it changes:
one write per index entry put, updated or removed, two when an index key moves, none
when nothing the index projects changes. So the indexes are laid out for commits that
change none of them: all KEYS_ONLY (an entry changes only with its keys), keyed by
values that a running chain of commits does not change. An ordinary transition then
writes no index at all; an instance pays 8 index writes over its life (its pending
entry put and removed, its two listing entries put, then moved once when it finishes).
``fsm cost`` counts by those rules (:mod:`fsm.app.cost_meter`).

Pending index: while a record's ``pending`` is > 0 it also has ``owed_shard`` (PREFIX +
``pending#`` + shard) and ``owed_at``, the keys of the sparse GSI ``owed-since``
(KEYS_ONLY). Both are set with ``if_not_exists``: ``owed_at`` is the time the record
started owing, and the commits that follow (each moving ``pending`` to its own time)
leave the entry where it is; a swap that sets ``pending`` to 0 (or null) removes both,
which takes the record out. ``owed_at <= pending`` always holds, so the entries before a
time are a superset of the records overdue then: ``pending()`` reads the candidates'
records (BatchGetItem, only at sweep time), returns those really overdue, and moves a
candidate that is not (a long chain, still running) up to its ``pending`` (one
conditional UpdateItem per such instance per ``resend_after``, not per transition). The
previous index, ``pending-by-time`` (``pending_shard``, ``pending``; projection ALL, so
that every running commit moved the whole item in it: two writes of the record's size),
is no longer written: every swap that sets ``pending`` removes ``pending_shard``, and
``pending()`` still reads that index on a table that has it, for records an earlier
version left there.

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

Packed fields: ``outbox``, ``consumed`` and ``checkpoint`` (``PACKED``), which the
dispatcher writes at every commit in shapes it knows, are stored as B, raw deflate with a
preset dictionary behind a version byte (``PACK_DICTIONARIES``), when that is smaller
than their JSON text: an outbox of one step message goes from ~310 bytes to ~90, which
with the rest keeps a running record with a 1 KB context and its carried history within
two write units. The context and everything a condition or a reader of the table looks
at stay as they were.

The adapter remembers, per record (the 1,024 last seen), its ``history_len``, carried
entries, attribute sizes and ``ttl`` from the last reply that carried the item: what the
page-out decision needs, without a read.

Inbox (``append``): one conditional UpdateItem, never a read first, so the entry's
position is not known when the request is sent. ``inbox`` is therefore a native List (L)
whose elements are each entry's JSON text (S): ``append`` adds its entry's text without
``pos`` with ``list_append``, raises ``inbox_end`` with ``if_not_exists(...) + 1`` and
adds 1 to ``inbox_tail`` (``ADD``), the number of entries at the end of the list written
that way; a reader numbers them back from ``inbox_end`` (the last one is ``inbox_end``). A swap
that rewrites ``inbox`` writes every entry as given (with its ``pos``) and removes
``inbox_tail``; one that moves ``inbox_end`` without rewriting ``inbox`` first writes the
tail's positions into its texts (one read and one write: no flow of the dispatcher does
that), so positions never change once given. Duplicates are refused by the condition:
``event_ids`` is JSON text, and an event id (no quotes or backslashes) occurs in it as
``"ID"`` only as a whole item, so ``NOT contains(event_ids, '"ID"')`` is exact; the ids
waiting in the inbox are a String Set, ``inbox_ids``, which ``append`` adds to (``ADD``)
and a swap rewriting the inbox sets (or removes: a set cannot be empty). ``pending`` 0
("nothing owed") is stored as no ``pending`` and ``owes_nothing`` true (null: neither), so
``append`` sets ``pending`` with ``if_not_exists`` and removes ``owes_nothing``: it needs
no knowledge of the record, however busy, and puts it in the pending index as a swap
setting ``pending`` does. A record still holding the stored 0 of an older version takes
one more UpdateItem, once. ``owes_nothing``, ``inbox_ids`` and
``inbox_tail`` never show in a record. ``null`` in ``inbox`` or ``inbox_end`` is removed,
as for ``pending``: ``list_append`` and ``+`` cannot take it.

Expiry: the table's TTL attribute is ``ttl``, copied from ``expires_at`` when it is > 0 and
removed when it is 0 (DynamoDB would treat 0 as "long expired"). Carried entries expire
with the record; a history page gets the ``ttl`` of the swap that pages it out (its
``expires_at``, else the record's ``ttl``).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fsm.errors import BackendError, RecoverableError
from fsm.ports import Record, Scalar, SwapResult

from .aws import classify, error_code, make_client
from .base import INBOX, INBOX_END, checked_entry, dumps, expect_holds, is_duplicate
from .dynamodb_items import (
    HISTORY_LEN,
    HISTORY_SK,
    HISTORY_TAIL,
    INBOX_IDS,
    INBOX_TAIL,
    NULL_REMOVED,
    OWES_NOTHING,
    RECORD_SK,
    RESERVED,
    Expression,
    Page,
    Seen,
    attr_size,
    count_of,
    decode,
    decode_inbox,
    decode_record,
    encode,
    number_attr,
    owes,
    entry_attr,
    page_entries,
    tail_of,
    texts_size,
    units,
)
from .dynamodb_tables import (
    LIST_AT,
    LIST_BY_MACHINE,
    LIST_BY_STATE,
    LIST_BY_STATUS,
    LIST_INDEXES,
    OWED_AT,
    OWED_INDEX,
    OWED_SHARD,
    PENDING,
    PENDING_INDEX,
    PENDING_SHARD,
    TTL,
    checkpoint_key,
    create_tables,
    list_partition,
    list_partitions,
    list_sort_key,
    paginate,
    table_of,
)
from .listing import ListQuery, list_query, page_of

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
REMEMBERED_TAILS = 1024     # records whose carried entries a store keeps in memory
LISTED = ("machine", "status")     # the values listing partitions are made of
STALE_GUESS_ATTEMPTS = 4
BATCH_GET_ATTEMPTS = 8



class DynamoStore:
    """An :class:`fsm.ports.InstanceStore` on one DynamoDB table (see the module docstring).

    ``write_checkpoints`` (default on): this store keeps the instances' Kinesis positions
    itself, in the record (its ``checkpoint``, written by the commit that consumed the
    message), so a dispatcher whose checkpoint table is this table needs no write of its
    own; off, the dispatcher puts them as it does into another table.
    ``checkpoint_items`` (default off): commits also put each position as the checkpoint
    item :class:`~sources.dynamodb_checkpoints.DynamoCheckpoints` reads, in one
    TransactWriteItems with the record (twice the write units), so that ``fsm resume``
    finds it after the record itself is gone. ``pending_shards`` (default 1) spreads the
    pending index over several GSI partitions, for write rates one index partition cannot
    take; ``pending()`` then queries each. ``list_shards`` (default 1) does the same for
    the listing indexes, whose busiest partition (every instance with one status) takes
    a write per instance that enters or leaves that status.
    """

    # Commits carry the instance's checkpoint (see the module docstring): a dispatcher whose
    # checkpoint table is this table (and prefix) needs no PutItem of its own.
    writes_checkpoints: bool = True

    def __init__(self, url: str, *, client: Any = None, endpoint_url: str | None = None,
                 aws: Mapping[str, Any] | None = None, prefix: str = "",
                 page_size: int | None = None, pending_shards: int = 1, write_checkpoints: bool = True,
                 list_shards: int = 1, checkpoint_items: bool = False):
        self.url = url
        self.table, region = table_of(url)
        self.prefix = prefix
        self.page_size = page_size
        self.pending_shards = max(1, pending_shards)
        self.list_shards = max(1, list_shards)
        self.writes_checkpoints = write_checkpoints
        self.checkpoint_items = checkpoint_items
        self._owns_client = client is None
        self.client = make_client("dynamodb", region, endpoint_url, aws, client)
        self._seen: dict[str, Seen] = {}   # the last record item seen per correlation id, see module doc
        self._listed: dict[str, dict[str, Any]] = {}   # its machine, status and updated_at, likewise
        self._legacy_pending = True     # the table may still have the previous pending index (see pending())
        self._lock = threading.Lock()

    def create(self) -> None:
        """Create the table (with the timer index and TTL) unless it exists."""
        create_tables(self.url, client=self.client)

    # -- the port --------------------------------------------------------------------------

    def swap(self, cid: str, expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any],
             history: Sequence[Mapping[str, Any]] = ()) -> SwapResult:
        bad = RESERVED.intersection(fields)
        if bad:
            raise BackendError(f"{self.url}: record fields {sorted(bad)} are reserved by the DynamoDB store")
        entries = [dumps(entry) for entry in history]
        for _ in range(STALE_GUESS_ATTEMPTS):
            if _moves_inbox_end(expect, fields):
                self._settle_inbox(cid)
            listing, guesses = self._listing(cid, expect, fields)
            page = self._page_out(cid, fields, entries, listing) if entries and expect is not None else None
            if page is not None:
                self._put_page(cid, page, fields)
            result = self._write(cid, expect, fields, entries, page, listing, guesses)
            if result is not None:
                return result
        raise RecoverableError(f"{self.url}: record {cid!r} kept changing under this store's guesses of "
                               f"its history or listing values during {STALE_GUESS_ATTEMPTS} attempts")

    def append(self, cid: str, entry: Mapping[str, Any]) -> SwapResult:
        """See :meth:`fsm.ports.InstanceStore.append`: one conditional UpdateItem (see the
        module docstring), two on a record that still stores "nothing owed" as 0."""
        entry = checked_entry(entry)
        try:
            reply = self.client.update_item(**self._append_request(cid, entry))
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise classify(exc, self.url) from exc
            item = exc.response.get("Item")
            self._remember(cid, item)
            return SwapResult(False, decode_record(item))    # no record, or the event is there already
        except BotoCoreError as exc:
            raise classify(exc, self.url) from exc
        item = reply["Attributes"]
        if not owes(item):      # an older version's 0: the append owes a message all the same
            item = self._owe_since(cid, entry["at"]) or item
        self._remember(cid, item)
        return SwapResult(True, decode_record(item))

    def _owe_since(self, cid: str, at: float) -> dict[str, Any] | None:
        """Set a record's stored 0 ``pending`` to ``at`` (a no-op once something else did)."""
        ex = Expression()
        pending, zero = ex.name(PENDING), ex.value(number_attr(0))
        sets = [f"{pending} = {ex.value(encode(PENDING, at))}"]
        removes: list[str] = []
        self._index_pending(ex, cid, at, sets, removes)
        try:
            return self.client.update_item(
                TableName=self.table, Key=self._key(cid, RECORD_SK),
                UpdateExpression=f"SET {', '.join(sets)} REMOVE {', '.join(removes)}",
                ConditionExpression=f"{pending} = {zero}", ExpressionAttributeNames=ex.names,
                ExpressionAttributeValues=ex.values, ReturnValues="ALL_NEW")["Attributes"]
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise classify(exc, self.url) from exc
            return None
        except BotoCoreError as exc:
            raise classify(exc, self.url) from exc

    def get(self, cid: str) -> Record | None:
        try:
            item = self.client.get_item(TableName=self.table, Key=self._key(cid, RECORD_SK),
                                        ConsistentRead=True).get("Item")
        except (BotoCoreError, ClientError) as exc:
            raise classify(exc, self.url) from exc
        self._remember(cid, item)
        return decode_record(item)

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

    def pending(self, before: float, limit: int = 100) -> list[Record]:
        """Records whose ``0 < pending < before``, oldest first.

        The ``owed-since`` index holds keys only, sorted by the time each record started
        owing (``owed_at``, never later than its ``pending``): its entries before
        ``before`` are candidates, whose records are read (BatchGetItem, consistent).
        A candidate that is not overdue (a chain still running, whose ``pending`` moved
        on) gets ``owed_at`` raised to its ``pending`` (one conditional UpdateItem, so
        the next sweeps skip it until it is really overdue), one that owes nothing is
        taken out. Candidates are read in ``owed_at`` order until no later one can be
        older than the ``limit`` oldest found. A table made by an earlier version is
        also read through its ``pending-by-time`` index while that has entries."""
        if limit <= 0:
            return []
        found: dict[str, tuple[float, Record]] = {}
        for shard in range(self.pending_shards):
            self._owed_candidates(self._pending_shard(shard), before, limit, found)
        if self._legacy_pending:
            self._legacy_candidates(before, limit, found)
        ordered = sorted(found.items(), key=lambda entry: (entry[1][0], entry[0]))
        return [record for _, (_, record) in ordered[:limit]]

    def _owed_candidates(self, shard: str, before: float, limit: int, found: dict[str, tuple[float, Record]]) -> None:
        query = {
            "TableName": self.table, "IndexName": OWED_INDEX, "Limit": min(100, limit + 1),
            "KeyConditionExpression": "#shard = :shard AND #at < :before",
            "ExpressionAttributeNames": {"#shard": OWED_SHARD, "#at": OWED_AT},
            "ExpressionAttributeValues": {":shard": {"S": shard}, ":before": {"N": repr(float(before))}},
        }
        chunk: list[dict[str, Any]] = []
        try:
            for entry in paginate(self.client, "query", query, self.url):
                chunk.append(entry)
                if len(chunk) == 100:
                    if self._owed_chunk(chunk, before, limit, found):
                        return
                    chunk = []
            if chunk:
                self._owed_chunk(chunk, before, limit, found)
        except BackendError as exc:
            if not _missing_index(exc):
                raise
            raise BackendError(f"{self.url}: the table has no {OWED_INDEX!r} index (made by an earlier version): "
                               "run `fsm create-resources` to add it") from exc

    def _owed_chunk(self, chunk: list[dict[str, Any]], before: float, limit: int,
                    found: dict[str, tuple[float, Record]]) -> bool:
        """Check up to 100 candidates against their records; True when no later
        candidate can be among the ``limit`` oldest."""
        items = self._items([entry["pk"]["S"] for entry in chunk])
        for entry in chunk:
            pk, owed_at = entry["pk"]["S"], entry[OWED_AT]
            item = items.get(pk)
            if item is None:
                continue    # gone (its index entry with it, a moment later)
            pending = float(Decimal(item[PENDING]["N"])) if "N" in item.get(PENDING, {}) else 0.0
            if 0 < pending < before:
                record = self._decode(item)
                if record is not None:
                    found[pk] = (pending, record)
            elif item.get(OWED_AT) == owed_at:
                self._reindex_owed(pk, owed_at, item.get(PENDING), pending > 0)
        if len(found) < limit:
            return False
        cutoff = sorted(pending for pending, _ in found.values())[limit - 1]
        return float(Decimal(chunk[-1][OWED_AT]["N"])) >= cutoff

    def _reindex_owed(self, pk: str, owed_at: Mapping[str, Any], pending: Mapping[str, Any] | None,
                      owes: bool) -> None:
        """Move a candidate's ``owed_at`` up to its ``pending`` (it owes, not yet
        overdue), or take it out of the index (it owes nothing); on condition that
        neither changed since it was read."""
        names = {"#at": OWED_AT, "#pending": PENDING, "#shard": OWED_SHARD}
        values: dict[str, Any] = {":at": owed_at}
        if owes and pending is not None:
            update, values[":pending"] = "SET #at = :pending", pending
            condition = "#at = :at AND #pending = :pending"
            del names["#shard"]
        else:
            update, values[":zero"] = "REMOVE #shard, #at", number_attr(0)
            condition = "#at = :at AND (attribute_not_exists(#pending) OR #pending = :zero)"
        try:
            self.client.update_item(TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": RECORD_SK}},
                                    UpdateExpression=update, ConditionExpression=condition,
                                    ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise classify(exc, self.url) from exc
        except BotoCoreError as exc:
            raise classify(exc, self.url) from exc

    def _legacy_candidates(self, before: float, limit: int, found: dict[str, tuple[float, Record]]) -> None:
        """Records written by an earlier version into ``pending-by-time`` (projection
        ALL, sorted by ``pending``) and not committed since; a table without that index
        is not asked again."""
        for shard in range(self.pending_shards):
            query = {
                "TableName": self.table, "IndexName": PENDING_INDEX, "Limit": limit,
                "KeyConditionExpression": "#shard = :shard AND #pending < :before",
                "ExpressionAttributeNames": {"#shard": PENDING_SHARD, "#pending": PENDING},
                "ExpressionAttributeValues": {":shard": {"S": self._pending_shard(shard)},
                                              ":before": {"N": repr(float(before))}},
            }
            try:
                items = list(paginate(self.client, "query", query, self.url, limit=limit))
            except BackendError as exc:
                if _missing_index(exc):
                    self._legacy_pending = False
                    return
                raise
            for item in items:
                record = self._decode(item)
                if record is not None:
                    found.setdefault(item["pk"]["S"], (float(Decimal(item[PENDING]["N"])), record))

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

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- listing -------------------------------------------------------------------------

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

    def _items(self, pks: list[str]) -> dict[str, dict[str, Any]]:
        """Record items by ``pk``, read consistently with BatchGetItem (100 keys a call)."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(pks), 100):
            keys = [{"pk": {"S": pk}, "sk": {"S": RECORD_SK}} for pk in pks[start:start + 100]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for attempt in range(BATCH_GET_ATTEMPTS):
                try:
                    reply = self.client.batch_get_item(RequestItems=request)
                except (BotoCoreError, ClientError) as exc:
                    raise classify(exc, self.url) from exc
                for item in reply.get("Responses", {}).get(self.table, []):
                    found[item["pk"]["S"]] = item
                request = reply.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2 ** attempt))   # throttled: back off, then ask for the rest
            else:
                raise RecoverableError(f"{self.url}: BatchGetItem kept leaving keys unprocessed")
        return found

    # -- the write of a swap, and paging history out ---------------------------------------

    def _write(self, cid: str, expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any],
               entries: Sequence[str], page: Page | None, listing: Mapping[str, str | None],
               guesses: Mapping[str, Any]) -> SwapResult | None:
        """One conditional UpdateItem of the record (history entries included); with a
        checkpoint item to write (``checkpoint_items``), a TransactWriteItems of both.
        ``None`` when only a guess made it fail."""
        ex = Expression()
        settled = _moves_inbox_end(expect, fields)
        update = self._update_expression(ex, cid, fields, entries, page, listing)
        condition = self._condition(ex, _with(expect, guesses), settled=settled, entries=entries, page=page)
        request = {"TableName": self.table, "Key": self._key(cid, RECORD_SK), "UpdateExpression": update,
                   "ConditionExpression": condition, "ExpressionAttributeNames": ex.names,
                   "ExpressionAttributeValues": ex.values, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        checkpoint = self._checkpoint(fields)
        try:
            if checkpoint is None:
                reply = self.client.update_item(**request, ReturnValues="ALL_NEW")
            else:
                self.client.transact_write_items(TransactItems=[{"Update": request},
                                                                self._checkpoint_put(cid, checkpoint, fields)])
                reply = None
        except ClientError as exc:
            if checkpoint is None:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise classify(exc, self.url) from exc
                item = exc.response.get("Item")
            else:
                reason = _record_condition_failure(exc)
                if reason is None:
                    raise _transaction_error(exc, self.url) from exc
                item = reason.get("Item")
            self._remember(cid, item)
            record = decode_record(item)
            stale = bool(item) and (_stale_tail(item, entries, page) or (settled and INBOX_TAIL in item))
            return None if _guessed_wrong(record, expect, guesses, stale) else SwapResult(False, record)
        except BotoCoreError as exc:
            raise classify(exc, self.url) from exc
        if reply is not None:
            self._remember(cid, reply["Attributes"])
            return SwapResult(True, decode_record(reply["Attributes"]))
        with self._lock:    # a transaction returns nothing: keep what the write itself tells
            self._seen.pop(cid, None)
            if expect is None or cid in self._listed:
                self._listed[cid] = {**self._listed.get(cid, {}), **{n: fields.get(n) for n in (*LISTED, "updated_at")
                                                                     if n in fields or expect is None}}
        return SwapResult(True, None)

    def _checkpoint_put(self, cid: str, checkpoint: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
        """The Put of the checkpoint item DynamoCheckpoints reads. It outlives a deleted
        record; with a retention it expires with the record of this commit."""
        expires = fields.get("expires_at")
        ttl = {TTL: number_attr(int(expires))} if _positive(expires) else {}
        position = {**checkpoint_key(self.prefix, cid), "value": {"S": dumps(checkpoint)}, **ttl}
        return {"Put": {"TableName": self.table, "Item": position}}

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
            ttl = int(expires) if _positive(expires) else 0
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

    # -- expressions -----------------------------------------------------------------------

    def _update_expression(self, ex: Expression, cid: str, fields: Mapping[str, Any], entries: Sequence[str],
                           page: Page | None, listing: Mapping[str, str | None]) -> str:
        # history_len is always set, so the expression is never empty and every record has it.
        length = ex.name(HISTORY_LEN)
        sets = [f"{length} = if_not_exists({length}, {ex.value(number_attr(0))}) + {ex.value(number_attr(len(entries)))}"]
        if entries:     # carried in the record: appended, or in place of the entries paged out
            tail = ex.name(HISTORY_TAIL)
            added = ex.value({"L": [entry_attr(text) for text in entries]})
            sets.append(f"{tail} = {added}" if page is not None
                        else f"{tail} = list_append(if_not_exists({tail}, {ex.value({'L': []})}), {added})")
        removes: list[str] = []
        for name, value in fields.items():
            if name == PENDING and not _positive(value):    # see the module docstring
                removes.append(ex.name(name))
                if value is None:
                    removes.append(ex.name(OWES_NOTHING))
                else:
                    sets.append(f"{ex.name(OWES_NOTHING)} = {ex.value({'BOOL': True})}")
            elif name in NULL_REMOVED and value is None:
                removes.append(ex.name(name))    # see NULL_REMOVED
            else:
                sets.append(f"{ex.name(name)} = {ex.value(encode(name, value))}")
        if PENDING in fields:
            if _positive(fields[PENDING]):
                removes.append(ex.name(OWES_NOTHING))
            self._index_pending(ex, cid, fields[PENDING], sets, removes)
        if INBOX in fields:     # rewritten whole: every entry carries its pos, its ids are these
            ids = _inbox_ids(fields[INBOX])
            if ids:
                sets.append(f"{ex.name(INBOX_IDS)} = {ex.value({'SS': ids})}")
            else:
                removes.append(ex.name(INBOX_IDS))
            removes.append(ex.name(INBOX_TAIL))
        for name, value in listing.items():     # None: out of that index
            if value is None:
                removes.append(ex.name(name))
            else:
                sets.append(f"{ex.name(name)} = {ex.value({'S': value})}")
        if "expires_at" in fields:
            expires = fields["expires_at"]
            if isinstance(expires, (int, float)) and expires > 0:
                sets.append(f"{ex.name(TTL)} = {ex.value(number_attr(int(expires)))}")
            else:
                removes.append(ex.name(TTL))
        return "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")

    @staticmethod
    def _condition(ex: Expression, expect: Mapping[str, Scalar] | None, settled: bool = False,
                   entries: Sequence[str] = (), page: Page | None = None) -> str:
        """The swap's condition; ``settled``: the inbox must have no entries counted back
        from ``inbox_end`` (a swap moving it alone, see the module docstring). A swap
        appending history without a page-out may do so only while the record carries
        fewer than ``CARRY_MAX_ENTRIES``; one paging out, only if the record still carries
        exactly the entries it paged out."""
        pk = ex.name("pk")
        if expect is None:
            parts = [f"attribute_not_exists({pk})"]
        else:
            parts = [f"attribute_exists({pk})"]
            for name, value in expect.items():
                field = ex.name(name)
                if name == PENDING and not _positive(value):    # see the module docstring
                    nothing = ex.name(OWES_NOTHING)
                    parts.append(f"attribute_not_exists({field}) AND attribute_not_exists({nothing})" if value is None
                                 else f"((attribute_not_exists({field}) AND attribute_exists({nothing})) OR "
                                      f"{field} = {ex.value(encode(name, value))})")
                elif value is None:   # as in base.matches: a missing field equals None
                    parts.append(f"(attribute_not_exists({field}) OR attribute_type({field}, "
                                 f"{ex.value({'S': 'NULL'})}))")
                elif name == INBOX_END and value == 0 and not isinstance(value, bool):    # absent reads as 0
                    parts.append(f"(attribute_not_exists({field}) OR {field} = {ex.value(encode(name, value))})")
                else:
                    parts.append(f"{field} = {ex.value(encode(name, value))}")
        if settled:
            parts.append(f"attribute_not_exists({ex.name(INBOX_TAIL)})")
        if entries:
            tail = ex.name(HISTORY_TAIL)
            if page is None:
                parts.append(f"(attribute_not_exists({tail}) OR size({tail}) < {ex.value(number_attr(CARRY_MAX_ENTRIES))})")
            else:
                parts.append(f"{ex.name(HISTORY_LEN)} = {ex.value(number_attr(page.known))}")
                parts.append(f"size({tail}) = {ex.value(number_attr(len(page.texts)))}")
        return " AND ".join(parts)

    # -- the inbox -------------------------------------------------------------------------

    def _append_request(self, cid: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        """The UpdateItem of one append (see the module docstring): it owes a message
        since ``entry["at"]`` unless it owed one already."""
        ex = Expression()
        inbox, end, pending = ex.name(INBOX), ex.name(INBOX_END), ex.name(PENDING)
        zero, one = ex.value(number_attr(0)), ex.value(number_attr(1))
        text = dumps({name: value for name, value in entry.items() if name != "pos"})
        added = ex.value({"L": [{"S": text}]})
        sets = [f"{inbox} = list_append(if_not_exists({inbox}, {ex.value({'L': []})}), {added})",
                f"{end} = if_not_exists({end}, {zero}) + {one}",
                f"{pending} = if_not_exists({pending}, {ex.value(encode(PENDING, entry['at']))})"]
        removes = [ex.name(OWES_NOTHING)]
        self._index_pending(ex, cid, entry["at"], sets, removes)
        quoted = '"' + entry["id"] + '"'
        conditions = [f"attribute_exists({ex.name('pk')})",
                      f"NOT contains({ex.name('event_ids')}, {ex.value({'S': quoted})})",
                      f"NOT contains({ex.name(INBOX_IDS)}, {ex.value({'S': entry['id']})})"]
        update = (f"SET {', '.join(sets)} ADD {ex.name(INBOX_IDS)} {ex.value({'SS': [entry['id']]})}, "
                  f"{ex.name(INBOX_TAIL)} {one} REMOVE {', '.join(removes)}")
        return {"TableName": self.table, "Key": self._key(cid, RECORD_SK), "UpdateExpression": update,
                "ConditionExpression": " AND ".join(conditions), "ExpressionAttributeNames": ex.names,
                "ExpressionAttributeValues": ex.values, "ReturnValues": "ALL_NEW",
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}

    def _settle_inbox(self, cid: str) -> None:
        """Before a swap that moves ``inbox_end`` without rewriting ``inbox``: write the
        positions of the entries counted back from ``inbox_end`` into their texts, so
        that moving it renumbers nothing. Conditional on both counters, which every
        append and every rewrite of the inbox changes; if one came in between, the
        swap's own condition (no such entries) fails and the swap settles again."""
        try:
            item = self.client.get_item(TableName=self.table, Key=self._key(cid, RECORD_SK),
                                        ConsistentRead=True).get("Item")
        except (BotoCoreError, ClientError) as exc:
            raise classify(exc, self.url) from exc
        if not item or not {INBOX_TAIL, INBOX, INBOX_END} <= item.keys():
            return      # nothing counted back (a tail always comes with both, see append)
        ex = Expression()
        tail, end = ex.name(INBOX_TAIL), ex.name(INBOX_END)
        try:
            self.client.update_item(
                TableName=self.table, Key=self._key(cid, RECORD_SK),
                UpdateExpression=f"SET {ex.name(INBOX)} = {ex.value(encode(INBOX, decode_inbox(item)))} REMOVE {tail}",
                ConditionExpression=f"{tail} = {ex.value(item[INBOX_TAIL])} AND {end} = {ex.value(item[INBOX_END])}",
                ExpressionAttributeNames=ex.names, ExpressionAttributeValues=ex.values)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise classify(exc, self.url) from exc
        except BotoCoreError as exc:
            raise classify(exc, self.url) from exc

    # -- helpers ---------------------------------------------------------------------------

    def _index_pending(self, ex: Expression, cid: str, pending: Any, sets: list[str], removes: list[str]) -> None:
        """Keep the record in the sparse ``owed-since`` index exactly while ``pending`` >
        0, under the time it started owing: its keys are set only if absent, so the
        commits of a running chain leave its entry alone (see the module docstring). Out
        of the previous ``pending-by-time`` index (a no-op once it is out)."""
        shard, at = ex.name(OWED_SHARD), ex.name(OWED_AT)
        if _positive(pending):
            sets.append(f"{shard} = if_not_exists({shard}, {ex.value({'S': self._pending_shard_of(cid)})})")
            sets.append(f"{at} = if_not_exists({at}, {ex.value(encode(PENDING, pending))})")
        else:
            removes += [shard, at]
        removes.append(ex.name(PENDING_SHARD))

    def _decode(self, item: Mapping[str, Any] | None) -> Record | None:
        return decode_record(item)

    def _key(self, cid: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": self.prefix + cid}, "sk": {"S": sk}}

    def _checkpoint(self, fields: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The checkpoint this swap must also write as its own item, if any: a position
        in a sharded stream (DynamoDB stream records carry a sequence but no shard, and
        nothing can resume from them)."""
        checkpoint = fields.get("checkpoint")
        if self.writes_checkpoints and self.checkpoint_items and isinstance(checkpoint, Mapping) \
                and checkpoint.get("shard"):
            return checkpoint
        return None

    def _pending_shard(self, shard: int) -> str:
        """The index partition: the prefix keeps stores sharing a table apart."""
        return f"{self.prefix}pending#{shard}"

    def _pending_shard_of(self, cid: str) -> str:
        return self._pending_shard(zlib.crc32(cid.encode()) % self.pending_shards)

    def _remember(self, cid: str, item: Mapping[str, Any] | None) -> None:
        if not item:
            return
        with self._lock:
            if len(self._listed) > 10_000:
                self._listed.clear()    # a cache: a miss costs one extra round trip
            self._seen.pop(cid, None)   # least recently seen first out: each holds a few KB
            if HISTORY_LEN in item:
                self._seen[cid] = Seen(count_of(item, HISTORY_LEN), tail_of(item),
                                        {name: len(name.encode()) + attr_size(value) for name, value in item.items()
                                         if name != HISTORY_TAIL}, count_of(item, TTL))
                if len(self._seen) > REMEMBERED_TAILS:
                    del self._seen[next(iter(self._seen))]
            self._listed[cid] = {name: decode(name, item[name]) if name in item else None
                                 for name in (*LISTED, "updated_at")}

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

    def _pages(self, operation: str, request: dict[str, Any]) -> Iterable[dict[str, Any]]:
        return paginate(self.client, operation, request, self.url)


def _with(expect: Mapping[str, Scalar] | None, guesses: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The swap's condition plus the guesses it relies on (a creation has none)."""
    return expect if expect is None or not guesses else {**expect, **guesses}


def _missing_index(exc: BaseException) -> bool:
    """Whether a query failed because the table has no such index."""
    cause = exc.__cause__
    return isinstance(cause, ClientError) and error_code(cause) in ("ValidationException", "ResourceNotFoundException") \
        and "index" in str(cause).lower()


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _inbox_ids(inbox: Any) -> list[str]:
    """The distinct event ids of an inbox, for ``inbox_ids``."""
    if not isinstance(inbox, list):
        return []
    return sorted({e["id"] for e in inbox if isinstance(e, Mapping) and isinstance(e.get("id"), str) and e["id"]})


def _moves_inbox_end(expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any]) -> bool:
    """A swap of an existing record that sets ``inbox_end`` but not ``inbox``."""
    return expect is not None and INBOX_END in fields and INBOX not in fields


def _first_number(sk: str) -> int:
    """The number of the first entry of a history item: ``h#%012d-%012d`` (a page) or
    ``h#%012d`` (the previous layout, one item per swap); 0 for anything else."""
    first = sk[len(HISTORY_SK):].split("-", 1)[0]
    return int(first) if first.isdigit() else 0


def _stale_tail(item: Mapping[str, Any], entries: Sequence[str], page: Page | None) -> bool:
    """Whether what a failed swap assumed of the record's carried history was wrong."""
    if not entries:
        return False
    carried = len(tail_of(item))
    if page is None:
        return carried >= CARRY_MAX_ENTRIES
    return count_of(item, HISTORY_LEN) != page.known or carried != len(page.texts)


def _guessed_wrong(record: Record | None, expect: Mapping[str, Scalar] | None, guesses: Mapping[str, Any],
                   stale_length: bool = False) -> bool:
    """Whether a failed write failed only on this store's guesses (the caller's own
    condition holds on the record it was shown): then it is worth sending again.
    ``stale_length``: something else this store assumed was found wrong in the reply."""
    if record is None or expect is None or not expect_holds(record, expect):
        return False
    return stale_length or any(record.get(name) != value for name, value in guesses.items())


def _record_condition_failure(exc: ClientError) -> dict[str, Any] | None:
    """The cancellation reason of the record's Update when its condition failed, else None."""
    if error_code(exc) != "TransactionCanceledException":
        return None
    reasons = exc.response.get("CancellationReasons") or []
    if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
        return reasons[0]
    return None


def _transaction_error(exc: ClientError, url: str) -> BackendError:
    """A cancelled transaction is recoverable when it was cancelled by a conflict or
    throttling, and a plain ``BackendError`` when a request was invalid."""
    if error_code(exc) != "TransactionCanceledException":
        return classify(exc, url)
    codes = sorted({str(r.get("Code")) for r in exc.response.get("CancellationReasons") or []} - {"None"})
    permanent = {"ValidationError", "ItemCollectionSizeLimitExceeded", "ConditionalCheckFailed"}
    kind = BackendError if permanent.intersection(codes) else RecoverableError
    return kind(f"{url}: transaction cancelled ({', '.join(codes) or 'no reason given'}): {exc}")


