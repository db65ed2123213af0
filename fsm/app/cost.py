"""``fsm cost``: what a million transitions cost on AWS, measured rather than guessed.

The command runs a short sample of the machine through the Lambda handler's own code
(``fsm.app.intake.handle_event``), against the AWS services the settings name, all on an
in-process moto (``moto.mock_aws``: nothing leaves the process). Every call the
adapters' boto3 clients make is seen by a botocore hook (``before-parameter-build`` and
``after-call``, registered on each client as :func:`sources.aws.watching_clients`
reports it built): the billed quantity of each call is worked out from its request
and answer, and the sum per transition times the list price (:mod:`fsm.app.prices`) is
the figure per million transitions. How each quantity is counted: :mod:`fsm.app.cost_meter`.

Left out, and said so: what is paid whatever the traffic (Kinesis shard-hours, storage,
idle long polls), calls made once per container (SQS GetQueueUrl), and redis or
memcached, which are not billed per request (the sample runs on an in-process stand-in).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import Action
from .cost_meter import LATENCY_MS, CountingStream, Meter
from .prices import (
    DEFAULT_REGION,
    PRICES_AS_OF,
    STEP_FUNCTIONS_EXPRESS_PER_MILLION_REQUESTS,
    STEP_FUNCTIONS_STANDARD_PER_MILLION,
    Prices,
    UnknownRegion,
    prices_for,
)

ACCOUNT = "123456789012"
LINEAR_STATES = 10


class NextStep(Action):
    """The built-in sample machine's do action: on to the next state."""

    def execute(self, context: Any, obj: Any) -> str:
        return "next"


def linear_machine_yaml(states: int = LINEAR_STATES) -> str:
    lines = ["machines:", "  - name: linear", "    states:"]
    for n in range(states - 1):
        lines.append(f"      - {{name: s{n}, {'initial: true, ' if n == 0 else ''}do_action: fsm.app.cost.NextStep, "
                     f"transitions: [{{event: next, target: s{n + 1}}}]}}")
    lines.append(f"      - {{name: s{states - 1}, final: true}}")
    return "\n".join(lines) + "\n"


WORDS = ("order customer shipped pending express standard warehouse north south east west invoice refund "
         "payment card wallet voucher priority returned delivered packed picked label carrier parcel postal "
         "small medium large red blue green black white cotton wool steel oak").split()


def sample_context(size: int, seed: int = 7) -> dict[str, Any]:
    """A context of ``size`` bytes of JSON (give or take a few) shaped like an order:
    ids and prices that do not compress, words that do, as real contexts mix them (its
    deflate ratio is ~2.3 at 1 KB, ~3.4 at 4 KB, ~5 at 100 KB). A store that packs its
    records is charged for what it would write for such data, not for a run of one
    character."""
    rng = random.Random(seed)
    context: dict[str, Any] = {"order_id": f"{rng.getrandbits(64):016x}", "lines": []}
    while True:
        line = {"sku": f"SKU-{rng.randrange(10 ** 6):06d}", "name": " ".join(rng.choices(WORDS, k=3)),
                "qty": rng.randrange(1, 10), "price": round(rng.uniform(1, 500), 2), "tags": rng.choices(WORDS, k=2)}
        if len(json.dumps({**context, "lines": [*context["lines"], line]}, separators=(",", ":"))) > size:
            break
        context["lines"].append(line)
    room = size - len(json.dumps({**context, "note": ""}, separators=(",", ":")))
    note = ""
    while len(note) < room:
        note += rng.choice(WORDS) + " "
    context["note"] = note[:max(0, room)]
    return context


