"""What every AWS adapter shares: building a client, reading an ARN, sorting errors.

Adapters never build boto3 clients themselves: one place decides timeouts and retries, so
a failover can happen within a Lambda's time budget instead of after botocore's default
60 s read timeout and legacy retries. ``classify`` is the single answer to "is this fault
worth trying on the secondary?", which the failover router reads from the error *type*.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3
import botocore.exceptions as bx
from botocore.config import Config

from fsm.errors import BackendError, RecoverableError

# Short by default: a Lambda would rather fail over than wait out botocore's 60 s.
DEFAULT_AWS: dict[str, Any] = {"connect_timeout": 2.0, "read_timeout": 5.0, "max_attempts": 3}

# Error codes that mean "the request was fine, the service could not take it now".
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "LimitExceededException", "SlowDown",
    "TransactionInProgressException", "TransactionConflictException", "KMSThrottlingException",
    "BandwidthLimitExceeded", "RequestTimeout", "RequestTimeoutException",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure",
    "InternalServerError", "InternalError",
})
# A missing table/queue/topic: the secondary (or a later attempt, after a deploy) may have it.
MISSING_RESOURCE_CODES = frozenset({
    "ResourceNotFoundException", "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue", "NotFound", "NotFoundException",
})
# Raised by botocore when the network failed before or during the exchange.
NETWORK_ERRORS: tuple[type[Exception], ...] = (
    bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
    bx.ConnectionClosedError, bx.ConnectionError, bx.HTTPClientError,
)


def aws_config(aws: Mapping[str, Any] | None = None) -> Config:
    """The botocore Config for ``aws`` (connect_timeout, read_timeout, max_attempts).

    ``max_attempts`` counts every call, the first included (botocore's own
    ``max_attempts`` counts only the retries, so it is passed as ``total_max_attempts``):
    ``max_attempts=1`` means no retry, which is what a failover test wants.
    """
    settings = {**DEFAULT_AWS, **(aws or {})}
    return Config(
        connect_timeout=float(settings["connect_timeout"]),
        read_timeout=float(settings["read_timeout"]),
        retries={"total_max_attempts": int(settings["max_attempts"]), "mode": "standard"},
    )


def make_client(service: str, region: str | None = None, endpoint_url: str | None = None,
                aws: Mapping[str, Any] | None = None, client: Any = None) -> Any:
    """The injected ``client`` if given, else a new boto3 client for ``service``.

    ``endpoint_url=None`` lets boto3 apply ``AWS_ENDPOINT_URL`` (moto_server, LocalStack).
    Each client gets its own Session: ``boto3.client`` shares the default session, whose
    creation is not thread-safe.
    """
    if client is not None:
        return client
    session = boto3.session.Session()
    return session.client(service, region_name=region or None, endpoint_url=endpoint_url,
                          config=aws_config(aws))


def parse_arn(arn: str) -> tuple[str, str, str, str]:
    """``arn:aws:dynamodb:eu-west-1:123:table/T`` -> ``("dynamodb", "eu-west-1", "123", "table/T")``."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[2] or not parts[5]:
        raise BackendError(f"{arn!r} is not an ARN; expected arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE")
    return parts[2], parts[3], parts[4], parts[5]


def error_code(exc: BaseException) -> str:
    if isinstance(exc, bx.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_recoverable(exc: BaseException) -> bool:
    if isinstance(exc, NETWORK_ERRORS):
        return True
    if isinstance(exc, bx.ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code in THROTTLING_CODES or code in MISSING_RESOURCE_CODES or status >= 500 or status == 429
    return False


def classify(exc: BaseException, where: str = "") -> BackendError:
    """Turn a botocore error into ``RecoverableError`` or ``BackendError``.

    ``where`` (an ARN or URL) goes first in the message, so a log line names the resource.
    Callers raise the result ``from exc`` to keep the original traceback.
    """
    if isinstance(exc, BackendError):
        return exc
    kind = RecoverableError if is_recoverable(exc) else BackendError
    prefix = f"{where}: " if where else ""
    return kind(f"{prefix}{type(exc).__name__}: {exc}")
