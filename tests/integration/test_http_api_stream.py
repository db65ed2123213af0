"""``POST /instances/{id}/events?wait=`` with an SQS stream on moto_server: the request
only sends the event; a worker (``fsm worker``'s loop, in a thread here, as another Lambda
invocation would be on AWS) applies it, and the waiting request sees it in the store.

(Named apart from ``tests/unit/test_http_api.py``: the test folders are not packages, so
two test modules may not share a name.)
"""

from __future__ import annotations

import base64
import copy
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from config.loader import load_text
from config.settings import Settings
from fsm.app import App
from fsm.app.intake import handle_event
from fsm.app.wiring import build
from fsm.app.worker import run_worker

ROOT = Path(__file__).resolve().parents[2]
# AWS's event shapes: the project's shared folder beside the checkout when it is there,
# else the copy kept with the tests (FSM_LAMBDA_EVENTS names another folder).
SHARED_EVENTS = ROOT.parent / "shared" / "lambda-events"
EVENTS = Path(os.environ.get("FSM_LAMBDA_EVENTS") or (SHARED_EVENTS if SHARED_EVENTS.is_dir()
                                                       else ROOT / "tests" / "events"))
MACHINES = """
machines:
  - name: pizza
    states:
      - name: ordered
        initial: true
        transitions: [{event: PIZZA_READY, target: delivering}]
      - name: delivering
        transitions: [{event: DELIVERED, target: delivered}]
      - {name: delivered, final: true}
"""


class Deployment:
    """The function behind a function URL, its queue, and a worker that can be started."""

    def __init__(self, endpoint: str):
        sqs = boto3.session.Session().client("sqs", region_name="us-east-1", endpoint_url=endpoint)
        url = sqs.create_queue(QueueName=f"fsm-http-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        self.queue = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        definitions = load_text(MACHINES)
        settings = Settings(store=["memory://"], stream=[self.queue], endpoints={self.queue: endpoint},
                            api={"auth": "iam"})
        self.app = App(definitions, settings, build(definitions.machines, settings))
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    def start_worker(self) -> None:
        self._stop.clear()
        self._worker = threading.Thread(target=run_worker, args=(self.app, [self.queue]),
                                        kwargs={"should_stop": self._stop.is_set}, daemon=True)
        self._worker.start()

    def stop_worker(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(30)

    def call(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> tuple[int, Any]:
        """A request through a function URL (AWS_IAM), its body base64-encoded as there."""
        event = copy.deepcopy(json.loads((EVENTS / "function-url.json").read_text()))
        raw = None if body is None else base64.b64encode(json.dumps(body).encode()).decode()
        event.update(rawPath=path, body=raw, isBase64Encoded=raw is not None,
                     rawQueryString="&".join(f"{k}={v}" for k, v in (query or {}).items()))
        if query:
            event["queryStringParameters"] = dict(query)
        event["requestContext"]["http"].update(method=method, path=path)
        answer = handle_event(self.app, event)
        return answer["statusCode"], json.loads(answer["body"])

    def await_status(self, cid: str, state: str, seconds: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            status, body = self.call("GET", f"/instances/{cid}")
            if status == 200 and body["state"] == state or time.monotonic() > deadline:
                assert status == 200 and body["state"] == state, body
                return body
            time.sleep(0.1)


@pytest.fixture
def deployment(fresh_moto_url: str) -> Iterator[Deployment]:
    made = Deployment(fresh_moto_url)
    yield made
    made.stop_worker()


def test_wait_answers_once_a_worker_has_applied_the_event(deployment: Deployment) -> None:
    status, body = deployment.call("POST", "/instances", {"machine": "pizza", "correlation_id": "order-1"})
    assert (status, body) == (201, {"correlation_id": "order-1"})
    status, body = deployment.call("GET", "/instances/order-1")
    assert status == 404 and "not started yet" in body["message"]
    deployment.start_worker()
    deployment.await_status("order-1", "ordered")
    status, body = deployment.call("POST", "/instances/order-1/events", {"event": "PIZZA_READY"}, {"wait": "20"})
    assert status == 200, body
    assert body["applied"] is True and body["state"] == "delivering" and body["status"] == "waiting"


def test_a_wait_that_ends_first_is_a_202_and_the_event_is_applied_later(deployment: Deployment) -> None:
    deployment.call("POST", "/instances", {"machine": "pizza", "correlation_id": "order-2"})
    deployment.start_worker()
    deployment.await_status("order-2", "ordered")
    deployment.stop_worker()
    status, body = deployment.call("POST", "/instances/order-2/events",
                                   {"event": "PIZZA_READY", "event_id": "kitchen-7"}, {"wait": "0.5"})
    assert status == 202 and body["applied"] is False and body["state"] == "ordered", body
    deployment.start_worker()
    deployment.await_status("order-2", "delivering")
    status, body = deployment.call("POST", "/instances/order-2/events",
                                   {"event": "PIZZA_READY", "event_id": "kitchen-7"}, {"wait": "5"})
    assert status == 200 and body["duplicate"] is True and body["state"] == "delivering", body
