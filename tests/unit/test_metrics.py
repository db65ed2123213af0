"""CloudWatchMetrics batching (stub client) and EmfMetrics log lines; which sink the
handler gets, and how often it calls PutMetricData (once per invocation, at the end)."""

from __future__ import annotations

import copy
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sources import cloudwatch
from sources.cloudwatch import CloudWatchMetrics
from sources.emf import EmfMetrics


class StubCloudWatch:
    def __init__(self, fail: Exception | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail = fail

    def put_metric_data(self, **request: Any) -> dict:
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        return {}


def test_incr_buffers_without_calling() -> None:
    client = StubCloudWatch()
    metrics = CloudWatchMetrics("Fsm", client=client)
    for _ in range(50):
        metrics.incr("Transitions", dims={"Machine": "order"})
    assert client.requests == []


def test_flush_aggregates_into_one_datum_per_name_dims_unit() -> None:
    client = StubCloudWatch()
    metrics = CloudWatchMetrics("Fsm", client=client)
    for _ in range(40):
        metrics.incr("Transitions", dims={"Machine": "order"})
    metrics.incr("Transitions", dims={"Machine": "refund"})
    for ms in (12.0, 12.0, 30.5):
        metrics.incr("Duration", ms, unit="Milliseconds", dims={"Machine": "order"})
    metrics.flush()
    assert len(client.requests) == 1 and metrics.calls == 1
    request = client.requests[0]
    assert request["Namespace"] == "Fsm"
    by_key = {(d["MetricName"], d["Dimensions"][0]["Value"]): d for d in request["MetricData"]}
    assert len(by_key) == 3
    order = by_key[("Transitions", "order")]
    assert (order["Values"], order["Counts"], order["Unit"]) == ([1.0], [40.0], "Count")
    duration = by_key[("Duration", "order")]
    assert (duration["Values"], duration["Counts"], duration["Unit"]) == ([12.0, 30.5], [2.0, 1.0], "Milliseconds")


def test_flush_clears_and_empty_flush_makes_no_call() -> None:
    client = StubCloudWatch()
    metrics = CloudWatchMetrics("Fsm", client=client)
    metrics.incr("A")
    metrics.flush()
    metrics.flush()
    assert len(client.requests) == 1


def test_more_than_1000_datums_split_into_fewest_calls() -> None:
    client = StubCloudWatch()
    metrics = CloudWatchMetrics("Fsm", client=client)
    for n in range(2500):
        metrics.incr(f"M{n}")
    metrics.flush()
    assert [len(r["MetricData"]) for r in client.requests] == [1000, 1000, 500]


def test_many_distinct_values_split_at_150_per_datum() -> None:
    client = StubCloudWatch()
    metrics = CloudWatchMetrics("Fsm", client=client)
    for n in range(400):
        metrics.incr("Latency", float(n), unit="Milliseconds")
    metrics.flush()
    datums = client.requests[0]["MetricData"]
    assert [len(d["Values"]) for d in datums] == [150, 150, 100]
    assert sum(sum(d["Counts"]) for d in datums) == 400


def test_request_size_limit_splits_calls(monkeypatch) -> None:
    monkeypatch.setattr(cloudwatch, "MAX_REQUEST_BYTES", 8_000)
    monkeypatch.setattr(cloudwatch, "REQUEST_HEADROOM_BYTES", 0)
    client = StubCloudWatch()
    metrics = CloudWatchMetrics("Fsm", client=client)
    for n in range(40):
        metrics.incr("Big", dims={"Tag": f"{n}-" + "x" * 250, "Other": "y" * 250})
    metrics.flush()
    assert len(client.requests) > 1
    assert sum(len(r["MetricData"]) for r in client.requests) == 40
    for request in client.requests:
        size = sum(cloudwatch._encoded_size(d, "MetricData.member.1000") for d in request["MetricData"])
        assert size <= 8_000


def test_failed_flush_logs_drops_and_never_raises(caplog) -> None:
    client = StubCloudWatch(fail=RuntimeError("boom"))
    metrics = CloudWatchMetrics("Fsm", client=client)
    metrics.incr("Transitions", dims={"CorrelationId": "secret-instance-42"})
    with caplog.at_level(logging.WARNING, logger="fsm.metrics"):
        metrics.flush()
    assert metrics.dropped == 1 and "RuntimeError" in caplog.text
    assert "secret-instance-42" not in caplog.text
    client.fail = None
    metrics.flush()
    assert len(client.requests) == 1   # nothing kept from the failed flush


def test_emf_writes_one_line_per_dimension_set_and_makes_no_call() -> None:
    out = io.StringIO()
    metrics = EmfMetrics("Fsm", stream=out)
    metrics.incr("Transitions", dims={"Machine": "order"})
    metrics.incr("Transitions", dims={"Machine": "order"})
    metrics.incr("Duration", 12.5, unit="Milliseconds", dims={"Machine": "order"})
    metrics.incr("Duration", 20.0, unit="Milliseconds", dims={"Machine": "order"})
    metrics.incr("Failovers", dims={"Resource": "arn:aws:sqs:us-east-1:1:q"})
    metrics.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    order = next(line for line in lines if line.get("Machine") == "order")
    directive = order["_aws"]["CloudWatchMetrics"][0]
    assert isinstance(order["_aws"]["Timestamp"], int)
    assert directive["Namespace"] == "Fsm" and directive["Dimensions"] == [["Machine"]]
    assert {(m["Name"], m["Unit"]) for m in directive["Metrics"]} == {
        ("Transitions", "Count"), ("Duration", "Milliseconds")}
    assert order["Transitions"] == 2.0 and order["Duration"] == [12.5, 20.0]
    out.truncate(0)
    metrics.flush()
    assert out.getvalue().strip("\0") == ""


def test_emf_without_dimensions_and_default_stream(capsys) -> None:
    metrics = EmfMetrics("Fsm")
    metrics.incr("Started")
    metrics.flush()
    line = json.loads(capsys.readouterr().out)
    assert line["Started"] == 1.0
    assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]


