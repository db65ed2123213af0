"""``fsm template``: a deployable SAM or CloudFormation template for the configured roles.

The settings already name every queue, stream, topic, bus and table a deployment uses,
and the adapters know what they call; this turns both into the function, its resources,
its event sources and a role allowed exactly those calls on exactly those resources. It
prints and writes nothing: what to do with the template (``> template.yaml``, then ``sam
deploy --guided``) stays the user's decision, and a template someone edited is never
overwritten.

Resources live where the first ARN of the settings says (its region and account become
``${AWS::Region}`` and ``${AWS::AccountId}``, so the stack can be deployed anywhere); ARNs
elsewhere are granted but neither created nor consumed, and the template says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .template_resources import (
    BUILDERS,
    FUNCTION,
    Arn,
    Json,
    Stack,
    Uses,
    add_alarms,
    add_api,
    add_ecs,
    add_schedule,
    add_store_table,
    dead_letter_queue,
    get_att,
    in_stack,
    ref,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from config.loader import Definitions
    from config.settings import Settings

HANDLER = "fsm.handler.lambda_handler"
# Lambda runtimes that still create functions (python3.11 stopped in July 2026).
RUNTIMES = ["python3.12", "python3.13", "python3.14"]
RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                  2922, 3288, 3653]
VPC_POLICY = "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
STACK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,39}")


@dataclass(frozen=True)
class Options:
    """How the template is written: ``code_dir`` is the folder packaged as the function
    (relative to where the template is saved), ``config`` the machines file inside it."""

    name: str
    format: str = "sam"
    timeout: int = 60
    memory: int = 512
    code_dir: str = "."
    config: str = "fsm.yaml"


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("template", cmd_template, "print a SAM or CloudFormation template deploying the configured "
                                          "roles (the function, its queues, streams, tables and role)")
    p.add_argument("--name", metavar="STACK", help="the deployment's name: its function, log group and alarm "
                                                   "topic are named after it (default: the config's folder)")
    p.add_argument("--format", choices=("sam", "cloudformation"), default="sam",
                   help="a SAM template (default; `sam deploy`), or plain CloudFormation with the code in S3")
    p.add_argument("--timeout", metavar="SECONDS", type=int, default=60,
                   help="the function timeout (default 60); queues' visibility timeouts are six times it")
    p.add_argument("--memory", metavar="MB", type=int, default=512, help="the function memory (default 512)")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")


def cmd_template(args: argparse.Namespace) -> int:
    from config.settings import load_settings

    from ..cli import UsageError, _config_path, _definitions, _given

    if not 1 <= args.timeout <= 900:
        raise UsageError(f"--timeout {args.timeout} must be 1 to 900 seconds (Lambda's limit)")
    if not 128 <= args.memory <= 10240:
        raise UsageError(f"--memory {args.memory} must be 128 to 10240 MB")
    name = _given(args.name, "--name")
    config = Path(_config_path(args)).resolve()
    definitions = _definitions(args)
    stores = [part.strip() for part in args.store.split(",")] if args.store is not None else None
    settings = load_settings(definitions.settings, _given(args.settings, "--settings"), store=stores)
    name = name or default_name(config.parent.name)
    if not STACK_NAME.fullmatch(name):
        raise UsageError(f"--name {name!r} must be a letter then up to 39 letters, digits or '-'")
    options = Options(name, args.format, args.timeout, args.memory,
                      Path(os.path.relpath(config.parent)).as_posix(), config.name)
    print(render(build_template(definitions, settings, options), as_json=args.json), end="")
    return 0


def default_name(folder: str) -> str:
    """The config's folder as a stack name: ``examples/pizza`` deploys as ``pizza``."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", folder).strip("-")
    name = name if name[:1].isalpha() else f"fsm-{name}".rstrip("-")
    return name[:40].rstrip("-")


