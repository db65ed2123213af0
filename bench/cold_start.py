#!/usr/bin/env python
"""Cold start of the Lambda handler (not a timed test: it prints figures).

    python bench/cold_start.py [--quick] [--runs N] [--configs memory,redis-sqs,dynamodb-sqs]
                               [--python PATH]

Each run is a fresh Python process, as a new Lambda container is. It imports
``fsm.handler``, loads the machines and backends (the handler's ``app()``, what the first
event pays for once), then hands the handler one SQS record carrying a start message: the
first transition, committed and its next message sent. The process reports, after each
of the three phases, the milliseconds it took, how many ``boto3``/``botocore`` modules
are loaded, whether a DynamoDB module (``sources.dynamodb*``, ``boto3.dynamodb``) is, and
how many boto3 clients were built (``sources.aws.clients_built``).

Configurations, all with ``AWS_LAMBDA_FUNCTION_NAME`` set:

- ``memory``: ``memory://`` store and stream. No AWS at all: no SDK module may load;
- ``redis-sqs``: a redis-server store, an SQS queue on moto_server;
- ``dynamodb-sqs``: a DynamoDB table and an SQS queue on moto_server.

Servers come from ``FSM_TEST_MOTO_URL`` and ``FSM_TEST_REDIS_URL`` when set, else
``bench/servers.py`` starts them; one that cannot be had skips its configuration. Queues
and tables get fresh names per run of the script and are deleted at the end; moto_server
is never reset. The figures are medians (and minimum) over ``--runs`` processes, after
one warm-up process per configuration that fills a bytecode cache of the run
(``PYTHONPYCACHEPREFIX``, whatever ``PYTHONDONTWRITEBYTECODE`` says): a Lambda package
ships its ``.pyc`` files, and a process compiling every module would measure the compiler.

``--python`` (else ``$OURS_PYTHON``, else this interpreter) runs the processes under
another interpreter, a virtualenv as lean as a Lambda's (bench/README.rst), with this
checkout on ``PYTHONPATH``: a development environment's site-packages slow the start.
"""

from __future__ import annotations

# The child process measures its own imports: only the standard library above the line.
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

HERE = Path(__file__).resolve().parent
MARKER = "COLD_START_RESULT "
CONFIGS = ("memory", "redis-sqs", "dynamodb-sqs")
PYTHON = sys.executable             # the children's interpreter (--python)
MACHINES = """\
machines:
  - name: cold
    states:
      - {name: a, initial: true, do_action: cold_actions.Next, transitions: [{event: next, target: b}]}
      - {name: b, do_action: cold_actions.Next, transitions: [{event: next, target: c}]}
      - {name: c, final: true}
"""
ACTIONS = """\
from fsm import Action


class Next(Action):
    def execute(self, context, obj):
        return "next"
"""
# -- the child: one cold container ------------------------------------------------------


def sdk_modules() -> dict[str, Any]:
    names = list(sys.modules)
    built = sys.modules.get("sources.aws")
    return {"sdk_modules": sum(1 for n in names if n.split(".")[0] in ("boto3", "botocore")),
            "dynamodb_modules": sorted(n for n in names if n.startswith(("sources.dynamodb", "boto3.dynamodb"))),
            "clients_built": sum(built.clients_built.values()) if built and hasattr(built, "clients_built") else None}


def child(queue_arn: str) -> None:
    started = time.perf_counter()
    from fsm import handler
    imported = time.perf_counter()
    after_import = sdk_modules()
    application = handler.app()
    loaded = time.perf_counter()
    after_load = sdk_modules()

    from fsm.message import Message

    machine = application.wiring.dispatcher.machines["cold"]
    cid = uuid.uuid4().hex
    body = Message(machine="cold", correlation_id=cid, context={}, version=machine.version,
                   sent_at=time.time()).encode()
    from lambda_records import sqs_record  # beside this script, standard library only

    event = {"Records": [sqs_record(body, queue_arn)]}
    begun = time.perf_counter()
    reply = handler.lambda_handler(event)
    handled = time.perf_counter()
    after_first = sdk_modules()
    record = application.wiring.stores[0].get(cid)
    print(MARKER + json.dumps({
        "import_ms": (imported - started) * 1000, "load_ms": (loaded - imported) * 1000,
        "first_ms": (handled - begun) * 1000, "total_ms": (handled - started) * 1000,
        "import": after_import, "load": after_load, "first": after_first,
        "failures": reply.get("batchItemFailures"), "step": record and record["step"]}), flush=True)


# -- the parent: set up, spawn, print -------------------------------------------------------


def spawn(folder: Path, env: dict[str, str], queue_arn: str, python: str = sys.executable) -> dict[str, Any]:
    begun = time.perf_counter()
    done = subprocess.run([python, str(Path(__file__).resolve()), "--child", queue_arn], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    wall = (time.perf_counter() - begun) * 1000
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    result = json.loads(lines[-1][len(MARKER):])
    if result["failures"] or not result["step"]:
        raise RuntimeError(f"the first transition did not commit: {result}")
    result["process_ms"] = wall
    return result


def base_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSM_", "AWS_", "PYTHONDONTWRITEBYTECODE"))}
    env.update(FSM_CONFIG=str(folder / "fsm.yaml"), AWS_LAMBDA_FUNCTION_NAME="cold-start-bench",
               FSM_LOG_LEVEL="ERROR", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", PYTHONPYCACHEPREFIX=str(folder / "pycache"))
    if PYTHON != sys.executable:        # a lean interpreter: the checkout, as a Lambda package's root
        env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), *filter(None, [env.get("PYTHONPATH")])])
    return env


