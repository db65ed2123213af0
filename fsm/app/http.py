"""The HTTP API: start instances, send them events and read them over HTTP, JSON in and out.

:func:`route` answers an :class:`HttpRequest` and knows nothing of Lambda, so the local
dashboard (``fsm ui``) serves the same routes after its own access check. Lambda's three
HTTP shapes (API Gateway REST, payload 1.0; HTTP API, payload 2.0; function URLs) are read
by :func:`from_lambda_event` and answered by :func:`to_lambda_response`;
:func:`authorise` is the access check of the Lambda entry point (IAM, or a bearer token
kept in Secrets Manager). Every failure is ``{"error", "message"}`` with its status code;
an unexpected one is logged and answered 500 without its details.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from .. import codec
from ..errors import (
    ContextNotSerialisable,
    EventRejected,
    FsmError,
    InstanceError,
    InvalidDefinition,
    MalformedMessage,
    UnknownInstance,
    UnknownMachine,
    WaitTimeout,
)
from ..logs import log
from ..message import ID_PATTERN, check_correlation_id, new_event_id
from ..model import Machine
from ..record import Record, Status
from .client import Client, status_view
from .delivery import freshest_record
from .listing import ListingUnsupported
from .wiring import App

# Lambda's asynchronous payload and an SQS, SNS or EventBridge message are 256 KiB at most:
# a larger body could never travel as a message, so it is refused before it is read.
MAX_BODY_BYTES = 256 * 1024
# What a message adds around the context it carries (ids, step, fence, times).
MESSAGE_RESERVE = 4 * 1024
MAX_CONTEXT_BYTES = MAX_BODY_BYTES - MESSAGE_RESERVE
# API Gateway gives up on an integration after 29 s; a longer ?wait would answer nobody.
MAX_WAIT_SECONDS = 25.0
DEFAULT_PAGE, LARGEST_PAGE = 50, 1000


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)   # names in lower case
    body: bytes = b""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: dict[str, Any] | list[Any]
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(FsmError):
    """A request the API refuses: answered with ``status`` and ``{"error", "message"}``."""

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None):
        self.status, self.error, self.headers = status, error, headers or {}
        super().__init__(message)


def failure(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status, {"error": error, "message": message}, dict(headers or {}))


# ---- Lambda's HTTP events -------------------------------------------------------------------


def is_http_event(event: Mapping[str, Any]) -> bool:
    """API Gateway REST (``httpMethod``), HTTP API and function URLs (payload 2.0)."""
    context = event.get("requestContext")
    if not isinstance(context, Mapping):
        return False
    return "httpMethod" in event or (event.get("version") == "2.0" and isinstance(context.get("http"), Mapping))


def from_lambda_event(event: Mapping[str, Any]) -> HttpRequest:
    """The request in any of the three shapes; a body API Gateway base64-encoded is decoded."""
    context = event.get("requestContext") or {}
    if "httpMethod" in event:
        method, path = str(event["httpMethod"]), str(event.get("path") or "/")
    else:
        http = context.get("http") or {}
        method, path = str(http.get("method", "")), str(event.get("rawPath") or http.get("path") or "/")
    prefix = _stage_prefix(path, context)
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items() if v is not None}
    query = {str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items() if v is not None}
    return HttpRequest(method.upper(), path[len(prefix):] or "/", query, headers, _body(event))


def to_lambda_response(response: HttpResponse, event: Mapping[str, Any]) -> dict[str, Any]:
    """The answer all three shapes take. A ``location`` is made absolute to the caller's
    URL path (a REST API's or a named stage's prefix goes in front)."""
    headers = {"content-type": "application/json", **response.headers}
    if headers.get("location", "").startswith("/"):
        headers["location"] = _base_path(event) + headers["location"]
    return {"statusCode": response.status, "headers": headers, "body": codec.dumps(response.body),
            "isBase64Encoded": False}


def handle_http_event(application: App, event: Mapping[str, Any]) -> dict[str, Any]:
    """The Lambda entry point's HTTP branch: read, check access, route, answer."""
    started = time.monotonic()
    method = path = ""
    try:
        request = from_lambda_event(event)
        method, path = request.method, request.path
        response = authorise(application, request, event) or route(application, request)
    except ApiError as exc:
        response = failure(exc.status, exc.error, str(exc), exc.headers)
    except Exception as exc:  # noqa: BLE001 - the caller gets a status, the log gets the details
        response = _internal_error(exc, method, path)
    log(logging.INFO, "http request", method=method, path=path, status=response.status,
        ms=round((time.monotonic() - started) * 1000, 1))
    return to_lambda_response(response, event)


