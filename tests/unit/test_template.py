"""``fsm template``: one template per settings combination the examples can run on, checked
the way AWS would check it (cfn-lint, the SAM transform) and for what the README promises:
partial batch responses, dead-letter queues, least privilege, the store's indexes.

Creating the stacks is ``tests/integration/test_template_stack.py``'s job (moto_server)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.loader import Definitions, load_file
from config.settings import load_settings
from fsm.app.template import Options, build_template, default_name, render
from fsm.cli import main
from fsm.errors import InvalidDefinition

ROOT = Path(__file__).resolve().parents[2]
PIZZA = ROOT / "examples" / "pizza" / "fsm.yaml"
ECS = ROOT / "examples" / "ecs" / "fsm.yaml"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:fsm-api-token"


def arn(service: str, resource: str, region: str = "us-east-1") -> str:
    return f"arn:aws:{service}:{region}:123456789012:{resource}"


TABLE = arn("dynamodb", "table/fsm")
# The settings the examples run on (examples/README.rst), one deployment each.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "sqs": {"stream": [arn("sqs", "orders")], "store": [TABLE], "dead_letter": [arn("sqs", "dead")],
            "metrics": {"target": "cloudwatch", "namespace": "shop"}},
    "sqs-fifo": {"stream": [arn("sqs", "orders.fifo")], "store": [TABLE], "retry": [arn("sqs", "delays")]},
    "kinesis": {"stream": [arn("kinesis", "stream/events")], "store": [TABLE],
                "checkpoint": [arn("dynamodb", "table/positions")], "metrics": {"target": "emf"}},
    "sns": {"stream": [arn("sns", "steps")], "store": [TABLE], "notify": [arn("sns", "ui")]},
    "sns-fifo": {"stream": [arn("sns", "steps.fifo")], "store": [TABLE]},
    "dynamodb-stream": {"stream": [arn("dynamodb", "table/bus")], "store": [TABLE],
                        "retry": [arn("dynamodb", "table/timers")]},
    "eventbridge": {"stream": [arn("events", "event-bus/fsm")], "store": [TABLE]},
    "api-token": {"stream": [arn("sqs", "orders")], "store": [TABLE], "api": {"auth": "token", "token_secret": SECRET}},
    "api-iam": {"stream": [arn("sqs", "orders")], "store": [TABLE], "api": {"auth": "iam"}},
    "redis-store": {"stream": [arn("sqs", "orders")], "store": ["redis://:hunter2@cache.internal:6379/0"],
              "retry": [arn("dynamodb", "table/timers")]},
    "failover": {"stream": [arn("sqs", "orders"), arn("kinesis", "stream/backup")],
                 "store": [TABLE, arn("dynamodb", "table/fsm-eu", "eu-west-1")]},
}
CONFIGS = {"ecs": ECS}          # combinations whose machines are not pizza's
COMBINATIONS["ecs"] = {"stream": [arn("sqs", "orders")], "store": [TABLE]}

# Every action the role may hold; a new one must be added here on purpose.
KNOWN_ACTIONS = {
    "sqs:GetQueueUrl", "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes", "kinesis:PutRecord", "kinesis:PutRecords", "kinesis:GetRecords",
    "kinesis:GetShardIterator", "kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:ListShards",
    "sns:Publish", "events:PutEvents", "dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
    "dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:BatchWriteItem", "dynamodb:DescribeStream",
    "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams", "logs:CreateLogStream",
    "logs:PutLogEvents", "cloudwatch:PutMetricData", "secretsmanager:GetSecretValue", "ecs:RunTask",
    "ecs:DescribeTaskDefinition", "ecs:TagResource", "iam:PassRole",
}
# AWS offers no resource-level permission for these: "*" is the only resource they take.
UNSCOPED = {"cloudwatch:PutMetricData", "dynamodb:ListStreams", "ecs:DescribeTaskDefinition"}


@cache
def definitions(path: Path) -> Definitions:
    return load_file(path)


def template(case: str, fmt: str = "sam", timeout: int = 60, **extra: Any) -> dict[str, Any]:
    config = CONFIGS.get(case, PIZZA)
    settings = load_settings({**COMBINATIONS[case], **extra}, environ={})
    options = Options("pizza", fmt, timeout, 512, str(config.parent), config.name)
    return build_template(definitions(config), settings, options)


def of_type(found: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in found["Resources"].items() if r["Type"] == kind}


def statements(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The role's statements, conditional ones (``Fn::If``) unwrapped."""
    role = found["Resources"]["FunctionRole"]["Properties"]
    out = []
    for statement in role["Policies"][0]["PolicyDocument"]["Statement"]:
        out.append(statement["Fn::If"][1] if "Fn::If" in statement else statement)
    return out


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def actions(found: dict[str, Any]) -> set[str]:
    return {a for s in statements(found) for a in listed(s["Action"])}


