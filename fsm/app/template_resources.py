"""The resources of ``fsm template``, one builder per AWS service the settings can name.

A builder adds what one ARN needs to a :class:`Stack`: the resource itself (when it lives
where the stack is deployed), what feeds the function from it (an event source mapping,
a subscription, a rule), its dead-letter queue, and the IAM grants for exactly the calls
its adapter makes. Grants are collected here and written as one policy at the end, so a
resource named in several roles (a queue that is a stream and a dead letter) is granted
the union of what those roles call, once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
FUNCTION = "Function"
ALARM_TOPIC = "AlarmTopic"

# What each adapter calls, as IAM actions. SqsBus: GetQueueUrl, SendMessage(Batch); the
# event source mapping and sqs.retry_later read, delete and re-time records.
SQS_SEND = ("sqs:GetQueueUrl", "sqs:SendMessage")
SQS_READ = ("sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage")
KINESIS_SEND = ("kinesis:PutRecord", "kinesis:PutRecords")
KINESIS_READ = ("kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords",
                "kinesis:GetShardIterator", "kinesis:ListShards")
SNS_SEND = ("sns:Publish",)
EVENTS_SEND = ("events:PutEvents",)
# DynamoStreamBus: a conditional PutItem per message, BatchWriteItem per batch.
STREAM_TABLE_SEND = ("dynamodb:BatchWriteItem", "dynamodb:PutItem")
STREAM_READ = ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator")
# DynamoStore (GetItem, UpdateItem, TransactWriteItems of an Update and Puts, Query, and
# BatchGetItem when listing), DynamoTimers (PutItem, Query on the timer index, DeleteItem),
# DynamoCheckpoints (GetItem, PutItem).
STORE_TABLE = ("dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem",
               "dynamodb:Query", "dynamodb:UpdateItem")
STORE_INDEX = ("dynamodb:Query",)
# Actions IAM cannot scope to a resource: AWS requires "*" for them.
UNSCOPED = frozenset({"cloudwatch:PutMetricData", "dynamodb:ListStreams", "ecs:DescribeTaskDefinition"})

VISIBILITY_FACTOR = 6        # SQS visibility timeout >= 6 x the function timeout (AWS's advice)
MAX_RECEIVES = 10            # receives before SQS moves a record to the queue's DLQ
STREAM_RETRIES = 10          # Kinesis/DynamoDB stream batch retries before the on-failure queue
QUEUE_RETENTION = 4 * 86400   # SQS's default, stated: a message waits at most 15 minutes
DLQ_RETENTION = 14 * 86400    # the longest SQS keeps a message
STREAM_TABLE_TTL = "expires_at"   # sources.dynamodb_stream writes this attribute


def sub(text: str) -> Json:
    return {"Fn::Sub": text}


def ref(name: str) -> Json:
    return {"Ref": name}


def get_att(logical: str, attribute: str) -> Json:
    return {"Fn::GetAtt": [logical, attribute]}


def in_stack(service: str, resource: str) -> Json:
    """The ARN of ``resource`` in the stack's own partition, region and account."""
    return sub(f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}")


@dataclass(frozen=True)
class Arn:
    """An ARN from the settings. ``home`` ARNs (the region and account of the first one)
    are written with ``${AWS::Region}``/``${AWS::AccountId}`` and created by the stack;
    others are kept literal: the stack grants access to them but cannot create them."""

    partition: str
    service: str
    region: str
    account: str
    resource: str
    home: bool

    @classmethod
    def parse(cls, text: str, home: tuple[str, str]) -> Arn:
        _, partition, service, region, account, resource = text.split(":", 5)
        return cls(partition, service, region, account, resource, (region, account) == home)

    @property
    def name(self) -> str:
        """``orders`` of ``...:orders``, ``table/orders``, ``stream/orders``, ``event-bus/orders``."""
        _, slash, rest = self.resource.partition("/")
        return rest.split("/")[0] if slash else self.resource

    def value(self, resource: str | None = None) -> str | Json:
        """This ARN, or another resource of the same service and place, as the template writes it."""
        resource = self.resource if resource is None else resource
        if self.home:
            return in_stack(self.service, resource)
        return f"arn:{self.partition}:{self.service}:{self.region}:{self.account}:{resource}"


