"""``arn:aws:kinesis:REGION:ACCOUNT:stream/NAME``: a replayable log of messages.

``PartitionKey`` is the correlation id, so every message of one instance lands on the
same shard, in order. Kinesis has no delay (``max_delay`` 0) and no deduplication: a
re-sent record is a second record, which the dispatcher recognises by its step.

Also here: reading Lambda's Kinesis records (base64 data), the shard poller of ``fsm
worker``, and :func:`read_at`, the record at a checkpoint (``fsm resume``).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from fsm.errors import BackendError
from fsm.ports import Delivery, Envelope

from . import aws as awslib
from .aws import THROTTLING_CODES
from .aws_bus import AwsBus, EntryFailures
from .shards import ShardPoller, call

MAX_BATCH_ENTRIES = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024      # PutRecords request, partition keys included
EVENT_SOURCE = "aws:kinesis"
RETRYABLE_CODES = frozenset({"ProvisionedThroughputExceededException", "InternalFailure"}) | THROTTLING_CODES


class KinesisBus(AwsBus):
    max_batch_entries, max_batch_bytes = MAX_BATCH_ENTRIES, MAX_BATCH_BYTES
    service = "kinesis"

    def __init__(self, arn: str, **options: Any):
        super().__init__(arn, **options)
        kind, _, self.name = self.resource.partition("/")
        if kind != "stream" or not self.name:
            raise BackendError(f"{arn!r}: expected arn:aws:kinesis:REGION:ACCOUNT:stream/NAME")

    def send(self, envelope: Envelope) -> None:
        self.check_delay(envelope)
        self.call("put_record", StreamName=self.name, **self._record(envelope))

    def entry_size(self, envelope: Envelope) -> int:
        return len(envelope.body.encode()) + len(self._partition_key(envelope).encode())

    def put_batch(self, envelopes: Sequence[Envelope], indices: list[int]) -> EntryFailures:
        records = [self._record(envelopes[i]) for i in indices]
        reply = self.call("put_records", StreamName=self.name, Records=records)
        if not reply.get("FailedRecordCount"):
            return {}
        # PutRecords answers in request order, one result per record.
        return {i: result["ErrorCode"] in RETRYABLE_CODES
                for i, result in zip(indices, reply["Records"]) if result.get("ErrorCode")}

    def create(self, timeout: float = 120.0) -> None:
        """Create a one-shard stream if missing and wait until it takes writes."""
        self.call_accepting(frozenset({"ResourceInUseException"}), "create_stream",
                            StreamName=self.name, ShardCount=1)
        deadline = time.monotonic() + timeout
        while True:
            summary = self.call("describe_stream_summary", StreamName=self.name)
            status = summary["StreamDescriptionSummary"]["StreamStatus"]
            if status in ("ACTIVE", "UPDATING"):
                return
            if time.monotonic() > deadline:
                raise BackendError(f"{self.url}: stream still {status} after {timeout}s")
            time.sleep(1.0)

    def _record(self, envelope: Envelope) -> dict[str, Any]:
        return {"Data": envelope.body.encode(), "PartitionKey": self._partition_key(envelope)}

    @staticmethod
    def _partition_key(envelope: Envelope) -> str:
        """The correlation id; hashed when beyond Kinesis's 256 characters (still stable)."""
        key = envelope.key or envelope.dedup_id
        return key if 0 < len(key) <= 256 else hashlib.sha256(key.encode()).hexdigest()


# -- Lambda records, the worker's poller, replay ---------------------------------------


def item_id(record: Mapping[str, Any]) -> str:
    return str((record.get("kinesis") or {}).get("sequenceNumber", ""))


def ordered(record: Mapping[str, Any]) -> bool:
    return True


def read_record(record: Mapping[str, Any]) -> Delivery:
    data = record.get("kinesis") or {}
    try:
        body = base64.b64decode(data.get("data", ""), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        body = str(data.get("data", ""))  # decode() reports it as malformed
    shard = str(record.get("eventID", "")).split(":", 1)[0]
    return Delivery(body, {"arn": record.get("eventSourceARN", ""), "sequence": data.get("sequenceNumber"),
                           "shard": shard})


class KinesisPoller(ShardPoller):
    def __init__(self, arn: str, *, endpoint_url: str | None = None, aws: Mapping[str, Any] | None = None,
                 positions: Any = None, batch: int = 10, client: Any = None):
        super().__init__(arn, positions, batch)
        self.client = awslib.make_client("kinesis", awslib.parse_arn(arn)[1] or None, endpoint_url, aws, client)
        self.name = awslib.parse_arn(arn)[3].split("/", 1)[-1]
        self.region = awslib.parse_arn(arn)[1]

    def _shards(self) -> list[str]:
        reply = call(self.arn, self.client, "list_shards", StreamName=self.name)
        return [s["ShardId"] for s in reply.get("Shards", [])]

    def _iterator(self, shard: str, seq: str | None, at: bool = False) -> str | None:
        params: dict[str, Any] = {"StreamName": self.name, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}
        if seq:
            params.update(ShardIteratorType="AT_SEQUENCE_NUMBER" if at else "AFTER_SEQUENCE_NUMBER",
                          StartingSequenceNumber=seq)
        return call(self.arn, self.client, "get_shard_iterator", **params)["ShardIterator"]

    def _get(self, iterator: str, limit: int) -> dict[str, Any]:
        return call(self.arn, self.client, "get_records", ShardIterator=iterator, Limit=limit)

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


def read_at(arn: str, shard: str, sequence: str, *, endpoint_url: str | None = None,
            aws: Mapping[str, Any] | None = None) -> str:
    """The body of the Kinesis record at ``sequence`` (``fsm resume``)."""
    _, region, _, resource = awslib.parse_arn(arn)
    client = awslib.make_client("kinesis", region or None, endpoint_url, aws)
    name = resource.split("/", 1)[-1]
    iterator = call(arn, client, "get_shard_iterator", StreamName=name, ShardId=shard,
                     ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=sequence)["ShardIterator"]
    records = call(arn, client, "get_records", ShardIterator=iterator, Limit=1).get("Records", [])
    if not records or records[0]["SequenceNumber"] != sequence:
        raise BackendError(f"{arn}: record {sequence} on {shard} is gone (past the stream's retention?)")
    return records[0]["Data"].decode("utf-8")