def text(value: Any) -> str:
    return json.dumps(value)


# -- what AWS would say --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["sam", "cloudformation"])
@pytest.mark.parametrize("case", sorted(COMBINATIONS))
def test_cfn_lint_finds_no_error(case: str, fmt: str) -> None:
    from cfnlint.api import lint

    matches = lint(render(template(case, fmt)), regions=["us-east-1"])
    for match in matches:
        print(f"{case}/{fmt}: {match}")          # warnings are shown, not failed
    assert not [str(m) for m in matches if m.rule.severity == "error"]


class StubPolicies:
    """The SAM translator asks IAM for managed policies by name; the template names none."""

    def load(self) -> dict[str, str]:
        return {}


@pytest.mark.parametrize("case", sorted(COMBINATIONS))
def test_the_sam_transform_keeps_our_role_and_resources(case: str) -> None:
    from samtranslator.translator.transform import transform

    sam = template(case, "sam")
    sam["Resources"]["Function"]["Properties"]["CodeUri"] = "s3://bucket/function.zip"   # as `sam package` does
    plain = transform(copy.deepcopy(sam), {}, StubPolicies())
    function = plain["Resources"]["Function"]
    assert function["Type"] == "AWS::Lambda::Function"
    assert function["Properties"]["Code"] == {"S3Bucket": "bucket", "S3Key": "function.zip"}
    assert function["Properties"]["Role"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    assert list(of_type(plain, "AWS::IAM::Role")) == ["FunctionRole"]     # SAM made no role of its own
    for name, resource in sam["Resources"].items():
        if name != "Function":
            assert plain["Resources"][name]["Type"] == resource["Type"]


def test_plain_cloudformation_takes_the_code_from_s3() -> None:
    found = template("sqs", "cloudformation")
    assert "Transform" not in found
    assert found["Resources"]["Function"]["Type"] == "AWS::Lambda::Function"
    assert found["Resources"]["Function"]["Properties"]["Code"] == {"S3Bucket": {"Ref": "CodeBucket"},
                                                                     "S3Key": {"Ref": "CodeKey"}}
    assert {"CodeBucket", "CodeKey"} <= set(found["Parameters"])


# -- least privilege -----------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(COMBINATIONS))
def test_no_wildcard_resource_but_where_aws_requires_one(case: str) -> None:
    for statement in statements(template(case)):
        resources = listed(statement["Resource"])
        assert not any(isinstance(r, str) and r.endswith(":*:*") for r in resources)
        if "*" in resources:
            assert set(listed(statement["Action"])) <= UNSCOPED, statement
        assert set(listed(statement["Action"])) <= KNOWN_ACTIONS


def test_an_sqs_deployment_is_granted_only_what_its_adapters_call() -> None:
    found = template("sqs")
    assert actions(found) == {
        "dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem",
        "sqs:GetQueueUrl", "sqs:SendMessage", "sqs:ChangeMessageVisibility", "sqs:DeleteMessage",
        "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "logs:CreateLogStream", "logs:PutLogEvents",
        "cloudwatch:PutMetricData"}
    by_sid = {s["Sid"]: s for s in statements(found)}
    assert by_sid["PutMetrics"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "shop"}}
    read = text(by_sid["ReadQueues"]["Resource"])
    assert ":orders" in read and ":dead" not in read    # the dead-letter queue is only sent to
    assert "dynamodb:ListStreams" not in actions(found) and "kinesis:PutRecord" not in actions(found)