def build_template(definitions: Definitions, settings: Settings, options: Options) -> Json:
    """The whole template as a dict; :func:`render` writes it."""
    check_deployable(settings)
    stack = Stack(options.name, options.timeout, home_of(settings))
    stack.queue_names.update(url.rsplit(":", 1)[1] for url in buses_of(settings) if url.split(":")[2] == "sqs")
    for arn in tables_of(settings):
        add_store_table(stack, Arn.parse(arn, stack.home))
    for arn, uses in buses_of(settings).items():
        parsed = Arn.parse(arn, stack.home)
        BUILDERS[parsed.service](stack, parsed, uses)
    add_schedule(stack)
    tasks = ecs_tasks(definitions)
    if tasks:
        add_ecs(stack, tasks)
    if settings.api:
        add_api(stack, settings.api)
    if settings.metrics.get("target") == "cloudwatch":
        namespace = str(settings.metrics.get("namespace", "lambda-fsm"))
        stack.grant("PutMetrics", ("cloudwatch:PutMetricData",), "*",
                    {"StringEquals": {"cloudwatch:namespace": namespace}})
    offload = settings.offload.get("store", "")
    if offload.startswith("s3://"):  # the claim check's objects, under its prefix only
        bucket, _, prefix = offload[len("s3://"):].partition("/")
        stack.grant("OffloadPayloads", ("s3:GetObject", "s3:PutObject"),
                    f"arn:aws:s3:::{bucket}/{prefix.strip('/') + '/' if prefix.strip('/') else ''}*")
    servers = [url for url in settings.store if not url.startswith("arn:")]
    add_function(stack, settings, options, servers)
    add_alarms(stack, settings.metrics)
    return document(stack, definitions, options)


def check_deployable(settings: Settings) -> None:
    """Refuse what cannot run in Lambda before writing a template that would not work."""
    from ..errors import InvalidDefinition

    problems = []
    local = [url for url in settings.store if url.startswith(("sqlite:", "memory:"))]
    if local:
        problems.append(f"settings store {', '.join(local)}: every Lambda container would have its own; "
                        "use arn:aws:dynamodb:...:table/NAME, redis:// or memcached://")
    if not settings.stream:
        problems.append("settings: no `stream:` is configured; a Lambda needs one (arn:aws:sqs:..., kinesis, "
                        "sns, dynamodb or events) to carry its next messages")
    buses = settings.stream + settings.retry + settings.dead_letter + settings.notify
    problems += [f"settings: {url} is not an AWS ARN; a Lambda can only send to AWS services"
                 for url in dict.fromkeys(buses) if not url.startswith("arn:")]
    both = sorted(set(tables_of(settings)) & set(settings.stream))
    if both:
        problems.append(f"settings: {', '.join(both)} is named as a `stream:` and as a table of `store:`, "
                        "`checkpoint:` or `retry:`; give the stream a table of its own")
    if problems:
        raise InvalidDefinition(problems)


def home_of(settings: Settings) -> tuple[str, str]:
    """The region and account of the first ARN: where this stack creates resources."""
    names = settings.stream + settings.store + settings.retry + settings.checkpoint + settings.dead_letter
    first = next(url for url in names + settings.notify if url.startswith("arn:"))
    parts = first.split(":")
    return parts[3], parts[4]


def tables_of(settings: Settings) -> list[str]:
    """Tables of records, timers and checkpoints (one table may play all three)."""
    named = settings.store + settings.checkpoint + settings.retry
    return list(dict.fromkeys(url for url in named if url.startswith("arn:") and url.split(":")[2] == "dynamodb"))


def buses_of(settings: Settings) -> dict[str, Uses]:
    """Every bus ARN, and what the deployment does with it: the function reads the streams
    and the retry queues; dead-letter targets are watched; notify targets only sent to."""
    tables = set(tables_of(settings))
    read = set(settings.stream) | {url for url in settings.retry if url not in tables}
    named = settings.stream + settings.retry + settings.dead_letter + settings.notify
    return {url: Uses(consume=url in read, watch=url in settings.dead_letter)
            for url in dict.fromkeys(named) if url not in tables}


def ecs_tasks(definitions: Definitions) -> list[dict[str, Any]]:
    """The params of every ``actions.ecs.RunTask`` in the machines: the ECS calls to allow."""
    module = sys.modules.get("actions.ecs")
    if module is None:       # no machine imported it
        return []
    found = []
    for machine in definitions.machines.values():
        for state in machine.states.values():
            actions = [state.entry_action, state.do_action, state.exit_action]
            actions += [transition.action for transition in state.transitions.values()]
            found += [dict(a.params) for a in actions if isinstance(a, module.RunTask)]
    return found


# -- the function --------------------------------------------------------------------------


