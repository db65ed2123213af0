"""``arn:aws:sns:REGION:ACCOUNT:TOPIC``: fan a message out to the topic's subscribers.

The Lambda subscribes to the topic directly or through an SQS queue. A FIFO topic
(name ending ``.fifo``) takes ``MessageGroupId`` = correlation id and
``MessageDeduplicationId`` = dedup id, like a FIFO queue. SNS has no delay (``max_delay`` 0).

SNS invokes Lambda asynchronously and ignores ``batchItemFailures``: a failed record is
raised so that Lambda retries the invocation (``ASYNCHRONOUS``). Its records say
``EventSource`` with a capital E. A queue subscribed without raw delivery receives the
message inside an SNS envelope, which :func:`unwrap` removes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fsm.ports import Delivery, Envelope

from .aws_bus import AwsBus, EntryFailures, fifo_id

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024   # PublishBatch: all messages together
EVENT_SOURCE = "aws:sns"
ASYNCHRONOUS = True


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


# -- Lambda records -------------------------------------------------------------------


def item_id(record: Mapping[str, Any]) -> str:
    return str((record.get("Sns") or {}).get("MessageId", ""))


def ordered(record: Mapping[str, Any]) -> bool:
    return False


def read_record(record: Mapping[str, Any]) -> Delivery:
    sns = record.get("Sns") or {}
    return Delivery(sns.get("Message", ""), {"arn": sns.get("TopicArn") or record.get("EventSubscriptionArn", "")})


def unwrap(body: str) -> str:
    """The message inside an SNS envelope (SNS -> SQS without raw delivery), else ``body``."""
    if body.startswith("{") and '"TopicArn"' in body:
        try:
            envelope = json.loads(body)
        except ValueError:
            return body
        if isinstance(envelope, dict) and envelope.get("Type") == "Notification" and "Message" in envelope:
            return str(envelope["Message"])
    return body
