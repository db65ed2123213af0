"""``fsm cost``: real ``python -m fsm cost`` processes in a tmp folder holding a machines
file and settings naming AWS resources; the sample runs on the process's own in-process
moto, so no server is needed (and nothing reaches AWS, whatever the environment says).

The figures depend on the framework's writes, so these tests check the shape and the
arithmetic of the report and the direction of a change, not a price.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MACHINES = """\
machines:
  - name: order
    states:
      - {name: placed, initial: true, do_action: fsm.app.cost.NextStep, transitions: [{event: next, target: paid}]}
      - {name: paid, do_action: fsm.app.cost.NextStep, transitions: [{event: next, target: shipped}]}
      - {name: shipped, final: true}
"""
DYNAMODB_SQS = """\
store: [arn:aws:dynamodb:us-east-1:123456789012:table/orders]
stream: [arn:aws:sqs:us-east-1:123456789012:orders]
"""
REDIS_SQS = """\
store: [redis://cache.internal:6379/0]
stream: [arn:aws:sqs:eu-west-1:123456789012:orders]
"""
LINE_ITEMS = ("DynamoDB write request units (table)", "DynamoDB write request units (indexes)",
              "DynamoDB read request units", "SQS requests (64 KB chunks)",
              "SQS requests by Lambda's polling (receive, delete)", "Lambda requests", "Lambda duration",
              "CloudWatch Logs EMF metric lines ingested")
SMALL = ("--batch-size", "2", "--transitions", "6")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cost")
    (folder / "fsm.yaml").write_text(MACHINES)
    (folder / "dynamodb-sqs.yaml").write_text(DYNAMODB_SQS)
    (folder / "redis-sqs.yaml").write_text(REDIS_SQS)
    return folder


def fsm_cost(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # AWS_ENDPOINT_URL is left in on purpose: fsm cost must ignore it and stay in-process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSM_")}
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    return subprocess.run([sys.executable, "-m", "fsm", "cost", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def cost_json(folder: Path, *args: str) -> dict[str, Any]:
    done = fsm_cost(folder, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def per_transition(report: dict[str, Any], item: str) -> float:
    return next(i["per_transition"] for i in report["line_items"] if f"{i['service']} {i['item']}" == item)


def test_json_parses_and_its_total_is_the_sum_of_its_line_items(folder: Path) -> None:
    report = cost_json(folder, "--settings", "dynamodb-sqs.yaml", *SMALL)
    assert report["machine"] == "order" and report["region"] == "us-east-1"
    assert report["sample"]["transitions"] >= 6 and report["sample"]["failed"] == 0
    assert {f"{i['service']} {i['item']}" for i in report["line_items"]} >= set(LINE_ITEMS)
    assert report["total_usd_per_million"] == pytest.approx(sum(i["usd_per_million"] for i in report["line_items"]))
    for item in report["line_items"]:
        assert item["usd_per_million"] == pytest.approx(item["per_transition"] * item["unit_price_usd"] * 1e6)
    assert per_transition(report, "DynamoDB write request units (table)") >= 1
    # each transition sends its next message, a batch of records in one SendMessageBatch
    assert 0 < per_transition(report, "SQS requests (64 KB chunks)") <= 1
    assert per_transition(report, "Lambda requests") == pytest.approx(
        report["sample"]["invocations"] / report["sample"]["transitions"])
    sends = report["calls_per_transition"]
    assert 0 < sends.get("sqs.SendMessageBatch", 0) + sends.get("sqs.SendMessage", 0) <= 1
    assert report["metrics"] == "emf"       # no metrics setting: what a Lambda would use


@pytest.mark.slow
def test_the_text_has_every_line_item_and_a_total_that_adds_up(folder: Path) -> None:
    done = fsm_cost(folder, "--settings", "dynamodb-sqs.yaml", *SMALL)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(n for n, line in enumerate(lines) if line.startswith("line item"))
    total = next(n for n, line in enumerate(lines) if line.startswith("total"))
    items = {re.split(r"\s{2,}", line)[0]: float(line.split()[-1]) for line in lines[header + 1:total]}
    assert set(LINE_ITEMS) <= set(items)
    assert float(lines[total].split()[-1]) == pytest.approx(sum(items.values()), abs=0.0001 * len(items))
    assert "Step Functions Standard: $25.00 per million state transitions" in done.stdout
    assert "Lambda duration:" in done.stdout and "assumed in-region latency" in done.stdout


@pytest.mark.slow
def test_a_bigger_context_costs_more_dynamodb_write_units(folder: Path) -> None:
    small = cost_json(folder, "--settings", "dynamodb-sqs.yaml", "--context-bytes", "100", *SMALL)
    big = cost_json(folder, "--settings", "dynamodb-sqs.yaml", "--context-bytes", "20000", *SMALL)
    item = "DynamoDB write request units (table)"
    # each write carries ~20 KB more of order-like JSON, packed to ~5 KB
    assert per_transition(big, item) >= per_transition(small, item) + 4
    assert big["total_usd_per_million"] > small["total_usd_per_million"]


@pytest.mark.slow
def test_a_redis_store_is_not_billed_per_request_and_prices_follow_the_arn_region(folder: Path) -> None:
    report = cost_json(folder, "--settings", "redis-sqs.yaml", *SMALL)
    assert "redis store redis://cache.internal:6379/0: not billed per request" in report["not_billed"]
    assert report["region"] == "eu-west-1"
    assert not any(i["service"] == "DynamoDB" for i in report["line_items"])
    assert cost_json(folder, "--settings", "redis-sqs.yaml", "--region", "us-east-1", *SMALL)["region"] == "us-east-1"


@pytest.mark.parametrize(("args", "flag"), [
    (("--batch-size", "0"), "--batch-size"),
    (("--memory", "64"), "--memory"),
    (("--context-bytes", "-1"), "--context-bytes"),
    (("--transitions", "many"), "--transitions"),
    (("--region", "mars-1"), "--region"),
    (("--region", ""), "--region"),
    (("--machine", "refund"), "--machine"),
    (("--settings", "missing.yaml"), "--settings"),
])
def test_bad_input_exits_2_with_one_line_naming_the_flag(folder: Path, args: tuple[str, ...], flag: str) -> None:
    done = fsm_cost(folder, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("fsm cost: ") and flag in line
