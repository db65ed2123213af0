"""``fsm template`` output created by CloudFormation on moto_server.

One stack holds every kind of source the settings can name (a queue, a FIFO topic, a
Kinesis stream, a table whose stream is a bus, an EventBridge bus) with a store table, a
retry queue, a checkpoint table, a dead-letter queue and a notify topic. After
CREATE_COMPLETE the resources are read back through their own APIs, and an instance is
run to its end on them with the settings the stack gave the function, which proves the
environment variables name what the stack made.

moto's CloudFormation skips resource types it does not implement (it logs "No Moto
CloudFormation support"): alarms, SNS subscriptions declared on their own, queue policies
and function URLs. The test lists what was skipped and fails on anything else missing.
"""

from __future__ import annotations

import copy
import io
import json
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from test_aws_end_to_end import ACCOUNT, REGION, SqsReader, aws_client, drive

from config.loader import load_file
from config.settings import load_settings
from fsm import Action, Context
from fsm.app import App
from fsm.app.intake import handle_event
from fsm.app.template import Options, build_template, render
from fsm.app.template_resources import STREAM_RETRIES, VISIBILITY_FACTOR
from fsm.app.wiring import build
from fsm.client import Client
from fsm.errors import UnknownInstance

ROOT = Path(__file__).resolve().parents[2]
MOTO_CANNOT_CREATE = {"AWS::CloudWatch::Alarm", "AWS::SNS::Subscription", "AWS::SQS::QueuePolicy",
                      "AWS::Lambda::Url"}
TIMEOUT = 30


class Step(Action):
    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context[context.current_state.name] = context.steps
        return "next"


MACHINE = f"""machines:
  - name: three
    states:
      - {{name: a, initial: true, do_action: {__name__}.Step, transitions: [{{event: next, target: b}}]}}
      - {{name: b, do_action: {__name__}.Step, transitions: [{{event: next, target: c}}]}}
      - {{name: c, final: true}}
"""


def arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, str]:
    """A machines file, and a prefix that keeps this test's names apart on a shared moto_server."""
    (tmp_path / "fsm.yaml").write_text(MACHINE, encoding="utf-8")
    return tmp_path / "fsm.yaml", f"t{uuid.uuid4().hex[:8]}"


def every_source(prefix: str) -> dict[str, Any]:
    return {
        "stream": [arn("sqs", f"{prefix}-orders"), arn("sns", f"{prefix}-steps.fifo"),
                   arn("kinesis", f"stream/{prefix}-events"), arn("dynamodb", f"table/{prefix}-bus"),
                   arn("events", f"event-bus/{prefix}-fsm")],
        "store": [arn("dynamodb", f"table/{prefix}-fsm")],
        "retry": [arn("sqs", f"{prefix}-delays")],
        "checkpoint": [arn("dynamodb", f"table/{prefix}-positions")],
        "dead_letter": [arn("sqs", f"{prefix}-dead")],
        "notify": [arn("sns", f"{prefix}-ui")],
        "metrics": {"target": "emf", "namespace": prefix},
    }


