"""Lambda functions as Task resources: the one module of :mod:`fsm.asl` that does I/O.

``"Resource": "arn:aws:lambda:REGION:ACCOUNT:function:NAME"`` invokes the function with
the effective input as payload and takes its payload as the result.
``"Resource": "arn:aws:states:::lambda:invoke"`` (the optimised integration) takes
``FunctionName``, ``Payload``, ``Qualifier``, ``ClientContext`` and ``InvocationType``
from the effective input, and its result is shaped as Step Functions shapes it:
``{"ExecutedVersion", "Payload", "SdkHttpMetadata", "SdkResponseMetadata", "StatusCode"}``.

Calls are ``Invoke`` with ``RequestResponse`` through one client per process, built on
first use from the shared session (:func:`sources.aws.make_client`); :func:`use_client`
injects another (a stub in tests). A function error is the error its payload's
``errorType`` names (cause: ``errorMessage``); a service error is ``Lambda.<code>``
(``Lambda.ServiceException``, ``Lambda.TooManyRequestsException``...), and a failure
to reach the service ``Lambda.SdkClientException``.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from fsm.model import Context

from .errors import AslError
from .tasks import Resource

OPTIMISED = "arn:aws:states:::lambda:invoke"
_ARN = re.compile(r"arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[A-Za-z0-9$_-]+)?")

_lock = threading.Lock()
_injected: Any = None
_clients: dict[str | None, Any] = {}


def is_lambda(resource: str) -> bool:
    """A resource this module can call: a function ARN or the optimised integration."""
    return resource == OPTIMISED or bool(_ARN.fullmatch(resource))


def use_client(client: Any) -> None:
    """Invoke through ``client`` (``None``: build the default ones on next use)."""
    global _injected
    with _lock:
        _injected = client
        _clients.clear()


def client(region: str | None = None) -> Any:
    """The injected client, else one per region (a function ARN's, else the session's)."""
    with _lock:
        if _injected is not None:
            return _injected
        if region not in _clients:
            from sources.aws import make_client

            _clients[region] = make_client("lambda", region=region)
        return _clients[region]


def region_of(function: str) -> str | None:
    parts = function.split(":")
    return parts[3] if function.startswith("arn:") and len(parts) > 4 and parts[3] else None


class LambdaResource(Resource):
    def __init__(self, resource: str):
        self.resource = resource
        self.optimised = resource == OPTIMISED

    def __repr__(self) -> str:
        return f"<LambdaResource {self.resource}>"

    def call(self, given: Any, context: Context, obj: dict[str, Any]) -> Any:
        if self.optimised:
            if not isinstance(given, dict) or not isinstance(given.get("FunctionName"), str):
                raise AslError("States.Runtime", "lambda:invoke needs `FunctionName` (a string) in Parameters")
            request = {"FunctionName": given["FunctionName"],
                       "Payload": json.dumps(given.get("Payload"), separators=(",", ":")).encode()}
            for key in ("Qualifier", "ClientContext"):
                if isinstance(given.get(key), str):
                    request[key] = given[key]
        else:
            request = {"FunctionName": self.resource, "Payload": json.dumps(given, separators=(",", ":")).encode()}
        request["InvocationType"] = "RequestResponse"
        response = _invoke(request, region_of(request["FunctionName"]))
        payload = _payload(response)
        if response.get("FunctionError"):
            error = payload if isinstance(payload, dict) else {}
            raise AslError(str(error.get("errorType") or "Lambda.Unknown"),
                           str(error.get("errorMessage") or (payload if isinstance(payload, str) else "")))
        if not self.optimised:
            return payload
        metadata = response.get("ResponseMetadata") or {}
        return {"ExecutedVersion": response.get("ExecutedVersion", "$LATEST"), "Payload": payload,
                "SdkHttpMetadata": {"HttpHeaders": dict(metadata.get("HTTPHeaders") or {}),
                                    "HttpStatusCode": metadata.get("HTTPStatusCode", response.get("StatusCode"))},
                "SdkResponseMetadata": {"RequestId": metadata.get("RequestId", "")},
                "StatusCode": response.get("StatusCode", 200)}


def _invoke(request: dict[str, Any], region: str | None) -> dict[str, Any]:
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # a stub client without botocore installed
        BotoCoreError = ClientError = ()  # type: ignore[assignment,misc]
    try:
        return client(region).invoke(**request)
    except ClientError as exc:  # type: ignore[misc]
        code = str(exc.response.get("Error", {}).get("Code") or "")
        message = str(exc.response.get("Error", {}).get("Message") or exc)
        name = code if code.endswith("Exception") else "AWSLambdaException"
        raise AslError(f"Lambda.{name}", message) from None
    except BotoCoreError as exc:  # type: ignore[misc]
        raise AslError("Lambda.SdkClientException", str(exc)) from None


def _payload(response: dict[str, Any]) -> Any:
    body = response.get("Payload")
    raw = body.read() if hasattr(body, "read") else body
    if raw in (None, b"", ""):
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
