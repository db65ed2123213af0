"""ASL definitions as a user runs them: a Step Functions JSON, Python Action resources,
the machines file, ``fsm run`` and the in-process client.

In process, :func:`run` drives an instance until it is done or failed, releasing its
timers (a Wait, a Retry backoff) as they fall due.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from config.loader import load_file
from fsm.app.client import Client
from fsm.app.wiring import App
from fsm.asl import lambdas

ACTIONS = '''
from fsm import Action, Failed


class Quote(Action):
    """A price for an order: 10 per item."""

    def execute(self, context, obj):
        return {"price": 10 * obj["input"]["items"], "order": obj["context_object"]["Execution"]["Id"] != ""}


class Flaky(Action):
    """Fails twice per state visit, then works (the retry count is in the context object)."""

    def execute(self, context, obj):
        if obj["context_object"]["State"]["RetryCount"] < 2:
            raise ConnectionError("try again")
        return "ok"


class Declined(Action):
    def execute(self, context, obj):
        raise Failed("Payment.Declined", "card expired")


class Silent(Action):
    """Sends one heartbeat, then goes quiet for longer than HeartbeatSeconds."""

    def execute(self, context, obj):
        self.heartbeat()
        import time
        time.sleep(2)
        return "late"
'''

FLOW = {
    "Comment": "An order: quote, charge (retried), pay (caught), then a Choice",
    "StartAt": "Quote",
    "States": {
        "Quote": {"Type": "Task", "Resource": "quote", "Parameters": {"items.$": "States.ArrayLength($.items)"},
                  "ResultSelector": {"total.$": "$.price"}, "ResultPath": "$.quote", "Next": "Charge"},
        "Charge": {"Type": "Task", "Resource": "flaky", "ResultPath": "$.charged",
                   "Retry": [{"ErrorEquals": ["ConnectionError"], "IntervalSeconds": 1, "MaxAttempts": 3,
                              "BackoffRate": 1, "MaxDelaySeconds": 1, "JitterStrategy": "FULL"}],
                   "Next": "Pay"},
        "Pay": {"Type": "Task", "Resource": "declined", "ResultPath": "$.paid",
                "Catch": [{"ErrorEquals": ["Payment.Declined"], "ResultPath": "$.payment_error", "Next": "Big?"}],
                "Next": "Big?"},
        "Big?": {"Type": "Choice", "Choices": [{"Variable": "$.quote.total", "NumericGreaterThan": 25,
                                                 "Next": "Refuse"}], "Default": "Done"},
        "Refuse": {"Type": "Fail", "Error": "Order.TooBig", "CausePath": "$.payment_error.Cause"},
        "Done": {"Type": "Pass", "Parameters": {"total.$": "$.quote.total", "charged.$": "$.charged",
                                                "why.$": "$.payment_error.Error"}, "End": True},
    },
}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path, "order_actions.py", ACTIONS)
    (tmp_path / "order.asl.json").write_text(json.dumps(FLOW, indent=2), encoding="utf-8")
    write(tmp_path, "fsm.yaml", """
        machines:
          - asl: order.asl.json
            resources:
              quote: order_actions.Quote
              flaky: order_actions.Flaky
              declined: order_actions.Declined
              silent: order_actions.Silent
    """)
    return tmp_path


def run(config: Path, machine: str, given: Any, timeout: float = 10.0) -> dict[str, Any]:
    client = Client(wiring=App.load(definitions=load_file(config), store=["memory://"]).wiring)
    cid = client.start(machine, input=given)
    deadline = time.monotonic() + timeout
    while True:
        status = client.status(cid)
        if status["status"] in ("done", "failed") or time.monotonic() > deadline:
            return status
        assert client.runtime is not None
        client.runtime.catch_up()
        time.sleep(0.02)


def definition(folder: Path, name: str, states: dict[str, Any], start: str) -> Path:
    path = folder / f"{name}.asl.json"
    path.write_text(json.dumps({"StartAt": start, "States": states}), encoding="utf-8")
    return path


def test_the_cli_runs_a_definition_with_python_resources(project: Path) -> None:
    flow = json.loads((project / "order.asl.json").read_text())
    flow["States"]["Charge"]["Resource"] = "quote"   # no backoff to sleep through in a subprocess
    flow["States"]["Charge"]["Parameters"] = {"items": 0}
    (project / "order.asl.json").write_text(json.dumps(flow), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "fsm", "run", "fsm.yaml", "--machine", "order",
                           "--input", json.dumps({"items": ["a", "b"]}), "--json", "--store", "memory://"],
                          cwd=project, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["status"] == "done"
    assert status["output"] == {"total": 20, "charged": {"price": 0, "order": True}, "why": "Payment.Declined"}


def test_retry_then_catch_then_choice(project: Path) -> None:
    status = run(project / "fsm.yaml", "order", {"items": ["a"]})
    assert status["status"] == "done", status
    assert status["output"] == {"total": 10, "charged": "ok", "why": "Payment.Declined"}


def test_a_fail_state_fails_the_instance_with_its_error(project: Path) -> None:
    status = run(project / "fsm.yaml", "order", {"items": [1, 2, 3]})
    assert (status["status"], status["error"], status["cause"]) == ("failed", "Order.TooBig", "card expired")


def test_a_wait_of_one_second_waits_durably(tmp_path: Path) -> None:
    path = definition(tmp_path, "pause", {
        "Pause": {"Type": "Wait", "SecondsPath": "$.seconds", "Next": "After"},
        "After": {"Type": "Pass", "Parameters": {"at.$": "$$.State.Name", "run.$": "$$.Execution.Input"}, "End": True}},
        "Pause")
    began = time.monotonic()
    status = run(path, "pause", {"seconds": 1})
    assert status["status"] == "done" and 1.0 <= time.monotonic() - began < 5
    assert status["output"] == {"at": "After", "run": {"seconds": 1}}


def test_a_task_that_stops_sending_heartbeats_times_out(project: Path) -> None:
    path = definition(project, "beat", {
        "Work": {"Type": "Task", "Resource": "silent", "TimeoutSeconds": 10, "HeartbeatSeconds": 1, "End": True,
                 "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "Late"}]},
        "Late": {"Type": "Pass", "End": True}}, "Work")
    config = write(project, "beat.yaml", f"""
        machines:
          - asl: {path.name}
            resources: {{silent: order_actions.Silent}}
    """)
    began = time.monotonic()
    status = run(config, "beat", {})
    assert status["status"] == "done" and time.monotonic() - began < 2
    assert status["output"]["Error"] == "States.Timeout"


class FakeLambda:
    def invoke(self, **request: Any) -> dict[str, Any]:
        given = json.loads(request["Payload"])
        if given.get("n", 0) < 0:
            body = {"errorType": "NegativeError", "errorMessage": f"{given['n']} is negative"}
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(json.dumps(body).encode())}
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps({"double": given["n"] * 2}).encode())}


def test_lambda_tasks_through_an_injected_client(tmp_path: Path) -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:function:double"
    path = definition(tmp_path, "calc", {
        "Plain": {"Type": "Task", "Resource": arn, "ResultPath": "$.plain", "Next": "Optimised"},
        "Optimised": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                      "Parameters": {"FunctionName": arn, "Payload": {"n.$": "$.plain.double"}},
                      "ResultSelector": {"value.$": "$.Payload.double", "code.$": "$.StatusCode"},
                      "ResultPath": "$.optimised", "Next": "Negative"},
        "Negative": {"Type": "Task", "Resource": arn, "Parameters": {"n": -1}, "ResultPath": "$.error",
                     "Catch": [{"ErrorEquals": ["NegativeError"], "ResultPath": "$.error", "Next": "Done"}],
                     "Next": "Done"},
        "Done": {"Type": "Succeed"}}, "Plain")
    lambdas.use_client(FakeLambda())
    try:
        status = run(path, "calc", {"n": 3})
    finally:
        lambdas.use_client(None)
    assert status["status"] == "done", status
    assert status["output"] == {"n": 3, "plain": {"double": 6}, "optimised": {"value": 12, "code": 200},
                                "error": {"Error": "NegativeError", "Cause": "-1 is negative"}}


def test_parallel_and_map_run_child_instances(project: Path) -> None:
    path = definition(project, "fan", {
        "Both": {"Type": "Parallel", "ResultPath": "$.both", "Next": "Each", "Branches": [
            {"StartAt": "Q", "States": {"Q": {"Type": "Task", "Resource": "quote", "ResultSelector": {"p.$": "$.price"},
                                              "End": True}}},
            {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 0, "Next": "P"},
                                        "P": {"Type": "Pass", "Result": "second", "End": True}}}]},
        "Each": {"Type": "Map", "ItemsPath": "$.orders", "MaxConcurrency": 1, "ResultPath": "$.each",
                 "ItemSelector": {"items.$": "$$.Map.Item.Value", "index.$": "$$.Map.Item.Index"},
                 "ItemProcessor": {"StartAt": "Q2", "States": {"Q2": {
                     "Type": "Task", "Resource": "quote", "ResultSelector": {"p.$": "$.price"},
                     "ResultPath": "$.quote", "End": True}}},
                 "Next": "Broken"},
        "Broken": {"Type": "Map", "ItemsPath": "$.orders", "ResultPath": "$.broken", "End": True,
                   "ItemProcessor": {"StartAt": "Pay", "States": {"Pay": {"Type": "Task", "Resource": "declined",
                                                                          "End": True}}},
                   "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.broken", "Next": "Caught"}]},
        "Caught": {"Type": "Pass", "End": True}}, "Both")
    config = write(project, "fan.yaml", f"""
        machines:
          - asl: {path.name}
            resources: {{quote: order_actions.Quote, declined: order_actions.Declined}}
    """)
    status = run(config, "fan", {"items": 2, "orders": [1, 3]})
    assert status["status"] == "done", status
    assert status["output"] == {
        "items": 2, "orders": [1, 3], "both": [{"p": 20}, "second"],
        "each": [{"items": 1, "index": 0, "quote": {"p": 10}}, {"items": 3, "index": 1, "quote": {"p": 30}}],
        "broken": {"Error": "Payment.Declined", "Cause": "card expired"}}


def test_a_lambda_task_through_a_stubbed_boto3_client_retries_a_throttle(tmp_path: Path) -> None:
    """The real boto3 Lambda client, its requests checked against the service model by
    botocore's Stubber: a throttle is ``Lambda.TooManyRequestsException`` (retried), a
    function error the error its ``errorType`` names (caught)."""
    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import ANY, Stubber

    def body(value: Any) -> StreamingBody:
        raw = json.dumps(value).encode()
        return StreamingBody(io.BytesIO(raw), len(raw))

    arn = "arn:aws:lambda:eu-west-1:123456789012:function:quote"
    path = definition(tmp_path, "quote", {
        "Quote": {"Type": "Task", "Resource": arn, "ResultPath": "$.quote", "Next": "Again",
                  "Retry": [{"ErrorEquals": ["Lambda.TooManyRequestsException"], "IntervalSeconds": 1,
                             "MaxAttempts": 2}]},
        "Again": {"Type": "Task", "Resource": arn, "Parameters": {"sku": "none"}, "ResultPath": "$.missing",
                  "Catch": [{"ErrorEquals": ["UnknownSku"], "ResultPath": "$.missing", "Next": "Done"}],
                  "Next": "Done"},
        "Done": {"Type": "Succeed"}}, "Quote")
    lam = boto3.client("lambda", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(lam)
    called = {"FunctionName": arn, "InvocationType": "RequestResponse", "Payload": ANY}
    stub.add_client_error("invoke", "TooManyRequestsException", "Rate exceeded", 429, expected_params=called)
    stub.add_response("invoke", {"StatusCode": 200, "Payload": body({"price": 4.5})}, called)
    stub.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled",
                                 "Payload": body({"errorType": "UnknownSku", "errorMessage": "no price for none"})},
                      called)
    lambdas.use_client(lam)
    try:
        with stub:
            status = run(path, "quote", {"sku": "tea"})
            stub.assert_no_pending_responses()
    finally:
        lambdas.use_client(None)
    assert status["status"] == "done", status
    assert status["output"] == {"sku": "tea", "quote": {"price": 4.5},
                                "missing": {"Error": "UnknownSku", "Cause": "no price for none"}}
