"""The HTTP API through ``handle_event``, on the three shapes AWS delivers (API Gateway REST,
payload 1.0; HTTP API, payload 2.0; a function URL), read from ``shared/lambda-events``
beside the repository (``FSM_LAMBDA_EVENTS`` names another folder) with only the method,
path, query, body and identity replaced. The embedded runtime (``memory://``, no stream)
runs the instances, so an answer already shows where a command left them; the few tests
of a stream use a bus the test drains by hand.
"""

from __future__ import annotations

import base64
import copy
import hmac
import json
import logging
import os
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
from protocol_kit import HandBus

from config.loader import load_file, load_text
from config.settings import Settings
from fsm.app import App
from fsm.app import http as api
from fsm.app.client import Client
from fsm.app.delivery import process
from fsm.app.intake import handle_event
from fsm.app.wiring import build
from fsm.message import Kind, decode
from sources.secrets import SecretCache, shared_cache

ROOT = Path(__file__).resolve().parents[2]
# AWS's event shapes: the project's shared folder beside the checkout when it is there,
# else the copy kept with the tests (FSM_LAMBDA_EVENTS names another folder).
SHARED_EVENTS = ROOT.parent / "shared" / "lambda-events"
EVENTS = Path(os.environ.get("FSM_LAMBDA_EVENTS") or (SHARED_EVENTS if SHARED_EVENTS.is_dir()
                                                       else ROOT / "tests" / "events"))
SHAPES = {"rest": "apigw-rest-v1.json", "http-api": "apigw-http-api-v2.json", "function-url": "function-url.json"}
MACHINES = """
machines:
  - name: pizza
    states:
      - name: ordered
        initial: true
        transitions:
          - {event: PIZZA_READY, target: delivering}
          - {event: BURNT, target: binned}
      - name: delivering
        timeout: 3600
        transitions:
          - {event: DELIVERED, target: delivered}
          - {event: timeout, target: delivered}
      - {name: delivered, final: true}
      - {name: binned, final: true}
  - name: oven
    max_retries: 0
    states:
      - name: heating
        initial: true
        do_action: {class: protocol_kit.Record, params: {event: no_such_event}}
        transitions: [{event: hot, target: baked}]
      - {name: baked, final: true}
"""
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:fsm-api-token-AbCdEf"


def shape(name: str) -> dict[str, Any]:
    path = EVENTS / SHAPES[name]
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests read AWS's event shapes from there (or FSM_LAMBDA_EVENTS)")
    return json.loads(path.read_text())


def http_event(kind: str, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
               headers: dict[str, str] | None = None, iam: bool = True, encode: bool = False) -> dict[str, Any]:
    """``kind``'s event for this request; ``body`` is JSON-encoded unless it is text or bytes."""
    event = copy.deepcopy(shape(kind))
    raw = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    if isinstance(raw, bytes) or (encode and raw is not None):
        raw = base64.b64encode(raw if isinstance(raw, bytes) else raw.encode()).decode()
        encode = True
    event.update(body=raw, isBase64Encoded=encode)
    event["headers"] = {**(event.get("headers") or {}), **(headers or {})}
    context = event["requestContext"]
    if kind == "rest":
        event.update(httpMethod=method, path=path, queryStringParameters=query or None,
                     multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None)
        context.update(httpMethod=method, path=f"/{context['stage']}{path}")
        context["identity"].update(userArn="arn:aws:iam::123456789012:user/ops" if iam else None,
                                   accessKey="AKIAIOSFODNN7EXAMPLE" if iam else None)
        return event
    event.update(rawPath=path, rawQueryString="&".join(f"{k}={v}" for k, v in (query or {}).items()))
    event.pop("queryStringParameters", None)
    if query:
        event["queryStringParameters"] = dict(query)
    context["http"].update(method=method, path=path)
    if iam:
        context["authorizer"] = copy.deepcopy(shape("function-url")["requestContext"]["authorizer"])
    else:
        context.pop("authorizer", None)
    return event


