"""Retry and Catch (fsm.asl.errors), task deadlines (fsm.asl.tasks) and Lambda calls
(fsm.asl.lambdas) through a fake client."""

from __future__ import annotations

import io
import json
import random
import threading
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from fsm import Action, Context, Failed
from fsm.asl import lambdas, tasks
from fsm.asl.errors import AslError, Catcher, Retrier, decide, from_exception, matches


@pytest.mark.parametrize("names, error, expected", [
    (["States.ALL"], "ValueError", True),
    (["States.ALL"], "States.Timeout", True),
    (["States.TaskFailed"], "ValueError", True),
    (["States.TaskFailed"], "States.Timeout", False),
    (["States.ALL"], "States.Runtime", False),
    (["States.Runtime"], "States.Runtime", False),
    (["States.TaskFailed"], "States.DataLimitExceeded", False),
    (["A", "B"], "B", True),
    (["A"], "a", False),
])
def test_error_matching(names: list[str], error: str, expected: bool) -> None:
    assert matches(names, AslError(error)) is expected


def test_a_heartbeat_timeout_also_matches_its_own_name() -> None:
    error = AslError("States.Timeout", also=("States.HeartbeatTimeout",))
    assert matches(["States.HeartbeatTimeout"], error) and not matches(["States.TaskFailed"], error)


def test_retry_delays_grow_and_are_capped() -> None:
    retrier = Retrier(("States.ALL",), interval=2, backoff=3, max_delay=10)
    assert [retrier.delay(n) for n in range(4)] == [2, 6, 10, 10]
    assert Retrier(("X",), interval=1, backoff=1).delay(5) == 1


def test_full_jitter_stays_between_zero_and_the_delay() -> None:
    retrier = Retrier(("X",), interval=4, backoff=2, jitter=True)
    rng = random.Random(1)
    delays = [retrier.delay(2, rng) for _ in range(200)]
    assert all(0 <= d <= 16 for d in delays) and len(set(delays)) > 100


def test_the_first_matching_retrier_decides_then_the_catchers() -> None:
    retriers = [Retrier(("A",), max_attempts=2), Retrier(("States.ALL",), max_attempts=5)]
    catchers = [Catcher(("B",), "b", None), Catcher(("States.ALL",), "all", None)]
    assert decide(AslError("A"), retriers, catchers, [0, 0]).retry == 0
    assert decide(AslError("A"), retriers, catchers, [1]).delay == 2.0
    # A's retrier is used up: no falling through to States.ALL's; the catchers decide
    assert decide(AslError("A"), retriers, catchers, [2, 0]).catch == 1
    assert decide(AslError("B"), retriers, catchers, [2, 0]).retry == 1
    assert decide(AslError("B"), retriers, catchers, [2, 5]).catch == 0
    assert decide(AslError("States.Runtime"), retriers, catchers, []) == decide(AslError("x"), [], [], [])


def test_max_attempts_zero_never_retries() -> None:
    assert decide(AslError("A"), [Retrier(("A",), max_attempts=0)], [], []).retry is None


def test_exceptions_become_asl_errors() -> None:
    assert from_exception(ValueError("bad")).output() == {"Error": "ValueError", "Cause": "bad"}
    assert from_exception(Failed("Pay.Declined", "card")).output() == {"Error": "Pay.Declined", "Cause": "card"}


# -- tasks -----------------------------------------------------------------------------


class Slow(Action):
    def execute(self, context, obj):
        for _ in range(int(self.params.get("beats", 0))):
            time.sleep(0.05)
            self.heartbeat()
        time.sleep(float(self.params.get("then", 0)))
        return {"input": obj["input"]}


def call(action: Action, **deadlines: float) -> object:
    return tasks.run(tasks.PythonResource(action), {"a": 1}, Context({}), {"input": {"a": 1}}, **deadlines)


def test_a_task_within_its_deadline_returns_its_result() -> None:
    assert call(Slow(params={"beats": 4}), timeout=5, heartbeat=0.3) == {"input": {"a": 1}}


def test_running_out_of_time_is_states_timeout() -> None:
    began = time.monotonic()
    with pytest.raises(AslError) as caught:
        call(Slow(params={"then": 1}), timeout=0.2)
    assert caught.value.error == "States.Timeout" and "TimeoutSeconds" in caught.value.cause
    assert time.monotonic() - began < 0.8


def test_missing_heartbeats_is_states_timeout() -> None:
    with pytest.raises(AslError) as caught:
        call(Slow(params={"beats": 2, "then": 1}), timeout=5, heartbeat=0.25)
    assert caught.value.error == "States.Timeout" and "heartbeat" in caught.value.cause
    assert "States.HeartbeatTimeout" in caught.value.also