def test_the_store_table_and_its_indexes_are_the_only_dynamodb_resources() -> None:
    from sources.dynamodb_tables import INDEXES

    found = template("sqs")
    dynamodb = [s for s in statements(found) if any(a.startswith("dynamodb:") for a in listed(s["Action"]))]
    granted = {r["Fn::Sub"].rsplit(":", 1)[1] for s in dynamodb for r in listed(s["Resource"])}
    assert granted == {"table/fsm", *(f"table/fsm/index/{name}" for name in INDEXES)}


def test_stream_readers_get_stream_actions_and_only_them() -> None:
    assert {"kinesis:GetRecords", "kinesis:ListShards", "kinesis:PutRecords"} <= actions(template("kinesis"))
    table_stream = template("dynamodb-stream")
    read = next(s for s in statements(table_stream) if "dynamodb:GetRecords" in listed(s["Action"]))
    assert text(read["Resource"]).endswith('table/bus/stream/*"}')
    assert {"sns:Publish"} == {a for a in actions(template("sns")) if a.startswith("sns:")}
    assert "events:PutEvents" in actions(template("eventbridge"))


def test_an_api_token_is_readable_from_its_secret_alone() -> None:
    found = template("api-token")
    read = next(s for s in statements(found) if s["Action"] == ["secretsmanager:GetSecretValue"])
    assert len(read["Resource"]) == 2
    assert text(read["Resource"][1]).endswith(':secret:fsm-api-token-??????"}')


def test_ecs_tasks_are_run_in_their_cluster_and_report_back() -> None:
    found = template("ecs")
    run = next(s for s in statements(found) if s["Action"] == ["ecs:RunTask"])
    assert text(run["Resource"]).count("task-definition/") == 2
    assert "cluster/media" in text(run["Condition"]["ArnEquals"]["ecs:cluster"])
    passing = next(s for s in statements(found) if s["Action"] == "iam:PassRole")
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    rule = found["Resources"]["RuleEcsTasks"]["Properties"]
    assert rule["EventPattern"]["detail-type"] == ["ECS Task State Change"]
    assert rule["EventPattern"]["detail"]["startedBy"] == [{"prefix": "fsm:"}]
    assert "ecs:RunTask" not in actions(template("sqs"))


# -- sources, queues and their dead letters ------------------------------------------------


@pytest.mark.parametrize("case", sorted(COMBINATIONS))
def test_every_mapping_reports_batch_item_failures(case: str) -> None:
    found = template(case)
    for mapping in of_type(found, "AWS::Lambda::EventSourceMapping").values():
        assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["Properties"]["FunctionName"] == {"Ref": "Function"}


