"""The one place that sorts AWS faults into recoverable and not, and builds clients.

Every AWS adapter's failover behaviour rests on ``sources.aws.classify``; these cases pin
it down with the exception objects botocore really raises.
"""

from __future__ import annotations

import pytest

pytest.importorskip("boto3")

import botocore.exceptions as bx

from fsm.errors import BackendError, RecoverableError
from sources.aws import classify, make_client, parse_arn

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/T"


def client_error(code: str, status: int = 400) -> bx.ClientError:
    response = {"Error": {"Code": code, "Message": f"{code} happened"},
                "ResponseMetadata": {"HTTPStatusCode": status}}
    return bx.ClientError(response, "UpdateItem")  # type: ignore[arg-type]


@pytest.mark.parametrize("exc", [
    bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    bx.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
    bx.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    bx.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
    client_error("ThrottlingException"),
    client_error("ProvisionedThroughputExceededException"),
    client_error("RequestLimitExceeded"),
    client_error("TransactionConflictException"),
    client_error("InternalServerError", 500),
    client_error("SomethingNew", 503),
    client_error("TooMany", 429),
    client_error("ResourceNotFoundException"),
    client_error("QueueDoesNotExist"),
    client_error("AWS.SimpleQueueService.NonExistentQueue"),
], ids=lambda exc: type(exc).__name__ if not isinstance(exc, bx.ClientError) else exc.response["Error"]["Code"])
def test_recoverable(exc: Exception) -> None:
    error = classify(exc, ARN)
    assert isinstance(error, RecoverableError)
    assert str(error).startswith(ARN)


@pytest.mark.parametrize("exc", [
    client_error("ValidationException"),
    client_error("AccessDeniedException"),
    client_error("ConditionalCheckFailedException"),
    client_error("UnrecognizedClientException"),
    bx.NoCredentialsError(),
    bx.ParamValidationError(report="bad"),
])
def test_not_recoverable(exc: Exception) -> None:
    error = classify(exc, ARN)
    assert isinstance(error, BackendError) and not isinstance(error, RecoverableError)
    assert ARN in str(error)


def test_classify_keeps_framework_errors() -> None:
    original = RecoverableError("already sorted")
    assert classify(original) is original


def test_parse_arn() -> None:
    assert parse_arn(ARN) == ("dynamodb", "us-east-1", "123456789012", "table/T")
    assert parse_arn("arn:aws:sqs:eu-west-1:1:q:with:colons") == ("sqs", "eu-west-1", "1", "q:with:colons")
    for bad in ("redis://h", "arn:aws:sqs", "arn:aws::r:a:"):
        with pytest.raises(BackendError):
            parse_arn(bad)


def test_make_client_applies_timeouts_and_standard_retries() -> None:
    client = make_client("dynamodb", "eu-west-1", "http://127.0.0.1:9",
                         aws={"connect_timeout": 1.5, "read_timeout": 4, "max_attempts": 2})
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.5, 4.0)
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}   # 2 calls in all
    assert client.meta.region_name == "eu-west-1" and client.meta.endpoint_url == "http://127.0.0.1:9"
    injected = object()
    assert make_client("dynamodb", client=injected) is injected


def test_make_client_honours_aws_endpoint_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert make_client("sqs", "us-east-1").meta.endpoint_url == "http://127.0.0.1:4566"