@pytest.mark.parametrize("count", [1, 250])
def test_emf_respects_per_document_limits(count: int) -> None:
    out = io.StringIO()
    metrics = EmfMetrics("Fsm", stream=out)
    for n in range(count):
        metrics.incr(f"M{n}")
        metrics.incr("Lat", float(n), unit="Milliseconds")
    metrics.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    for line in lines:
        assert len(line["_aws"]["CloudWatchMetrics"][0]["Metrics"]) <= 100
        assert not isinstance(line.get("Lat"), list) or len(line["Lat"]) <= 100
    assert sum(len(line.get("Lat", [])) if isinstance(line.get("Lat"), list) else ("Lat" in line)
               for line in lines) == count


# -- through the Lambda handler, with the event shapes AWS documents ----------------------

EVENTS = Path(__file__).resolve().parents[1] / "events"
MACHINE = """\
machines:
  - name: m
    states:
      - {name: a, initial: true, do_action: metrics_go.Go, transitions: [{event: go, target: b}]}
      - {name: b, final: true}
"""


@dataclass
class Container:
    """fsm.handler in a Lambda container's environment, with no app loaded yet; the
    CloudWatch clients the sink built (stubs, counting their calls)."""

    handler: Any
    cloudwatch: list[StubCloudWatch]


@pytest.fixture
def lambda_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Container]:
    """Memory store, a memory stream, the machines file, no metrics setting."""
    from fsm import handler
    from sources import aws

    (tmp_path / "fsm.yaml").write_text(MACHINE)
    (tmp_path / "metrics_go.py").write_text(
        "from fsm import Action\n\nclass Go(Action):\n    def execute(self, context, obj):\n        return 'go'\n")
    for name in ("FSM_SETTINGS", "FSM_METRICS", "FSM_ALLOW_EMBEDDED", "FSM_STORE", "FSM_STREAM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FSM_CONFIG", str(tmp_path / "fsm.yaml"))
    monkeypatch.setenv("FSM_STORE", "memory://")
    monkeypatch.setenv("FSM_STREAM", "memory://")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders")
    monkeypatch.setattr(handler, "_app", None)
    container = Container(handler, [])
    real_make_client = aws.make_client

    def make_client(service: str, *args: Any, **kwargs: Any) -> Any:
        if service != "cloudwatch":
            return real_make_client(service, *args, **kwargs)
        container.cloudwatch.append(StubCloudWatch())
        return container.cloudwatch[-1]

    monkeypatch.setattr(aws, "make_client", make_client)
    yield container
    monkeypatch.setattr(handler, "_app", None)