# -- the command ------------------------------------------------------------------------


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("cost", cmd_cost, "estimate the AWS bill per million transitions, from a sample run on an "
                                  "in-process moto")
    p.add_argument("--machine", metavar="M", help="the config's machine to sample (default: the config's only "
                                                  "machine, else a built-in 10-state linear machine)")
    p.add_argument("--context-bytes", metavar="N", type=int, default=1024,
                   help="bytes of data in each instance's context (default 1024)")
    p.add_argument("--batch-size", metavar="N", type=int, default=10,
                   help="records per Lambda invocation from a queue or stream (default 10, Lambda's default for SQS)")
    p.add_argument("--memory", metavar="MB", type=int, default=128, help="the function's memory (default 128)")
    p.add_argument("--region", metavar="R", help="whose prices (default: the region of the settings' first ARN, "
                                                 f"else {DEFAULT_REGION})")
    p.add_argument("--transitions", metavar="N", type=int, default=100,
                   help="transitions to sample, at least (default 100)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_cost(args: argparse.Namespace) -> int:
    from ..cli import UsageError

    for flag, value, low, high in (("--context-bytes", args.context_bytes, 0, 10_000_000),
                                   ("--batch-size", args.batch_size, 1, 10_000),
                                   ("--memory", args.memory, 128, 10_240),
                                   ("--transitions", args.transitions, 1, 100_000)):
        if not low <= value <= high:
            raise UsageError(f"{flag} {value} must be {low:,} to {high:,}")
    plan = make_plan(args)
    sample = run_sample(plan)
    from ..errors import FsmError

    if sample.meter.errors:
        raise FsmError(f"{len(sample.meter.errors)} call(s) could not be billed, the first: {sample.meter.errors[0]}")
    if sample.transitions == 0:
        raise FsmError(f"the sample committed no transition ({sample.failed} instance(s) failed: "
                       f"{sample.last_error or 'no error recorded'})")
    report = estimate(plan, sample, prices_for(plan.region))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


# -- what to sample -------------------------------------------------------------------------


@dataclass
class Plan:
    machine: str
    definitions: Any              # config.loader.Definitions: the config's, or the built-in machine's
    settings: Any                 # the sample's settings: AWS as configured, the rest stood in for
    region: str
    context_bytes: int
    batch_size: int
    memory_mb: int
    transitions: int
    metrics_target: str
    not_billed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stores_shown: list[str] = field(default_factory=list)   # as configured (the sample stands in for some)


def make_plan(args: argparse.Namespace) -> Plan:
    from config.settings import load_settings

    from ..cli import _given
    from .wiring import metrics_target, metrics_target_named

    machine, definitions, config_settings, notes = choose_machine(args)
    settings_file = _given(args.settings, "--settings")
    stores = [part.strip() for part in args.store.split(",")] if args.store is not None else None
    settings = load_settings(config_settings, settings_file, store=stores)
    named = metrics_target_named(config_settings, settings_file)
    target = metrics_target(settings, target_named=named, environ={"AWS_LAMBDA_FUNCTION_NAME": "fsm-cost"})
    plan = Plan(machine, definitions, settings, price_region(args, settings), args.context_bytes,
                args.batch_size, args.memory, args.transitions, target, notes=notes)
    plan.settings = sample_settings(settings, plan)
    return plan


def choose_machine(args: argparse.Namespace) -> tuple[str, Any, Mapping[str, Any], list[str]]:
    """``--machine`` from the config; else the config's only machine; else the built-in
    one. Returns the machine, the definitions holding it, the config's settings, notes."""
    from config.loader import load_text

    from ..cli import UsageError, _definitions, _given
    from ..errors import UnknownMachine
    from .wiring import default_config_path

    machine = _given(args.machine, "--machine")
    path = _given(args.config, "--config") or default_config_path()
    if machine and not os.path.exists(path):
        raise UsageError(f"--machine {machine!r} names a machine of a machines file, and {path!r} is not there "
                         "(give --config or set FSM_CONFIG)")
    config_settings: Mapping[str, Any] = {}
    if machine or args.config or os.path.exists(path):
        definitions = _definitions(args)
        if machine and machine not in definitions.machines:
            raise UnknownMachine(f"--machine: unknown machine {machine!r} in {path}; known: "
                                 f"{', '.join(sorted(definitions.machines)) or 'none'}")
        if machine or len(definitions.machines) == 1:
            return machine or next(iter(definitions.machines)), definitions, definitions.settings, []
        config_settings = definitions.settings
    note = f"machine: built-in, {LINEAR_STATES} states in a line (give --machine for one of yours)"
    return "linear", load_text(linear_machine_yaml(), "<built-in>"), config_settings, [note]


def price_region(args: argparse.Namespace, settings: Any) -> str:
    """``--region``, else the region of the settings' first ARN, else us-east-1; one with prices."""
    from ..cli import UsageError, _given

    arns = [n for n in [*settings.store, *settings.stream, *settings.retry, *settings.checkpoint]
            if n.startswith("arn:")]
    region = _given(args.region, "--region") or (arns[0].split(":")[3] if arns else DEFAULT_REGION)
    try:
        prices_for(region)
    except UnknownRegion as exc:
        if args.region:
            raise UsageError(f"--region: {exc}") from None
        raise UsageError(f"{exc}, the region of {arns[0]}; choose the prices with --region") from None
    return region


def sample_settings(settings: Any, plan: Plan) -> Any:
    """The settings as deployed on AWS: ARNs kept (their endpoints dropped: moto answers),
    redis and memcached stores stood in for by an in-process sqlite store, and the
    reference deployment's DynamoDB table and SQS queue where the settings name no store
    or stream a Lambda could use."""
    from dataclasses import replace

    stores = list(settings.store)
    streams = [n for n in settings.stream if n.startswith("arn:")]
    if not any(n.startswith(("arn:", "redis:", "rediss:", "memcached:")) for n in stores):
        # sqlite and memory stores live in one process: a Lambda deployment has neither
        stores = [f"arn:aws:dynamodb:{plan.region}:{ACCOUNT}:table/fsm-cost"]
        plan.notes.append(f"store: a DynamoDB table, as {', '.join(settings.store)} cannot serve Lambda "
                          "(give --settings or --store for yours)")
    if not streams:
        streams = [f"arn:aws:sqs:{plan.region}:{ACCOUNT}:fsm-cost"]
        plan.notes.append("stream: an SQS queue, as the settings name no AWS stream (give --settings for yours)")
    for name in stores:
        if not name.startswith("arn:"):
            plan.not_billed.append(f"{name.split('://')[0]} store {name}")
    plan.stores_shown = stores
    kept = [n if n.startswith("arn:") else "sqlite:///:memory:" for n in stores]
    return replace(settings, store=list(dict.fromkeys(kept)), stream=streams, endpoints={}, chaos={},
                   retry=[n for n in settings.retry if n.startswith("arn:")],
                   dead_letter=[n for n in settings.dead_letter if n.startswith("arn:")],
                   notify=[n for n in settings.notify if n.startswith("arn:")])


# -- the sample -------------------------------------------------------------------------------


@dataclass
class Sample:
    meter: Meter
    transitions: int = 0
    instances: int = 0
    failed: int = 0
    last_error: str | None = None
    messages: int = 0
    invocations: int = 0
    billed_ms: int = 0
    framework_seconds: float = 0.0
    seconds: float = 0.0
    emf: CountingStream = field(default_factory=CountingStream)


class CapturingBus:
    """The stream, plus a copy of every body sent: SNS and EventBridge push to Lambda, so
    the sample hands their messages to the handler itself, one per invocation."""

    def __init__(self, bus: Any):
        self._bus = bus
        self.bodies: list[str] = []

    def send(self, envelope: Any) -> None:
        self._bus.send(envelope)
        self.bodies.append(envelope.body)

    def send_batch(self, envelopes: Any) -> None:
        self._bus.send_batch(envelopes)
        self.bodies.extend(e.body for e in envelopes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)


@contextlib.contextmanager
def in_process_aws(region: str) -> Iterator[None]:
    """moto in this process, and nothing that could send a call elsewhere: endpoint
    overrides and profiles removed, dummy credentials, for the duration."""
    try:
        from moto import mock_aws
    except ImportError:
        from ..errors import MissingDependency

        raise MissingDependency("fsm cost runs its sample on moto, which is not installed: "
                                "pip install 'moto>=5'") from None

    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                                                            "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            del os.environ[name]
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=region,
                      AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled")   # DynamoDB streams, see ENVIRONMENT notes
    try:
        with mock_aws():
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_sample(plan: Plan) -> Sample:
    from sources import aws

    from .resources import create_resources

    sample = Sample(Meter())
    begun = time.perf_counter()
    with in_process_aws(plan.region):
        list(create_resources(plan.settings))
        with aws.watching_clients(sample.meter.watch):
            application, captured = sample_app(plan, sample)
            cids = start_instances(application, plan)
            drive(application, plan, sample, captured, limit=5 * len(cids) * states_of(plan) + 10)
            sample.meter.active = False
            tally(application, cids, sample)
            application.wiring.close()
    sample.seconds = time.perf_counter() - begun
    return sample


def sample_app(plan: Plan, sample: Sample) -> tuple[Any, CapturingBus | None]:
    from .wiring import App, build, open_bus, open_metrics

    settings = plan.settings
    if plan.metrics_target == "emf":
        from sources.emf import EmfMetrics

        metrics: Any = EmfMetrics(settings.metrics.get("namespace", "lambda-fsm"), stream=sample.emf)
    else:
        metrics = open_metrics(settings, target_named=True)
    captured = None
    if settings.stream[0].split(":")[2] in ("sns", "events"):
        captured = CapturingBus(open_bus(settings.stream, settings, metrics, []))
    wiring = build(plan.definitions.machines, settings, metrics=metrics, bus=captured)
    return App(plan.definitions, settings, wiring), captured


def states_of(plan: Plan) -> int:
    """Transitions an instance makes, if its machine runs straight through."""
    return max(1, len(plan.definitions.machines[plan.machine].states))


def start_instances(application: Any, plan: Plan) -> list[str]:
    """Enough instances to fill a batch (up to 1,000) and to make ``--transitions``."""
    from .client import Client

    count = max(math.ceil(plan.transitions / states_of(plan)), min(plan.batch_size, 1000))
    client = Client(wiring=application.wiring)
    context = sample_context(plan.context_bytes)
    return [client.start(plan.machine, context, correlation_id=f"cost-{uuid.uuid4().hex}") for _ in range(count)]


def drive(application: Any, plan: Plan, sample: Sample, captured: CapturingBus | None, limit: int) -> None:
    """Hand the handler what Lambda would, until nothing is left to read (or ``limit``
    messages: a machine that loops for ever)."""
    from .worker import default_poller

    settings = plan.settings
    pollable = [] if captured else [n for n in dict.fromkeys(settings.stream + settings.retry)
                                    if n.split(":")[2] in ("sqs", "kinesis", "dynamodb")]
    pollers = [default_poller(arn, aws=settings.aws or None, batch=plan.batch_size) for arn in pollable]
    while sample.messages < limit:
        busy = False
        for poller in pollers:
            records = gather(poller, plan.batch_size, sample.meter)
            if records:
                busy = True
                reply = invoke(application, {"Records": records}, sample)
                sample.meter.phase = "poll"
                poller.done(records, {f["itemIdentifier"] for f in reply.get("batchItemFailures", [])})
                sample.meter.phase = "lambda"
        while captured is not None and captured.bodies:
            busy = True
            invoke(application, pushed_event(settings.stream[0], captured.bodies.pop(0)), sample)
        if not busy:
            return


def gather(poller: Any, batch: int, meter: Meter) -> list[dict[str, Any]]:
    """Up to ``batch`` records, as the event source mapping collects them (a receive
    returns at most 10)."""
    meter.phase = "poll"
    records: list[dict[str, Any]] = []
    try:
        while len(records) < batch:
            wanted = min(10, batch - len(records))
            got = poller.poll(wait=False)
            records += got
            if len(got) < wanted:
                break
    finally:
        meter.phase = "lambda"
    return records


def pushed_event(arn: str, body: str) -> dict[str, Any]:
    """The event SNS or EventBridge invokes the function with, carrying ``body``."""
    if arn.split(":")[2] == "sns":
        return {"Records": [{"EventVersion": "1.0", "EventSource": "aws:sns", "EventSubscriptionArn": f"{arn}:sub",
                             "Sns": {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": arn,
                                     "Message": body, "Timestamp": "2025-01-01T00:00:00.000Z",
                                     "MessageAttributes": {}}}]}
    from sources.eventbridge import DETAIL_TYPE, SOURCE

    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": DETAIL_TYPE, "source": SOURCE,
            "account": ACCOUNT, "time": "2025-01-01T00:00:00Z", "region": arn.split(":")[3], "resources": [],
            "detail": json.loads(body)}


