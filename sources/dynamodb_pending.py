"""The DynamoDB store's pending index: how a record is kept in it, and the sweep
(``pending()``) that reads it. :class:`PendingSweep` is a part of
:class:`sources.dynamodb.DynamoStore` (see :mod:`sources.dynamodb` for the table's
items and the swap; the indexes are made by :mod:`sources.dynamodb_tables`).

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
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from fsm.errors import BackendError
from fsm.ports import Record

from .aws import classify, error_code
from .dynamodb_items import RECORD_SK, Expression, encode, number_attr
from .dynamodb_tables import (
    OWED_AT,
    OWED_INDEX,
    OWED_SHARD,
    PENDING,
    PENDING_INDEX,
    PENDING_SHARD,
    paginate,
)


class PendingSweep:
    """The pending index of :class:`sources.dynamodb.DynamoStore` (see the module
    docstring): ``pending()``, and the index keys a write sets or removes
    (``_index_pending``)."""

    # provided by DynamoStore
    client: Any
    table: str
    url: str
    prefix: str
    pending_shards: int
    _legacy_pending: bool

    if TYPE_CHECKING:
        def _items(self, pks: list[str]) -> dict[str, dict[str, Any]]: ...
        def _decode(self, item: Mapping[str, Any] | None) -> Record | None: ...

    # -- the sweep -------------------------------------------------------------------------

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

    # -- keeping a record in the index -----------------------------------------------------

    def _index_pending(self, ex: Expression, cid: str, pending: Any, sets: list[str], removes: list[str]) -> None:
        """Keep the record in the sparse ``owed-since`` index exactly while ``pending`` >
        0, under the time it started owing: its keys are set only if absent, so the
        commits of a running chain leave its entry alone (see the module docstring). Out
        of the previous ``pending-by-time`` index (a no-op once it is out)."""
        shard, at = ex.name(OWED_SHARD), ex.name(OWED_AT)
        if positive(pending):
            sets.append(f"{shard} = if_not_exists({shard}, {ex.value({'S': self._pending_shard_of(cid)})})")
            sets.append(f"{at} = if_not_exists({at}, {ex.value(encode(PENDING, pending))})")
        else:
            removes += [shard, at]
        removes.append(ex.name(PENDING_SHARD))

    def _pending_shard(self, shard: int) -> str:
        """The index partition: the prefix keeps stores sharing a table apart."""
        return f"{self.prefix}pending#{shard}"

    def _pending_shard_of(self, cid: str) -> str:
        return self._pending_shard(zlib.crc32(cid.encode()) % self.pending_shards)


def _missing_index(exc: BaseException) -> bool:
    """Whether a query failed because the table has no such index."""
    cause = exc.__cause__
    return isinstance(cause, ClientError) and error_code(cause) in ("ValidationException", "ResourceNotFoundException") \
        and "index" in str(cause).lower()


def positive(value: Any) -> bool:
    """A number > 0, not a bool: a ``pending`` that owes, an ``expires_at`` that expires."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
