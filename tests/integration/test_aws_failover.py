"""Primary/secondary streams with real faults, against moto_server.

Two faults the router must survive while instances are running, with the worker reading
both streams: the primary queue is deleted under it after some transitions, and the
primary stream's endpoint refuses connections from the start. Every instance must reach
``done`` through the secondary, and no transition may run twice on the way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import test_aws_end_to_end as e2e
from test_aws_end_to_end import (
    MACHINE,
    Deployment,
    arn,
    assert_done,
    assert_ran_once,
    aws_client,
    queue_url,
    unique,
)

from config.settings import Settings
from fsm.app import App
from fsm.app.delivery import freshest_record
from fsm.app.resources import create_resources
from fsm.app.worker import default_poller as open_poller
from fsm.app.worker import run_worker
from fsm.client import Client
from fsm.errors import RecoverableError
from fsm.ports import Poller

aws_env, deploy = e2e.aws_env, e2e.deploy  # the fixtures, shared

# No botocore retries and short timeouts: a dead primary costs one quick attempt.
FAST = {"connect_timeout": 1, "read_timeout": 1, "max_attempts": 1}
INSTANCES = 3


def closed_endpoint() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def all_done(app: App, cids: list[str]) -> bool:
    return all((freshest_record(app.wiring, cid) or (0, {}))[1].get("status") == "done" for cid in cids)


class DeletedAfterReceive:
    """The primary's poller, whose queue is deleted right after its ``batches``-th receive.

    Deleting it while its messages are in the worker's hands (received, not yet handled)
    loses none of them: what a deploy that drops the queue between two polls would do,
    minus the messages it would take with it (those are healed by the sweep, see
    tests/soak).
    """

    def __init__(self, poller: Poller, endpoint: str, batches: int):
        self.poller, self.arn = poller, poller.arn
        self.endpoint, self.batches = endpoint, batches
        self.received = 0
        self.deleted = False

    def poll(self, wait: bool = True) -> list[dict[str, Any]]:
        records = self.poller.poll(wait)
        if records:
            self.received += 1
            if self.received == self.batches:
                aws_client("sqs", self.endpoint).delete_queue(QueueUrl=queue_url(self.endpoint, self.arn))
                self.deleted = True
        return records

    def done(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        self.poller.done(records, failed)


def test_primary_queue_deleted_mid_run(deploy: Callable[[dict[str, Any]], Deployment], redis_url: str) -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    primary, secondary = arn("sqs", unique("primary")), arn("sqs", unique("secondary"))
    app = deploy({"stream": [primary, secondary], "store": [redis_url], "aws": FAST}).app()
    list(create_resources(app.settings))
    client = Client(wiring=app.wiring)
    cids = [client.start(MACHINE) for _ in range(INSTANCES)]
    wrapped: list[DeletedAfterReceive] = []

    def pollers(source: str, **options: Any) -> Poller:
        poller = open_poller(source, **options)
        if source == primary:
            wrapped.append(DeletedAfterReceive(poller, endpoint, batches=3))
            return wrapped[-1]
        return poller

    deadline = time.monotonic() + 30
    run_worker(app, [primary, secondary], open_poller=pollers,
               should_stop=lambda: all_done(app, cids) or time.monotonic() > deadline)

    assert wrapped and wrapped[0].deleted, "the primary queue was never deleted"
    sqs = aws_client("sqs", endpoint)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=primary.rsplit(":", 1)[1])
    for cid in cids:  # each instance moved at least two steps on the primary, the rest on the secondary
        assert_done(client.status(cid), client.history(cid))
        assert_ran_once(redis_url, cid)
    assert app.wiring.metrics.counts.get("Failovers", 0) >= 1


def test_primary_stream_endpoint_refuses_connections(
        deploy: Callable[[dict[str, Any]], Deployment], redis_url: str) -> None:
    """The primary Kinesis stream's endpoint is a closed port: starts, every transition
    and the worker's reads all go to the secondary, through the real ``fsm worker``."""
    primary = arn("kinesis", f"stream/{unique('primary')}")
    secondary = arn("kinesis", f"stream/{unique('secondary')}")
    deployment = deploy({"stream": [primary, secondary], "store": [redis_url],
                         "endpoints": {primary: closed_endpoint()}, "aws": FAST})
    app = deployment.app()
    list(create_resources(Settings(stream=[secondary])))  # the primary cannot be reached to create it
    client = Client(wiring=app.wiring)
    cids = [client.start(MACHINE) for _ in range(INSTANCES)]
    assert app.wiring.metrics.counts.get("Failovers", 0) >= 1

    output = deployment.fsm("worker", "--source", primary, "--source", secondary, "--idle-exit", "2").stdout
    assert "(0 failed)" in output, output

    for cid in cids:
        assert_done(client.status(cid), client.history(cid))
        assert_ran_once(redis_url, cid)
    with pytest.raises(RecoverableError, match="Could not connect"):
        app.wiring.routes.bus.buses[0].call("describe_stream_summary", StreamName=primary.split("/", 1)[1])
