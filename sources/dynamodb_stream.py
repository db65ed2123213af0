"""``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME``: a table whose stream drives Lambda.

Sending a message writes one item; the table's stream (view type ``NEW_IMAGE``) hands
the new item to the Lambda, which reads the message from ``NewImage.body.S``. The item::

    {
      "pk":         {"S": envelope.dedup_id},  # partition key, one item per message
      "body":       {"S": envelope.body},      # the encoded message: what the handler reads
      "key":        {"S": envelope.key},       # correlation id, for people browsing the table
      "expires_at": {"N": now + ttl seconds},  # TTL attribute: items clean themselves up
    }

Handlers should act on ``INSERT`` records only. ``REMOVE`` records come from TTL expiry,
and ``MODIFY`` records from a batch re-sending an item already written (a single send is a
conditional put, so its duplicates write nothing); both are safe to ignore. There is no
delay (``max_delay`` 0).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from fsm.errors import BackendError
from fsm.ports import Delivery, Envelope

from . import aws as awslib
from .aws_bus import AwsBus, EntryFailures
from .shards import ShardPoller, call, epoch

EVENT_SOURCE = "aws:dynamodb"
MAX_BATCH_ENTRIES = 25
MAX_BATCH_BYTES = 16 * 1024 * 1024
DEFAULT_TTL = 86400.0
ALREADY_WRITTEN = frozenset({"ConditionalCheckFailedException"})
ALREADY_EXISTS = frozenset({"ResourceInUseException"})


class DynamoStreamBus(AwsBus):
    max_batch_entries, max_batch_bytes = MAX_BATCH_ENTRIES, MAX_BATCH_BYTES
    service = "dynamodb"

    def __init__(self, arn: str, *, ttl: float = DEFAULT_TTL, **options: Any):
        super().__init__(arn, **options)
        kind, _, name = self.resource.partition("/")
        self.table = name.split("/", 1)[0]
        if kind != "table" or not self.table:
            raise BackendError(f"{arn!r}: expected arn:aws:dynamodb:REGION:ACCOUNT:table/NAME")
        self.ttl = ttl

    def send(self, envelope: Envelope) -> None:
        self.check_delay(envelope)
        # Conditional, so a re-send of the same message (a lost response) is a no-op
        # rather than a MODIFY record the handler would see again.
        self.call_accepting(ALREADY_WRITTEN, "put_item", TableName=self.table,
                            Item=self._item(envelope), ConditionExpression="attribute_not_exists(pk)")

    def put_batch(self, envelopes: Sequence[Envelope], indices: list[int]) -> EntryFailures:
        # BatchWriteItem refuses two writes to one key in a request; equal dedup ids
        # are the same message, so one write covers them all.
        by_pk: dict[str, list[int]] = {}
        for i in indices:
            by_pk.setdefault(envelopes[i].dedup_id, []).append(i)
        writes = [{"PutRequest": {"Item": self._item(envelopes[same[0]])}} for same in by_pk.values()]
        reply = self.call("batch_write_item", RequestItems={self.table: writes})
        unprocessed = reply.get("UnprocessedItems", {}).get(self.table, [])
        # Unprocessed items are throttled writes: always worth retrying.
        return {i: True for write in unprocessed
                for i in by_pk.get(write["PutRequest"]["Item"]["pk"]["S"], [])}

    def create(self, timeout: float = 120.0) -> None:
        """Create the table with its stream and TTL if missing; safe to run again."""
        self.call_accepting(
            ALREADY_EXISTS, "create_table", TableName=self.table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
        table = self._wait_active(timeout)
        if not table.get("StreamSpecification", {}).get("StreamEnabled"):
            self.call("update_table", TableName=self.table,
                      StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
            self._wait_active(timeout)
        ttl = self.call("describe_time_to_live", TableName=self.table)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            self.call("update_time_to_live", TableName=self.table,
                      TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})

    @property
    def stream_arn(self) -> str:
        """The table's current stream, which the Lambda event source mapping reads."""
        return self.call("describe_table", TableName=self.table)["Table"]["LatestStreamArn"]

    def _wait_active(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            table = self.call("describe_table", TableName=self.table)["Table"]
            if table["TableStatus"] == "ACTIVE":
                return table
            if time.monotonic() > deadline:
                raise BackendError(f"{self.url}: table still {table['TableStatus']} after {timeout}s")
            time.sleep(1.0)

    def _item(self, envelope: Envelope) -> dict[str, Any]:
        return {
            "pk": {"S": envelope.dedup_id},
            "body": {"S": envelope.body},
            "key": {"S": envelope.key},
            "expires_at": {"N": str(int(time.time() + self.ttl))},
        }


# -- Lambda records and the worker's poller --------------------------------------------


def item_id(record: Mapping[str, Any]) -> str:
    return str((record.get("dynamodb") or {}).get("SequenceNumber", ""))


def ordered(record: Mapping[str, Any]) -> bool:
    return True


def read_record(record: Mapping[str, Any]) -> Delivery | None:
    """The message of an INSERT; ``None`` for the others. REMOVE: a message item expiring
    by TTL. MODIFY: a batch re-writing an item already sent, whose INSERT was (or will be)
    handled: acting on it again would re-send the instance's outbox."""
    if record.get("eventName", "INSERT") != "INSERT":
        return None
    stream = record.get("dynamodb") or {}
    body = ((stream.get("NewImage") or {}).get("body") or {}).get("S", "")
    return Delivery(body, {"arn": record.get("eventSourceARN", ""), "sequence": stream.get("SequenceNumber")})


class DynamoStreamPoller(ShardPoller):
    def __init__(self, arn: str, *, endpoint_url: str | None = None, aws: Mapping[str, Any] | None = None,
                 positions: Any = None, batch: int = 10, client: Any = None, streams: Any = None):
        super().__init__(arn, positions, batch)
        region = awslib.parse_arn(arn)[1] or None
        dynamodb = awslib.make_client("dynamodb", region, endpoint_url, aws, client)
        self.streams = awslib.make_client("dynamodbstreams", region, endpoint_url, aws, streams)
        table = awslib.parse_arn(arn)[3].split("/")[1]
        described = call(arn, dynamodb, "describe_table", TableName=table)["Table"]
        self.stream_arn = described.get("LatestStreamArn")
        if not self.stream_arn:
            raise BackendError(f"{arn}: the table has no stream; run `fsm create-resources`")
        self.region = awslib.parse_arn(arn)[1]

    def _shards(self) -> list[str]:
        reply = call(self.arn, self.streams, "describe_stream", StreamArn=self.stream_arn)
        return [s["ShardId"] for s in reply["StreamDescription"].get("Shards", [])]

    def _iterator(self, shard: str, seq: str | None, at: bool = False) -> str | None:
        params: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}
        if seq:
            params.update(ShardIteratorType="AT_SEQUENCE_NUMBER" if at else "AFTER_SEQUENCE_NUMBER",
                          SequenceNumber=seq)
        return call(self.arn, self.streams, "get_shard_iterator", **params)["ShardIterator"]

    def _get(self, iterator: str, limit: int) -> dict[str, Any]:
        return call(self.arn, self.streams, "get_records", ShardIterator=iterator, Limit=limit)

    def _shape(self, shard: str, r: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in r.items() if k != "dynamodb"},
                "dynamodb": {**r["dynamodb"], "ApproximateCreationDateTime":
                             epoch(r["dynamodb"].get("ApproximateCreationDateTime"))},
                "eventSource": "aws:dynamodb", "eventSourceARN": self.stream_arn, "awsRegion": self.region}

    def _sequence(self, record: dict[str, Any]) -> str:
        return record["dynamodb"]["SequenceNumber"]