def _body(event: Mapping[str, Any]) -> bytes:
    raw = event.get("body")
    if raw is None:
        return b""
    if not event.get("isBase64Encoded"):
        return str(raw).encode("utf-8")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_body", "the body is marked base64-encoded but is not base64") from None


def _stage_prefix(path: str, context: Mapping[str, Any]) -> str:
    """An HTTP API's named stage leads its ``rawPath`` (``/prod/instances``)."""
    stage = context.get("stage")
    if isinstance(stage, str) and stage and stage != "$default" and path.startswith(f"/{stage}/"):
        return f"/{stage}"
    return ""


def _base_path(event: Mapping[str, Any]) -> str:
    context = event.get("requestContext") or {}
    if "httpMethod" in event:  # REST: requestContext.path is the whole path, stage first
        whole, own = str(context.get("path") or ""), str(event.get("path") or "")
        return whole[: -len(own)] if own and whole.endswith(own) else ""
    return _stage_prefix(str(event.get("rawPath") or ""), context)


# ---- access -----------------------------------------------------------------------------------


def authorise(application: App, request: HttpRequest, event: Mapping[str, Any] | None = None, *,
              secrets: Any = None) -> HttpResponse | None:
    """``None`` when the request may go on, else the refusal.

    ``api: {auth: iam}``: API Gateway or the function URL checked a SigV4 signature and
    says who signed (``requestContext``); ``api: {token_secret: ARN}`` (``auth: token``):
    ``Authorization: Bearer TOKEN`` must equal the secret, compared in constant time.
    Nothing configured: the API is off. ``secrets`` replaces the per-container cache
    of :mod:`sources.secrets` (tests).
    """
    api = application.settings.api or {}
    secret_arn = api.get("token_secret")
    mode = api.get("auth") or ("token" if secret_arn else None)
    if mode == "token":
        if not secret_arn:
            return _forbidden("api.auth is token but no api.token_secret names the token")
        return _check_token(application, request, secret_arn, secrets)
    if mode == "iam":
        if _iam_caller(event):
            return None
        return _forbidden("this API takes IAM-signed (SigV4) requests; this one carries no IAM identity")
    return _forbidden("the HTTP API is off: set api.auth to iam, or api.token_secret to a Secrets Manager ARN")


def _forbidden(message: str) -> HttpResponse:
    return failure(403, "forbidden", message)


def _iam_caller(event: Mapping[str, Any] | None) -> str | None:
    """Who signed: payload 2.0 puts it in ``authorizer.iam``, a REST API in ``identity``."""
    context = (event or {}).get("requestContext") or {}
    iam = (context.get("authorizer") or {}).get("iam") or {}
    identity = context.get("identity") or {}
    return iam.get("userArn") or iam.get("accessKey") or identity.get("userArn") or identity.get("accessKey")


def _check_token(application: App, request: HttpRequest, arn: str, secrets: Any) -> HttpResponse | None:
    scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _forbidden("this API takes an `Authorization: Bearer TOKEN` header")
    if secrets is None:
        from sources.secrets import shared_cache

        secrets = shared_cache()
    settings = application.settings
    try:
        expected = secrets.secret_string(arn, endpoint_url=settings.endpoints.get(arn), aws=settings.aws or None)
    except FsmError as exc:
        log(logging.ERROR, "could not read the API token", secret=arn, error=f"{type(exc).__name__}: {exc}")
        return failure(500, "internal_error", "the request could not be authorised; the error is logged")
    if not hmac.compare_digest(given.strip().encode("utf-8"), expected.encode("utf-8")):
        return _forbidden("the bearer token is not this API's token")
    return None


# ---- routing ----------------------------------------------------------------------------------

Handler = Callable[[Client, HttpRequest, str], HttpResponse]


def route(application: App, request: HttpRequest) -> HttpResponse:
    """Answer one request; access must have been checked already."""
    segments = [unquote(s) for s in request.path.strip("/").split("/")] if request.path.strip("/") else []
    allowed, param, handler = _match(segments, request.method)
    if handler is None:
        if allowed:
            return failure(405, "method_not_allowed", f"{request.path} takes {', '.join(allowed)}",
                           {"allow": ", ".join(allowed)})
        return failure(404, "not_found", f"no route {request.method} {request.path}; routes: "
                       + ", ".join(f"{m} /{'/'.join(t)}" for m, t, _ in ROUTES))
    if len(request.body) > MAX_BODY_BYTES:
        return failure(413, "payload_too_large", f"the body has {len(request.body)} bytes; at most "
                       f"{MAX_BODY_BYTES} are taken (a message carries at most 256 KiB)")
    try:
        return handler(Client(wiring=application.wiring), request, param)
    except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
        return _error_answer(exc, request, param, application.wiring.embedded)


