"""Metrics from real transitions, read back from CloudWatch (moto, in-process).

The unit tests check the batching against a stub; these check the whole road: the
dispatcher counts, ``fsm.wiring`` opens the target the settings name, a flush is one
PutMetricData call, and CloudWatch then answers with the numbers the instances made,
under dimensions that never hold an instance id. With ``target: emf`` the same numbers
are log lines and no API is called at all.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest

from config.loader import load_text
from config.settings import Settings
from fsm import Action, Context
from fsm.app.wiring import Wiring, build
from fsm.client import Client

moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")

NAMESPACE = "FsmTest"
ALLOWED_DIMENSIONS = {"Machine", "State", "Event", "Resource"}

MACHINES = """
machines:
  - name: orders
    max_retries: 3
    retry_base_delay: 0.001
    retry_max_delay: 0.001
    states:
      - name: received
        initial: true
        do_action: test_metrics_end_to_end.Check
        transitions: [{event: checked, target: charging}]
      - name: charging
        do_action: test_metrics_end_to_end.ChargeFailsOnce
        transitions: [{event: charged, target: shipped}]
      - {name: shipped, final: true}
  - name: doomed
    max_retries: 0
    states:
      - name: start
        initial: true
        do_action: test_metrics_end_to_end.Boom
        transitions: [{event: ok, target: end}]
      - {name: end, final: true}
"""


class Check(Action):
    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        return "checked"


class ChargeFailsOnce(Action):
    """The payment provider times out on the first attempt of every order."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        if context.retries == 0:
            raise TimeoutError("payment provider did not answer")
        return "charged"


class Boom(Action):
    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        raise RuntimeError("always broken")


def run_instances(wiring: Wiring) -> tuple[list[str], int]:
    """Two orders (each retried once) and one doomed instance; returns their ids and the
    transitions their histories show."""
    client = Client(wiring=wiring)
    cids = [client.start("orders", {"n": 1}), client.start("orders", {"n": 2}), client.start("doomed")]
    assert [client.status(c)["status"] for c in cids] == ["done", "done", "failed"]
    made = sum(1 for cid in cids for entry in client.history(cid) if entry["to"] is not None)
    return cids, made


@pytest.fixture
def cloudwatch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with moto.mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def total(cloudwatch: Any, metric: str, dimensions: dict[str, str] | None = None) -> float:
    """The Sum of ``metric`` over every dimension set (or exactly ``dimensions``)."""
    now = dt.datetime.now(dt.UTC)
    if dimensions is None:
        # moto lists a metric once per value stored, where CloudWatch lists it once.
        metrics = cloudwatch.list_metrics(Namespace=NAMESPACE, MetricName=metric)["Metrics"]
        unique = {tuple((d["Name"], d["Value"]) for d in m["Dimensions"]) for m in metrics}
        sets = [[{"Name": k, "Value": v} for k, v in dims] for dims in unique]
    else:
        sets = [[{"Name": k, "Value": v} for k, v in dimensions.items()]]
    found = 0.0
    for dims in sets:
        reply = cloudwatch.get_metric_statistics(
            Namespace=NAMESPACE, MetricName=metric, Dimensions=dims, Statistics=["Sum"], Period=60,
            StartTime=now - dt.timedelta(minutes=10), EndTime=now + dt.timedelta(minutes=10))
        found += sum(point["Sum"] for point in reply["Datapoints"])
    return found


def test_cloudwatch_gets_what_the_instances_did_in_one_call_per_flush(cloudwatch: Any) -> None:
    settings = Settings(store=["memory://"], metrics={"target": "cloudwatch", "namespace": NAMESPACE})
    wiring = build(load_text(MACHINES).machines, settings)
    calls: list[str] = []
    wiring.metrics.client.meta.events.register(  # type: ignore[attr-defined]
        "before-call.monitoring.PutMetricData", lambda **_: calls.append("put"))

    cids, made = run_instances(wiring)
    # Each client command is one invocation of the embedded runtime: one batched call at
    # its end, never one per metric or per transition.
    assert calls == ["put"] * 3, "one PutMetricData per command"
    wiring.metrics.flush()
    assert calls == ["put"] * 3, "an empty flush makes no call"

    assert made == 6 and total(cloudwatch, "Transitions") == made
    assert total(cloudwatch, "Transitions", {"Event": "charged", "Machine": "orders", "State": "shipped"}) == 2
    assert total(cloudwatch, "Retries") == 2
    assert total(cloudwatch, "Retries", {"Event": "checked", "Machine": "orders", "State": "received"}) == 2
    assert total(cloudwatch, "Failures") == 1
    assert total(cloudwatch, "Failures", {"Event": "None", "Machine": "doomed", "State": "None"}) == 1

    metrics = cloudwatch.list_metrics(Namespace=NAMESPACE)["Metrics"]
    assert {m["MetricName"] for m in metrics} >= {"Transitions", "ActionDuration", "Retries", "Failures", "Lag"}
    for metric in metrics:
        names = {d["Name"] for d in metric["Dimensions"]}
        values = {d["Value"] for d in metric["Dimensions"]}
        assert names <= ALLOWED_DIMENSIONS, metric
        assert not values & set(cids), f"an instance id became a dimension: {metric}"

    # A second batch of work is a second call, adding to the same metrics.
    run_instances(wiring)
    wiring.metrics.flush()
    assert calls == ["put"] * 6  # three more commands
    assert total(cloudwatch, "Transitions") == 2 * made


def test_emf_writes_the_same_numbers_as_log_lines_without_calling_aws(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.client

    api_calls: list[str] = []

    def refuse(client: Any, operation: str, params: Any) -> Any:
        api_calls.append(operation)
        raise AssertionError(f"EMF metrics called AWS: {operation}")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refuse)
    settings = Settings(store=["memory://"], metrics={"target": "emf", "namespace": NAMESPACE})
    wiring = build(load_text(MACHINES).machines, settings)
    cids, made = run_instances(wiring)        # each command writes its lines when it ends
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    wiring.metrics.flush()
    assert capsys.readouterr().out == ""      # nothing was left over

    assert api_calls == []
    documents = [json.loads(line) for line in lines]
    sums: dict[str, float] = {}
    for document in documents:
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE and isinstance(document["_aws"]["Timestamp"], int)
        (dimensions,) = directive["Dimensions"]
        assert set(dimensions) <= ALLOWED_DIMENSIONS and all(name in document for name in dimensions)
        assert not {str(document[name]) for name in dimensions} & set(cids)
        for metric in directive["Metrics"]:
            value = document[metric["Name"]]
            values = value if isinstance(value, list) else [value]
            sums[metric["Name"]] = sums.get(metric["Name"], 0.0) + sum(values)
    assert sums["Transitions"] == made
    assert (sums["Retries"], sums["Failures"]) == (2, 1)