def make_app(api_settings: dict[str, Any] | None = None, bus: Any = None) -> App:
    definitions = load_text(MACHINES)
    settings = Settings(store=["memory://"], api={"auth": "iam"} if api_settings is None else api_settings)
    return App(definitions, settings, build(definitions.machines, settings, bus=bus))


@pytest.fixture
def app() -> App:
    return make_app()


class Answer:
    def __init__(self, raw: dict[str, Any]):
        assert set(raw) == {"statusCode", "headers", "body", "isBase64Encoded"}
        assert raw["isBase64Encoded"] is False and raw["headers"]["content-type"] == "application/json"
        self.status, self.headers, self.body = raw["statusCode"], raw["headers"], json.loads(raw["body"])

    def __repr__(self) -> str:
        return f"<{self.status} {self.body}>"


def call(application: App, method: str, path: str, body: Any = None, kind: str = "http-api",
         **options: Any) -> Answer:
    return Answer(handle_event(application, http_event(kind, method, path, body, **options)))


def start(application: App, machine: str = "pizza", cid: str | None = None, **context: Any) -> str:
    answer = call(application, "POST", "/instances", {"machine": machine, "context": context,
                                                       **({"correlation_id": cid} if cid else {})})
    assert answer.status == 201, answer
    return answer.body["correlation_id"]


def assert_error(answer: Answer, status: int, error: str, *words: str) -> None:
    assert answer.status == status, answer
    assert set(answer.body) == {"error", "message"} and answer.body["error"] == error
    for word in words:
        assert word in answer.body["message"], answer.body["message"]


# ---- the three shapes -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_every_shape_starts_reads_and_moves_an_instance(app: App, kind: str) -> None:
    created = call(app, "POST", "/instances", {"machine": "pizza", "context": {"items": [1]}}, kind)
    assert created.status == 201 and set(created.body) == {"correlation_id"}
    cid = created.body["correlation_id"]
    status = call(app, "GET", f"/instances/{cid}", kind=kind)
    assert status.status == 200
    assert status.body["state"] == "ordered" and status.body["status"] == "waiting"
    assert status.body["context"] == {"items": [1]}
    sent = call(app, "POST", f"/instances/{cid}/events", {"event": "PIZZA_READY"}, kind, query={"wait": "5"})
    assert sent.status == 200 and sent.body["applied"] is True and sent.body["state"] == "delivering"


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_a_base64_body_is_decoded(app: App, kind: str) -> None:
    answer = call(app, "POST", "/instances", {"machine": "pizza", "context": {"n": 1}}, kind, encode=True)
    assert answer.status == 201
    assert Client(wiring=app.wiring).status(answer.body["correlation_id"])["context"] == {"n": 1}


def test_the_function_url_sample_itself_starts_an_instance(app: App) -> None:
    """Unchanged: a POST /instances whose body API Gateway base64-encoded."""
    event = shape("function-url")
    assert event["isBase64Encoded"] is True
    answer = Answer(handle_event(app, event))
    assert answer.status == 201
    assert Client(wiring=app.wiring).status(answer.body["correlation_id"])["context"] == {"items": []}


def test_a_body_that_is_not_base64_is_a_400(app: App) -> None:
    event = http_event("function-url", "POST", "/instances")
    event.update(body="not base64 !!", isBase64Encoded=True)
    assert_error(Answer(handle_event(app, event)), 400, "invalid_body", "base64")


def test_an_http_api_stage_prefix_is_not_part_of_the_route(app: App) -> None:
    cid = start(app)
    event = http_event("http-api", "GET", f"/prod/instances/{cid}")
    event["requestContext"]["stage"] = "prod"
    assert Answer(handle_event(app, event)).body["correlation_id"] == cid


def test_location_names_the_new_instance_under_the_callers_prefix(app: App) -> None:
    rest = call(app, "POST", "/instances", {"machine": "pizza", "correlation_id": "loc-1"}, "rest")
    assert rest.headers["location"] == "/Prod/instances/loc-1"
    url = call(app, "POST", "/instances", {"machine": "pizza", "correlation_id": "loc-2"}, "function-url")
    assert url.headers["location"] == "/instances/loc-2"


