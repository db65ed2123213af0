"""``arn:aws:sns:REGION:ACCOUNT:TOPIC``: fan a message out to the topic's subscribers.

The Lambda subscribes to the topic directly or through an SQS queue. A FIFO topic
(name ending ``.fifo``) takes ``MessageGroupId`` = correlation id and
``MessageDeduplicationId`` = dedup id, like a FIFO queue. SNS has no delay (``max_delay`` 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fsm.ports import Envelope

from .aws_bus import AwsBus, EntryFailures, fifo_id

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024   # PublishBatch: all messages together


class SnsBus(AwsBus):
    max_batch_entries, max_batch_bytes = MAX_BATCH_ENTRIES, MAX_BATCH_BYTES
    service = "sns"

    def __init__(self, arn: str, **options: Any):
        super().__init__(arn, **options)
        self.name = self.resource
        self.fifo = self.name.endswith(".fifo")

    def send(self, envelope: Envelope) -> None:
        self.check_delay(envelope)
        self.call("publish", TopicArn=self.url, **self._fields(envelope))

    def put_batch(self, envelopes: Sequence[Envelope], indices: list[int]) -> EntryFailures:
        entries = [{"Id": str(i), **self._fields(envelopes[i])} for i in indices]
        reply = self.call("publish_batch", TopicArn=self.url, PublishBatchRequestEntries=entries)
        return {int(f["Id"]): not f.get("SenderFault", False) for f in reply.get("Failed", [])}

    def create(self) -> str:
        """Create the topic (idempotent for the same name and attributes); returns its ARN."""
        attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if self.fifo else {}
        return self.call("create_topic", Name=self.name, Attributes=attributes)["TopicArn"]

    def _fields(self, envelope: Envelope) -> dict[str, Any]:
        fields: dict[str, Any] = {"Message": envelope.body}
        if self.fifo:
            fields["MessageGroupId"] = fifo_id(envelope.key)
            fields["MessageDeduplicationId"] = fifo_id(envelope.dedup_id)
        return fields