def sqs_event(count: int) -> dict[str, Any]:
    """``count`` start messages, as one SQS batch of tests/events/sqs.json's shape."""
    from fsm.message import Message

    template = json.loads((EVENTS / "sqs.json").read_text())["Records"][0]
    records = []
    for n in range(count):
        record = copy.deepcopy(template)
        record["messageId"] = f"message-{n}"
        record["body"] = Message(machine="m", correlation_id=f"order-{time.time_ns()}-{n}", context={},
                                 sent_at=time.time()).encode()
        records.append(record)
    return {"Records": records}


def test_in_lambda_cloudwatch_is_called_once_per_invocation_whatever_the_batch(
        lambda_env: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSM_METRICS", '{"target": "cloudwatch", "namespace": "Shop"}')
    for invocation, size in enumerate((10, 1, 7), 1):
        reply = lambda_env.handler.lambda_handler(sqs_event(size))
        assert reply == {"batchItemFailures": []}
        [client] = lambda_env.cloudwatch
        assert len(client.requests) == invocation     # one PutMetricData per invocation, at its end
    transitions = [datum for request in client.requests for datum in request["MetricData"]
                   if datum["MetricName"] == "Transitions"]
    assert sum(sum(d["Counts"]) * d["Values"][0] for d in transitions) == 18
    assert {request["Namespace"] for request in client.requests} == {"Shop"}


def test_in_lambda_with_no_metrics_setting_metrics_are_emf_lines_and_no_call(
        lambda_env: Container, capsys: pytest.CaptureFixture[str]) -> None:
    from sources.emf import EmfMetrics

    handler = lambda_env.handler
    assert handler.lambda_handler(sqs_event(3)) == {"batchItemFailures": []}
    assert isinstance(handler.app().wiring.metrics, EmfMetrics)
    assert lambda_env.cloudwatch == []
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert documents and all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "lambda-fsm" for d in documents)
    assert sum(d.get("Transitions", 0) for d in documents) == 3


@pytest.mark.parametrize("where", ["environment", "config", "settings file"])
def test_in_lambda_a_target_named_none_is_kept(lambda_env: Container, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], where: str) -> None:
    from fsm.ports import NullMetrics

    if where == "environment":
        monkeypatch.setenv("FSM_METRICS", '{"target": "none"}')
    elif where == "config":
        (tmp_path / "fsm.yaml").write_text(MACHINE + "settings:\n  metrics: {target: none}\n")
    else:
        (tmp_path / "settings.yaml").write_text("metrics:\n  target: none\n")
        monkeypatch.setenv("FSM_SETTINGS", str(tmp_path / "settings.yaml"))
    handler = lambda_env.handler
    handler.lambda_handler(sqs_event(2))
    assert isinstance(handler.app().wiring.metrics, NullMetrics)
    assert '"_aws"' not in capsys.readouterr().out


def test_outside_lambda_no_metrics_setting_means_none(lambda_env: Container,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from fsm.ports import NullMetrics

    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    assert isinstance(lambda_env.handler.app().wiring.metrics, NullMetrics)


def test_a_namespace_alone_does_not_choose_the_target(lambda_env: Container,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from sources.emf import EmfMetrics

    monkeypatch.setenv("FSM_METRICS", '{"namespace": "Shop"}')
    metrics = lambda_env.handler.app().wiring.metrics
    assert isinstance(metrics, EmfMetrics) and metrics.namespace == "Shop"