def invoke(application: Any, event: dict[str, Any], sample: Sample) -> dict[str, Any]:
    """One Lambda invocation. Its billed milliseconds: the framework's own time, measured,
    plus each AWS call at its assumed in-region latency (moto's time and the meter's
    reads left out), rounded up to the millisecond as Lambda bills."""
    from .intake import handle_event

    meter = sample.meter
    own, calls, assumed, begun = meter.own_seconds, meter.call_seconds, meter.assumed_seconds, time.perf_counter()
    reply = handle_event(application, event)
    framework = time.perf_counter() - begun - (meter.own_seconds - own) - (meter.call_seconds - calls)
    sample.framework_seconds += framework
    sample.invocations += 1
    sample.messages += len(event.get("Records") or [event])
    sample.billed_ms += max(1, math.ceil((framework + meter.assumed_seconds - assumed) * 1000))
    return reply


def tally(application: Any, cids: list[str], sample: Sample) -> None:
    store = application.wiring.stores[0]
    sample.instances = len(cids)
    for cid in cids:
        record = store.get(cid)
        if record is None:
            continue
        sample.transitions += int(record.get("step") or 0)
        if record.get("status") == "failed":
            sample.failed += 1
            error = record.get("last_error")
            sample.last_error = str(error.get("message") if isinstance(error, dict) else error)