@dataclass(frozen=True)
class Uses:
    """What the deployment does with one resource: reads it (the function consumes it),
    and whether anything landing in it deserves an alarm (a dead-letter queue)."""

    consume: bool = False
    watch: bool = False


@dataclass
class Stack:
    """A template being assembled: resources, parameters, conditions, outputs, the IAM
    grants of the function's role, and notes for the person deploying it."""

    name: str
    timeout: int
    home: tuple[str, str]
    resources: dict[str, Json] = field(default_factory=dict)
    parameters: dict[str, Json] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Json] = field(default_factory=dict)
    grants: list[tuple[str, tuple[str, ...], Any, Json | None]] = field(default_factory=list)
    statements: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    watched: list[tuple[str, str]] = field(default_factory=list)   # (logical id, queue name)
    queue_names: set[str] = field(default_factory=set)   # the settings' own, and each one made
    invoked_asynchronously: bool = False

    def new_id(self, kind: str, name: str = "") -> str:
        """A logical id readable as what it is (``QueueOrdersFifo``), unique in the stack."""
        words = re.split(r"[^A-Za-z0-9]+", name)
        base = (kind + "".join(w[:1].upper() + w[1:] for w in words if w))[:200]
        candidate, n = base, 2
        while candidate in self.resources or candidate in self.parameters:
            candidate, n = f"{base}{n}", n + 1
        return candidate

    def add(self, logical: str, kind: str, properties: Json, **attributes: Any) -> str:
        self.resources[logical] = {"Type": kind, **attributes, "Properties": properties}
        return logical

    def grant(self, label: str, actions: Iterable[str], resources: Any, condition: Json | None = None) -> None:
        actions = tuple(actions)
        if resources == "*" and not set(actions) <= UNSCOPED:
            raise ValueError(f"{actions} can be limited to resources: grant them on the resources")
        for resource in resources if isinstance(resources, list) else [resources]:
            self.grants.append((label, tuple(sorted(actions)), resource, condition))

    def policy(self) -> list[Any]:
        """One statement per distinct (actions, condition), resources in the order granted."""
        merged: dict[str, tuple[str, tuple[str, ...], list[Any], Json | None]] = {}
        for label, actions, resource, condition in self.grants:
            key = json.dumps([actions, condition], sort_keys=True)
            entry = merged.setdefault(key, (label, actions, [], condition))
            if resource not in entry[2]:
                entry[2].append(resource)
        statements, sids = [], set()
        for label, actions, resources, condition in merged.values():
            sid, n = label, 2
            while sid in sids:
                sid, n = f"{label}{n}", n + 1
            sids.add(sid)
            statement = {"Sid": sid, "Effect": "Allow", "Action": list(actions),
                         "Resource": resources[0] if len(resources) == 1 else resources}
            statements.append({**statement, "Condition": condition} if condition else statement)
        return statements + self.statements

    def watch(self, queue: str, name: str) -> None:
        self.watched.append((queue, name))


# -- what feeds the function ---------------------------------------------------------------


def permission(stack: Stack, name: str, principal: str, source_arn: Any) -> str:
    """Let ``principal`` (SNS, EventBridge) invoke the function from ``source_arn`` only."""
    stack.invoked_asynchronously = True
    return stack.add(stack.new_id("Permission", name), "AWS::Lambda::Permission", {
        "Action": "lambda:InvokeFunction", "FunctionName": ref(FUNCTION), "Principal": principal,
        "SourceArn": source_arn})