def _match(segments: list[str], method: str) -> tuple[list[str], str, Handler | None]:
    """The methods the path takes, its one ``{...}`` parameter, and the handler of ``method``."""
    allowed: list[str] = []
    for route_method, template, handler in ROUTES:
        if len(template) != len(segments):
            continue
        if any(not t.startswith("{") and t != s for t, s in zip(template, segments)):
            continue
        param = next((s for t, s in zip(template, segments) if t.startswith("{")), "")
        if route_method == method:
            return allowed, param, handler
        allowed.append(route_method)
    return sorted(allowed), "", None


# Failures a caller can do something about, most specific first.
_ERRORS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int, str], ...] = (
    (UnknownInstance, 404, "unknown_instance"),
    (EventRejected, 409, "event_rejected"),
    (InstanceError, 409, "conflict"),
    (UnknownMachine, 400, "unknown_machine"),
    ((MalformedMessage, InvalidDefinition, ContextNotSerialisable), 400, "invalid_request"),
    (ListingUnsupported, 501, "not_supported"),
)


def _error_answer(exc: Exception, request: HttpRequest, param: str, embedded: bool) -> HttpResponse:
    if isinstance(exc, ApiError):
        return failure(exc.status, exc.error, str(exc), exc.headers)
    if isinstance(exc, UnknownInstance):
        # The store's own message names its URL, which may hold a password.
        later = "" if embedded else " (or not started yet: it exists once a worker has run its first step)"
        return failure(404, "unknown_instance", f"no instance {param!r}{later}")
    for kinds, status, error in _ERRORS:
        if isinstance(exc, kinds):
            return failure(status, error, str(exc))
    return _internal_error(exc, request.method, request.path)


def _internal_error(exc: BaseException, method: str, path: str) -> HttpResponse:
    log(logging.ERROR, "http request failed", method=method, path=path, error=f"{type(exc).__name__}: {exc}",
        traceback=traceback.format_exc())
    return failure(500, "internal_error", "the request failed; the error is logged")


# ---- reading requests -------------------------------------------------------------------------

# field -> (accepted types, what to say when it is wrong)
_Fields = dict[str, tuple[tuple[type, ...], str]]
START_FIELDS: _Fields = {"machine": ((str,), "a string"), "context": ((dict, type(None)), "an object"),
                         "input": ((dict, list, str, int, float, bool, type(None)), "any JSON value"),
                         "correlation_id": ((str, type(None)), "a string")}
EVENT_FIELDS: _Fields = {"event": ((str,), "a string"), "data": ((dict, type(None)), "an object"),
                         "event_id": ((str, type(None)), "a string")}
