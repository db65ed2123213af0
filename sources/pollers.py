"""Read SQS queues, Kinesis streams and DynamoDB streams the way Lambda's event source
mappings do, and hand out batches in the exact Lambda event shapes, so ``fsm worker``
exercises the same handler code as Lambda.

A poller's ``poll()`` returns up to ``batch`` records; ``done(records, failed_ids)``
settles them like Lambda would: SQS deletes what succeeded (the failed reappear after
their visibility timeout); stream pollers move each shard's position past the records
that succeeded and re-read from the first one that failed.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any, Protocol

from fsm.errors import BackendError

from . import aws as awslib


class Poller(Protocol):
    arn: str

    def poll(self, wait: bool = True) -> list[dict[str, Any]]:
        """Up to a batch of records; ``wait`` allows a long poll when there are none."""

    def done(self, records: list[dict[str, Any]], failed: set[str]) -> None: ...


def open_poller(arn: str, *, endpoint_url: str | None = None, aws: Mapping[str, Any] | None = None,
                positions: Any = None, batch: int = 10) -> Poller:
    service, region, account, resource = awslib.parse_arn(arn)
    client_args = {"region": region or None, "endpoint_url": endpoint_url, "aws": aws}
    if service == "sqs":
        return SqsPoller(arn, awslib.make_client("sqs", **client_args), account, resource, batch)
    if service == "kinesis":
        return KinesisPoller(arn, awslib.make_client("kinesis", **client_args), positions, batch)
    if service == "dynamodb":
        return DynamoStreamPoller(arn, awslib.make_client("dynamodb", **client_args),
                                  awslib.make_client("dynamodbstreams", **client_args), positions, batch)
    raise BackendError(f"cannot poll {arn!r}: fsm worker reads SQS queues, Kinesis streams and "
                       "DynamoDB tables with a stream")


def _call(arn: str, client: Any, operation: str, **params: Any) -> Any:
    try:
        return getattr(client, operation)(**params)
    except Exception as exc:
        raise awslib.classify(exc, arn) from exc


class SqsPoller:
    def __init__(self, arn: str, client: Any, account: str, name: str, batch: int):
        self.arn, self.client, self.batch = arn, client, batch
        self.region = awslib.parse_arn(arn)[1]
        self.url = _call(arn, client, "get_queue_url", QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        self._receipts: dict[str, str] = {}

    def poll(self, wait: bool = True) -> list[dict[str, Any]]:
        reply = _call(self.arn, self.client, "receive_message", QueueUrl=self.url,
                      MaxNumberOfMessages=min(self.batch, 10), WaitTimeSeconds=1 if wait else 0,
                      AttributeNames=["All"], MessageAttributeNames=["All"])
        records = []
        for m in reply.get("Messages", []):
            self._receipts[m["MessageId"]] = m["ReceiptHandle"]
            records.append({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                            "attributes": m.get("Attributes", {}), "messageAttributes": m.get("MessageAttributes", {}),
                            "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
                            "eventSourceARN": self.arn, "awsRegion": self.region})
        return records

    def done(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                   for i, r in enumerate(records) if r["messageId"] not in failed]
        for r in records:
            self._receipts.pop(r["messageId"], None)
        for start in range(0, len(entries), 10):
            _call(self.arn, self.client, "delete_message_batch", QueueUrl=self.url, Entries=entries[start:start + 10])
        visible_again = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"], "VisibilityTimeout": 1}
                         for i, r in enumerate(records) if r["messageId"] in failed]
        for start in range(0, len(visible_again), 10):
            _call(self.arn, self.client, "change_message_visibility_batch", QueueUrl=self.url,
                  Entries=visible_again[start:start + 10])


class _ShardPoller:
    """Shared by Kinesis and DynamoDB streams: one iterator per shard, positions kept in
    ``positions`` (a dict, or a checkpoint store) so a restarted worker resumes."""

    # Shards change only on resharding: listing them on every poll would double the calls
    # an idle reader makes.
    SHARDS_TTL = 30.0

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


class KinesisPoller(_ShardPoller):
    def __init__(self, arn: str, client: Any, positions: Any, batch: int):
        super().__init__(arn, positions, batch)
        self.client = client
        self.name = awslib.parse_arn(arn)[3].split("/", 1)[-1]
        self.region = awslib.parse_arn(arn)[1]

    def _shards(self) -> list[str]:
        reply = _call(self.arn, self.client, "list_shards", StreamName=self.name)
        return [s["ShardId"] for s in reply.get("Shards", [])]

    def _iterator(self, shard: str, seq: str | None, at: bool = False) -> str | None:
        params: dict[str, Any] = {"StreamName": self.name, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}
        if seq:
            params.update(ShardIteratorType="AT_SEQUENCE_NUMBER" if at else "AFTER_SEQUENCE_NUMBER",
                          StartingSequenceNumber=seq)
        return _call(self.arn, self.client, "get_shard_iterator", **params)["ShardIterator"]

    def _get(self, iterator: str, limit: int) -> dict[str, Any]:
        return _call(self.arn, self.client, "get_records", ShardIterator=iterator, Limit=limit)

    def _shape(self, shard: str, r: dict[str, Any]) -> dict[str, Any]:
        arrival = r.get("ApproximateArrivalTimestamp")
        return {"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r["PartitionKey"],
                            "sequenceNumber": r["SequenceNumber"],
                            "data": base64.b64encode(r["Data"]).decode("ascii"),
                            "approximateArrivalTimestamp": arrival.timestamp() if arrival else time.time()},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": f"{shard}:{r['SequenceNumber']}", "eventName": "aws:kinesis:record",
                "awsRegion": self.region, "eventSourceARN": self.arn}

    def _sequence(self, record: dict[str, Any]) -> str:
        return record["kinesis"]["sequenceNumber"]


class DynamoStreamPoller(_ShardPoller):
    def __init__(self, arn: str, dynamodb: Any, streams: Any, positions: Any, batch: int):
        super().__init__(arn, positions, batch)
        self.streams = streams
        table = awslib.parse_arn(arn)[3].split("/")[1]
        described = _call(arn, dynamodb, "describe_table", TableName=table)["Table"]
        self.stream_arn = described.get("LatestStreamArn")
        if not self.stream_arn:
            raise BackendError(f"{arn}: the table has no stream; run `fsm create-resources`")
        self.region = awslib.parse_arn(arn)[1]

    def _shards(self) -> list[str]:
        reply = _call(self.arn, self.streams, "describe_stream", StreamArn=self.stream_arn)
        return [s["ShardId"] for s in reply["StreamDescription"].get("Shards", [])]

    def _iterator(self, shard: str, seq: str | None, at: bool = False) -> str | None:
        params: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}
        if seq:
            params.update(ShardIteratorType="AT_SEQUENCE_NUMBER" if at else "AFTER_SEQUENCE_NUMBER",
                          SequenceNumber=seq)
        return _call(self.arn, self.streams, "get_shard_iterator", **params)["ShardIterator"]

    def _get(self, iterator: str, limit: int) -> dict[str, Any]:
        return _call(self.arn, self.streams, "get_records", ShardIterator=iterator, Limit=limit)

    def _shape(self, shard: str, r: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in r.items() if k != "dynamodb"},
                "dynamodb": {**r["dynamodb"], "ApproximateCreationDateTime":
                             _epoch(r["dynamodb"].get("ApproximateCreationDateTime"))},
                "eventSource": "aws:dynamodb", "eventSourceARN": self.stream_arn, "awsRegion": self.region}

    def _sequence(self, record: dict[str, Any]) -> str:
        return record["dynamodb"]["SequenceNumber"]


def _epoch(value: Any) -> Any:
    return value.timestamp() if hasattr(value, "timestamp") else value


def read_at(arn: str, shard: str, sequence: str, *, endpoint_url: str | None = None,
            aws: Mapping[str, Any] | None = None) -> str:
    """The body of the Kinesis record at ``sequence`` (``fsm resume``)."""
    _, region, _, resource = awslib.parse_arn(arn)
    client = awslib.make_client("kinesis", region or None, endpoint_url, aws)
    name = resource.split("/", 1)[-1]
    iterator = _call(arn, client, "get_shard_iterator", StreamName=name, ShardId=shard,
                     ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=sequence)["ShardIterator"]
    records = _call(arn, client, "get_records", ShardIterator=iterator, Limit=1).get("Records", [])
    if not records or records[0]["SequenceNumber"] != sequence:
        raise BackendError(f"{arn}: record {sequence} on {shard} is gone (past the stream's retention?)")
    return records[0]["Data"].decode("utf-8")