@pytest.mark.parametrize("case", ["kinesis", "dynamodb-stream"])
def test_stream_mappings_retry_a_bounded_number_of_times_then_report(case: str) -> None:
    found = template(case)
    (mapping,) = of_type(found, "AWS::Lambda::EventSourceMapping").values()
    properties = mapping["Properties"]
    assert properties["BisectBatchOnFunctionError"] is False
    assert 0 < properties["MaximumRetryAttempts"] <= 10_000
    failure_queue = properties["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    assert found["Resources"][failure_queue]["Type"] == "AWS::SQS::Queue"
    assert {"Fn::GetAtt": [failure_queue, "Arn"]} in [r for s in statements(found) for r in listed(s["Resource"])]


@pytest.mark.parametrize("timeout", [30, 900])
def test_read_queues_hide_records_six_function_timeouts_and_redrive_to_a_dlq(timeout: int) -> None:
    found = template("sqs-fifo", timeout=timeout)
    assert found["Parameters"]["FunctionTimeout"]["MaxValue"] == timeout
    queues = of_type(found, "AWS::SQS::Queue")
    for name in ("QueueOrdersFifo", "QueueDelays"):
        properties = queues[name]["Properties"]
        assert properties["VisibilityTimeout"] >= 6 * timeout
        dlq = properties["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        assert queues[dlq]["Properties"]["QueueName"].startswith(properties["QueueName"].removesuffix(".fifo"))
    assert queues["QueueOrdersFifo"]["Properties"]["FifoQueue"] is True
    assert queues["QueueOrdersDlqFifo"]["Properties"] == {
        "QueueName": "orders-dlq.fifo", "MessageRetentionPeriod": 14 * 86400, "FifoQueue": True}
    mappings = {m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"]
                for m in of_type(found, "AWS::Lambda::EventSourceMapping").values()}
    assert "MaximumBatchingWindowInSeconds" not in mappings["QueueOrdersFifo"]   # FIFO takes no window
    assert mappings["QueueDelays"]["MaximumBatchingWindowInSeconds"] == 0


def test_a_dead_letter_queue_never_takes_the_name_of_a_queue_of_the_settings() -> None:
    found = template("sqs", dead_letter=[arn("sqs", "orders-dlq")])
    names = [q["Properties"]["QueueName"] for q in of_type(found, "AWS::SQS::Queue").values()]
    assert sorted(names) == ["orders", "orders-dlq", "orders-dlq2", "pizza-async-dlq"]


def test_topics_invoke_the_function_or_feed_a_fifo_queue() -> None:
    found = template("sns")
    topics = of_type(found, "AWS::SNS::Topic")
    assert topics["TopicSteps"]["Properties"]["Subscription"] == [
        {"Protocol": "lambda", "Endpoint": {"Fn::GetAtt": ["Function", "Arn"]}}]
    assert "Subscription" not in topics["TopicUi"]["Properties"]     # notify: for UIs to subscribe
    assert any(p["Properties"]["Principal"] == "sns.amazonaws.com"
               and p["Properties"]["SourceArn"] == {"Ref": "TopicSteps"}
               for p in of_type(found, "AWS::Lambda::Permission").values())
    fifo = template("sns-fifo")
    topic = of_type(fifo, "AWS::SNS::Topic")["TopicStepsFifo"]["Properties"]
    assert topic["FifoTopic"] is True and topic["Subscription"][0]["Protocol"] == "sqs"
    queue = topic["Subscription"][0]["Endpoint"]["Fn::GetAtt"][0]
    assert fifo["Resources"][queue]["Properties"]["FifoQueue"] is True
    (policy,) = of_type(fifo, "AWS::SQS::QueuePolicy").values()
    assert policy["Properties"]["PolicyDocument"]["Statement"][0]["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Ref": "TopicStepsFifo"}}}
    (mapping,) = of_type(fifo, "AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue, "Arn"]}


def test_an_eventbridge_bus_gets_the_rule_create_resources_would_make() -> None:
    from sources.eventbridge import EVENT_PATTERN, rule_name

    found = template("eventbridge")
    assert of_type(found, "AWS::Events::EventBus")["BusFsm"]["Properties"] == {"Name": "fsm"}
    rule = found["Resources"]["RuleFsm"]
    assert rule["DependsOn"] == "BusFsm"
    assert rule["Properties"]["EventPattern"] == EVENT_PATTERN
    assert rule["Properties"]["Name"] == rule_name("fsm") and rule["Properties"]["EventBusName"] == "fsm"
    assert found["Resources"]["PermissionFsm"]["Properties"]["SourceArn"] == {"Fn::GetAtt": ["RuleFsm", "Arn"]}


def test_a_schedule_sweeps_every_minute() -> None:
    found = template("sqs")
    assert found["Resources"]["Schedule"]["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    assert found["Resources"]["PermissionSchedule"]["Properties"]["Principal"] == "events.amazonaws.com"


# -- tables --------------------------------------------------------------------------------


def test_the_store_table_matches_what_create_resources_makes() -> None:
    """Indexes and attributes come from sources.dynamodb_tables at generation time; a
    table made by ``create_tables`` (in-process moto) has exactly the template's."""
    moto = pytest.importorskip("moto")
    import boto3

    from sources.dynamodb_tables import TTL, create_tables

    table = of_type(template("sqs"), "AWS::DynamoDB::Table")["TableFsm"]
    properties = table["Properties"]
    with moto.mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(TABLE, client=client)
        made = client.describe_table(TableName="fsm")["Table"]
    assert properties["KeySchema"] == made["KeySchema"]
    assert sorted(properties["AttributeDefinitions"], key=str) == sorted(made["AttributeDefinitions"], key=str)
    assert ({i["IndexName"]: (i["KeySchema"], i["Projection"]) for i in properties["GlobalSecondaryIndexes"]}
            == {i["IndexName"]: (i["KeySchema"], i["Projection"]) for i in made["GlobalSecondaryIndexes"]})
    assert properties["TimeToLiveSpecification"] == {"AttributeName": TTL, "Enabled": True}
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def test_a_table_that_is_a_bus_streams_new_images_and_expires_them() -> None:
    found = template("dynamodb-stream")
    bus = found["Resources"]["TableBus"]["Properties"]
    assert bus["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    assert bus["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert bus["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    (mapping,) = of_type(found, "AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["TableBus", "StreamArn"]}
    assert "GlobalSecondaryIndexes" in found["Resources"]["TableTimers"]["Properties"]


# -- the function, its settings and alarms -------------------------------------------------


def test_the_function_gets_its_settings_as_environment_variables() -> None:
    found = template("sqs", lease_timeout=120)
    function = found["Resources"]["Function"]["Properties"]
    assert function["Handler"] == "fsm.handler.lambda_handler"
    assert function["Runtime"] == {"Ref": "Runtime"}
    assert found["Parameters"]["Runtime"]["Default"] >= "python3.12"
    assert function["CodeUri"] == str(PIZZA.parent)
    variables = function["Environment"]["Variables"]
    assert variables["FSM_CONFIG"] == "fsm.yaml"
    assert variables["FSM_STREAM"] == {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:orders"}
    assert json.loads(variables["FSM_METRICS"]) == {"target": "cloudwatch", "namespace": "shop"}
    assert variables["FSM_LEASE_TIMEOUT"] == "120"
    assert "FSM_MAX_LOCAL_HOPS" not in variables        # defaults stay out
    log_group = found["Resources"]["FunctionLogGroup"]["Properties"]
    assert log_group == {"LogGroupName": "/aws/lambda/pizza", "RetentionInDays": {"Ref": "LogRetentionDays"}}
    assert found["Resources"]["Function"]["DependsOn"] == "FunctionLogGroup"


def test_a_server_store_runs_in_a_vpc_and_its_password_is_never_printed() -> None:
    found = template("redis-store")
    assert found["Resources"]["Function"]["Properties"]["VpcConfig"] == {
        "SubnetIds": {"Ref": "SubnetIds"}, "SecurityGroupIds": {"Ref": "SecurityGroupIds"}}
    assert found["Parameters"]["SubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    assert found["Parameters"]["StoreUrl"]["NoEcho"] is True and "Default" not in found["Parameters"]["StoreUrl"]
    role = found["Resources"]["FunctionRole"]["Properties"]
    assert "AWSLambdaVPCAccessExecutionRole" in text(role["ManagedPolicyArns"])
    assert "hunter2" not in render(found)
    assert any("ElastiCache" in note for note in found["Metadata"]["lambda-fsm"]["notes"])
    assert list(of_type(found, "AWS::DynamoDB::Table")) == ["TableTimers"]


def test_alarms_watch_dead_letters_and_failed_instances() -> None:
    found = template("sqs")
    alarms = of_type(found, "AWS::CloudWatch::Alarm")
    watched = {a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in alarms.values()
               if a["Properties"].get("Namespace") == "AWS/SQS"}
    assert watched == {"QueueOrdersDlq", "QueueDead", "QueuePizzaAsyncDlq"}
    queries = {m["Expression"] for a in alarms.values() for m in a["Properties"].get("Metrics", [])}
    assert queries == {'SELECT SUM(Failures) FROM "shop"', 'SELECT SUM(DeadLetters) FROM "shop"'}
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms.values())
    assert not [a for a in of_type(template("sns"), "AWS::CloudWatch::Alarm").values() if "Metrics" in a["Properties"]]


def test_an_api_is_a_function_url() -> None:
    token = template("api-token")
    assert token["Resources"]["FunctionUrl"]["Properties"]["AuthType"] == "NONE"
    public = [p["Properties"] for p in of_type(token, "AWS::Lambda::Permission").values() if p["Properties"]["Principal"] == "*"]
    assert {p["Action"] for p in public} == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    signed = template("api-iam")
    assert signed["Resources"]["FunctionUrl"]["Properties"]["AuthType"] == "AWS_IAM"
    assert not [p for p in of_type(signed, "AWS::Lambda::Permission").values() if p["Properties"]["Principal"] == "*"]
    assert signed["Outputs"]["FunctionUrl"]["Value"] == {"Fn::GetAtt": ["FunctionUrl", "FunctionUrl"]}
    assert "FunctionUrl" not in template("sqs")["Resources"]
    implied = template("api-token", api={"token_secret": SECRET})     # a secret alone means token
    assert implied["Resources"]["FunctionUrl"]["Properties"]["AuthType"] == "NONE"
    assert "secretsmanager:GetSecretValue" not in actions(template("api-iam", api={"auth": "iam", "token_secret": SECRET}))
    off = template("api-token", api={"auth": "token"})
    assert "FunctionUrl" not in off["Resources"] and "secretsmanager:GetSecretValue" not in actions(off)


def test_arns_elsewhere_are_granted_but_not_created() -> None:
    found = template("failover")
    assert "arn:aws:dynamodb:eu-west-1:123456789012:table/fsm-eu" in [
        r for s in statements(found) for r in listed(s["Resource"])]
    assert list(of_type(found, "AWS::DynamoDB::Table")) == ["TableFsm"]
    assert any("eu-west-1" in note for note in found["Metadata"]["lambda-fsm"]["notes"])
    sources = {m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
               for m in of_type(found, "AWS::Lambda::EventSourceMapping").values()}
    assert sources == {"QueueOrders", "StreamBackup"}     # secondaries are read too


@pytest.mark.parametrize("settings, problem", [
    ({"stream": [arn("sqs", "q")]}, "every Lambda container would have its own"),
    ({"store": [TABLE]}, "no `stream:` is configured"),
    ({"store": [TABLE], "stream": ["memory://"]}, "not an AWS ARN"),
    ({"store": [TABLE], "stream": [TABLE]}, "give the stream a table of its own"),
])
def test_what_cannot_run_in_lambda_is_refused(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidDefinition, match=problem.replace("`", ".")):
        build_template(definitions(PIZZA), load_settings(settings, environ={}), Options("pizza"))


# -- the command ---------------------------------------------------------------------------

DOOR = """machines:
  - name: door
    states:
      - {name: closed, initial: true, transitions: [{event: open, target: opened}]}
      - {name: opened, final: true}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "fsm.yaml").write_text(DOOR)
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump(COMBINATIONS["kinesis"]))
    monkeypatch.chdir(tmp_path)
    for name in ("FSM_CONFIG", "FSM_SETTINGS", "FSM_STORE", "FSM_STREAM"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_fsm_template_prints_yaml_and_writes_nothing(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["template", "--settings", "settings.yaml", "--name", "doors"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Generated by `fsm template`")
    found = yaml.safe_load(out)
    assert found["Transform"] == "AWS::Serverless-2016-10-31"
    assert found["Resources"]["Function"]["Properties"]["FunctionName"] == "doors"
    assert found["Resources"]["Function"]["Properties"]["CodeUri"] == "."
    assert sorted(p.name for p in project.iterdir()) == ["fsm.yaml", "settings.yaml"]


def test_fsm_template_json_cloudformation(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["template", "--settings", "settings.yaml", "--format", "cloudformation", "--json",
                 "--timeout", "120", "--memory", "1024"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["Resources"]["Function"]["Properties"]["FunctionName"] == default_name(project.name)
    assert found["Parameters"]["FunctionTimeout"]["Default"] == 120
    assert found["Parameters"]["FunctionMemorySize"]["Default"] == 1024
    assert "CodeBucket" in found["Parameters"]


@pytest.mark.parametrize("folder, name", [("pizza", "pizza"), ("my_shop", "my-shop"), ("2024", "fsm-2024"),
                                          ("_", "fsm"), ("x" * 50, "x" * 40)])
def test_the_default_name_is_the_config_folder_made_a_valid_name(folder: str, name: str) -> None:
    assert default_name(folder) == name


@pytest.mark.parametrize("argv, message", [
    (["template"], "no `stream:` is configured"),
    (["template", "--settings", "settings.yaml", "--timeout", "901"], "--timeout 901 must be 1 to 900"),
    (["template", "--settings", "settings.yaml", "--name", "no spaces"], "--name 'no spaces'"),
])
def test_fsm_template_refuses_with_one_line_and_exit_2(project: Path, capsys: pytest.CaptureFixture[str],
                                                       argv: list[str], message: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("fsm template: ") and message in captured.err