# -- the estimate -------------------------------------------------------------------------

# quantity key -> (service, line item, unit, price attribute)
LINE_ITEMS = (
    ("ddb_write", "DynamoDB", "write request units (table)", "WRU", "dynamodb_write_unit"),
    ("ddb_index_write", "DynamoDB", "write request units (indexes)", "WRU", "dynamodb_write_unit"),
    ("ddb_read", "DynamoDB", "read request units", "RRU", "dynamodb_read_unit"),
    ("sqs", "SQS", "requests (64 KB chunks)", "requests", "sqs_request"),
    ("sqs:poll", "SQS", "requests by Lambda's polling (receive, delete)", "requests", "sqs_request"),
    ("sqs_fifo", "SQS", "FIFO requests (64 KB chunks)", "requests", "sqs_fifo_request"),
    ("sqs_fifo:poll", "SQS", "FIFO requests by Lambda's polling", "requests", "sqs_fifo_request"),
    ("sns", "SNS", "publish requests (64 KB chunks)", "requests", "sns_request"),
    ("kinesis", "Kinesis", "PUT payload units (25 KB)", "units", "kinesis_put_unit"),
    ("events", "EventBridge", "events (64 KB chunks)", "events", "eventbridge_event"),
    ("s3_put", "S3", "PUT, COPY, POST, LIST requests", "requests", "s3_put_request"),
    ("s3_get", "S3", "GET and other requests", "requests", "s3_get_request"),
    ("lambda", "Lambda", "requests", "requests", "lambda_request"),
    ("lambda_gbs", "Lambda", "duration", "GB-s", "lambda_gb_second"),
    ("cloudwatch", "CloudWatch", "PutMetricData requests", "requests", "cloudwatch_put_metric_request"),
    ("emf_gb", "CloudWatch Logs", "EMF metric lines ingested", "GB", "cloudwatch_logs_ingested_gb"),
    ("secretsmanager", "Secrets Manager", "API requests", "requests", "secrets_manager_request"),
)
ALWAYS = {"lambda", "lambda_gbs"}
# Shown for a configured service even when the sample used none of it.
SHOWN_WHEN_CONFIGURED = {"ddb_write": "dynamodb", "ddb_index_write": "dynamodb", "ddb_read": "dynamodb",
                         "sqs": "sqs", "sqs_fifo": "sqs_fifo", "sns": "sns", "kinesis": "kinesis", "events": "events"}