def mapping(stack: Stack, name: str, source_arn: Any, kind: str, on_failure: str = "") -> str:
    """An event source mapping as the README asks for: partial batch responses always;
    for streams (``kind`` "stream") no bisecting (the handler stops an ordered batch at its
    first failure itself), bounded retries, then the batch's coordinates to ``on_failure``."""
    properties: Json = {"FunctionName": ref(FUNCTION), "EventSourceArn": source_arn,
                        "FunctionResponseTypes": ["ReportBatchItemFailures"], "Enabled": True}
    if kind == "queue":
        properties.update(BatchSize=10, MaximumBatchingWindowInSeconds=0)
    elif kind == "fifo":
        properties.update(BatchSize=10)  # FIFO mappings take no batching window
    else:
        properties.update(BatchSize=100, MaximumBatchingWindowInSeconds=0, StartingPosition="TRIM_HORIZON",
                          BisectBatchOnFunctionError=False, MaximumRetryAttempts=STREAM_RETRIES,
                          ParallelizationFactor=1,
                          DestinationConfig={"OnFailure": {"Destination": get_att(on_failure, "Arn")}})
    return stack.add(stack.new_id("Mapping", name), "AWS::Lambda::EventSourceMapping", properties)


def queue_name(base: str, suffix: str, fifo: bool) -> str:
    """``orders`` + ``-dlq`` -> ``orders-dlq`` (``orders-dlq.fifo`` for FIFO), within SQS's 80
    characters (a long base is cut and made unique by a digest)."""
    stem = base.removesuffix(".fifo")
    tail = suffix + (".fifo" if fifo else "")
    if len(stem) + len(tail) > 80:
        digest = hashlib.sha256(stem.encode()).hexdigest()[:8]
        stem = f"{stem[:80 - len(tail) - 9]}-{digest}"
    return stem + tail


def dead_letter_queue(stack: Stack, base: str, fifo: bool = False) -> str:
    """A queue holding what the function could not take from ``base``; alarmed on. Named
    ``BASE-dlq`` unless the settings name a queue so (then ``BASE-dlq2``...)."""
    name, n = queue_name(base, "-dlq", fifo), 2
    while name in stack.queue_names:
        name, n = queue_name(base, f"-dlq{n}", fifo), n + 1
    stack.queue_names.add(name)
    properties: Json = {"QueueName": name, "MessageRetentionPeriod": DLQ_RETENTION}
    if fifo:
        properties["FifoQueue"] = True
    logical = stack.add(stack.new_id("Queue", name), "AWS::SQS::Queue", properties)
    stack.watch(logical, name)
    return logical


def on_failure_queue(stack: Stack, base: str) -> str:
    """Where a stream mapping reports a batch it gave up on; the role must send there."""
    logical = dead_letter_queue(stack, base)
    stack.grant("SendToFailureQueues", ("sqs:SendMessage",), get_att(logical, "Arn"))
    return logical


def _external(stack: Stack, arn: Arn, uses: Uses) -> bool:
    """An ARN in another region or account: granted, not created, and not consumed here."""
    if arn.home:
        return False
    where = f"{arn.region or '-'}/{arn.account or '-'}"
    reading = "; its mapping or subscription belongs in a stack there" if uses.consume else ""
    stack.notes.append(f"{arn.value()} is in {where}, not where this stack goes: not created{reading}")
    return True


# -- one builder per service ---------------------------------------------------------------


def add_queue(stack: Stack, arn: Arn, uses: Uses) -> None:
    fifo = arn.name.endswith(".fifo")
    stack.grant("SendToQueues", SQS_SEND, arn.value())
    if uses.consume:
        stack.grant("ReadQueues", SQS_READ, arn.value())
    if _external(stack, arn, uses):
        return
    properties: Json = {"QueueName": arn.name, "MessageRetentionPeriod": QUEUE_RETENTION}
    if fifo:
        properties.update(FifoQueue=True, ContentBasedDeduplication=False)
    if uses.consume:
        dlq = dead_letter_queue(stack, arn.name, fifo)
        properties.update(VisibilityTimeout=VISIBILITY_FACTOR * stack.timeout,
                          RedrivePolicy={"deadLetterTargetArn": get_att(dlq, "Arn"), "maxReceiveCount": MAX_RECEIVES})
    logical = stack.add(stack.new_id("Queue", arn.name), "AWS::SQS::Queue", properties)
    if uses.consume:
        mapping(stack, arn.name, get_att(logical, "Arn"), "fifo" if fifo else "queue")
    if uses.watch:
        stack.watch(logical, arn.name)