def test_route_answers_a_plain_request_without_lambda(app: App) -> None:
    """What the local dashboard calls, after its own access check."""
    body = json.dumps({"machine": "pizza", "correlation_id": "plain-1"}).encode()
    created = api.route(app, api.HttpRequest("POST", "/instances", {}, {"content-type": "application/json"}, body))
    assert created == api.HttpResponse(201, {"correlation_id": "plain-1"}, {"location": "/instances/plain-1"})
    read = api.route(app, api.HttpRequest("GET", "/instances/plain-1/"))
    assert read.status == 200 and read.body["state"] == "ordered"


def test_from_lambda_event_reads_each_shape() -> None:
    rest = api.from_lambda_event(http_event("rest", "GET", "/instances/a", query={"x": "1"},
                                            headers={"X-Token": "t"}))
    assert rest == api.HttpRequest("GET", "/instances/a", {"x": "1"}, {**{k.lower(): v for k, v in
                                   shape("rest")["headers"].items()}, "x-token": "t"}, b"")
    v2 = api.from_lambda_event(shape("http-api"))
    assert (v2.method, v2.path, v2.query) == ("POST", "/instances/order-123/events", {"wait": "5"})
    assert json.loads(v2.body) == {"event": "PIZZA_READY", "data": {"oven": 2}}
    assert api.from_lambda_event(shape("function-url")).body == b'{"machine": "pizza", "context": {"items": []}}'


def test_an_http_event_is_answered_not_dead_lettered(app: App) -> None:
    call(app, "GET", "/machines")
    assert app.wiring.metrics.counts.get("DeadLetters", 0) == 0  # type: ignore[attr-defined]


# ---- POST /instances --------------------------------------------------------------------------


def test_starting_with_an_existing_id_is_a_200_with_that_id(app: App) -> None:
    first = call(app, "POST", "/instances", {"machine": "pizza", "correlation_id": "order-17"})
    again = call(app, "POST", "/instances", {"machine": "pizza", "correlation_id": "order-17"})
    assert (first.status, again.status) == (201, 200)
    assert again.body == {"correlation_id": "order-17"}
    assert len(Client(wiring=app.wiring).history("order-17")) == 1


def test_starting_an_existing_id_on_another_machine_is_a_409(app: App) -> None:
    start(app, cid="order-18")
    assert_error(call(app, "POST", "/instances", {"machine": "oven", "correlation_id": "order-18"}),
                 409, "conflict", "pizza")


@pytest.mark.parametrize(("body", "error", "words"), [
    ("{not json", "invalid_json", ["not JSON"]),
    ('{"machine": "pizza", "context": {"x": NaN}}', "invalid_json", ["NaN"]),
    ("[1, 2]", "invalid_json", ["object", "list"]),
    ("[" * 100_000, "invalid_json", ["nests"]),
    (b"\xff\xfe", "invalid_json", ["not JSON"]),
    ("", "invalid_request", ["'machine' is required"]),
    ({"context": {}}, "invalid_request", ["'machine' is required"]),
    ({"machine": 7}, "invalid_request", ["'machine' must be a string"]),
    ({"machine": "pizza", "context": [1]}, "invalid_request", ["'context' must be an object"]),
    ({"machine": "pizza", "ctx": {}}, "invalid_request", ["unknown field 'ctx'", "machine, context"]),
    ({"machine": "pizza", "correlation_id": "has space"}, "invalid_request", ["'correlation_id' must match"]),
    ({"machine": "calzone"}, "unknown_machine", ["calzone", "known: oven, pizza"]),
])
def test_a_bad_start_is_a_400_naming_the_field(app: App, body: Any, error: str, words: list[str]) -> None:
    assert_error(call(app, "POST", "/instances", body), 400, error, *words)


def test_a_body_above_the_limit_is_a_413(app: App) -> None:
    body = {"machine": "pizza", "context": {"blob": "x" * api.MAX_BODY_BYTES}}
    assert_error(call(app, "POST", "/instances", body), 413, "payload_too_large", str(api.MAX_BODY_BYTES))


