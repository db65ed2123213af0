"""``arn:aws:sqs:REGION:ACCOUNT:NAME``: standard and FIFO queues.

A standard queue holds a delay of up to 15 minutes (``DelaySeconds``), which is how
retries back off without a timer. A FIFO queue (name ending ``.fifo``) orders messages
per instance (``MessageGroupId`` = the correlation id) and deduplicates re-sends within
five minutes (``MessageDeduplicationId`` = the message's dedup id); it has no
per-message delay, so its ``max_delay`` is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fsm.ports import Envelope

from .aws_bus import AwsBus, EntryFailures, fifo_id

MAX_BATCH_ENTRIES = 10
# The whole SendMessageBatch request is limited like one message (256 KiB on every
# account; newer quotas allow more, but this is the size every region accepts).
MAX_BATCH_BYTES = 256 * 1024


class SqsBus(AwsBus):
    max_batch_entries, max_batch_bytes = MAX_BATCH_ENTRIES, MAX_BATCH_BYTES
    service = "sqs"

    def __init__(self, arn: str, **options: Any):
        super().__init__(arn, **options)
        self.name = self.resource
        self.fifo = self.name.endswith(".fifo")
        self.max_delay = 0.0 if self.fifo else 900.0
        self._queue_url: str | None = None

    @property
    def queue_url(self) -> str:
        """Built from the endpoint when one is given, else asked for once and cached."""
        if self._queue_url is None:
            if self.endpoint_url:
                self._queue_url = f"{self.endpoint_url.rstrip('/')}/{self.account}/{self.name}"
            else:
                reply = self.call("get_queue_url", QueueName=self.name,
                                  QueueOwnerAWSAccountId=self.account)
                self._queue_url = reply["QueueUrl"]
        return self._queue_url

    def send(self, envelope: Envelope) -> None:
        self.check_delay(envelope)
        self.call("send_message", QueueUrl=self.queue_url, **self._fields(envelope))

    def put_batch(self, envelopes: Sequence[Envelope], indices: list[int]) -> EntryFailures:
        entries = [{"Id": str(i), **self._fields(envelopes[i])} for i in indices]
        reply = self.call("send_message_batch", QueueUrl=self.queue_url, Entries=entries)
        return {int(f["Id"]): not f.get("SenderFault", False) for f in reply.get("Failed", [])}

    def create(self) -> str:
        """Create the queue (idempotent: same name and attributes returns the same URL)."""
        attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if self.fifo else {}
        reply = self.call("create_queue", QueueName=self.name, Attributes=attributes)
        if not self.endpoint_url:
            self._queue_url = reply["QueueUrl"]
        return self.queue_url

    def _fields(self, envelope: Envelope) -> dict[str, Any]:
        fields: dict[str, Any] = {"MessageBody": envelope.body}
        if self.fifo:
            fields["MessageGroupId"] = fifo_id(envelope.key)
            fields["MessageDeduplicationId"] = fifo_id(envelope.dedup_id)
        elif envelope.delay > 0:
            fields["DelaySeconds"] = min(900, math.ceil(envelope.delay))
        return fields