def add_kinesis_stream(stack: Stack, arn: Arn, uses: Uses) -> None:
    stack.grant("PutRecords", KINESIS_SEND, arn.value())
    if uses.consume:
        stack.grant("ReadStreams", KINESIS_READ, arn.value())
    if _external(stack, arn, uses):
        return
    # One shard, as `fsm create-resources` makes it: raise ShardCount for throughput.
    logical = stack.add(stack.new_id("Stream", arn.name), "AWS::Kinesis::Stream",
                        {"Name": arn.name, "ShardCount": 1, "RetentionPeriodHours": 24})
    if uses.consume:
        mapping(stack, arn.name, get_att(logical, "Arn"), "stream", on_failure_queue(stack, arn.name))


def add_topic(stack: Stack, arn: Arn, uses: Uses) -> None:
    """A standard topic invokes the function; a FIFO topic cannot, so it feeds a FIFO queue
    that the function reads (the SNS envelope is unwrapped by ``sources.sqs``)."""
    fifo = arn.name.endswith(".fifo")
    stack.grant("Publish", SNS_SEND, arn.value())
    if _external(stack, arn, uses):
        return
    logical = stack.new_id("Topic", arn.name)
    properties: Json = {"TopicName": arn.name}
    if fifo:
        properties.update(FifoTopic=True, ContentBasedDeduplication=False)
    if uses.consume and fifo:
        subscriber = _topic_queue(stack, arn.name, logical)
        properties["Subscription"] = [{"Protocol": "sqs", "Endpoint": get_att(subscriber, "Arn")}]
    elif uses.consume:
        properties["Subscription"] = [{"Protocol": "lambda", "Endpoint": get_att(FUNCTION, "Arn")}]
        permission(stack, arn.name, "sns.amazonaws.com", ref(logical))
    stack.add(logical, "AWS::SNS::Topic", properties)


def _topic_queue(stack: Stack, topic: str, topic_logical: str) -> str:
    name = queue_name(topic, "-lambda-fsm", fifo=True)
    dlq = dead_letter_queue(stack, name, fifo=True)
    logical = stack.add(stack.new_id("Queue", name), "AWS::SQS::Queue", {
        "QueueName": name, "FifoQueue": True, "VisibilityTimeout": VISIBILITY_FACTOR * stack.timeout,
        "RedrivePolicy": {"deadLetterTargetArn": get_att(dlq, "Arn"), "maxReceiveCount": MAX_RECEIVES}})
    stack.add(stack.new_id("QueuePolicy", name), "AWS::SQS::QueuePolicy", {
        "Queues": [ref(logical)],
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage",
            "Resource": get_att(logical, "Arn"), "Condition": {"ArnEquals": {"aws:SourceArn": ref(topic_logical)}}}]}})
    stack.grant("ReadQueues", SQS_READ, get_att(logical, "Arn"))
    mapping(stack, name, get_att(logical, "Arn"), "fifo")
    return logical


def add_stream_table(stack: Stack, arn: Arn, uses: Uses) -> None:
    """A table whose stream carries messages: keyed by message, NEW_IMAGE, items expire."""
    stack.grant("WriteMessageTables", STREAM_TABLE_SEND, arn.value())
    if uses.consume:
        stack.grant("ReadTableStreams", STREAM_READ, arn.value(f"{arn.resource}/stream/*"))
        stack.grant("ListTableStreams", ("dynamodb:ListStreams",), "*")
    if _external(stack, arn, uses):
        return
    logical = stack.add(stack.new_id("Table", arn.name), "AWS::DynamoDB::Table", {
        "TableName": arn.name, "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "StreamSpecification": {"StreamViewType": "NEW_IMAGE"},
        "TimeToLiveSpecification": {"AttributeName": STREAM_TABLE_TTL, "Enabled": True}})
    if uses.consume:
        name = mapping(stack, arn.name, get_att(logical, "StreamArn"), "stream", on_failure_queue(stack, arn.name))
        # REMOVE (TTL) and MODIFY records carry nothing to do: they never invoke the function.
        stack.resources[name]["Properties"]["FilterCriteria"] = {
            "Filters": [{"Pattern": json.dumps({"eventName": ["INSERT"]})}]}