def add_function(stack: Stack, settings: Settings, options: Options, servers: list[str]) -> None:
    log_group = stack.add("FunctionLogGroup", "AWS::Logs::LogGroup", {
        "LogGroupName": f"/aws/lambda/{options.name}", "RetentionInDays": ref("LogRetentionDays")})
    stack.grant("WriteLogs", ("logs:CreateLogStream", "logs:PutLogEvents"),
                in_stack("logs", f"log-group:/aws/lambda/{options.name}:*"))
    async_dlq = None
    if stack.invoked_asynchronously:      # SNS, EventBridge: failed invocations land here
        async_dlq = dead_letter_queue(stack, f"{options.name}-async")
        stack.grant("SendToFailureQueues", ("sqs:SendMessage",), get_att(async_dlq, "Arn"))
    properties: Json = {
        "FunctionName": options.name, "Description": f"lambda-fsm machines of {options.config}",
        "Handler": HANDLER, "Runtime": ref("Runtime"), "MemorySize": ref("FunctionMemorySize"),
        "Timeout": ref("FunctionTimeout"), "Role": get_att("FunctionRole", "Arn"),
        "Environment": {"Variables": environment(stack, settings, options, servers)}}
    if options.format == "sam":
        properties["CodeUri"] = options.code_dir
        if async_dlq:
            properties["DeadLetterQueue"] = {"Type": "SQS", "TargetArn": get_att(async_dlq, "Arn")}
    else:
        properties["Code"] = {"S3Bucket": ref("CodeBucket"), "S3Key": ref("CodeKey")}
        if async_dlq:
            properties["DeadLetterConfig"] = {"TargetArn": get_att(async_dlq, "Arn")}
    if servers:
        properties["VpcConfig"] = {"SubnetIds": ref("SubnetIds"), "SecurityGroupIds": ref("SecurityGroupIds")}
    kind = "AWS::Serverless::Function" if options.format == "sam" else "AWS::Lambda::Function"
    stack.add(FUNCTION, kind, properties, DependsOn=log_group)   # the group exists before any log line
    role: Json = {
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
        "Policies": [{"PolicyName": "lambda-fsm", "PolicyDocument": {"Version": "2012-10-17",
                                                                     "Statement": stack.policy()}}]}
    if servers:   # Lambda attaches the function to the VPC with network interfaces it manages
        role["ManagedPolicyArns"] = [{"Fn::Sub": VPC_POLICY}]
    stack.add("FunctionRole", "AWS::IAM::Role", role)


def environment(stack: Stack, settings: Settings, options: Options, servers: list[str]) -> dict[str, Any]:
    """``FSM_CONFIG`` and one ``FSM_<KEY>`` per setting that is not the default, ARNs in
    the stack's region written so they follow it. They override the packaged config's
    ``settings:``, so a ``--settings`` file need not be packaged."""
    from config.settings import LIST_KEYS, MAP_KEYS, NUMBER_KEYS, Settings

    defaults, variables = Settings(), {"FSM_CONFIG": options.config}
    for key in (f.name for f in fields(Settings)):
        value = getattr(settings, key)
        if value == getattr(defaults, key):
            continue
        if key in LIST_KEYS:
            variables[f"FSM_{key.upper()}"] = joined([address(stack, url, servers) for url in value])
        elif key in MAP_KEYS:
            variables[f"FSM_{key.upper()}"] = json.dumps(value, sort_keys=True)
        elif key in NUMBER_KEYS:
            variables[f"FSM_{key.upper()}"] = f"{value:g}"
        # Anything else names this machine's folders, which mean nothing in Lambda: the
        # packaged config's own `settings:` (relative to it) apply there.
    if settings.endpoints:
        stack.notes.append("settings endpoints are passed to the function (FSM_ENDPOINTS): drop them unless "
                           "they are reachable from AWS")
    if servers:
        stack.notes.append(f"store {', '.join(_redacted(u) for u in servers)}: CloudFormation does not make it "
                           "here (run it on ElastiCache or EC2); give StoreUrl its address on AWS and "
                           "SubnetIds/SecurityGroupIds that reach it; the function then reaches AWS services "
                           "through a NAT gateway or VPC endpoints")
    return variables


def address(stack: Stack, url: str, servers: list[str]) -> Any:
    """A settings URL for the function: an ARN as the stack writes it; a server's URL as a
    parameter (its address on AWS differs from a laptop's; a password is never printed)."""
    if url.startswith("arn:"):
        return Arn.parse(url, stack.home).value()
    if url not in servers:
        return url
    parameter = "StoreUrl" if servers.index(url) == 0 else f"StoreUrl{servers.index(url) + 1}"
    spec: Json = {"Type": "String", "Description": f"the store {_redacted(url)} as the function reaches it"}
    if _redacted(url) != url:
        spec["NoEcho"] = True     # it holds a password: given at deploy time, never printed
    else:
        spec["Default"] = url
    stack.parameters[parameter] = spec
    return ref(parameter)


