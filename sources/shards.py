"""What Kinesis and DynamoDB stream readers share: one iterator per shard, positions
kept so a restarted ``fsm worker`` resumes, and records handed out in Lambda's shapes.

A poller's ``poll()`` returns up to ``batch`` records; ``done(records, failed_ids)``
settles them like Lambda would: each shard moves its position past the records that
succeeded and re-reads from the first one that failed. The service modules
(``sources.kinesis``, ``sources.dynamodb_stream``) fill in the calls.
"""

from __future__ import annotations

import time
from typing import Any

from . import aws as awslib


def call(arn: str, client: Any, operation: str, **params: Any) -> Any:
    """One AWS call of a poller; failures leave as RecoverableError/BackendError naming ``arn``."""
    try:
        return getattr(client, operation)(**params)
    except Exception as exc:
        raise awslib.classify(exc, arn) from exc


class ShardPoller:
    """Shared by Kinesis and DynamoDB streams: one iterator per shard, positions kept in
    ``positions`` (a dict, or a checkpoint store) so a restarted worker resumes."""

    # Shards change only on resharding: listing them on every poll would double the calls
    # an idle reader makes.
    SHARDS_TTL = 30.0
    ordered = True     # a failed record is read again before the ones after it

    def __init__(self, arn: str, positions: Any, batch: int):
        self.arn, self.batch = arn, batch
        self.positions = positions if positions is not None else {}
        self._iterators: dict[str, str | None] = {}
        self._shard_of_seq: dict[str, str] = {}
        self._shards_listed_at = -self.SHARDS_TTL

    def poll(self, wait: bool = True) -> list[dict[str, Any]]:
        if time.monotonic() - self._shards_listed_at >= self.SHARDS_TTL:
            for shard in self._shards():
                if shard not in self._iterators:
                    self._iterators[shard] = self._iterator(shard, self.positions.get(self._key(shard)))
            self._shards_listed_at = time.monotonic()
        records: list[dict[str, Any]] = []
        for shard, iterator in list(self._iterators.items()):
            if iterator is None or len(records) >= self.batch:
                continue
            reply = self._get(iterator, self.batch - len(records))
            self._iterators[shard] = reply.get("NextShardIterator")
            for raw in reply.get("Records", []):
                shaped = self._shape(shard, raw)
                self._shard_of_seq[self._sequence(shaped)] = shard
                records.append(shaped)
        return records

    def done(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        """Each shard moves past its records up to the first failed one, which is read
        again; a position is written once per shard and batch, not once per record."""
        first_failed: dict[str, str] = {}
        last_done: dict[str, str] = {}
        for r in records:
            seq = self._sequence(r)
            shard = self._shard_of_seq.pop(seq)
            if shard in first_failed:
                continue
            if seq in failed:
                first_failed[shard] = seq
            else:
                last_done[shard] = seq
        for shard, seq in last_done.items():
            self.positions[self._key(shard)] = seq
        for shard, seq in first_failed.items():
            self._iterators[shard] = self._iterator(shard, seq, at=True)

    def _key(self, shard: str) -> str:
        return f"worker#{self.arn}#{shard}"

    # service specifics
    def _shards(self) -> list[str]: raise NotImplementedError
    def _iterator(self, shard: str, seq: str | None, at: bool = False) -> str | None: raise NotImplementedError
    def _get(self, iterator: str, limit: int) -> dict[str, Any]: raise NotImplementedError
    def _shape(self, shard: str, record: dict[str, Any]) -> dict[str, Any]: raise NotImplementedError
    def _sequence(self, record: dict[str, Any]) -> str: raise NotImplementedError


def epoch(value: Any) -> Any:
    return value.timestamp() if hasattr(value, "timestamp") else value
