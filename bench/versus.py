#!/usr/bin/env python
"""lambda-fsm side by side with aws-lambda-fsm 0.35 (not a timed test: it prints figures).

    python bench/versus.py [--quick] [--samples N] [--instances N] [--alf-python PATH]
                           [--ours-python PATH] [--env-servers] [--parts cold,warm]

aws-lambda-fsm runs under its own interpreter, a virtualenv outside this repository
(``--alf-python``, else ``$ALF_PYTHON``, else ``/tmp/alf-venv/bin/python``), made with::

    python3.11 -m venv /tmp/alf-venv
    /tmp/alf-venv/bin/pip install aws-lambda-fsm==0.35.0 boto3==<ours> redis==<ours>

(it declares only PyYAML and future; boto3 and redis, which it imports, get the versions
this interpreter has, so that the SDKs are not what differs). Its side of the harness is
``bench/versus_alf.py``, which imports only the standard library and aws-lambda-fsm.
Without that interpreter the script says so and prints lambda-fsm's figures alone.
lambda-fsm's processes run under ``--ours-python`` (else ``$OURS_PYTHON``, else this
interpreter) with this checkout on ``PYTHONPATH``; for the cold start give it a virtualenv
as lean as aws-lambda-fsm's (bench/README.rst), since the interpreter's start counts and a
development environment's site-packages slow it. One cold process of ours is
``bench/versus_ours_cold.py``, which, like versus_alf.py, imports only what it must.

1. Cold start to the first handled transition, SQS + DynamoDB. Each sample is a fresh
   process per framework, the two taking turns (ours first in even rounds, theirs in odd
   ones), so that a busy spell of the machine hits both. A process imports the
   framework's Lambda handler, then hands it one SQS record (the shape of
   tests/events/sqs.json) whose body starts an instance of a three-state machine: the
   first transition, its next message sent to an SQS queue on moto_server
   (``AWS_ENDPOINT_URL``), state in DynamoDB (ours: the instance record in the store
   table; aws-lambda-fsm: its lease and idempotency flag in its cache table, as
   ``PRIMARY_CACHE_SOURCE``). Reported: process start (the parent's clock just before it
   starts the process) to the handler's return, median and p90; the handler's import
   alone; the bare interpreter start (before any import), the same for both but for the
   site-packages each environment has. Checked after the clock stops: ours committed
   step 1; aws-lambda-fsm's next message (steps 1, state ``a``) is on the queue.

2. Per transition on redis, context of 300 KB. One warm process per framework, driven in
   turns (a few instances each, alternately). A 10-state linear machine (s0 ... s9, the do
   action of each returns ``next``), context of 300 entries of 1,000 characters; each of
   the ten messages of an instance is handed to the framework's Lambda handler as a
   Kinesis record, and the handler's call is timed. Kinesis, because aws-lambda-fsm
   carries the whole context in every message and SQS and SNS refuse bodies over 256 KB;
   its stream takes 1 MB. The next message is kept in-process on both sides (ours: a bus
   passed to ``fsm.app.wiring.build``; theirs: a stand-in for the boto3 Kinesis client in
   its own connection cache), so no message crosses a network: what is timed is the
   framework and its redis. Ours: ``store: redis://...`` (the instance record and the
   lease). Theirs: ``PRIMARY_CACHE_SOURCE`` an ElastiCache ARN mapped to the same
   redis-server by ``ELASTICACHE_ENDPOINTS`` (lease and idempotency flag; the context
   lives only in the messages), primary sources only, no checkpoint, metrics or secondary
   sources (its least work per transition). With no secondary cache it logs "Unable set
   message dispatched for idempotency." at ERROR on every transition: the harness counts
   its log records instead of writing them, and prints them.
   Reported: median and p90 milliseconds per handler call, and the CPU time per call.

Then a table: metric, lambda-fsm, aws-lambda-fsm, ratio (ours / theirs), target, MET or
NOT MET. Targets: cold start median ratio <= 1.00; per-transition median ratio <= 1.20.
Other rows are information. The script exits 0 whatever the figures say.

Servers: a private redis-server and moto_server on free loopback ports, started by
``bench/servers.py`` and stopped at the end; ``--env-servers`` uses
``FSM_TEST_REDIS_URL`` / ``FSM_TEST_MOTO_URL`` instead. Queues and tables get fresh names
per run and are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from lambda_records import kinesis_record

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ALF_SCRIPT = HERE / "versus_alf.py"         # aws-lambda-fsm's side (its own interpreter)
OURS_COLD = HERE / "versus_ours_cold.py"    # one cold process of ours
MARKER = "VERSUS_RESULT "
ACCOUNT, REGION = "123456789012", "us-east-1"
COLD_TARGET, WARM_TARGET = 1.00, 1.20
CONTEXT_ENTRIES, CONTEXT_ENTRY_BYTES = 300, 1000     # 300 KB of context

# The same machines for both frameworks: their YAML differs only in the action's module.
COLD_MACHINES = """\
machines:
  - name: cold
    states:
      - {{name: a, initial: true, do_action: {module}.Next, transitions: [{{event: next, target: b}}]}}
      - {{name: b, do_action: {module}.Next, transitions: [{{event: next, target: c}}]}}
      - {{name: c, final: true}}