def test_a_context_no_bus_can_carry_is_a_413(app: App) -> None:
    blob = "x" * (api.MAX_CONTEXT_BYTES + 10)
    assert len(json.dumps({"machine": "pizza", "context": {"blob": blob}})) < api.MAX_BODY_BYTES
    assert_error(call(app, "POST", "/instances", {"machine": "pizza", "context": {"blob": blob}}),
                 413, "payload_too_large", "context")


def test_event_data_that_would_grow_the_context_too_far_is_a_413(app: App) -> None:
    half = "x" * (api.MAX_CONTEXT_BYTES // 2 + 10)
    cid = start(app, a=half)
    assert_error(call(app, "POST", f"/instances/{cid}/events", {"event": "PIZZA_READY", "data": {"b": half}}),
                 413, "payload_too_large", "event's data")


# ---- POST /instances/{id}/events --------------------------------------------------------------


def test_an_event_is_a_202_and_applied_on_the_embedded_runtime(app: App) -> None:
    cid = start(app)
    sent = call(app, "POST", f"/instances/{cid}/events", {"event": "PIZZA_READY", "data": {"oven": 2}})
    assert sent.status == 202 and sent.body["correlation_id"] == cid and sent.body["event_id"]
    status = call(app, "GET", f"/instances/{cid}").body
    assert status["state"] == "delivering" and status["context"] == {"oven": 2}


def test_an_event_id_seen_before_is_not_sent_again(app: App) -> None:
    cid = start(app)
    first = call(app, "POST", f"/instances/{cid}/events", {"event": "PIZZA_READY", "event_id": "kitchen-1"})
    again = call(app, "POST", f"/instances/{cid}/events", {"event": "PIZZA_READY", "event_id": "kitchen-1"})
    assert (first.status, again.status) == (202, 202)
    assert again.body == {"correlation_id": cid, "event_id": "kitchen-1", "duplicate": True}
    waited = call(app, "POST", f"/instances/{cid}/events", {"event": "PIZZA_READY", "event_id": "kitchen-1"},
                  query={"wait": "1"})
    assert waited.status == 200 and waited.body["state"] == "delivering"
    assert [e["event"] for e in Client(wiring=app.wiring).history(cid)] == [None, "PIZZA_READY"]


def test_an_event_the_state_does_not_take_is_a_409(app: App) -> None:
    cid = start(app)
    assert_error(call(app, "POST", f"/instances/{cid}/events", {"event": "DELIVERED"}), 409, "event_rejected",
                 "ordered", "PIZZA_READY")


def test_an_event_to_a_finished_instance_is_a_409(app: App) -> None:
    cid = start(app)
    call(app, "POST", f"/instances/{cid}/events", {"event": "BURNT"})
    assert_error(call(app, "POST", f"/instances/{cid}/events", {"event": "PIZZA_READY"}), 409, "conflict", "done")


def test_an_event_to_an_unknown_instance_is_a_404_naming_no_store(app: App) -> None:
    answer = call(app, "POST", "/instances/nobody/events", {"event": "PIZZA_READY"})
    assert_error(answer, 404, "unknown_instance", "'nobody'")
    assert "memory://" not in answer.body["message"]


@pytest.mark.parametrize(("body", "query", "words"), [
    ({"data": {}}, None, ["'event' is required"]),
    ({"event": "PIZZA_READY", "data": "hot"}, None, ["'data' must be an object"]),
    ({"event": "PIZZA_READY", "event_id": "a b"}, None, ["'event_id' must match"]),
    ({"event": "PIZZA_READY"}, {"wait": "soon"}, ["'wait'"]),
    ({"event": "PIZZA_READY"}, {"wait": "-1"}, ["'wait'"]),
    ({"event": "PIZZA_READY"}, {"wiat": "5"}, ["wiat", "it takes wait"]),
])
def test_a_bad_event_is_a_400_naming_the_field(app: App, body: Any, query: Any, words: list[str]) -> None:
    cid = start(app)
    assert_error(call(app, "POST", f"/instances/{cid}/events", body, query=query), 400, "invalid_request", *words)


# ---- with a stream: the event is applied elsewhere ---------------------------------------------


class Stream:
    """A stream the test drains by hand, as workers would."""

    def __init__(self) -> None:
        self.bus = HandBus()
        self.app = make_app(bus=self.bus)

    def drain(self, _seconds: float = 0.0) -> None:
        """Deliver what was sent, timers aside: their hour has not come."""
        timers = []
        while self.bus.sent:
            envelope = self.bus.sent.pop(0)
            if decode(envelope.body).kind == Kind.TIMER:
                timers.append(envelope)
            else:
                process(self.app.wiring, envelope.body)
        self.bus.sent[:0] = timers


@pytest.fixture
def stream() -> Stream:
    return Stream()


def test_with_a_stream_a_wait_that_ends_first_is_a_202_not_applied(stream: Stream) -> None:
    cid = start(stream.app)
    assert_error(call(stream.app, "GET", f"/instances/{cid}"), 404, "unknown_instance", "not started yet")
    stream.drain()
    answer = call(stream.app, "POST", f"/instances/{cid}/events", {"event": "PIZZA_READY"}, query={"wait": "0.05"})
    assert answer.status == 202 and answer.body["applied"] is False
    assert answer.body["state"] == "ordered" and answer.body["event_id"]


def test_with_a_stream_a_wait_sees_the_event_applied(stream: Stream, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = start(stream.app)
    stream.drain()
    monkeypatch.setattr(api, "time", types.SimpleNamespace(monotonic=api.time.monotonic, sleep=stream.drain))
    answer = call(stream.app, "POST", f"/instances/{cid}/events", {"event": "PIZZA_READY"}, query={"wait": "5"})
    assert answer.status == 200 and answer.body["applied"] is True and answer.body["state"] == "delivering"


def test_with_a_stream_a_wait_reports_the_event_rejected_on_arrival(
        stream: Stream, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both events pass the check against the waiting instance; the first one sent moves it
    on, so the second is rejected when it arrives: its waiter gets the 409, not the first's."""
    cid = start(stream.app)
    stream.drain()
    first = call(stream.app, "POST", f"/instances/{cid}/events", {"event": "PIZZA_READY"})
    assert first.status == 202
    monkeypatch.setattr(api, "time", types.SimpleNamespace(monotonic=api.time.monotonic, sleep=stream.drain))
    assert_error(call(stream.app, "POST", f"/instances/{cid}/events", {"event": "BURNT"}, query={"wait": "5"}),
                 409, "event_rejected", "BURNT")
    again = call(stream.app, "POST", f"/instances/{cid}/events", {"event": "PIZZA_READY",
                                                                   "event_id": first.body["event_id"]},
                 query={"wait": "5"})
    assert again.status == 200 and again.body["state"] == "delivering" and again.body["duplicate"] is True


# ---- cancel and retry -------------------------------------------------------------------------


def test_cancel_is_a_202_and_a_second_cancel_a_409(app: App) -> None:
    cid = start(app)
    answer = call(app, "POST", f"/instances/{cid}/cancel", {"reason": "customer called"})
    assert answer.status == 202 and answer.body == {"correlation_id": cid}
    status = call(app, "GET", f"/instances/{cid}").body
    assert status["status"] == "cancelled" and "customer called" in status["last_error"]
    assert_error(call(app, "POST", f"/instances/{cid}/cancel"), 409, "conflict", "cancelled")
    assert_error(call(app, "POST", "/instances/nobody/cancel"), 404, "unknown_instance")


def test_retry_of_a_failed_instance_is_a_202_and_of_another_a_409(app: App) -> None:
    failed = start(app, "oven")
    assert call(app, "GET", f"/instances/{failed}").body["status"] == "failed"
    answer = call(app, "POST", f"/instances/{failed}/retry")
    assert answer.status == 202 and answer.body == {"correlation_id": failed}
    assert call(app, "GET", f"/instances/{failed}").body["retries"] == 1  # it ran, and failed, again
    assert_error(call(app, "POST", f"/instances/{start(app)}/retry"), 409, "conflict", "only a failed")
    assert_error(call(app, "POST", f"/instances/{failed}/retry", {"force": True}), 400, "invalid_request",
                 "no fields")


# ---- reading ----------------------------------------------------------------------------------


def test_status_of_an_unknown_or_malformed_id(app: App) -> None:
    assert_error(call(app, "GET", "/instances/nobody"), 404, "unknown_instance")
    assert_error(call(app, "GET", "/instances/bad%20id"), 400, "invalid_request", "must match")


def test_history_pages_by_page_and_size_or_limit_and_next(app: App) -> None:
    cid = start(app)
    for event in ("PIZZA_READY", "DELIVERED"):
        call(app, "POST", f"/instances/{cid}/events", {"event": event})
    whole = call(app, "GET", f"/instances/{cid}/history").body
    assert whole["total"] == 3 and whole["next"] is None
    assert [e["to"] for e in whole["history"]] == ["ordered", "delivering", "delivered"]
    second = call(app, "GET", f"/instances/{cid}/history", query={"page": "2", "size": "2"}).body
    assert [e["to"] for e in second["history"]] == ["delivered"] and second["next"] is None
    first = call(app, "GET", f"/instances/{cid}/history", query={"limit": "2"}).body
    assert [e["to"] for e in first["history"]] == ["ordered", "delivering"] and first["next"] == "2"
    rest = call(app, "GET", f"/instances/{cid}/history", query={"limit": "2", "next": first["next"]}).body
    assert rest["history"] == second["history"]


@pytest.mark.parametrize("query", [{"page": "1", "next": "2"}, {"size": "1", "limit": "1"}, {"limit": "0"},
                                   {"size": "x"}, {"page": "0"}, {"offset": "1"}])
def test_bad_history_paging_is_a_400(app: App, query: dict[str, str]) -> None:
    assert_error(call(app, "GET", f"/instances/{start(app)}/history", query=query), 400, "invalid_request")


def test_history_of_an_unknown_instance_is_a_404(app: App) -> None:
    assert_error(call(app, "GET", "/instances/nobody/history"), 404, "unknown_instance")


def test_machines_are_listed_and_drawn(app: App) -> None:
    listed = call(app, "GET", "/machines").body["machines"]
    assert [m["name"] for m in listed] == ["oven", "pizza"]
    assert listed[1]["initial"] == "ordered" and listed[1]["states"][0] == "ordered"
    pizza = call(app, "GET", "/machines/pizza").body
    states = {s["name"]: s for s in pizza["states"]}
    assert pizza["initial"] == "ordered" and states["ordered"]["initial"] is True
    assert states["ordered"]["transitions"] == {"PIZZA_READY": "delivering", "BURNT": "binned"}
    assert states["delivering"]["timeout"] == 3600 and states["delivering"]["timeout_event"] == "timeout"
    assert states["delivered"]["final"] is True and states["delivered"]["transitions"] == {}
    oven = call(app, "GET", "/machines/oven").body
    assert oven["states"][0]["actions"] == {"do": "protocol_kit.Record"}
    assert_error(call(app, "GET", "/machines/calzone"), 404, "unknown_machine", "oven, pizza")


# ---- GET /instances (Client.list) -------------------------------------------------------------

def test_instances_are_listed_filtered_and_paged(app: App) -> None:
    ids = [start(app, cid=f"list-{n}") for n in range(3)]
    call(app, "POST", f"/instances/{ids[0]}/events", {"event": "BURNT"})
    failed = start(app, "oven", cid="list-oven")
    everything = call(app, "GET", "/instances").body
    assert {i["correlation_id"] for i in everything["instances"]} == {*ids, failed}
    assert everything["next"] is None
    pizzas = call(app, "GET", "/instances", query={"machine": "pizza", "status": "waiting"}).body
    assert {i["correlation_id"] for i in pizzas["instances"]} == set(ids[1:])
    in_state = call(app, "GET", "/instances", query={"state": "binned"}).body
    assert [i["correlation_id"] for i in in_state["instances"]] == [ids[0]]
    seen, cursor = [], None
    while True:
        page = call(app, "GET", "/instances", query={"limit": "1", **({"next": cursor} if cursor else {})}).body
        assert len(page["instances"]) <= 1
        seen += [i["correlation_id"] for i in page["instances"]]
        if not (cursor := page["next"]):
            break
    assert sorted(seen) == sorted([*ids, failed])


def test_instances_since_and_empty_filters(app: App) -> None:
    cid = start(app)
    assert cid in {i["correlation_id"] for i in call(app, "GET", "/instances", query={
        "machine": "", "status": "", "state": "", "since": "2000-01-01T00:00:00Z"}).body["instances"]}
    assert call(app, "GET", "/instances", query={"since": "4102444800"}).body["instances"] == []


@pytest.mark.parametrize(("query", "word"), [({"status": "sleeping"}, "status"), ({"limit": "0"}, "limit"),
                                             ({"limit": "5000"}, "limit"), ({"since": "yesterday"}, "since"),
                                             ({"sort": "state"}, "sort")])
def test_a_bad_listing_query_is_a_400(app: App, query: dict[str, str], word: str) -> None:
    assert_error(call(app, "GET", "/instances", query=query), 400, "invalid_request", word)


# ---- routes and failures ----------------------------------------------------------------------


def test_an_unknown_route_is_a_404_listing_the_routes(app: App) -> None:
    assert_error(call(app, "GET", "/pizzas"), 404, "not_found", "GET /instances/{id}/history")


def test_a_known_path_with_another_method_is_a_405(app: App) -> None:
    answer = call(app, "DELETE", "/instances")
    assert_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "GET, POST"


def test_an_unexpected_failure_is_a_500_without_its_details(app: App, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    def broken(self: Client, cid: str) -> Any:
        raise RuntimeError("the store said: password=hunter2")

    cid = start(app)
    monkeypatch.setattr(Client, "status", broken)
    with caplog.at_level(logging.ERROR, logger="fsm"):
        answer = call(app, "GET", f"/instances/{cid}")
    assert_error(answer, 500, "internal_error", "logged")
    assert "hunter2" not in json.dumps(answer.body) and "Traceback" not in json.dumps(answer.body)
    assert "hunter2" in caplog.text and "Traceback" in caplog.text


# ---- access -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_with_no_api_settings_every_route_is_a_403(kind: str) -> None:
    closed = make_app({})
    for method, path in (("GET", "/machines"), ("GET", "/instances/x"), ("POST", "/instances")):
        assert_error(call(closed, method, path, {"machine": "pizza"}, kind), 403, "forbidden", "api.auth")


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_iam_requires_a_signed_caller(app: App, kind: str) -> None:
    assert_error(call(app, "GET", "/machines", kind=kind, iam=False), 403, "forbidden", "IAM")
    assert call(app, "GET", "/machines", kind=kind, iam=True).status == 200


def test_iam_refuses_a_plain_request_without_an_event(app: App) -> None:
    assert api.authorise(app, api.HttpRequest("GET", "/machines")) is not None


class FakeSecrets:
    def __init__(self, value: str = "s3cret-token\n"):
        self.value, self.calls = value, 0

    def get_secret_value(self, SecretId: str) -> dict[str, str]:  # boto3 names it so
        assert SecretId == SECRET_ARN
        self.calls += 1
        return {"ARN": SecretId, "SecretString": self.value}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_a_bearer_token_is_checked_against_the_secret(kind: str) -> None:
    application = make_app({"token_secret": SECRET_ARN})
    secrets = SecretCache(client=FakeSecrets())

    def check(headers: dict[str, str]) -> api.HttpResponse | None:
        event = http_event(kind, "GET", "/machines", headers=headers, iam=False)
        return api.authorise(application, api.from_lambda_event(event), event, secrets=secrets)

    assert check(bearer("s3cret-token")) is None
    for headers in ({}, bearer("wrong"), bearer("s3cret-token-and-more"), {"Authorization": "s3cret-token"},
                    {"Authorization": "Basic czNjcmV0LXRva2Vu"}):
        refused = check(headers)
        assert refused is not None and refused.status == 403 and refused.body["error"] == "forbidden"


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    application = make_app({"auth": "token", "token_secret": SECRET_ARN})
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    request = api.HttpRequest("GET", "/machines", headers={"authorization": "Bearer guess"})
    refused = api.authorise(application, request, None, secrets=SecretCache(client=FakeSecrets()))
    assert refused is not None and refused.status == 403
    assert compared == [(b"guess", b"s3cret-token")]


def test_the_secret_is_read_once_per_container_until_it_may_have_rotated() -> None:
    application = make_app({"token_secret": SECRET_ARN})
    fake, now = FakeSecrets(), [0.0]
    secrets = SecretCache(client=fake, ttl=300, clock=lambda: now[0])
    request = api.HttpRequest("GET", "/machines", headers={"authorization": "Bearer s3cret-token"})
    for _ in range(3):
        assert api.authorise(application, request, None, secrets=secrets) is None
    assert fake.calls == 1
    now[0], fake.value = 301.0, "rotated"
    assert api.authorise(application, request, None, secrets=secrets) is not None
    assert fake.calls == 2


def test_token_auth_without_a_secret_is_a_403() -> None:
    answer = call(make_app({"auth": "token"}), "GET", "/machines", headers=bearer("anything"))
    assert_error(answer, 403, "forbidden", "token_secret")


@pytest.fixture
def secrets_manager() -> Any:
    moto = pytest.importorskip("moto")
    import boto3

    shared_cache().clear()
    with moto.mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")
    shared_cache().clear()


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_the_lambda_handler_reads_the_token_from_secrets_manager(secrets_manager: Any, kind: str) -> None:
    arn = secrets_manager.create_secret(Name=f"fsm-api-{uuid.uuid4().hex[:8]}",
                                        SecretString="from-secrets-manager")["ARN"]
    application = make_app({"token_secret": arn})
    assert call(application, "GET", "/machines", kind=kind, iam=False,
                headers=bearer("from-secrets-manager")).status == 200
    assert_error(call(application, "GET", "/machines", kind=kind, headers=bearer("from-secrets")), 403, "forbidden")


def test_a_secret_that_cannot_be_read_is_a_500_and_logged(secrets_manager: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    application = make_app({"token_secret": SECRET_ARN})  # never created
    with caplog.at_level(logging.ERROR, logger="fsm"):
        answer = call(application, "GET", "/machines", headers=bearer("anything"))
    assert_error(answer, 500, "internal_error")
    assert SECRET_ARN not in json.dumps(answer.body) and SECRET_ARN in caplog.text


def test_an_asl_machine_starts_from_any_json_input_and_shows_its_output(tmp_path: Path) -> None:
    (tmp_path / "count.asl.json").write_text(json.dumps({"StartAt": "Len", "States": {
        "Len": {"Type": "Pass", "Parameters": {"n.$": "States.ArrayLength($)"}, "End": True}}}))
    definitions = load_file(tmp_path / "count.asl.json")
    settings = Settings(store=["memory://"], api={"auth": "iam"})
    application = App(definitions, settings, build(definitions.machines, settings))
    answer = call(application, "POST", "/instances", {"machine": "count", "input": [3, 1, 2]})
    assert answer.status == 201, answer
    status = call(application, "GET", f"/instances/{answer.body['correlation_id']}")
    assert (status.body["status"], status.body["output"]) == ("done", {"n": 3})
    both = call(application, "POST", "/instances", {"machine": "count", "input": [1], "context": {}})
    assert both.status == 400 and "not both" in both.body["message"]
    flat = call(make_app(), "POST", "/instances", {"machine": "pizza", "input": [1]})
    assert flat.status == 400 and "JSON object" in flat.body["message"]