CANCEL_FIELDS: _Fields = {"reason": ((str, type(None)), "a string")}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_body(request: HttpRequest, fields: _Fields, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body as a JSON object with only ``fields``, of their types; an empty body is
    ``{}``."""
    try:
        doc = json.loads(request.body.decode("utf-8"), parse_constant=_refuse_constant) \
            if request.body.strip() else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body nests too deeply") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid_json", f"the body must be a JSON object, got {type(doc).__name__}")
    problems = [f"unknown field {name!r}" for name in doc if name not in fields]
    problems += [f"field {name!r} is required" for name in required if doc.get(name) in (None, "")]
    problems += [f"field {name!r} must be {fields[name][1]}, got {codec.dumps(value)[:40]}"
                 for name, value in doc.items() if name in fields and type(value) not in fields[name][0]]
    if problems:
        takes = f"fields: {', '.join(fields)}" if fields else "it takes no fields"
        raise ApiError(400, "invalid_request", "; ".join(problems) + f" ({takes})")
    return doc


def query_params(request: HttpRequest, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string, refusing names this route does not take (a typo would be ignored)."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
        raise ApiError(400, "invalid_request", f"unknown query parameter(s) {', '.join(unknown)}; {takes}")
    return {k: v for k, v in request.query.items() if v != ""}


def integer_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_request", f"query parameter {name!r} must be a whole number from {low} to "
                       f"{high}, got {raw!r}")
    return int(raw)


def _check_id(value: str, name: str) -> None:
    if not ID_PATTERN.fullmatch(value):
        raise ApiError(400, "invalid_request", f"field {name!r} must match {ID_PATTERN.pattern}, got {value!r}")


def _carryable(value: Mapping[str, Any], what: str) -> None:
    size = len(codec.dumps(value).encode("utf-8"))
    if size > MAX_CONTEXT_BYTES:
        raise ApiError(413, "payload_too_large", f"the {what} would be {size} bytes of JSON; a message carries "
                       f"a context of at most {MAX_CONTEXT_BYTES} (SQS, SNS and EventBridge take 256 KiB)")


def _record(client: Client, cid: str) -> Record:
    check_correlation_id(cid)
    found = freshest_record(client.wiring, cid)
    if found is None:
        raise UnknownInstance(cid)
    return found[1]


# ---- machines ---------------------------------------------------------------------------------


def list_machines(client: Client, request: HttpRequest, _: str) -> HttpResponse:
    query_params(request, ())
    return HttpResponse(200, {"machines": [
        {"name": m.name, "version": m.version, "initial": m.initial, "states": list(m.states)}
        for _, m in sorted(client.machines.items())]})


def describe_machine(client: Client, request: HttpRequest, name: str) -> HttpResponse:
    query_params(request, ())
    machine = client.machines.get(name)
    if machine is None:
        raise ApiError(404, "unknown_machine", f"no machine {name!r}; known: {', '.join(sorted(client.machines))}")
    return HttpResponse(200, machine_structure(machine))


def machine_structure(machine: Machine) -> dict[str, Any]:
    """What a diagram needs: states in definition order, each with its transitions
    (event -> target); action names only (their params may hold anything)."""
    states = []
    for state in machine.states.values():
        actions = {kind: action.name for kind, action in
                   (("entry", state.entry_action), ("do", state.do_action), ("exit", state.exit_action)) if action}
        states.append({"name": state.name, "initial": state.initial, "final": state.final,
                       "timeout": state.timeout, "timeout_event": state.timeout_event if state.timeout else None,
                       "actions": actions,
                       "transitions": {t.event: t.target for t in state.transitions.values()},
                       "local": [t.event for t in state.transitions.values() if t.local]})
    return {"name": machine.name, "version": machine.version, "initial": machine.initial,
            "max_retries": machine.max_retries, "states": states}


# ---- instances --------------------------------------------------------------------------------


def start_instance(client: Client, request: HttpRequest, _: str) -> HttpResponse:
    """201 for a new instance; 200 when ``correlation_id`` names one that exists."""
    query_params(request, ())
    body = json_body(request, START_FIELDS, required=("machine",))
    machine, cid, context = body["machine"], body.get("correlation_id"), body.get("context") or {}
    if "input" in body and "context" in body:
        raise ApiError(400, "invalid_request", "give `context` (the first context) or `input` (what the machine "
                       "starts with: any JSON for an ASL machine), not both")
    _carryable(context, "context")
    if cid is not None:
        _check_id(cid, "correlation_id")
        found = freshest_record(client.wiring, cid)
        if found is not None:
            if found[1]["machine"] != machine:
                raise ApiError(409, "conflict", f"instance {cid!r} exists and runs machine {found[1]['machine']!r}, "
                               f"not {machine!r}")
            return HttpResponse(200, {"correlation_id": cid}, {"location": f"/instances/{cid}"})
    try:
        if "input" in body or getattr(client.machines.get(machine), "start", None) is not None:
            cid = client.start(machine, None, cid, input=body.get("input", context))
        else:
            cid = client.start(machine, context, cid)
    except ValueError as exc:  # an input the machine cannot start from
        raise ApiError(400, "invalid_request", str(exc)) from None
    return HttpResponse(201, {"correlation_id": cid}, {"location": f"/instances/{cid}"})


def list_instances(client: Client, request: HttpRequest, _: str) -> HttpResponse:
    query = query_params(request, ("machine", "status", "state", "since", "limit", "next"))
    status = query.get("status")
    if status is not None and status not in set(Status):
        raise ApiError(400, "invalid_request", f"query parameter 'status' must be one of "
                       f"{', '.join(Status)}, got {status!r}")
    limit = integer_param(query, "limit", DEFAULT_PAGE, 1, LARGEST_PAGE)
    since = _since(query.get("since"))
    try:
        page = client.list(machine=query.get("machine"), status=status, state=query.get("state"),
                           since=since, limit=limit, cursor=query.get("next"))
    except ValueError as exc:  # a bad cursor, a state no machine (or several) has
        raise ApiError(400, "invalid_request", str(exc)) from None
    return HttpResponse(200, page)


def _since(raw: str | None) -> float | None:
    """Epoch seconds, or an ISO 8601 time (UTC unless it says otherwise)."""
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            seconds = math.nan
        else:
            seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(seconds):
        raise ApiError(400, "invalid_request", f"query parameter 'since' must be epoch seconds or an ISO 8601 "
                       f"time (2024-05-01T12:00:00Z), got {raw!r}")
    return seconds


def instance_status(client: Client, request: HttpRequest, cid: str) -> HttpResponse:
    query_params(request, ())
    return HttpResponse(200, client.status(cid))


def instance_history(client: Client, request: HttpRequest, cid: str) -> HttpResponse:
    """One page of the history, oldest first: ``?page=N&size=M`` (pages from 1), or
    ``?limit=M&next=CURSOR`` with the ``next`` of the page before."""
    query = query_params(request, ("page", "size", "limit", "next"))
    for one, other in (("page", "next"), ("size", "limit")):
        if one in query and other in query:
            raise ApiError(400, "invalid_request", f"give query parameter {one!r} or {other!r}, not both")
    size = integer_param(query, "size" if "size" in query else "limit", DEFAULT_PAGE, 1, LARGEST_PAGE)
    if "page" in query:
        first = (integer_param(query, "page", 1, 1, 10**9) - 1) * size
    else:
        first = integer_param(query, "next", 0, 0, 10**9)
    found = client.history_slice(cid, first, size)   # reads this page only, on every store
    after = first + size
    return HttpResponse(200, {"correlation_id": cid, "history": found["entries"], "total": found["total"],
                              "next": str(after) if after < found["total"] else None})


def send_event(client: Client, request: HttpRequest, cid: str) -> HttpResponse:
    """202 once the event is in the instance's inbox; with ``?wait=SECONDS``, 200 and the
    status right after this event was applied, 409 when it was rejected, or 202 and
    ``"applied": false`` when the wait ends first. An ``event_id`` seen before is not
    appended again."""
    wait = _wait_seconds(query_params(request, ("wait",)))
    body = json_body(request, EVENT_FIELDS, required=("event",))
    event, data, event_id = body["event"], body.get("data") or {}, body.get("event_id")
    if event_id is not None:
        _check_id(event_id, "event_id")
    record = _record(client, cid)
    duplicate = event_id is not None and event_id in (record.get("event_ids") or [])
    if not duplicate:
        _carryable({**(record.get("context") or {}), **data}, "context with this event's data")
    seen = {"duplicate": True} if duplicate else {}
    if wait is None:
        if not duplicate:
            event_id = client.send_event(cid, event, data, event_id)
        return HttpResponse(202, {"correlation_id": cid, "event_id": event_id, **seen})
    event_id = event_id or new_event_id()
    try:
        if not duplicate:
            client.send_event(cid, event, data, event_id)
        applied = client.applied(cid, event_id, wait, sleep=time.sleep)
    except WaitTimeout:
        return HttpResponse(202, {**status_view(_record(client, cid)), "event_id": event_id, "applied": False,
                                  **seen})
    if not applied["event"]["applied"] and applied["event"]["error"]:
        raise ApiError(409, "event_rejected", str(applied["event"]["error"]))
    return HttpResponse(200, {**applied, "event_id": applied["event"]["id"], "applied": True, **seen})


def _wait_seconds(query: Mapping[str, str]) -> float | None:
    if "wait" not in query:
        return None
    try:
        wait = float(query["wait"])
    except ValueError:
        wait = math.nan
    if not (math.isfinite(wait) and wait >= 0):
        raise ApiError(400, "invalid_request", f"query parameter 'wait' must be seconds (0 to "
                       f"{MAX_WAIT_SECONDS:g}), got {query['wait']!r}")
    return min(wait, MAX_WAIT_SECONDS)


def cancel_instance(client: Client, request: HttpRequest, cid: str) -> HttpResponse:
    query_params(request, ())
    reason = json_body(request, CANCEL_FIELDS).get("reason") or "cancelled"
    client.cancel(cid, reason)
    return HttpResponse(202, {"correlation_id": cid})


def retry_instance(client: Client, request: HttpRequest, cid: str) -> HttpResponse:
    query_params(request, ())
    json_body(request, {})
    client.retry(cid)
    return HttpResponse(202, {"correlation_id": cid})


# (method, path segments, a "{...}" one being the parameter, handler), in the order 404s list them.
ROUTES: tuple[tuple[str, tuple[str, ...], Handler], ...] = (
    ("GET", ("machines",), list_machines),
    ("GET", ("machines", "{name}"), describe_machine),
    ("POST", ("instances",), start_instance),
    ("GET", ("instances",), list_instances),
    ("GET", ("instances", "{id}"), instance_status),
    ("GET", ("instances", "{id}", "history"), instance_history),
    ("POST", ("instances", "{id}", "events"), send_event),
    ("POST", ("instances", "{id}", "cancel"), cancel_instance),
    ("POST", ("instances", "{id}", "retry"), retry_instance),
)