def _redacted(url: str) -> str:
    """``redis://:secret@host:6379/0`` -> ``redis://host:6379/0``: templates get committed."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    return f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{path}"


def joined(values: list[Any]) -> Any:
    if len(values) == 1:
        return values[0]
    if all(isinstance(v, str) for v in values):
        return ",".join(values)
    return {"Fn::Join": [",", values]}


# -- the document --------------------------------------------------------------------------


def parameters(stack: Stack, options: Options, vpc: bool) -> dict[str, Json]:
    found: dict[str, Json] = {
        "Runtime": {"Type": "String", "Default": "python3.13", "AllowedValues": RUNTIMES},
        "FunctionMemorySize": {"Type": "Number", "Default": options.memory, "MinValue": 128, "MaxValue": 10240},
        "FunctionTimeout": {"Type": "Number", "Default": options.timeout, "MinValue": 1, "MaxValue": options.timeout,
                            "ConstraintDescription": "queues' visibility timeouts were sized for at most "
                                                     f"{options.timeout} s: regenerate with --timeout to go higher"},
        "LogRetentionDays": {"Type": "Number", "Default": 30, "AllowedValues": RETENTION_DAYS},
    }
    if options.format == "cloudformation":
        found["CodeBucket"] = {"Type": "String", "Description": "the S3 bucket holding the function's zip"}
        found["CodeKey"] = {"Type": "String", "Description": "the S3 key of the function's zip"}
    if vpc:
        found["SubnetIds"] = {"Type": "List<AWS::EC2::Subnet::Id>",
                              "Description": "subnets from which the function reaches the store"}
        found["SecurityGroupIds"] = {"Type": "List<AWS::EC2::SecurityGroup::Id>",
                                     "Description": "security groups the store admits"}
    return {**found, **stack.parameters}


def document(stack: Stack, definitions: Definitions, options: Options) -> Json:
    vpc = "VpcConfig" in stack.resources[FUNCTION]["Properties"]
    outside = [f for f in definitions.files if not _inside(f, options)]
    if outside:
        stack.notes.append(f"outside the packaged folder {options.code_dir}, so missing in Lambda: "
                           f"{', '.join(outside)}")
    template: Json = {"AWSTemplateFormatVersion": "2010-09-09"}
    if options.format == "sam":
        template["Transform"] = "AWS::Serverless-2016-10-31"
    template["Description"] = f"lambda-fsm: {options.name} (generated by `fsm template`)"
    template["Metadata"] = {"lambda-fsm": {"config": options.config, "package": options.code_dir,
                                           "notes": stack.notes}}
    template["Parameters"] = parameters(stack, options, vpc)
    if stack.conditions:
        template["Conditions"] = stack.conditions
    # The function and its role first: what a reader looks for; then in the order added.
    first = [FUNCTION, "FunctionRole", "FunctionLogGroup"]
    template["Resources"] = {key: stack.resources[key] for key in first + [k for k in stack.resources if k not in first]}
    template["Outputs"] = {
        "FunctionName": {"Value": ref(FUNCTION)}, "FunctionArn": {"Value": get_att(FUNCTION, "Arn")},
        "RoleArn": {"Value": get_att("FunctionRole", "Arn")}, "AlarmTopicArn": {"Value": ref("AlarmTopic")},
        **stack.outputs}
    return template


def _inside(path: str, options: Options) -> bool:
    return Path(path).resolve().is_relative_to(Path(options.code_dir).resolve())


def render(template: Json, as_json: bool = False) -> str:
    """YAML (block style, keys in the order built: type before properties) or JSON. The
    notes go first as comments too, where someone reading the YAML sees them."""
    if as_json:
        return json.dumps(template, indent=2) + "\n"
    import yaml

    notes = template.get("Metadata", {}).get("lambda-fsm", {}).get("notes", [])
    header = ["# Generated by `fsm template`: review it, then `sam deploy --guided` (see README.rst)."]
    header += [f"# NOTE: {note}" for note in notes]
    body = yaml.safe_dump(template, sort_keys=False, default_flow_style=False, width=110, allow_unicode=True)
    return "\n".join(header) + "\n" + body