def add_bus(stack: Stack, arn: Arn, uses: Uses) -> None:
    """The bus and, when the function reads it, the rule matching our messages."""
    from sources.eventbridge import EVENT_PATTERN, rule_name

    stack.grant("PutEvents", EVENTS_SEND, arn.value())
    if _external(stack, arn, uses):
        return
    after: Json = {}
    if arn.name != "default":
        after["DependsOn"] = stack.add(stack.new_id("Bus", arn.name), "AWS::Events::EventBus", {"Name": arn.name})
    if uses.consume:
        # The bus by name and DependsOn rather than Ref: moto resolves a Ref to a bus wrongly.
        rule = stack.add(stack.new_id("Rule", arn.name), "AWS::Events::Rule", {
            "Name": rule_name(arn.name), "EventBusName": arn.name, "EventPattern": EVENT_PATTERN,
            "State": "ENABLED", "Targets": [{"Id": "lambda-fsm", "Arn": get_att(FUNCTION, "Arn")}]}, **after)
        permission(stack, arn.name, "events.amazonaws.com", get_att(rule, "Arn"))


BUILDERS: dict[str, Callable[[Stack, Arn, Uses], None]] = {
    "sqs": add_queue, "kinesis": add_kinesis_stream, "sns": add_topic, "dynamodb": add_stream_table,
    "events": add_bus,
}


def add_store_table(stack: Stack, arn: Arn) -> None:
    """The table records, history, timers and checkpoints share, with the indexes the
    stores query, read from ``sources.dynamodb_tables`` so the two never disagree."""
    from sources import dynamodb_tables as layout

    stack.grant("Tables", STORE_TABLE, arn.value())
    stack.grant("TableIndexes", STORE_INDEX, [arn.value(f"{arn.resource}/index/{name}") for name in layout.INDEXES])
    if _external(stack, arn, Uses()):
        return
    # Indexes project ALL but those PROJECTIONS names (a layout without listing has none).
    projections = getattr(layout, "PROJECTIONS", {})
    indexes = [{"IndexName": name, "Projection": {"ProjectionType": projections.get(name, "ALL")},
                "KeySchema": [{"AttributeName": attribute, "KeyType": kind}
                              for attribute, kind in zip(keys, ("HASH", "RANGE")) if attribute]}
               for name, keys in layout.INDEXES.items()]
    used = dict.fromkeys(["pk", "sk", *(k["AttributeName"] for i in indexes for k in i["KeySchema"])])
    stack.add(stack.new_id("Table", arn.name), "AWS::DynamoDB::Table", {
        "TableName": arn.name, "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": layout.ATTRIBUTE_TYPES[a]} for a in used],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": indexes,
        "TimeToLiveSpecification": {"AttributeName": layout.TTL, "Enabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}},
        DeletionPolicy="Retain", UpdateReplacePolicy="Retain")   # instances outlive the stack


# -- what every deployment gets, and what some configurations add ------------------------


def add_schedule(stack: Stack) -> None:
    """The minute schedule that releases due timers and re-sends overdue messages."""
    rule = stack.add(stack.new_id("Schedule"), "AWS::Events::Rule", {
        "Description": f"{stack.name}: release due timers and re-send overdue messages",
        "ScheduleExpression": "rate(1 minute)", "State": "ENABLED",
        "Targets": [{"Id": "lambda-fsm-sweep", "Arn": get_att(FUNCTION, "Arn")}]})
    permission(stack, "Schedule", "events.amazonaws.com", get_att(rule, "Arn"))


