"""``arn:aws:kinesis:REGION:ACCOUNT:stream/NAME``: a replayable log of messages.

``PartitionKey`` is the correlation id, so every message of one instance lands on the
same shard, in order. Kinesis has no delay (``max_delay`` 0) and no deduplication: a
re-sent record is a second record, which the dispatcher recognises by its step.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from fsm.errors import BackendError
from fsm.ports import Envelope

from .aws import THROTTLING_CODES
from .aws_bus import AwsBus, EntryFailures

MAX_BATCH_ENTRIES = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024      # PutRecords request, partition keys included
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