"""


SCRATCH: list[str] = []


def scratch(prefix: str) -> str:
    """A temporary folder of this run, removed at its end."""
    SCRATCH.append(tempfile.mkdtemp(prefix=prefix))
    return SCRATCH[-1]


def linear_machines(module: str) -> str:
    """s0 ... s9: the first message enters s0, the tenth enters s9 (final)."""
    lines = ["machines:\n  - name: linear\n    states:\n"]
    for i in range(10):
        if i == 9:
            lines.append(f"      - {{name: s9, final: true, do_action: {module}.Next}}\n")
        else:
            first = "initial: true, " if i == 0 else ""
            lines.append(f"      - {{name: s{i}, {first}do_action: {module}.Next, "
                         f"transitions: [{{event: next, target: s{i + 1}}}]}}\n")
    return "".join(lines)


OURS_ACTIONS = """\
from fsm import Action


class Next(Action):
    def execute(self, context, obj):
        return "next"
"""
ALF_ACTIONS = """\
from aws_lambda_fsm.action import Action


class Next(Action):
    def execute(self, context, obj):
        return "next"
"""
ALF_SETTINGS = """\
# aws-lambda-fsm settings (its settings.py): primary sources only.
PRIMARY_STREAM_SOURCE = {stream!r}
SECONDARY_STREAM_SOURCE = None
PRIMARY_RETRY_SOURCE = {stream!r}
SECONDARY_RETRY_SOURCE = None
PRIMARY_CACHE_SOURCE = {cache!r}
SECONDARY_CACHE_SOURCE = None
PRIMARY_CHECKPOINT_SOURCE = None
SECONDARY_CHECKPOINT_SOURCE = None
PRIMARY_ENVIRONMENT_SOURCE = None
SECONDARY_ENVIRONMENT_SOURCE = None
PRIMARY_METRICS_SOURCE = None
SECONDARY_METRICS_SOURCE = None
SQS_URLS = {sqs_urls!r}
ELASTICACHE_ENDPOINTS = {elasticache!r}
"""


def big_context() -> dict[str, str]:
    return {f"k{i:03d}": "x" * CONTEXT_ENTRY_BYTES for i in range(CONTEXT_ENTRIES)}


# -- children that run our framework (this interpreter) ----------------------------------


class SinkBus:
    """An in-process bus: keeps what is sent (like versus_alf.Sink on the other side).
    ``max_delay`` 0, as a Kinesis stream's."""

    url = "kinesis-sink"
    max_delay = 0.0

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, envelope: Any) -> None:
        self.sent.append(envelope)

    def send_batch(self, envelopes: Any) -> None:
        self.sent.extend(envelopes)

    def close(self) -> None:
        pass