def test_a_task_exception_is_named_after_its_class() -> None:
    class Bad(Action):
        def execute(self, context, obj):
            raise KeyError("k")

    for deadline in ({}, {"timeout": 5}):
        with pytest.raises(AslError) as caught:
            call(Bad(), **deadline)
        assert caught.value.error == "KeyError"


def test_heartbeat_outside_a_deadline_does_nothing() -> None:
    Slow().heartbeat()
    assert threading.active_count() >= 1


def test_a_result_that_is_not_json_is_an_error() -> None:
    class Odd(Action):
        def execute(self, context, obj):
            return {"x": object()}

    with pytest.raises(AslError, match="not JSON"):
        call(Odd())


# -- Lambda ----------------------------------------------------------------------------


class FakeLambda:
    def __init__(self, respond):
        self.respond, self.calls = respond, []

    def invoke(self, **request):
        self.calls.append(request)
        return self.respond(request)


@pytest.fixture
def fake():
    holder = {}

    def install(respond):
        holder["client"] = FakeLambda(respond)
        lambdas.use_client(holder["client"])
        return holder["client"]

    yield install
    lambdas.use_client(None)


ARN = "arn:aws:lambda:eu-west-1:123456789012:function:add"


def ok(payload: object, status: int = 200) -> dict:
    return {"StatusCode": status, "Payload": io.BytesIO(json.dumps(payload).encode()), "ExecutedVersion": "$LATEST",
            "ResponseMetadata": {"RequestId": "r-1", "HTTPStatusCode": 200, "HTTPHeaders": {"x": "y"}}}


def test_a_function_arn_is_invoked_with_the_input(fake) -> None:
    client = fake(lambda r: ok({"sum": sum(json.loads(r["Payload"])["n"])}))
    assert lambdas.LambdaResource(ARN).call({"n": [1, 2]}, Context({}), {}) == {"sum": 3}
    assert client.calls[0]["FunctionName"] == ARN and client.calls[0]["InvocationType"] == "RequestResponse"
    assert lambdas.region_of(ARN) == "eu-west-1"


def test_the_optimised_integration_shapes_its_result(fake) -> None:
    client = fake(lambda r: ok({"echo": json.loads(r["Payload"])}))
    result = lambdas.LambdaResource(lambdas.OPTIMISED).call({"FunctionName": "add", "Payload": {"a": 1}},
                                                            Context({}), {})
    assert result == {"ExecutedVersion": "$LATEST", "Payload": {"echo": {"a": 1}},
                      "SdkHttpMetadata": {"HttpHeaders": {"x": "y"}, "HttpStatusCode": 200},
                      "SdkResponseMetadata": {"RequestId": "r-1"}, "StatusCode": 200}
    assert client.calls[0]["FunctionName"] == "add"
    with pytest.raises(AslError, match="FunctionName"):
        lambdas.LambdaResource(lambdas.OPTIMISED).call({"Payload": {}}, Context({}), {})


def test_a_function_error_is_named_by_its_error_type(fake) -> None:
    fake(lambda r: {**ok({"errorType": "ValueError", "errorMessage": "bad n"}), "FunctionError": "Unhandled"})
    with pytest.raises(AslError) as caught:
        lambdas.LambdaResource(ARN).call({}, Context({}), {})
    assert caught.value.output() == {"Error": "ValueError", "Cause": "bad n"}


@pytest.mark.parametrize("code, error", [
    ("ServiceException", "Lambda.ServiceException"), ("TooManyRequestsException", "Lambda.TooManyRequestsException"),
    ("ResourceNotFoundException", "Lambda.ResourceNotFoundException"), ("Throttling", "Lambda.AWSLambdaException"),
])
def test_service_errors_are_lambda_errors(fake, code: str, error: str) -> None:
    def refuse(request):
        raise ClientError({"Error": {"Code": code, "Message": "no"}}, "Invoke")

    fake(refuse)
    with pytest.raises(AslError) as caught:
        lambdas.LambdaResource(ARN).call({}, Context({}), {})
    assert caught.value.error == error


def test_an_unreachable_service_is_sdk_client_exception(fake) -> None:
    def refuse(request):
        raise EndpointConnectionError(endpoint_url="https://lambda")

    fake(refuse)
    with pytest.raises(AslError) as caught:
        lambdas.LambdaResource(ARN).call({}, Context({}), {})
    assert caught.value.error == "Lambda.SdkClientException"


def test_is_lambda() -> None:
    assert lambdas.is_lambda(ARN) and lambdas.is_lambda(ARN + ":prod") and lambdas.is_lambda(lambdas.OPTIMISED)
    assert not lambdas.is_lambda("double") and not lambdas.is_lambda("arn:aws:states:::sqs:sendMessage")