def estimate(plan: Plan, sample: Sample, prices: Prices) -> dict[str, Any]:
    """The report, as ``--json`` prints it; :func:`render` writes it as text."""
    quantities: dict[str, float] = dict(sample.meter.quantities)
    quantities["lambda"] = sample.invocations
    quantities["lambda_gbs"] = sample.billed_ms / 1000 * plan.memory_mb / 1024
    quantities["emf_gb"] = sample.emf.bytes / 1024 ** 3
    names = plan.settings.store + plan.settings.stream + plan.settings.retry + plan.settings.dead_letter \
        + plan.settings.notify
    configured = {n.split(":")[2] + ("_fifo" if n.endswith(".fifo") else "") for n in names if n.startswith("arn:")}
    per = 1 / sample.transitions
    items = []
    for key, service, what, unit, price_name in LINE_ITEMS:
        quantity = quantities.get(key, 0)
        if not quantity and key not in ALWAYS and SHOWN_WHEN_CONFIGURED.get(key) not in configured:
            continue
        price = getattr(prices, price_name)
        items.append({"service": service, "item": what, "unit": unit, "per_transition": quantity * per,
                      "unit_price_usd": price, "usd_per_million": quantity * per * price * 1e6})
    return {
        "machine": plan.machine, "region": plan.region, "prices_as_of": PRICES_AS_OF,
        "context_bytes": plan.context_bytes, "batch_size": plan.batch_size, "memory_mb": plan.memory_mb,
        "metrics": plan.metrics_target,
        "settings": {"store": plan.stores_shown, "stream": plan.settings.stream},
        "sample": {"transitions": sample.transitions, "instances": sample.instances, "failed": sample.failed,
                   "messages": sample.messages, "invocations": sample.invocations,
                   "lambda_ms_per_invocation": sample.billed_ms / max(1, sample.invocations),
                   "seconds": round(sample.seconds, 3)},
        "calls_per_transition": {label: count * per for label, count in sorted(sample.meter.calls.items())},
        "line_items": items,
        "total_usd_per_million": sum(item["usd_per_million"] for item in items),
        "not_billed": not_billed(plan, sample),
        "notes": plan.notes + assumptions(plan, sample),
        "compare": {"step_functions_standard_usd_per_million_transitions": STEP_FUNCTIONS_STANDARD_PER_MILLION,
                    "step_functions_express_usd_per_million_requests": STEP_FUNCTIONS_EXPRESS_PER_MILLION_REQUESTS},
    }