def add_ecs(stack: Stack, tasks: list[dict[str, Any]]) -> None:
    """What ``actions.ecs.RunTask`` needs: RunTask on its task definitions in its cluster,
    PassRole for the tasks' roles (a parameter: the template cannot know them), and the
    rule bringing our stopped tasks' state changes back to the function."""
    for params in tasks:
        cluster, definition = _ecs_arns(params)
        stack.grant("RunTasks", ("ecs:RunTask",), definition, {"ArnEquals": {"ecs:cluster": cluster}})
        if (params.get("options") or {}).get("tags"):
            stack.grant("TagTasks", ("ecs:TagResource",), _ecs_arn(params, f"task/{_cluster_name(params)}/*"),
                        {"StringEquals": {"ecs:CreateAction": "RunTask"}})
        if not params.get("container"):
            stack.grant("DescribeTaskDefinitions", ("ecs:DescribeTaskDefinition",), "*")
    stack.parameters["EcsTaskRoleArns"] = {
        "Type": "CommaDelimitedList", "Default": "",
        "Description": "ARNs of the task and execution roles of the task definitions RunTask starts "
                       "(iam:PassRole); empty if they have none"}
    stack.conditions["HasEcsTaskRoles"] = {"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", ref("EcsTaskRoleArns")]}, ""]}]}
    stack.statements.append({"Fn::If": ["HasEcsTaskRoles", {
        "Sid": "PassTaskRoles", "Effect": "Allow", "Action": "iam:PassRole", "Resource": ref("EcsTaskRoleArns"),
        "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}}, ref("AWS::NoValue")]})
    _task_state_rule(stack)


def _task_state_rule(stack: Stack) -> None:
    from actions.ecs import STARTED_BY_PREFIX
    from sources.ecs import DETAIL_TYPE

    pattern = {"source": ["aws.ecs"], "detail-type": [DETAIL_TYPE],
               "detail": {"lastStatus": ["STOPPED"], "startedBy": [{"prefix": STARTED_BY_PREFIX}]}}
    rule = stack.add(stack.new_id("RuleEcsTasks"), "AWS::Events::Rule", {
        "Description": f"{stack.name}: tasks started by actions.ecs.RunTask report when they stop",
        "EventPattern": pattern, "State": "ENABLED",
        "Targets": [{"Id": "lambda-fsm-ecs", "Arn": get_att(FUNCTION, "Arn")}]})
    permission(stack, "EcsTasks", "events.amazonaws.com", get_att(rule, "Arn"))


def _cluster_name(params: dict[str, Any]) -> str:
    return str(params["cluster"]).rsplit("/", 1)[-1]


def _ecs_arn(params: dict[str, Any], resource: str) -> Any:
    region = params.get("region")
    if region:
        return sub(f"arn:${{AWS::Partition}}:ecs:{region}:${{AWS::AccountId}}:{resource}")
    return in_stack("ecs", resource)


def _ecs_arns(params: dict[str, Any]) -> tuple[Any, Any]:
    """The cluster's ARN and the task definition's (any revision unless one is named)."""
    cluster, definition = str(params["cluster"]), str(params["task_definition"])
    cluster_arn = cluster if cluster.startswith("arn:") else _ecs_arn(params, f"cluster/{cluster}")
    if definition.startswith("arn:"):
        return cluster_arn, definition if definition.count(":") > 5 else definition + ":*"
    family, _, revision = definition.partition(":")
    return cluster_arn, _ecs_arn(params, f"task-definition/{family}:{revision or '*'}")


def add_api(stack: Stack, api: dict[str, Any]) -> None:
    """The HTTP endpoint: a function URL, protected as ``fsm.app.http.authorise`` expects:
    ``auth: iam`` by AWS_IAM (SigV4); a ``token_secret`` (``auth: token``) leaves the URL
    open and the function checks a bearer token kept in Secrets Manager, which only this
    role may read. Neither: the API is off, so no URL."""
    secret = api.get("token_secret")
    mode = api.get("auth") or ("token" if secret else None)
    if mode is None or (mode == "token" and not secret):
        stack.notes.append("api: neither auth: iam nor a token_secret, so the HTTP API is off: no function URL")
        return
    token = mode == "token"
    url = stack.add("FunctionUrl", "AWS::Lambda::Url", {
        "AuthType": "NONE" if token else "AWS_IAM", "TargetFunctionArn": get_att(FUNCTION, "Arn")})
    if token:
        stack.add("PermissionFunctionUrl", "AWS::Lambda::Permission", {
            "Action": "lambda:InvokeFunctionUrl", "FunctionName": ref(FUNCTION), "Principal": "*",
            "FunctionUrlAuthType": "NONE"})
        stack.add("PermissionFunctionUrlInvoke", "AWS::Lambda::Permission", {
            "Action": "lambda:InvokeFunction", "FunctionName": ref(FUNCTION), "Principal": "*",
            "InvokedViaFunctionUrl": True})
        arn = Arn.parse(secret, stack.home)
        # A secret's full ARN ends in six random characters the settings may leave out.
        stack.grant("ReadApiToken", ("secretsmanager:GetSecretValue",),
                    [arn.value(), arn.value(arn.resource + "-??????")])
    stack.outputs["FunctionUrl"] = {"Description": "the HTTP API", "Value": get_att(url, "FunctionUrl")}


def add_alarms(stack: Stack, metrics: dict[str, Any]) -> None:
    """Alarms, to a topic (``AlarmEmail`` subscribes an address): anything in a dead-letter
    queue, function errors and, with metrics on, failed instances and dead letters."""
    stack.add(ALARM_TOPIC, "AWS::SNS::Topic", {"TopicName": f"{stack.name}-alarms"})
    stack.parameters["AlarmEmail"] = {"Type": "String", "Default": "",
                                      "Description": "an address the alarms are mailed to (empty: none)"}
    stack.conditions["HasAlarmEmail"] = {"Fn::Not": [{"Fn::Equals": [ref("AlarmEmail"), ""]}]}
    stack.add("AlarmEmailSubscription", "AWS::SNS::Subscription", {
        "TopicArn": ref(ALARM_TOPIC), "Protocol": "email", "Endpoint": ref("AlarmEmail")},
        Condition="HasAlarmEmail")
    for queue, name in stack.watched:
        _alarm(stack, queue, f"messages are waiting in {name} (dead letters)", {
            "Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible", "Statistic": "Maximum",
            "Dimensions": [{"Name": "QueueName", "Value": get_att(queue, "QueueName")}], "Period": 300})
    _alarm(stack, "FunctionErrors", "the function raised (a backend fault, or an SNS record that failed)", {
        "Namespace": "AWS/Lambda", "MetricName": "Errors", "Statistic": "Sum",
        "Dimensions": [{"Name": "FunctionName", "Value": ref(FUNCTION)}], "Period": 300})
    if metrics.get("target", "none") == "none":
        stack.notes.append("metrics: target is none, so no alarm counts failed instances; only dead-letter "
                           "queues are watched")
        return
    namespace = json.dumps(str(metrics.get("namespace", "lambda-fsm")))
    for metric, what in (("Failures", "instances failed (max retries reached)"),
                         ("DeadLetters", "messages were dead-lettered")):
        _alarm(stack, metric, what, {"Metrics": [{
            "Id": metric.lower(), "Expression": f"SELECT SUM({metric}) FROM {namespace}", "Period": 300,
            "ReturnData": True}]})


def _alarm(stack: Stack, name: str, what: str, metric: Json) -> None:
    properties: Json = {"AlarmDescription": f"{stack.name}: {what}", **metric,
                        "EvaluationPeriods": 1, "Threshold": 0, "ComparisonOperator": "GreaterThanThreshold",
                        "TreatMissingData": "notBreaching", "AlarmActions": [ref(ALARM_TOPIC)]}
    stack.add(stack.new_id("Alarm", name), "AWS::CloudWatch::Alarm", properties)
