"""``arn:aws:sqs:REGION:ACCOUNT:NAME``: standard and FIFO queues, everything about them.

The bus (send, batch, create), how Lambda's SQS records are read (``read_record``: SNS
and EventBridge envelopes unwrapped), the poller ``fsm worker`` reads a queue with, and
the short backoff of a failed record (``retry_later``).

A standard queue holds a delay of up to 15 minutes (``DelaySeconds``), which is how
retries back off without a timer. A FIFO queue (name ending ``.fifo``) orders messages
per instance (``MessageGroupId`` = the correlation id) and deduplicates re-sends within
five minutes (``MessageDeduplicationId`` = the message's dedup id); it has no
per-message delay, so its ``max_delay`` is 0.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

from fsm.backoff import full_jitter
from fsm.ports import Delivery, Envelope

from . import aws as awslib
from . import eventbridge, sns
from .aws_bus import AwsBus, EntryFailures, fifo_id
from .shards import call

EVENT_SOURCE = "aws:sqs"
# A failed record becomes visible again after uniform(0, min(cap, base * 2**receives)) s
# (at least 1): seconds, not the queue's visibility timeout, so recovery is quick.
RETRY_BASE, RETRY_CAP = 1.0, 30.0

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
        """Built from the ARN: on the endpoint when one is given (settings or
        ``AWS_ENDPOINT_URL[_SQS]``), in the ``aws`` partition as SQS writes it; else asked
        for once and cached. Building it saves a cold container a GetQueueUrl per queue."""
        if self._queue_url is None:
            endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                self._queue_url = f"{endpoint.rstrip('/')}/{self.account}/{self.name}"
            elif self.url.startswith("arn:aws:sqs:") and self.region:
                self._queue_url = f"https://sqs.{self.region}.amazonaws.com/{self.account}/{self.name}"
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


# -- Lambda records and the worker's poller -------------------------------------------


def item_id(record: Mapping[str, Any]) -> str:
    return str(record.get("messageId", ""))


def ordered(record: Mapping[str, Any]) -> bool:
    return str(record.get("eventSourceARN", "")).endswith(".fifo")


def read_record(record: Mapping[str, Any]) -> Delivery:
    body = record.get("body", "")
    body = sns.unwrap(body) if isinstance(body, str) else body
    body = eventbridge.unwrap(body) if isinstance(body, str) else body
    return Delivery(body, {"arn": record.get("eventSourceARN", ""), "id": record.get("messageId")})


def retry_later(records: Sequence[Mapping[str, Any]], *, client: Any = None, url: str | None = None,
                endpoint_url: str | None = None, aws: Mapping[str, Any] | None = None,
                rng: random.Random | None = None) -> None:
    """Make failed records visible again after a short jittered backoff instead of the
    queue's visibility timeout (minutes, sized for the function's timeout), so a record
    that failed for a passing reason is retried within seconds. Best effort: a record
    whose visibility cannot be changed still comes back, later.

    Ordered (FIFO) records are left alone: the handler stops an ordered batch at its
    first failure, and such a batch comes back as a whole on the source's own terms.
    """
    by_queue: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        if not ordered(record):
            by_queue.setdefault(str(record.get("eventSourceARN", "")), []).append(record)
    for arn, queued in by_queue.items():
        _, region, account, name = awslib.parse_arn(arn)
        sqs = client or _client(region, endpoint_url, aws)
        queue_url = url or _queue_url(arn, sqs, name, account, cache=client is None)
        entries = [{"Id": str(index), "ReceiptHandle": record["receiptHandle"],
                    "VisibilityTimeout": backoff_seconds(receive_count(record), rng)}
                   for index, record in enumerate(queued)]
        for start in range(0, len(entries), MAX_BATCH_ENTRIES):
            call(arn, sqs, "change_message_visibility_batch", QueueUrl=queue_url,
                 Entries=entries[start:start + MAX_BATCH_ENTRIES])


def receive_count(record: Mapping[str, Any]) -> int:
    """How many times SQS has handed this record out, this time included."""
    return max(1, int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1))


def backoff_seconds(receives: int, rng: random.Random | None = None) -> int:
    """Whole seconds (what ChangeMessageVisibility takes) between 1 and ``RETRY_CAP``,
    drawn from a ceiling that doubles with each receive: records that failed together
    come back spread out, and a record that keeps failing waits longer each time."""
    return max(1, math.ceil(full_jitter(receives, RETRY_BASE, RETRY_CAP, rng)))


# Built once per container: a Lambda pays for a client and a GetQueueUrl on its first
# failed record, not on every one.
_clients: dict[tuple[Any, ...], Any] = {}
_queue_urls: dict[tuple[str, str | None], str] = {}


def _client(region: str, endpoint_url: str | None, aws: Mapping[str, Any] | None) -> Any:
    # boto3 reads AWS_ENDPOINT_URL when a client is made: a client made under another
    # value (a test against moto_server, then one in-process) must not be reused.
    key = (region, endpoint_url, _env_endpoint(), tuple(sorted((aws or {}).items())))
    if key not in _clients:
        _clients[key] = awslib.make_client("sqs", region or None, endpoint_url, aws)
    return _clients[key]


def _queue_url(arn: str, sqs: Any, name: str, account: str, cache: bool) -> str:
    key = (arn, getattr(getattr(sqs, "meta", None), "endpoint_url", None))
    if cache and key in _queue_urls:
        return _queue_urls[key]
    found = str(call(arn, sqs, "get_queue_url", QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])
    if cache:
        _queue_urls[key] = found
    return found


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")


class SqsPoller:
    """Reads a queue as Lambda's event source mapping does: records in Lambda's shape;
    ``done`` deletes what succeeded and leaves the failed on the queue. ``handle_event``
    has already shortened their wait (:func:`retry_later`), as it does on Lambda, where
    the event source mapping knows nothing of it either."""

    long_polls = True  # an empty poll waited on the server: the worker need not sleep

    def __init__(self, arn: str, *, endpoint_url: str | None = None, aws: Mapping[str, Any] | None = None,
                 positions: Any = None, batch: int = 10, client: Any = None):
        _, self.region, account, name = awslib.parse_arn(arn)
        self.arn, self.batch = arn, batch
        self.ordered = name.endswith(".fifo")
        self.client = awslib.make_client("sqs", self.region or None, endpoint_url, aws, client)
        self.url = call(arn, self.client, "get_queue_url", QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]

    def poll(self, wait: bool = True) -> list[dict[str, Any]]:
        reply = call(self.arn, self.client, "receive_message", QueueUrl=self.url,
                     MaxNumberOfMessages=min(self.batch, 10), WaitTimeSeconds=1 if wait else 0,
                     AttributeNames=["All"], MessageAttributeNames=["All"])
        records = []
        for m in reply.get("Messages", []):
            records.append({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                            "attributes": m.get("Attributes", {}), "messageAttributes": m.get("MessageAttributes", {}),
                            "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
                            "eventSourceARN": self.arn, "awsRegion": self.region})
        return records

    def done(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                   for i, r in enumerate(records) if r["messageId"] not in failed]
        for start in range(0, len(entries), MAX_BATCH_ENTRIES):
            call(self.arn, self.client, "delete_message_batch", QueueUrl=self.url,
                 Entries=entries[start:start + MAX_BATCH_ENTRIES])