def upload_code(endpoint: str, prefix: str) -> tuple[str, str]:
    """The zip moto's Lambda needs to create the function (it never runs it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fsm.yaml", MACHINE)
    s3 = aws_client("s3", endpoint)
    s3.create_bucket(Bucket=f"{prefix}-code")
    s3.put_object(Bucket=f"{prefix}-code", Key="function.zip", Body=buffer.getvalue())
    return f"{prefix}-code", "function.zip"


def create_stack(endpoint: str, name: str, body: str, parameters: dict[str, str]) -> dict[str, Any]:
    cloudformation = aws_client("cloudformation", endpoint)
    cloudformation.create_stack(StackName=name, TemplateBody=body, Capabilities=["CAPABILITY_IAM"],
                                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
    deadline = time.monotonic() + 120
    while True:
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return stack


def created_resources(endpoint: str, stack: str, template: dict[str, Any]) -> dict[str, str]:
    """Logical id -> physical id of what was created; fails on a missing resource that
    moto could have made, and prints the ones it cannot."""
    summaries = aws_client("cloudformation", endpoint).list_stack_resources(StackName=stack)
    created = {r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
               for r in summaries["StackResourceSummaries"] if r["LogicalResourceId"]}
    missing = {name: r["Type"] for name, r in template["Resources"].items() if name not in created}
    print(f"moto created {len(created)} resources and skipped {sorted(missing.items())}")
    conditional = {name for name, r in template["Resources"].items() if "Condition" in r}
    assert {name for name, kind in missing.items() if kind not in MOTO_CANNOT_CREATE} <= conditional
    return created


def deployed(endpoint: str, settings: dict[str, Any], config: Path, prefix: str, fmt: str = "cloudformation",
             parameters: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    definitions = load_file(config)
    options = Options(prefix, fmt, TIMEOUT, 256, str(config.parent), config.name)
    template = build_template(definitions, load_settings(settings, environ={}), options)
    if "FunctionUrl" in template["Resources"]:
        # moto skips AWS::Lambda::Url, and then fails the whole stack on an output naming it.
        del template["Outputs"]["FunctionUrl"]
    bucket, key = upload_code(endpoint, prefix)
    body = render(template)
    if fmt == "sam":   # what `sam package` + CloudFormation's transform would make of it
        from samtranslator.translator.transform import transform

        template["Resources"]["Function"]["Properties"]["CodeUri"] = f"s3://{bucket}/{key}"
        template = transform(copy.deepcopy(template), {}, NoManagedPolicies())
        body = json.dumps(template)
    code = {"CodeBucket": bucket, "CodeKey": key} if fmt == "cloudformation" else {}
    create_stack(endpoint, f"{prefix}-stack", body, {**code, **(parameters or {})})
    return template, created_resources(endpoint, f"{prefix}-stack", template)


class NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def test_every_source_is_created_with_its_dead_letters_and_mappings(moto_url: str, project: tuple[Path, str]) -> None:
    config, prefix = project
    settings = every_source(prefix)
    _, created = deployed(moto_url, settings, config, prefix)
    assert {"Function", "FunctionRole", "FunctionLogGroup", "Schedule", "AlarmTopic"} <= set(created)
    check_queues(moto_url, prefix)
    check_tables(moto_url, prefix)
    assert aws_client("kinesis", moto_url).describe_stream_summary(
        StreamName=f"{prefix}-events")["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    topics = {t["TopicArn"] for t in aws_client("sns", moto_url).list_topics()["Topics"]}
    assert {arn("sns", f"{prefix}-steps.fifo"), arn("sns", f"{prefix}-ui"), arn("sns", f"{prefix}-alarms")} <= topics
    check_rules(moto_url, prefix)
    check_mappings(moto_url, prefix)


def check_queues(endpoint: str, prefix: str) -> None:
    sqs = aws_client("sqs", endpoint)
    for name in ("orders", "orders-dlq", "delays", "delays-dlq", "dead", "events-dlq", "bus-dlq",
                 "steps-lambda-fsm.fifo", "steps-lambda-fsm-dlq.fifo", "async-dlq"):
        sqs.get_queue_url(QueueName=f"{prefix}-{name}")
    url = sqs.get_queue_url(QueueName=f"{prefix}-orders")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(attributes["VisibilityTimeout"]) == VISIBILITY_FACTOR * TIMEOUT
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == arn("sqs", f"{prefix}-orders-dlq")
    fifo = sqs.get_queue_url(QueueName=f"{prefix}-steps-lambda-fsm.fifo")["QueueUrl"]
    assert sqs.get_queue_attributes(QueueUrl=fifo, AttributeNames=["FifoQueue"])["Attributes"]["FifoQueue"] == "true"


def check_tables(endpoint: str, prefix: str) -> None:
    from sources.dynamodb_tables import INDEXES

    dynamodb = aws_client("dynamodb", endpoint)
    for name in ("fsm", "positions"):
        table = dynamodb.describe_table(TableName=f"{prefix}-{name}")["Table"]
        assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
        assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == set(INDEXES)
    bus = dynamodb.describe_table(TableName=f"{prefix}-bus")["Table"]
    assert bus["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert bus["LatestStreamArn"]


def check_rules(endpoint: str, prefix: str) -> None:
    from sources.eventbridge import EVENT_PATTERN, rule_name

    events = aws_client("events", endpoint)
    events.describe_event_bus(Name=f"{prefix}-fsm")
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{prefix}"
    (rule,) = events.list_rules(EventBusName=f"{prefix}-fsm")["Rules"]
    assert rule["Name"] == rule_name(f"{prefix}-fsm") and json.loads(rule["EventPattern"]) == EVENT_PATTERN
    targets = events.list_targets_by_rule(Rule=rule["Name"], EventBusName=f"{prefix}-fsm")["Targets"]
    assert [t["Arn"] for t in targets] == [function_arn]
    schedules = [r for r in events.list_rules()["Rules"] if r.get("ScheduleExpression") == "rate(1 minute)"]
    assert any(events.list_targets_by_rule(Rule=r["Name"])["Targets"][0]["Arn"] == function_arn for r in schedules)


def check_mappings(endpoint: str, prefix: str) -> None:
    mappings = aws_client("lambda", endpoint).list_event_source_mappings(FunctionName=prefix)["EventSourceMappings"]
    by_source = {m["EventSourceArn"]: m for m in mappings}
    table_stream = aws_client("dynamodb", endpoint).describe_table(TableName=f"{prefix}-bus")["Table"]["LatestStreamArn"]
    assert set(by_source) == {arn("sqs", f"{prefix}-orders"), arn("sqs", f"{prefix}-delays"),
                              arn("sqs", f"{prefix}-steps-lambda-fsm.fifo"),
                              arn("kinesis", f"stream/{prefix}-events"), table_stream}
    for source, mapping in by_source.items():
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"], source
        if ":sqs:" not in source:
            assert mapping["BisectBatchOnFunctionError"] is False
            assert mapping["MaximumRetryAttempts"] == STREAM_RETRIES
            assert mapping["DestinationConfig"]["OnFailure"]["Destination"].endswith("-dlq")


def test_the_function_settings_run_an_instance_on_what_the_stack_made(
        moto_url: str, project: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    config, prefix = project
    settings = every_source(prefix)
    deployed(moto_url, settings, config, prefix)
    function = aws_client("lambda", moto_url).get_function(FunctionName=prefix)["Configuration"]
    assert (function["Handler"], function["Timeout"], function["MemorySize"]) == (
        "fsm.handler.lambda_handler", TIMEOUT, 256)
    variables = function["Environment"]["Variables"]
    assert variables["FSM_CONFIG"] == "fsm.yaml"
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    definitions = load_file(config)
    from_function = load_settings(definitions.settings, environ=variables)
    for key in ("stream", "store", "retry", "checkpoint", "dead_letter", "notify", "metrics"):
        assert getattr(from_function, key) == load_settings(settings, environ={}).__dict__[key], key
    application = App(definitions, from_function, build(definitions.machines, from_function))
    try:
        client = Client(wiring=application.wiring)
        cid = client.start("three", {})
        reader = SqsReader(moto_url, arn("sqs", f"{prefix}-orders"))

        def done() -> bool:
            try:
                return client.status(cid)["status"] == "done"
            except UnknownInstance:     # no step has run yet
                return False

        drive(lambda event: handle_event(application, event), reader, done)
        assert client.status(cid)["context"] == {"a": 0, "b": 1}
    finally:
        application.wiring.close()


def test_the_sam_template_transforms_and_creates(moto_url: str, project: tuple[Path, str]) -> None:
    config, prefix = project
    settings = {"stream": [arn("sqs", f"{prefix}-orders")], "store": [arn("dynamodb", f"table/{prefix}-fsm")]}
    template, created = deployed(moto_url, settings, config, prefix, fmt="sam")
    assert template["Resources"]["Function"]["Type"] == "AWS::Lambda::Function"
    kinds = {template["Resources"][name]["Type"] for name in created}
    assert {"AWS::Lambda::Function", "AWS::IAM::Role", "AWS::SQS::Queue", "AWS::DynamoDB::Table",
            "AWS::Lambda::EventSourceMapping", "AWS::Events::Rule", "AWS::Logs::LogGroup"} <= kinds
    mapping = aws_client("lambda", moto_url).list_event_source_mappings(FunctionName=prefix)["EventSourceMappings"]
    assert [m["EventSourceArn"] for m in mapping] == [arn("sqs", f"{prefix}-orders")]


@pytest.mark.parametrize("case", ["api", "redis", "ecs"])
def test_what_some_configurations_add_creates_too(moto_url: str, project: tuple[Path, str], case: str) -> None:
    """An HTTP API (function URL, token in Secrets Manager), a store outside AWS (the
    function in a VPC), containers on ECS (RunTask and its state-change rule)."""
    config, prefix = project
    settings: dict[str, Any] = {"stream": [arn("sqs", f"{prefix}-orders")], "store": [arn("dynamodb", f"table/{prefix}-fsm")]}
    parameters: dict[str, str] = {}
    if case == "api":
        settings["api"] = {"auth": "token", "token_secret": arn("secretsmanager", f"secret:{prefix}-token")}
    elif case == "redis":
        settings["store"] = ["redis://cache.internal:6379/0"]
        parameters = {"SubnetIds": "subnet-0123456789abcdef0", "SecurityGroupIds": "sg-0123456789abcdef0"}
    else:
        config = ROOT / "examples" / "ecs" / "fsm.yaml"
    template, created = deployed(moto_url, settings, config, prefix, parameters=parameters)
    kinds = {template["Resources"][name]["Type"] for name in created}
    assert {"AWS::Lambda::Function", "AWS::IAM::Role", "AWS::Lambda::EventSourceMapping"} <= kinds
    if case == "ecs":
        assert "RuleEcsTasks" in created
        policy = json.dumps(template["Resources"]["FunctionRole"]["Properties"]["Policies"])
        assert "ecs:RunTask" in policy and "iam:PassRole" in policy