def not_billed(plan: Plan, sample: Sample) -> list[str]:
    lines = [f"{name}: not billed per request" for name in plan.not_billed]
    quantities = sample.meter.quantities
    if quantities.get("free:dynamodbstreams"):
        lines.append("DynamoDB Streams reads by Lambda: free")
    if quantities.get("free:kinesis"):
        lines.append("Kinesis reads by Lambda: free in provisioned mode (shard-hours are billed per hour, "
                     "not per transition)")
    if quantities.get("free:ecs"):
        lines.append("ECS: billed for the tasks' compute, not per request")
    for label, count in sorted(sample.meter.one_time.items()):
        lines.append(f"{label}: {count} call(s) once per container, not per transition")
    for key, count in sorted(quantities.items()):
        if key.startswith("unpriced:"):
            lines.append(f"{key.split(':', 1)[1]}: {count:g} call(s) not priced here")
    return lines


def assumptions(plan: Plan, sample: Sample) -> list[str]:
    invocations = max(1, sample.invocations)
    latencies = ", ".join(f"{'other' if k == '*' else k} {v:g}" for k, v in LATENCY_MS.items())
    duration = (f"Lambda duration: {sample.billed_ms / invocations:.1f} ms per invocation billed at "
                f"{plan.memory_mb} MB = the framework's own time measured here "
                f"({sample.framework_seconds * 1000 / invocations:.1f} ms) plus each AWS call at an assumed "
                f"in-region latency (ms: {latencies}), rounded up to the ms")
    dynamodb = ("DynamoDB: on-demand; reads counted as the request asked (eventually consistent: half a unit "
                "per 4 KB); index writes are not doubled in transactions")
    left_out = (f"free tiers, storage, idle polling and per-hour charges are left out; prices: {plan.region}, "
                f"{PRICES_AS_OF} (fsm/app/prices.py)")
    return [duration, dynamodb, left_out]


def render(report: Mapping[str, Any]) -> str:
    sample, settings, compare = report["sample"], report["settings"], report["compare"]
    failed = f", {sample['failed']} failed" if sample["failed"] else ""
    lines = [
        (f"machine {report['machine']}, {report['context_bytes']:,}-byte context, Lambda batch of "
         f"{report['batch_size']}, {report['memory_mb']} MB, {report['region']} prices"),
        (f"sample: {_count(sample['transitions'], 'transition')} in {_count(sample['instances'], 'instance')}, "
         f"{_count(sample['messages'], 'message')}, {_count(sample['invocations'], 'invocation')}{failed}"),
        (f"store {', '.join(settings['store'])}; stream {', '.join(settings['stream'])}; "
         f"metrics {report['metrics']}"),
        "",
        f"{'line item':<52}{'per transition':>22}{'$ per 1M transitions':>22}",
    ]
    for item in report["line_items"]:
        name = f"{item['service']} {item['item']}"
        amount = f"{item['per_transition']:.4g} {item['unit']}"
        lines.append(f"{name:<52}{amount:>22}{item['usd_per_million']:>22.4f}")
    lines += [
        f"{'total':<52}{'':>22}{report['total_usd_per_million']:>22.4f}",
        "",
        (f"Step Functions Standard: ${compare['step_functions_standard_usd_per_million_transitions']:.2f} per "
         f"million state transitions; Express: ${compare['step_functions_express_usd_per_million_requests']:.2f} "
         "per million requests plus duration"),
        "",
        "calls per transition: " + ", ".join(f"{label} {count:.3g}"
                                             for label, count in report["calls_per_transition"].items()),
    ]
    lines += [f"not billed: {line}" for line in report["not_billed"]]
    lines += [f"note: {line}" for line in report["notes"]]
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