def ours_worker(folder: str, redis_url: str) -> None:
    """A warm container of ours on redis, driven over stdin like versus_alf.worker."""
    from config.loader import load_file
    from config.settings import Settings
    from fsm.app.intake import handle_event
    from fsm.app.wiring import App, build
    from fsm.logs import configure
    from fsm.message import Message

    configure("ERROR")
    definitions = load_file(str(Path(folder) / "fsm.yaml"))
    settings = Settings(store=[redis_url])
    sink = SinkBus()
    app = App(definitions, settings, build(definitions.machines, settings, bus=sink))
    store = app.wiring.stores[0]
    context = json.loads((Path(folder) / "context.json").read_text())
    stream = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/versus-ours"
    run = sequence = 0
    print(MARKER + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        times: list[float] = []
        cpu: list[float] = []
        failures: list[str] = []
        sizes: list[int] = []
        for _ in range(int(words[1])):
            run += 1
            cid = f"ours-{time.time_ns()}-{run}"
            body: str | None = Message(machine="linear", correlation_id=cid, context=context,
                                       sent_at=time.time()).encode()
            calls = 0
            while body is not None and calls <= 20:
                sequence += 1
                sizes.append(len(body))
                event = {"Records": [kinesis_record(body, stream, sequence)]}
                begun, begun_cpu = time.perf_counter(), time.process_time()
                reply = handle_event(app, event)
                times.append((time.perf_counter() - begun) * 1000)
                cpu.append((time.process_time() - begun_cpu) * 1000)
                calls += 1
                if reply.get("batchItemFailures"):
                    failures.append(f"{cid}: call {calls} failed")
                body = sink.sent.pop().body if sink.sent else None
            record = store.get(cid)       # not timed: ten transitions, done in s9
            if calls != 10 or not record or (record["status"], record["state"], record["step"]) != ("done", "s9", 10):
                failures.append(f"{cid}: {calls} calls, record "
                                f"{record and (record['status'], record['state'], record['step'])}")
        print(MARKER + json.dumps({"times": times, "cpu": cpu, "failures": failures, "logs": {},
                                   "message_bytes": max(sizes) if sizes else 0}), flush=True)


# -- the parent ------------------------------------------------------------------------------


def read_marker(stream: Any, what: str) -> dict[str, Any]:
    for line in stream:
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    raise RuntimeError(f"{what} ended without an answer")


def spawn_cold(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> dict[str, Any]:
    t0 = time.time()
    done = subprocess.run([*argv, repr(t0)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{what} cold child failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    result = json.loads(lines[-1][len(MARKER):])
    if not result["ok"]:
        raise RuntimeError(f"{what}: the first transition did not happen: {result} {done.stderr.strip()[-800:]}")
    return result


def aws_env(moto: str, pycache: str) -> dict[str, str]:
    """A Lambda-like environment. Bytecode is cached under ``pycache`` (one folder for the
    run, filled by a warm-up process of each framework) rather than beside the sources,
    whatever PYTHONDONTWRITEBYTECODE the caller has: both compile once, then load cached."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSM_", "AWS_", "PYTHON"))}
    env.update(AWS_ENDPOINT_URL=moto, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION=REGION, AWS_LAMBDA_FUNCTION_NAME="versus-bench", PYTHONPYCACHEPREFIX=pycache)
    return env


class ColdSetup:
    """Folders, environments, a queue and a table per framework; ``close`` deletes them."""

    def __init__(self, moto: str, alf_python: str | None, ours_python: str):
        import boto3

        self.cleanup: list[Any] = []
        tag = uuid.uuid4().hex[:10]
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name=REGION)
        self.sqs = session.client("sqs", endpoint_url=moto)
        self.dynamodb = session.client("dynamodb", endpoint_url=moto)
        self.pycache = scratch("versus-pycache-")

        # ours: settings file naming the queue (stream) and the table (store)
        self.ours = Path(scratch("versus-ours-cold-"))
        self.ours_queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:versus-ours-{tag}"
        self.ours_table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/versus-ours-{tag}"
        (self.ours / "fsm.yaml").write_text(COLD_MACHINES.format(module="cold_actions"))
        (self.ours / "cold_actions.py").write_text(OURS_ACTIONS)
        (self.ours / "settings.yaml").write_text(f"store: [{self.ours_table}]\nstream: [{self.ours_queue}]\n")
        self.ours_env = aws_env(moto, self.pycache)
        self.ours_env.update(FSM_CONFIG=str(self.ours / "fsm.yaml"), FSM_SETTINGS=str(self.ours / "settings.yaml"),
                             FSM_LOG_LEVEL="ERROR", PYTHONPATH=str(ROOT))   # the checkout, as a Lambda zip's root
        self.ours_python = ours_python
        self._create_ours(moto)

        # aws-lambda-fsm: settings.py naming the queue (stream, retries) and the table (cache)
        self.alf = Path(scratch("versus-alf-cold-"))
        self.alf_queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:versus-alf-{tag}"
        self.alf_env = aws_env(moto, self.pycache)
        self.alf_env.update(PYTHONPATH=str(self.alf))
        if alf_python:
            table = f"versus-alf-{tag}"
            url = self.sqs.create_queue(QueueName=self.alf_queue.rsplit(":", 1)[1])["QueueUrl"]
            self.cleanup.append(lambda: self.sqs.delete_queue(QueueUrl=url))
            self.dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                                       KeySchema=[{"AttributeName": "ckey", "KeyType": "HASH"}],
                                       AttributeDefinitions=[{"AttributeName": "ckey", "AttributeType": "S"}])
            self.cleanup.append(lambda: self.dynamodb.delete_table(TableName=table))
            (self.alf / "fsm.yaml").write_text(COLD_MACHINES.format(module="cold_actions"))
            (self.alf / "cold_actions.py").write_text(ALF_ACTIONS)
            (self.alf / "settings.py").write_text(ALF_SETTINGS.format(
                stream=self.alf_queue, cache=f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}",
                sqs_urls={self.alf_queue: {"QueueUrl": url}}, elasticache={}))

    def _create_ours(self, moto: str) -> None:
        from config.settings import load_settings
        from fsm.app.resources import create_resources

        settings = load_settings({"store": [self.ours_table], "stream": [self.ours_queue]}, environ={})
        saved = dict(os.environ)
        os.environ.update({k: v for k, v in self.ours_env.items() if k.startswith("AWS_")})
        try:
            list(create_resources(settings))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        url = self.sqs.get_queue_url(QueueName=self.ours_queue.rsplit(":", 1)[1])["QueueUrl"]
        table = self.ours_table.rsplit("/", 1)[1]
        self.cleanup.append(lambda: self.sqs.delete_queue(QueueUrl=url))
        self.cleanup.append(lambda: self.dynamodb.delete_table(TableName=table))

    def ours_sample(self) -> dict[str, Any]:
        cid = uuid.uuid4().hex
        return spawn_cold([self.ours_python, str(OURS_COLD), self.ours_queue, cid],
                          self.ours, self.ours_env, "lambda-fsm")

    def alf_sample(self, alf_python: str) -> dict[str, Any]:
        cid = uuid.uuid4().hex
        return spawn_cold([alf_python, str(ALF_SCRIPT), "cold", self.alf_queue, cid], self.alf, self.alf_env,
                          "aws-lambda-fsm")

    def close(self) -> None:
        for undo in self.cleanup:
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - cleanup is best effort
                print(f"  (cleanup: {type(exc).__name__}: {exc})")


class Worker:
    """A warm process of one framework, driven a few instances at a time."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], what: str):
        self.what = what
        self.popen = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        read_marker(self.popen.stdout, what)

    def run(self, instances: int) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(f"run {instances}\n")
        self.popen.stdin.flush()
        try:
            return read_marker(self.popen.stdout, self.what)
        except RuntimeError:
            self.popen.wait(10)
            raise RuntimeError(f"{self.what} worker died: {self.popen.stderr.read()[-1500:]}") from None

    def close(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.stdin.write("quit\n")
                self.popen.stdin.close()
                self.popen.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.popen.kill()
                self.popen.wait(5)


def warm_setup(redis_url: str, alf_python: str | None, ours_python: str) -> tuple[Worker, Worker | None]:
    from urllib.parse import urlparse

    context = json.dumps(big_context())
    ours = Path(scratch("versus-ours-redis-"))
    (ours / "fsm.yaml").write_text(linear_machines("linear_actions"))
    (ours / "linear_actions.py").write_text(OURS_ACTIONS)
    (ours / "context.json").write_text(context)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSM_", "AWS_", "PYTHONPATH"))}
    # Ours on another redis database than aws-lambda-fsm's (it always uses 0): same server.
    parsed = urlparse(redis_url)
    ours_url = f"redis://{parsed.hostname}:{parsed.port}/1"
    ours_worker_ = Worker([ours_python, str(Path(__file__).resolve()), "--worker", str(ours), ours_url], ours,
                          {**env, "PYTHONPATH": str(ROOT)}, "lambda-fsm")
    if not alf_python:
        return ours_worker_, None
    alf = Path(scratch("versus-alf-redis-"))
    cache = f"arn:aws:elasticache:{REGION}:{ACCOUNT}:cluster:versus"
    (alf / "fsm.yaml").write_text(linear_machines("linear_actions"))
    (alf / "linear_actions.py").write_text(ALF_ACTIONS)
    (alf / "context.json").write_text(context)
    (alf / "settings.py").write_text(ALF_SETTINGS.format(
        stream=f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/versus-alf", cache=cache, sqs_urls={},
        elasticache={cache: {"CacheClusterId": "versus", "Engine": "redis",
                             "CacheNodes": [{"Endpoint": {"Address": parsed.hostname, "Port": parsed.port}}]}}))
    alf_env = {k: v for k, v in env.items() if not k.startswith("PYTHON")}
    alf_env.update(PYTHONPATH=str(alf), AWS_DEFAULT_REGION=REGION)
    return ours_worker_, Worker([alf_python, str(ALF_SCRIPT), "worker"], alf, alf_env, "aws-lambda-fsm")


def alf_interpreter(given: str | None) -> tuple[str | None, str]:
    """The interpreter with aws-lambda-fsm 0.35, and its description (or why there is none)."""
    path = given or os.environ.get("ALF_PYTHON") or "/tmp/alf-venv/bin/python"
    if not Path(path).exists():
        return None, f"{path} does not exist (see the docstring for the virtualenv)"
    probe = ("import importlib.metadata as m, sys; print(sys.version.split()[0], "
             "*(m.version(p) for p in ('aws-lambda-fsm', 'boto3', 'botocore', 'redis', 'PyYAML')))")
    done = subprocess.run([path, "-c", probe], capture_output=True, text=True, check=False, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        return None, f"{path} cannot run aws-lambda-fsm: {done.stderr.strip()[-400:]}"
    python, alf, boto3, botocore, redis, pyyaml = done.stdout.split()
    return path, (f"aws-lambda-fsm {alf} at {path}: Python {python}, boto3 {boto3}, botocore {botocore}, "
                  f"redis-py {redis}, PyYAML {pyyaml}")


def describe_ours(path: str) -> str:
    probe = ("import importlib.metadata as m, sys; print(sys.version.split()[0], "
             "*(m.version(p) for p in ('boto3', 'botocore', 'redis', 'orjson', 'PyYAML')))")
    done = subprocess.run([path, "-c", probe], capture_output=True, text=True, check=False, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        return f"{path} (cannot tell its packages: {done.stderr.strip()[-200:]})"
    python, boto3, botocore, redis, orjson, pyyaml = done.stdout.split()
    return (f"{path}: Python {python}, boto3 {boto3}, botocore {botocore}, redis-py {redis}, orjson {orjson}, "
            f"PyYAML {pyyaml}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str, str]] = []

    def add(self, metric: str, ours: float | None, theirs: float | None, unit: str = "ms",
            target: float | None = None) -> None:
        def show(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.1f} {unit}"

        ratio = ours / theirs if ours is not None and theirs else None
        verdict = "-" if target is None else ("n/a" if ratio is None else ("MET" if ratio <= target else "NOT MET"))
        self.rows.append((metric, show(ours), show(theirs), "n/a" if ratio is None else f"{ratio:.2f}",
                          "-" if target is None else f"<= {target:.2f}", verdict))

    def print(self) -> None:
        head = ("metric", "lambda-fsm", "aws-lambda-fsm", "ratio", "target", "verdict")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(6)]
        line = "  ".join("-" * w for w in widths)
        print(line)
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        print(line)
        for row in self.rows:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        print(line)


def print_logs(what: str, logs: dict[str, int]) -> None:
    for message, count in sorted(logs.items()):
        print(f"    {what} logged {count}x  {message}")


def cold_part(servers: Any, alf_python: str | None, ours_python: str, samples: int, table: Table) -> None:
    print(f"\n== 1. Cold start to the first handled transition, SQS + DynamoDB on moto_server: "
          f"{samples} fresh processes each, in turns ==")
    moto = servers.moto()
    if not moto:
        print(f"skipped: no moto_server ({servers.missing.get('moto', 'unavailable')})")
        return
    setup = ColdSetup(moto, alf_python, ours_python)
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    try:
        setup.ours_sample()                        # warm-up: compiles the bytecode cache; not counted
        if alf_python:
            setup.alf_sample(alf_python)
        for i in range(samples):
            order = [("ours", setup.ours_sample), ("theirs", lambda: setup.alf_sample(alf_python))]
            if not alf_python:
                order = order[:1]
            for name, sample in (order if i % 2 == 0 else order[::-1]):
                (ours if name == "ours" else theirs).append(sample())
    finally:
        setup.close()

    def col(runs: list[dict[str, Any]], key: str, q: float | None = None) -> float | None:
        if not runs:
            return None
        values = [r[key] for r in runs]
        return statistics.median(values) if q is None else pct(values, q)

    print(f"  {'ms':<44} {'lambda-fsm':>22} {'aws-lambda-fsm':>22}")
    print(f"  {'':<44} {'median   p90   min':>22} {'median   p90   min':>22}")
    for label, key in (("process start -> handler returned", "process_to_return_ms"),
                       ("  bare interpreter start (before imports)", "interpreter_ms"),
                       ("  import of the handler module", "import_ms"),
                       ("  first event (load + transition + send)", "first_ms")):
        cells = []
        for runs in (ours, theirs):
            if runs:
                values = [r[key] for r in runs]
                cells.append(f"{statistics.median(values):7.1f} {pct(values, 0.9):6.1f} {min(values):6.1f}")
            else:
                cells.append(f"{'n/a':>21}")
        print(f"  {label:<44} {cells[0]:>22} {cells[1]:>22}")
    seen: dict[str, int] = {}
    for run in theirs:
        for message in run["logs"]:
            seen[message] = seen.get(message, 0) + 1
    for message, count in sorted(seen.items()):
        print(f"    aws-lambda-fsm logged, in {count} of {len(theirs)} processes:  {message}")
    table.add("cold start to 1st transition, median", col(ours, "process_to_return_ms"),
              col(theirs, "process_to_return_ms"), target=COLD_TARGET)
    table.add("cold start to 1st transition, p90", col(ours, "process_to_return_ms", 0.9),
              col(theirs, "process_to_return_ms", 0.9))
    for runs in (ours, theirs):
        for r in runs:
            r["own_ms"] = r["process_to_return_ms"] - r["interpreter_ms"]
    table.add("  the same less bare interpreter start, median", col(ours, "own_ms"), col(theirs, "own_ms"))
    table.add("  import of the handler, median", col(ours, "import_ms"), col(theirs, "import_ms"))
    table.add("  bare interpreter start, median", col(ours, "interpreter_ms"), col(theirs, "interpreter_ms"))


def warm_part(servers: Any, alf_python: str | None, ours_python: str, instances: int, batch: int,
              table: Table) -> None:
    kb = CONTEXT_ENTRIES * CONTEXT_ENTRY_BYTES // 1000
    print(f"\n== 2. Per transition on redis, {kb} KB context, 10-state linear machine: {instances} instances "
          f"({instances * 10} transitions) each after one warm-up instance, {batch} at a time in turns ==")
    redis_url = servers.redis()
    if not redis_url:
        print(f"skipped: no redis-server ({servers.missing.get('redis', 'unavailable')})")
        return
    ours_w, alf_w = warm_setup(redis_url, alf_python, ours_python)
    import redis

    server = redis.Redis.from_url(redis_url)

    def redis_stats() -> list[int]:
        info = server.info("stats")
        return [int(info[k]) for k in ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes")]

    workers = [("ours", ours_w)] + ([("theirs", alf_w)] if alf_w else [])
    got: dict[str, dict[str, Any]] = {name: {"times": [], "cpu": [], "failures": [], "logs": {}, "bytes": 0,
                                             "redis": [0, 0, 0]} for name, _ in workers}
    try:
        for _, worker in workers:
            worker.run(1)                                    # warm-up: not counted
        done, turn = 0, 0
        while done < instances:
            n = min(batch, instances - done)
            for name, worker in (workers if turn % 2 == 0 else workers[::-1]):
                before = redis_stats()      # the workers take turns: what redis did in between is theirs
                result = worker.run(n)
                after = redis_stats()
                into = got[name]
                into["redis"] = [t + a - b for t, a, b in zip(into["redis"], after, before)]
                into["redis"][0] -= 1           # the INFO command itself
                into["times"] += result["times"]
                into["cpu"] += result.get("cpu", [])
                into["failures"] += result["failures"]
                into["bytes"] = max(into["bytes"], result.get("message_bytes", 0))
                into["logs"] = result["logs"]      # counted since the worker started (warm-up included)
            done += n
            turn += 1
    finally:
        for _, worker in workers:
            worker.close()
        server.close()

    theirs = got.get("theirs")
    print(f"  {'ms per handler call (one transition)':<44} {'lambda-fsm':>22} {'aws-lambda-fsm':>22}")
    print(f"  {'':<44} {'median   p90   min':>22} {'median   p90   min':>22}")
    for label, key in (("wall clock", "times"), ("process CPU time", "cpu")):
        cells = []
        for side in (got["ours"], theirs):
            values = side[key] if side else []
            cells.append(f"{statistics.median(values):7.2f} {pct(values, 0.9):6.2f} {min(values):6.2f}"
                         if values else f"{'n/a':>21}")
        print(f"  {label:<44} {cells[0]:>22} {cells[1]:>22}")
    print(f"  largest message body: lambda-fsm {got['ours']['bytes']:,} B (the instance record in redis too); "
          f"aws-lambda-fsm {theirs['bytes'] if theirs else 0:,} B (its context travels only in the messages)")
    for name, side in got.items():
        n = len(side["times"]) or 1
        commands, received, sent = (x / n for x in side["redis"])
        print(f"  redis-server per transition, {'lambda-fsm' if name == 'ours' else 'aws-lambda-fsm'}: "
              f"{commands:.1f} commands, {received / 1000:.1f} KB received, {sent / 1000:.1f} KB sent "
              "(INFO stats deltas)")
    for name, side in got.items():
        for failure in side["failures"][:5]:
            print(f"  FAILED ({name}): {failure}")
    if theirs:
        print_logs("aws-lambda-fsm (warm-up instance included)", theirs["logs"])

    def med(side: dict[str, Any] | None, key: str, q: float | None = None) -> float | None:
        if not side or not side[key]:
            return None
        return statistics.median(side[key]) if q is None else pct(side[key], q)

    table.add(f"per transition, redis, {kb} KB context, median", med(got["ours"], "times"), med(theirs, "times"),
              target=WARM_TARGET)
    table.add(f"per transition, redis, {kb} KB context, p90", med(got["ours"], "times", 0.9),
              med(theirs, "times", 0.9))
    table.add("  the same, process CPU time, median", med(got["ours"], "cpu"), med(theirs, "cpu"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=15, help="cold processes per framework (default 15)")
    parser.add_argument("--instances", type=int, default=40,
                        help="instances of the 10-state machine per framework, part 2 (default 40)")
    parser.add_argument("--quick", action="store_true", help="3 cold samples and 4 instances each")
    parser.add_argument("--alf-python", help="interpreter with aws-lambda-fsm 0.35 (default $ALF_PYTHON, "
                                             "else /tmp/alf-venv/bin/python)")
    parser.add_argument("--ours-python", default=os.environ.get("OURS_PYTHON") or sys.executable,
                        help="interpreter for lambda-fsm's processes, with this checkout on PYTHONPATH "
                             "(default $OURS_PYTHON, else this one)")
    parser.add_argument("--env-servers", action="store_true",
                        help="use FSM_TEST_REDIS_URL / FSM_TEST_MOTO_URL rather than private servers")
    parser.add_argument("--parts", default="cold,warm",
                        help="which parts to run: cold (1), warm (2) or both (default cold,warm)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        ours_worker(*args.worker)
        return 0

    sys.path.insert(0, str(HERE))
    from servers import ENV, Servers

    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    if not parts or parts - {"cold", "warm"}:
        parser.error(f"--parts takes cold, warm or cold,warm, not {args.parts!r}")
    samples = 3 if args.quick else max(1, args.samples)
    instances = 4 if args.quick else max(1, args.instances)
    batch = 2
    if not args.env_servers:
        for name in ENV.values():     # private servers: started here, stopped at the end
            os.environ.pop(name, None)
    alf_python, described = alf_interpreter(args.alf_python)
    ours_described = describe_ours(args.ours_python)

    print("lambda-fsm vs aws-lambda-fsm 0.35: figures, not a test")
    print(f"  lambda-fsm: this checkout ({ROOT}) on PYTHONPATH, run by {ours_described}")
    print(f"  {'aws-lambda-fsm: ' + described if alf_python else 'aws-lambda-fsm: NOT RUN, ' + described}")
    print(f"  machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    table = Table()
    with Servers() as servers:
        for name, part in (("cold", lambda: cold_part(servers, alf_python, args.ours_python, samples, table)),
                           ("warm", lambda: warm_part(servers, alf_python, args.ours_python, instances, batch,
                                                      table))):
            if name not in parts:
                continue
            try:
                part()
            except Exception as exc:  # noqa: BLE001 - print it, go on with the other part
                print(f"  ERROR: {type(exc).__name__}: {exc}")
        print(f"  servers: redis {servers.urls.get('redis')}, moto {servers.urls.get('moto')} "
              f"({'shared, from the environment' if args.env_servers else 'private, started by this run'})")
    for folder in SCRATCH:
        shutil.rmtree(folder, ignore_errors=True)
    print("\n== Summary (ratio = lambda-fsm / aws-lambda-fsm; lower is better for ours) ==")
    table.print()
    print(f"  load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
