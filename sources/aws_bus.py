"""What the four AWS buses (SQS, Kinesis, SNS, DynamoDB stream) share.

Each bus only knows how to build its service's request and read its per-entry failure
report. Chunking, the one retry of retryable entries and the translation into
:class:`PartialBatchError` with the caller's indices are written once here.
"""

from __future__ import annotations

import hashlib
import string
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from fsm.errors import BackendError, PartialBatchError, RecoverableError
from fsm.ports import Envelope

from . import aws as awslib

# index into the caller's envelopes -> whether that entry's failure is worth retrying
EntryFailures = dict[int, bool]

_FIFO_ID_CHARS = frozenset(string.ascii_letters + string.digits + string.punctuation)


class AwsBus:
    """ARN parsing, a lazily built client, error classification and the delay check."""

    service: ClassVar[str]
    max_delay: float = 0.0

    def __init__(self, arn: str, *, client: Any = None, endpoint_url: str | None = None,
                 aws: Mapping[str, Any] | None = None):
        service, region, account, resource = awslib.parse_arn(arn)
        if service != self.service:
            raise BackendError(f"{type(self).__name__} needs an arn:aws:{self.service}:... ARN, got {arn!r}")
        self.url = arn
        self.region, self.account, self.resource = region, account, resource
        self.endpoint_url = endpoint_url
        self._client = client
        self._aws = aws

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = awslib.make_client(self.service, region=self.region or None,
                                              endpoint_url=self.endpoint_url, aws=self._aws)
        return self._client

    def call(self, operation: str, **params: Any) -> Any:
        """One API call; every failure leaves as RecoverableError or BackendError naming the ARN."""
        try:
            return getattr(self.client, operation)(**params)
        except Exception as exc:
            raise awslib.classify(exc, self.url) from exc

    def call_accepting(self, codes: frozenset[str], operation: str, **params: Any) -> Any:
        """``call``, where an error whose code is in ``codes`` is an outcome (None), not a fault.

        For "it already exists" on create and "already written" on a conditional put.
        """
        try:
            return getattr(self.client, operation)(**params)
        except Exception as exc:
            if awslib.error_code(exc) in codes:
                return None
            raise awslib.classify(exc, self.url) from exc

    # Per service: the limits of one batch request, and the request itself.
    max_batch_entries: ClassVar[int]
    max_batch_bytes: ClassVar[int]

    def send_batch(self, envelopes: Sequence[Envelope]) -> None:
        """Send in the fewest requests; entries that failed retryably are retried once,
        and whatever still failed is raised as ``PartialBatchError`` (never dropped)."""
        for envelope in envelopes:
            self.check_delay(envelope)
        groups = chunks(envelopes, self.max_batch_entries, self.max_batch_bytes, self.entry_size)
        if groups:
            send_in_chunks(self.url, groups, lambda indices: self.put_batch(envelopes, indices))

    def entry_size(self, envelope: Envelope) -> int:
        return body_size(envelope)

    def put_batch(self, envelopes: Sequence[Envelope], indices: list[int]) -> EntryFailures:
        """One batch request for ``envelopes[i] for i in indices``; the failed indices,
        each mapped to whether retrying it may help."""
        raise NotImplementedError

    def check_delay(self, envelope: Envelope) -> None:
        """Refuse rather than drop a delay: long delays are the timer store's job."""
        if envelope.delay > self.max_delay:
            raise BackendError(f"{self.url}: cannot delay a message by {envelope.delay}s "
                               f"(this bus holds at most {self.max_delay}s); "
                               "the dispatcher should use the timer store")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def fifo_id(value: str) -> str:
    """``value`` if SQS/SNS accept it as a group or deduplication id, else its SHA-256.

    Hashing keeps the mapping deterministic, so a re-sent message still deduplicates.
    """
    if 0 < len(value) <= 128 and all(c in _FIFO_ID_CHARS for c in value):
        return value
    return hashlib.sha256(value.encode()).hexdigest()


def body_size(envelope: Envelope) -> int:
    return len(envelope.body.encode())


def chunks(envelopes: Sequence[Envelope], max_entries: int, max_bytes: int,
           size: Callable[[Envelope], int] = body_size) -> list[list[int]]:
    """Consecutive index groups within the entry and byte limits of one request.

    An entry bigger than ``max_bytes`` gets a request of its own, so the service rejects
    that entry alone instead of failing its neighbours.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, envelope in enumerate(envelopes):
        needed = size(envelope)
        if current and (len(current) >= max_entries or used + needed > max_bytes):
            groups.append(current)
            current, used = [], 0
        current.append(index)
        used += needed
    if current:
        groups.append(current)
    return groups


def send_in_chunks(url: str, groups: list[list[int]], put: Callable[[list[int]], EntryFailures],
                   retry_pause: float = 0.05) -> None:
    """Send every group with ``put``; retry retryable entry failures once; report the rest.

    ``put(indices)`` sends those entries in one request and returns the ones the service
    reported failed. A whole request that fails recoverably (the service is unreachable)
    stops the batch: every entry not yet sent is reported, and if nothing was sent at all
    the original error is raised so a failover router moves the whole batch. A whole
    request refused as invalid only fails its own entries.
    """
    failed: EntryFailures = {}
    sent_any = False
    detail = ""
    for position, group in enumerate(groups):
        try:
            outcome = put(group)
        except RecoverableError as exc:
            if not sent_any and not failed:
                raise
            for rest in groups[position:]:
                failed.update(dict.fromkeys(rest, True))
            raise _partial(url, failed, str(exc)) from exc
        except BackendError as exc:
            failed.update(dict.fromkeys(group, False))
            detail = str(exc)
            continue
        retry = [i for i, retryable in outcome.items() if retryable]
        if retry:
            time.sleep(retry_pause)
            try:
                again = put(retry)
            except BackendError as exc:
                again = dict.fromkeys(retry, isinstance(exc, RecoverableError))
            outcome = {**{i: r for i, r in outcome.items() if not r}, **again}
        sent_any = sent_any or len(outcome) < len(group)
        failed.update(outcome)
    if failed:
        raise _partial(url, failed, detail)


def _partial(url: str, failed: EntryFailures, detail: str) -> PartialBatchError:
    recoverable = all(failed.values())
    kind = "retryable" if recoverable else "some not retryable"
    return PartialBatchError(sorted(failed), recoverable=recoverable,
                             detail=f"{url} ({kind}){': ' + detail if detail else ''}")