class Setup:
    """The folder, environment and resources of one configuration; ``close`` removes them."""

    def __init__(self, name: str, servers: Any, tag: str):
        self.name, self.cleanup = name, []
        self.folder = Path(tempfile.mkdtemp(prefix=f"cold-{name}-"))
        (self.folder / "fsm.yaml").write_text(MACHINES)
        (self.folder / "cold_actions.py").write_text(ACTIONS)
        self.env = base_env(self.folder)
        self.queue = "arn:aws:sqs:us-east-1:123456789012:cold-memory"
        self.skipped = ""
        if name == "memory":
            self.env.update(FSM_STORE="memory://", FSM_STREAM="memory://")
            return
        moto = servers.moto()
        if not moto:
            self.skipped = f"no moto_server ({servers.missing.get('moto', 'unavailable')})"
            return
        self.env["AWS_ENDPOINT_URL"] = moto
        self.queue = f"arn:aws:sqs:us-east-1:123456789012:cold-{tag}"
        self.env["FSM_STREAM"] = self.queue
        if name == "redis-sqs":
            redis = servers.redis()
            if not redis:
                self.skipped = f"no redis-server ({servers.missing.get('redis', 'unavailable')})"
                return
            self.env["FSM_STORE"] = redis
        else:
            self.env["FSM_STORE"] = f"arn:aws:dynamodb:us-east-1:123456789012:table/cold-{tag}"
        self._create(moto)

    def _create(self, moto: str) -> None:
        import boto3

        from config.settings import load_settings
        from fsm.app.resources import create_resources

        saved = dict(os.environ)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("AWS_")})
        try:
            settings = load_settings({"store": self.env["FSM_STORE"].split(","), "stream": [self.queue]}, environ={})
            list(create_resources(settings))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name="us-east-1")
        sqs = session.client("sqs", endpoint_url=moto)
        url = sqs.get_queue_url(QueueName=self.queue.rsplit(":", 1)[1])["QueueUrl"]
        self.cleanup.append(lambda: sqs.delete_queue(QueueUrl=url))
        if self.env["FSM_STORE"].startswith("arn:"):
            table = self.env["FSM_STORE"].rsplit("/", 1)[1]
            dynamodb = session.client("dynamodb", endpoint_url=moto)
            self.cleanup.append(lambda: dynamodb.delete_table(TableName=table))

    def close(self) -> None:
        for undo in self.cleanup:
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - cleanup is best effort
                print(f"  (cleanup of {self.name}: {type(exc).__name__}: {exc})")
        shutil.rmtree(self.folder, ignore_errors=True)     # its machines, actions and bytecode cache


def summarise(name: str, runs: list[dict[str, Any]]) -> None:
    def ms(key: str) -> str:
        values = [run[key] for run in runs]
        return f"{statistics.median(values):8.1f} {min(values):8.1f}"

    last = runs[-1]
    print(f"\n{name}  ({len(runs)} fresh processes; median and minimum, ms)")
    print(f"  {'phase':<34} {'median':>8} {'min':>8}   boto3/botocore modules  clients built  DynamoDB modules")
    for label, key, phase in (("import fsm.handler", "import_ms", "import"),
                              ("load (app(): machines, backends)", "load_ms", "load"),
                              ("first transition (one SQS record)", "first_ms", "first")):
        seen = last[phase]
        built = "-" if seen["clients_built"] is None else seen["clients_built"]
        dynamo = ", ".join(seen["dynamodb_modules"]) or "none"
        print(f"  {label:<34} {ms(key)}   {seen['sdk_modules']:>22}  {built!s:>13}  {dynamo}")
    print(f"  {'import + load + first transition':<34} {ms('total_ms')}")
    print(f"  {'whole process (interpreter too)':<34} {ms('process_ms')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per configuration (default 5)")
    parser.add_argument("--quick", action="store_true", help="two runs per configuration")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--python", default=os.environ.get("OURS_PYTHON") or sys.executable,
                        help="interpreter of the cold processes, with this checkout on PYTHONPATH "
                             "(default $OURS_PYTHON, else this one)")
    parser.add_argument("--child", metavar="QUEUE_ARN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return 0
    global PYTHON
    PYTHON = args.python
    sys.path.insert(0, str(HERE))
    from servers import Servers

    runs = 2 if args.quick else max(1, args.runs)
    wanted = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    print(f"Cold start of fsm.handler: {runs} fresh processes per configuration (after a warm-up one), "
          f"{PYTHON if PYTHON != sys.executable else 'Python ' + sys.version.split()[0]}, moto_server for AWS")
    tag = uuid.uuid4().hex[:10]
    with Servers() as servers:
        for name in wanted:
            setup = Setup(name, servers, tag)
            try:
                if setup.skipped:
                    print(f"\n{name}: skipped, {setup.skipped}")
                    continue
                spawn(setup.folder, setup.env, setup.queue, PYTHON)    # warm-up: fills the bytecode cache
                summarise(name, [spawn(setup.folder, setup.env, setup.queue, PYTHON) for _ in range(runs)])
            finally:
                setup.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
