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

History is carried in the record item (``history_len``, ``history_tail``) and paged
out into history page items (``h#...``): see :mod:`sources.dynamodb_history` for the
layout, when a swap pages entries out, and how ``history`` reads them back.

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

Pending index (the sparse ``owed-since`` GSI, and the previous ``pending-by-time``): see
:mod:`sources.dynamodb_pending` for how a record is kept in it and how ``pending()``
sweeps it.

Listing (the sparse ``instances-by-status`` and ``instances-by-machine`` GSIs): see
:mod:`sources.dynamodb_listing` for what a swap writes and how ``list_instances`` reads
them.

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

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fsm.errors import BackendError, RecoverableError
from fsm.ports import Record, Scalar, SwapResult

from .aws import classify, error_code, make_client
from .base import INBOX, INBOX_END, checked_entry, dumps, expect_holds
from .dynamodb_history import (
    CARRY_MAX_BYTES,
    CARRY_MAX_ENTRIES,
    PAGE_MIN_BYTES,
    HistoryPaging,
    stale_tail,
)
from .dynamodb_items import (
    HISTORY_LEN,
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
    entry_attr,
    number_attr,
    owes,
    tail_of,
)
from .dynamodb_listing import LISTED, InstanceListing
from .dynamodb_pending import PendingSweep, positive
from .dynamodb_tables import (
    PENDING,
    TTL,
    checkpoint_key,
    create_tables,
    paginate,
    table_of,
)

# Public names; the paging limits (now in dynamodb_history) and LISTED (dynamodb_listing)
# stay importable from here.
__all__ = ["BATCH_GET_ATTEMPTS", "CARRY_MAX_BYTES", "CARRY_MAX_ENTRIES", "LISTED", "PAGE_MIN_BYTES",
           "REMEMBERED_TAILS", "STALE_GUESS_ATTEMPTS", "DynamoStore"]

REMEMBERED_TAILS = 1024     # records whose carried entries a store keeps in memory
STALE_GUESS_ATTEMPTS = 4
BATCH_GET_ATTEMPTS = 8


class DynamoStore(HistoryPaging, PendingSweep, InstanceListing):
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

    History, the pending index and listing are written in their own modules, as the
    parts this class is made of: :class:`~sources.dynamodb_history.HistoryPaging`,
    :class:`~sources.dynamodb_pending.PendingSweep` and
    :class:`~sources.dynamodb_listing.InstanceListing`.
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

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- reading records -------------------------------------------------------------------

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

    # -- the write of a swap ---------------------------------------------------------------

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
            stale = bool(item) and (stale_tail(item, entries, page) or (settled and INBOX_TAIL in item))
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
        ttl = {TTL: number_attr(int(expires))} if positive(expires) else {}
        position = {**checkpoint_key(self.prefix, cid), "value": {"S": dumps(checkpoint)}, **ttl}
        return {"Put": {"TableName": self.table, "Item": position}}

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
            if name == PENDING and not positive(value):    # see the module docstring
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
            if positive(fields[PENDING]):
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
                if name == PENDING and not positive(value):    # see the module docstring
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

    def _pages(self, operation: str, request: dict[str, Any]) -> Iterable[dict[str, Any]]:
        return paginate(self.client, operation, request, self.url)


def _with(expect: Mapping[str, Scalar] | None, guesses: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The swap's condition plus the guesses it relies on (a creation has none)."""
    return expect if expect is None or not guesses else {**expect, **guesses}


def _inbox_ids(inbox: Any) -> list[str]:
    """The distinct event ids of an inbox, for ``inbox_ids``."""
    if not isinstance(inbox, list):
        return []
    return sorted({e["id"] for e in inbox if isinstance(e, Mapping) and isinstance(e.get("id"), str) and e["id"]})


def _moves_inbox_end(expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any]) -> bool:
    """A swap of an existing record that sets ``inbox_end`` but not ``inbox``."""
    return expect is not None and INBOX_END in fields and INBOX not in fields


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


