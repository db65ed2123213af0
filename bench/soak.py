"""The soak: many instances under fire, then proof that nothing was lost or done twice.

    python bench/soak.py                      # 1,000 x 20, DynamoDB + SQS on moto_server
    python bench/soak.py --store redis --bus redis --instances 2000 --workers 3 \\
        --chaos 0.2 --duplicates 0.02 --kill 5

Instances of a linear machine (``--steps`` steps, each action recording its (instance,
step) in redis) run through a store (``--store redis|dynamodb``) and a primary and a
secondary stream (``--bus sqs``: SQS queues on moto_server; ``--bus redis``: an
SQS-shaped queue kept in redis, ``bench/soak_queue.py``, with a visibility timeout,
redelivery and delays, no moto needed), under fire:

- ``--chaos P``: that fraction of calls to every backend (store, timers, both streams)
  fails, half before reaching it, half after it was applied (the answer lost);
- ``--duplicates P``: that fraction of messages is delivered twice;
- the primary stream is deleted half way, with the messages in it (``--keep-primary``
  not to);
- ``--workers N`` worker processes (``fsm worker``'s loop; 0 runs it in this process),
  ``--kill K`` of them killed with SIGKILL spread over the run, each restarted at once.

A line every ``--every`` seconds shows the progress; the report at the end counts the
instances lost (not finished), the steps committed twice (in the history), the actions
run twice (raw runs against distinct (instance, step)) and compares the ``Transitions``
metric with the transitions committed. Exit 0 only when no instance was lost, no step
committed twice and the counter is exact; 1 otherwise. Servers: redis-server and
moto_server (when used) are started on free ports (``--shared-servers`` takes
FSM_TEST_REDIS_URL / FSM_TEST_MOTO_URL instead). With ``--store dynamodb --bus sqs``
two moto_servers are started, one for DynamoDB and one for SQS, each ARN sent to its
own by the settings' per-ARN ``endpoints`` (``--no-moto-per-service``: one for both;
one moto_server is a single Python process, and both services on it make it the
soak's bottleneck). moto_server is ``bench/soak_moto.py``: moto as installed, less the
walks over the whole queue its SQS makes for every message sent or received (0.6 s a
ReceiveMessage at 300 messages deep; ``--stock-moto`` to keep them). ``tests/soak`` runs
it at 20 x 20.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
for _path in (ROOT, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from fsm import Action

if __name__ == "__main__":
    # The machine names its action `soak.SoakStep`: run as a script, this module must be
    # that `soak`, or the action would be a second copy without the redis connection.
    sys.modules.setdefault("soak", sys.modules[__name__])

ACCOUNT = "123456789012"
# The counts the report reads; timings (ActionDuration, Lag) are left out: a round trip each.
COUNTED = frozenset({"Transitions", "Duplicates", "Retries", "Failures", "Failovers", "FaultsInjected",
                     "LeaseContention", "Resent", "StaleMessages", "Retired", "DeadLetters", "RejectedEvents",
                     "DuplicatesInjected"})
REDIS: dict[str, Any] = {}      # the effects' redis client and the run's id, in every process


def _effects() -> tuple[Any, str]:
    if not REDIS:
        import redis

        REDIS.update(client=redis.Redis.from_url(os.environ["FSM_SOAK_REDIS"]), run=os.environ["FSM_SOAK_RUN"])
    return REDIS["client"], REDIS["run"]


class SoakStep(Action):
    """Records (instance, step) in an idempotent redis set, and counts raw runs apart."""

    def execute(self, context: Any, obj: dict[str, Any]) -> str:
        client, run = _effects()
        pipe = client.pipeline(transaction=False)
        pipe.sadd(f"{run}:steps:{context.correlation_id}", context.steps)
        pipe.incr(f"{run}:raw")
        pipe.execute()
        context["last"] = context.steps
        return "next"


def machine_yaml(steps: int) -> str:
    states = []
    for i in range(steps + 1):
        if i == steps:
            states.append(f"      - {{name: s{i}, final: true}}\n")
        else:
            first = "initial: true, " if i == 0 else ""
            states.append(f"      - {{name: s{i}, {first}do_action: soak.SoakStep, "
                          f"transitions: [{{event: next, target: s{i + 1}}}]}}\n")
    return ("machines:\n  - name: soak\n    max_retries: 50\n    retry_base_delay: 0.05\n"
            "    retry_max_delay: 0.5\n    states:\n" + "".join(states))


@dataclass
class Options:
    instances: int = 1000
    steps: int = 20
    store: str = "dynamodb"          # redis | dynamodb
    bus: str = "sqs"                 # sqs | redis
    chaos: float = 0.2
    duplicates: float = 0.0
    workers: int = 0                 # 0: the worker loop runs in this process
    kill: int = 0
    remove_primary: bool = True
    concurrency: str = "locked"
    lease_timeout: float = 3.0
    resend_after: float = 20.0
    visibility: float = 30.0         # the redis queue's visibility timeout (moto's SQS: 30 s)
    retry_cap: float = 5.0           # the redis queue's longest backoff of a failed record
    timeout: float = 900.0
    every: float = 5.0               # seconds between progress lines (0: none)
    sqs_moto: str | None = None      # a moto_server for SQS alone (None: the one DynamoDB uses)


@dataclass
class Report:
    instances: int
    steps: int
    finished: int = 0
    lost: int = 0
    committed: int = 0
    committed_twice: int = 0
    transitions_metric: int = 0
    counters_exact: bool = False
    action_runs: int = 0
    distinct_steps_run: int = 0
    actions_run_twice: int = 0
    wrong_step_sets: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    duplicates_injected: int = 0
    duplicates_detected: int = 0
    retries: int = 0
    failovers: int = 0
    resent: int = 0
    stale: int = 0
    lease_contention: int = 0
    kills: int = 0
    primary_removed: str = "no"
    wall_time: float = 0.0
    rate: float = 0.0
    lost_examples: list[str] = field(default_factory=list)

    @property
    def counted_by_kills(self) -> bool:
        """Short of the commits by no more than the SIGKILLs: a worker killed between a
        commit and its count takes that count with it (no fault, no protocol can help)."""
        return 0 < self.committed - self.transitions_metric <= self.kills

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.committed_twice == 0 and self.wrong_step_sets == 0 and \
            (self.counters_exact or self.counted_by_kills)

    def counters(self) -> str:
        if self.counters_exact:
            return "exact"
        short = self.committed - self.transitions_metric
        if self.counted_by_kills:
            return (f"short by {short}, within the {self.kills} SIGKILLs (a worker killed between a commit "
                    "and its count takes that count with it)")
        return f"NOT EXACT ({'short' if short > 0 else 'over'} by {abs(short)})"

    def lines(self) -> list[str]:
        f = self.faults
        return [
            f"instances lost (not finished):   {self.lost} of {self.instances} ({self.finished} finished)",
            f"steps committed twice:           {self.committed_twice} ({self.committed:,} transitions committed)",
            (f"actions run twice:               {self.actions_run_twice} ({self.action_runs:,} raw runs, "
             f"{self.distinct_steps_run:,} distinct (instance, step); {self.wrong_step_sets} instances "
             "missing a step)"),
            (f"counters:                        Transitions metric {self.transitions_metric:,} vs committed "
             f"{self.committed:,}: {self.counters()}"),
            (f"faults injected:                 {sum(f.values()):,} (before {f.get('before', 0):,}, "
             f"after {f.get('after', 0):,})"),
            (f"duplicate deliveries:            {self.duplicates_injected:,} injected, "
             f"{self.duplicates_detected:,} messages found their step done (Duplicates)"),
            f"retries / failovers / re-sent:   {self.retries:,} / {self.failovers:,} / {self.resent:,}",
            f"stale copies / lease contention: {self.stale:,} / {self.lease_contention:,}",
            f"workers killed (SIGKILL):        {self.kills}",
            f"primary stream removed:          {self.primary_removed}",
            f"wall time:                       {self.wall_time:.1f} s ({self.rate:.1f} transitions/s)",
            f"verdict:                         {'OK' if self.ok else 'FAILED'}",
        ] + [f"  lost: {example}" for example in self.lost_examples]


# -- what every process shares ------------------------------------------------------------


class Counters:
    """The metrics sink of the soak: counts in one redis hash, written at once (no
    buffer), so that every process's counts add up, a killed worker's included."""

    def __init__(self, client: Any, key: str):
        self.client, self.key = client, key

    def incr(self, name: str, value: float = 1.0, unit: str = "Count",
             dims: Mapping[str, str] | None = None) -> None:
        if name not in COUNTED:
            return
        if name == "FaultsInjected":
            name = f"{name}:{(dims or {}).get('Kind', '')}"
        self.client.hincrbyfloat(self.key, name, value)

    def flush(self) -> None:
        pass

    def read(self) -> dict[str, float]:
        raw = self.client.hgetall(self.key)
        return {k.decode(): float(v) for k, v in raw.items()}


class Duplicating:
    """A bus that delivers a fraction of its messages twice (SQS standard queues do)."""

    def __init__(self, bus: Any, probability: float, metrics: Any, rng: random.Random | None = None):
        self.bus, self.probability, self.metrics = bus, probability, metrics
        self.rng = rng or random.Random()
        self.url, self.max_delay = bus.url, bus.max_delay

    def send(self, envelope: Any) -> None:
        self.bus.send(envelope)
        if self.rng.random() < self.probability:
            self._again([envelope])

    def send_batch(self, envelopes: Sequence[Any]) -> None:
        self.bus.send_batch(envelopes)
        again = [e for e in envelopes if self.rng.random() < self.probability]
        if again:
            self._again(again)

    def _again(self, envelopes: list[Any]) -> None:
        from fsm.errors import BackendError

        try:
            self.bus.send_batch(envelopes)
        except BackendError:
            return          # the copy failed: the original is on its way, nothing is lost
        self.metrics.incr("DuplicatesInjected", len(envelopes))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)


def plan_for(opts: Options, moto_url: str | None, redis_url: str) -> dict[str, Any]:
    """Names and settings of one run: what the worker processes are given."""
    run = f"soak-{uuid.uuid4().hex[:8]}"
    if opts.store == "dynamodb":
        store = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{run}"
    elif opts.store == "redis":
        store = redis_url
    else:
        raise ValueError(f"--store is redis or dynamodb, not {opts.store!r}")
    if opts.bus == "sqs":
        streams = [f"arn:aws:sqs:us-east-1:{ACCOUNT}:{run}-{x}" for x in "ab"]
    elif opts.bus == "redis":
        server = redis_url.split("://", 1)[1].split("/", 1)[0]
        streams = [f"redisq://{server}/0/{run}-{x}" for x in "ab"]
    else:
        raise ValueError(f"--bus is sqs or redis, not {opts.bus!r}")
    if (opts.store == "dynamodb" or opts.bus == "sqs") and not moto_url:
        raise ValueError("DynamoDB and SQS need moto_server")
    settings: dict[str, Any] = {"store": [store], "stream": streams, "lease_timeout": opts.lease_timeout,
                                "resend_after": opts.resend_after, "concurrency": opts.concurrency,
                                "aws": {"connect_timeout": 1, "read_timeout": 5, "max_attempts": 1}}
    if opts.sqs_moto and opts.bus == "sqs":
        # One moto_server per service, each ARN sent to its own by the settings' per-ARN
        # `endpoints` (AWS_ENDPOINT_URL, the DynamoDB one, answers anything unnamed).
        settings["endpoints"] = {name: opts.sqs_moto if name.startswith("arn:aws:sqs:") else moto_url
                                 for name in [store, *streams] if name.startswith("arn:")}
    chaos = {name: opts.chaos for name in [store, *streams]} if opts.chaos else {}
    return {"run": run, "redis": redis_url, "moto": moto_url, "settings": settings, "chaos": chaos,
            "steps": opts.steps, "duplicates": opts.duplicates, "visibility": opts.visibility,
            "retry_cap": opts.retry_cap}


def _environment(plan: Mapping[str, Any]) -> None:
    import soak_queue

    soak_queue.register()
    soak_queue.VISIBILITY = float(plan["visibility"])
    soak_queue.RETRY_CAP = float(plan["retry_cap"])
    os.environ.update(FSM_SOAK_REDIS=plan["redis"], FSM_SOAK_RUN=plan["run"])
    if plan["moto"]:
        # moto_server takes any credentials, but boto3 wants some and a region.
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", "us-east-1")):
            os.environ.setdefault(name, value)
        os.environ["AWS_ENDPOINT_URL"] = plan["moto"]


def open_app(plan: Mapping[str, Any], *, chaos: bool = True) -> tuple[Any, Counters]:
    """The app a worker (or the starter) runs: chaos on every backend, the duplicating
    bus, the shared counters."""
    import redis

    from config.loader import load_text
    from config.settings import Settings
    from fsm.app import App
    from fsm.app.wiring import build

    _environment(plan)
    metrics = Counters(redis.Redis.from_url(plan["redis"]), f"{plan['run']}:metrics")
    settings = Settings(**plan["settings"], chaos=plan["chaos"] if chaos else {})
    definitions = load_text(machine_yaml(plan["steps"]))
    wiring = build(definitions.machines, settings, metrics=metrics)
    if plan["duplicates"]:
        wiring.routes.bus = Duplicating(wiring.routes.bus, plan["duplicates"], metrics)
    return App(definitions, settings, wiring), metrics


def worker_main(plan: Mapping[str, Any]) -> int:
    """One worker process: ``fsm worker``'s loop over both streams until told to stop."""
    from fsm.app.worker import run_worker

    logging.getLogger("fsm").setLevel(logging.ERROR)
    app, metrics = open_app(plan)
    stop_key, checked = f"{plan['run']}:stop", [0.0, False]
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    def should_stop() -> bool:
        if time.monotonic() - checked[0] > 0.5:
            checked[0], checked[1] = time.monotonic(), bool(metrics.client.exists(stop_key))
        return checked[1] or bool(stopping)

    run_worker(app, list(plan["settings"]["stream"]), should_stop=should_stop)
    return 0


class Fleet:
    """The worker processes; a killed one is replaced at once."""

    def __init__(self, plan: Mapping[str, Any], size: int, logs: Path):
        self.plan, self.logs = plan, logs
        self.env = {**os.environ, "FSM_SOAK_PLAN": json.dumps(plan), "PYTHONDONTWRITEBYTECODE": "1"}
        self.started = 0
        self.processes = [self._start() for _ in range(size)]
        self.kills = 0

    def _start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = (self.logs / f"worker-{self.started}.log").open("wb")
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(ROOT))

    def kill_one(self, rng: random.Random) -> int:
        index = rng.randrange(len(self.processes))
        victim = self.processes[index]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        self.kills += 1
        self.processes[index] = self._start()
        return victim.pid

    def alive(self) -> int:
        return sum(p.poll() is None for p in self.processes)

    def restart_dead(self) -> int:
        """A worker that died by itself is replaced too (and reported)."""
        died = 0
        for index, process in enumerate(self.processes):
            if process.poll() is not None:
                died += 1
                self.processes[index] = self._start()
        return died

    def stop(self, client: Any) -> None:
        client.set(f"{self.plan['run']}:stop", "1")
        deadline = time.monotonic() + 20
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


class Monitor:
    """Called every few hundred milliseconds: progress lines, the primary stream removed
    half way, kills spread over the run, and which instances have finished."""

    def __init__(self, opts: Options, plan: Mapping[str, Any], store: Any, metrics: Counters, ids: list[str],
                 remove_primary: Callable[[], str], fleet: Fleet | None, out: Callable[[str], None]):
        self.opts, self.plan, self.store, self.metrics = opts, plan, store, metrics
        self.ids, self.unfinished, self.not_started = ids, list(ids), list(ids)
        self.total = len(ids) * (opts.steps + 1)
        self.remove_primary, self.fleet, self.out = remove_primary, fleet, out
        self.removed = "no" if opts.remove_primary else "not asked"
        self.began = self.last_print = time.monotonic()
        self.last_transitions, self.last_check = 0.0, 0.0
        self.rng = random.Random()
        self.chunk = 500

    def tick(self) -> bool:
        """Whether every instance has finished (or the time is up)."""
        now = time.monotonic()
        counts = self.metrics.read()
        transitions = counts.get("Transitions", 0.0)
        if self.removed == "no" and transitions >= self.total / 2 and self._all_started():
            self.removed = self.remove_primary()
            self.out(f"[{now - self.began:6.1f}s] primary stream removed: {self.removed}")
        if self.fleet is not None:
            while self.fleet.kills < self.opts.kill and \
                    transitions >= self.total * (self.fleet.kills + 1) / (self.opts.kill + 1):
                pid = self.fleet.kill_one(self.rng)
                self.out(f"[{now - self.began:6.1f}s] SIGKILL worker pid {pid} "
                         f"({self.fleet.kills}/{self.opts.kill}); restarted")
            died = self.fleet.restart_dead()
            if died:
                self.out(f"[{now - self.began:6.1f}s] {died} worker(s) exited by themselves: restarted "
                         "(see the worker logs)")
        if now - self.last_check >= (0.5 if self.opts.workers else 2.0):
            self.last_check = now
            self._check(self.unfinished[:self.chunk])
        if self.opts.every and now - self.last_print >= self.opts.every:
            self._progress(now, counts)
        return not self.unfinished or now - self.began > self.opts.timeout

    def _all_started(self) -> bool:
        """Every instance has committed its first step. Until then its record owes no
        message (it has no ``pending``): a start message lost with the queue could not be
        healed by the sweep, which re-sends what records owe (see the README's Failover)."""
        while self.not_started:
            try:
                record = self.store.get(self.not_started[-1])
            except Exception:  # noqa: BLE001 - read again on the next tick
                return False
            if record is None or not record.get("step"):
                return False
            self.not_started.pop()
        return True

    def _check(self, ids: list[str]) -> None:
        """Read the records of the instances whose last action has run (redis says so,
        at no cost to the store under test), and keep those not yet done for later."""
        client, run, last = self.metrics.client, self.plan["run"], self.opts.steps - 1
        pipe = client.pipeline(transaction=False)
        for cid in ids:
            pipe.sismember(f"{run}:steps:{cid}", last)
        candidates = [cid for cid, ran in zip(ids, pipe.execute()) if ran]
        done = set()
        for cid in candidates:
            try:
                record = self.store.get(cid)
            except Exception:  # noqa: BLE001 - a progress read; the next tick reads again
                break
            if record is not None and record.get("status") == "done":
                done.add(cid)
        # The ones read and still running go to the back: the next check reads others.
        behind = [cid for cid in ids if cid not in done]
        checked = set(ids)
        self.unfinished = [cid for cid in self.unfinished if cid not in checked] + behind

    def _progress(self, now: float, counts: Mapping[str, float]) -> None:
        transitions = counts.get("Transitions", 0.0)
        rate = (transitions - self.last_transitions) / max(1e-9, now - self.last_print)
        self.last_print, self.last_transitions = now, transitions
        faults = counts.get("FaultsInjected:before", 0) + counts.get("FaultsInjected:after", 0)
        workers = f"  workers {self.fleet.alive()}/{len(self.fleet.processes)} kills {self.fleet.kills}" \
            if self.fleet is not None else ""
        self.out(f"[{now - self.began:6.1f}s] committed {int(transitions):,}/{self.total:,}  finished "
                 f"{len(self.ids) - len(self.unfinished):,}/{len(self.ids):,} instances  {rate:,.0f} transitions/s  "
                 f"faults {int(faults):,}  duplicates {int(counts.get('DuplicatesInjected', 0)):,}  "
                 f"failovers {int(counts.get('Failovers', 0)):,}{workers}")


def _start_all(app: Any, ids: list[str]) -> None:
    from fsm.client import Client
    from fsm.errors import RecoverableError

    client = Client(wiring=app.wiring)
    for cid in ids:
        for attempt in range(50):  # the start may hit a fault: starting again is idempotent
            try:
                client.start("soak", {}, cid)
                break
            except RecoverableError:
                if attempt == 49:
                    raise


def _remover(plan: Mapping[str, Any]) -> Callable[[], str]:
    primary = plan["settings"]["stream"][0]

    def remove() -> str:
        if primary.startswith("arn:aws:sqs:"):
            from sources.aws import make_client

            sqs = make_client("sqs", "us-east-1", endpoint_url=plan["settings"].get("endpoints", {}).get(primary))
            name = primary.rsplit(":", 1)[1]
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            depth = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            sqs.delete_queue(QueueUrl=url)
            return f"{name} deleted with ~{depth['Attributes']['ApproximateNumberOfMessages']} messages in it"
        import soak_queue

        lost = soak_queue.Queue(primary).delete_queue()
        return f"{primary} deleted with {lost} messages in it"
    return remove


def run_soak(moto_url: str | None, redis_url: str, instances: int = 50, steps: int = 20, chaos: float = 0.2,
             lease_timeout: float = 3.0, timeout: float = 900.0, *, out: Callable[[str], None] | None = None,
             log_dir: str | Path | None = None, **options: Any) -> Report:
    """One soak run (see the module docstring); ``options`` are :class:`Options` fields."""
    opts = Options(instances=instances, steps=steps, chaos=chaos, lease_timeout=lease_timeout, timeout=timeout,
                   **options)
    if opts.kill and not opts.workers:
        raise ValueError("--kill needs worker processes (--workers N)")
    out = out or (lambda line: print(line, flush=True))
    fsm_logger = logging.getLogger("fsm")
    level = fsm_logger.level
    fsm_logger.setLevel(logging.CRITICAL)      # faults are expected: the report counts them
    try:
        return _soak(opts, moto_url, redis_url, out, log_dir)
    finally:
        fsm_logger.setLevel(level)


def _soak(opts: Options, moto_url: str | None, redis_url: str, out: Callable[[str], None],
          log_dir: str | Path | None) -> Report:
    from config.settings import Settings
    from fsm.app.resources import create_resources
    from fsm.app.worker import run_worker

    instances, steps, chaos = opts.instances, opts.steps, opts.chaos
    plan = plan_for(opts, moto_url, redis_url)
    _environment(plan)
    logs = Path(log_dir or tempfile.mkdtemp(prefix="fsm-soak-"))
    logs.mkdir(parents=True, exist_ok=True)
    list(create_resources(Settings(**plan["settings"])))
    import soak_queue

    for name in plan["settings"]["stream"]:
        if name.startswith("redisq://"):
            soak_queue.Queue(name).create()
    app, metrics = open_app(plan)
    clean, _ = open_app(plan, chaos=False)     # the checks read without injected faults
    store = clean.wiring.stores[0]
    ids = [f"{plan['run']}-{n}" for n in range(instances)]
    servers = ""
    if plan["moto"]:
        sqs_moto = plan["settings"].get("endpoints", {}).get(plan["settings"]["stream"][0])
        servers = (f", moto_server {plan['moto']} (DynamoDB) and {sqs_moto} (SQS)" if sqs_moto
                   else f", moto_server {plan['moto']}")
    out(f"soak {plan['run']}: {instances:,} instances x {steps} steps, store {opts.store}, bus {opts.bus}, "
        f"chaos {chaos:g}, duplicates {opts.duplicates:g}, "
        f"{opts.workers or 'no'} worker processes, {opts.kill} kills{servers}; logs in {logs}")
    began = time.monotonic()
    _start_all(app, ids)
    out(f"[{time.monotonic() - began:6.1f}s] {instances:,} instances started")
    fleet = Fleet(plan, opts.workers, logs) if opts.workers else None
    monitor = Monitor(opts, plan, store, metrics, ids, _remover(plan), fleet, out)
    try:
        if fleet is None:
            run_worker(app, list(plan["settings"]["stream"]), should_stop=monitor.tick)
        else:
            while not monitor.tick():
                time.sleep(0.25)
    finally:
        if fleet is not None:
            fleet.stop(metrics.client)
    wall = time.monotonic() - began
    report = _report(opts, plan, store, metrics, ids, fleet, monitor.removed, wall)
    return report


def _report(opts: Options, plan: Mapping[str, Any], store: Any, metrics: Counters, ids: list[str],
            fleet: Fleet | None, removed: str, wall: float) -> Report:
    report = Report(opts.instances, opts.steps, primary_removed=removed, wall_time=round(wall, 1))
    client, run = metrics.client, plan["run"]
    for cid in ids:
        record = store.get(cid)
        finished = record is not None and record.get("status") == "done"
        report.finished += finished
        report.lost += not finished
        members = {int(m) for m in client.smembers(f"{run}:steps:{cid}")}
        report.distinct_steps_run += len(members)
        report.wrong_step_sets += members != set(range(opts.steps))
        steps = [h["step"] for h in store.history(cid)
                 if not h.get("error") and not h.get("rejected") and not h.get("cancelled")]
        report.committed += len(steps)
        report.committed_twice += len(steps) - len(set(steps))
        if not finished and len(report.lost_examples) < 5:
            report.lost_examples.append(_describe(cid, record))
    counts = metrics.read()
    report.action_runs = int(client.get(f"{run}:raw") or 0)
    report.actions_run_twice = report.action_runs - report.distinct_steps_run
    report.transitions_metric = int(counts.get("Transitions", 0))
    report.counters_exact = report.transitions_metric == report.committed
    report.faults = {kind: int(counts.get(f"FaultsInjected:{kind}", 0)) for kind in ("before", "after")}
    report.duplicates_injected = int(counts.get("DuplicatesInjected", 0))
    report.duplicates_detected = int(counts.get("Duplicates", 0))
    report.retries = int(counts.get("Retries", 0))
    report.failovers = int(counts.get("Failovers", 0))
    report.resent = int(counts.get("Resent", 0))
    report.stale = int(counts.get("StaleMessages", 0))
    report.lease_contention = int(counts.get("LeaseContention", 0))
    report.kills = fleet.kills if fleet is not None else 0
    report.rate = report.committed / wall if wall else 0.0
    return report


def _describe(cid: str, record: Mapping[str, Any] | None) -> str:
    if record is None:
        return f"{cid}: no record"
    error = (record.get("last_error") or {}).get("message")
    return (f"{cid}: {record.get('status')} at step {record.get('step')} (state {record.get('state')}, fence "
            f"{record.get('fence')}, lease {record.get('lease_owner') or 'free'}, pending {record.get('pending')}, "
            f"outbox {len(record.get('outbox') or [])} message(s)){f', last error: {error}' if error else ''}")


def private_servers(kinds: Sequence[str], log_dir: Path, stock_moto: bool = False) -> tuple[dict[str, str], list[Any]]:
    """redis-server / moto_server of this run's own, on free ports; ``moto-sqs`` (any
    ``KIND-SUFFIX``) is a second server of that kind, under its own name. moto_server is
    ``bench/soak_moto.py`` (moto's SQS without its per-message walks over the whole queue)
    unless ``stock_moto``."""
    import soak_moto
    from servers import STARTERS, free_port  # bench/servers.py

    starters = dict(STARTERS) if stock_moto else {**STARTERS, "moto": soak_moto.start}
    urls, started = {}, []
    for name in kinds:
        kind, error = name.split("-", 1)[0], ""
        for _ in range(3):
            try:
                url, process = starters[kind](free_port(), log_dir)
            except RuntimeError as exc:
                error = str(exc)
                continue
            urls[name] = url
            started.append(process)
            break
        else:
            for process in started:
                process.stop()
            raise RuntimeError(f"{name} could not be started: {error}")
    return urls, started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--store", choices=("redis", "dynamodb"), default="dynamodb")
    parser.add_argument("--bus", choices=("sqs", "redis"), default="sqs",
                        help="sqs: queues on moto_server; redis: an SQS-shaped queue in redis (no moto)")
    parser.add_argument("--chaos", type=float, default=0.2, help="fault probability on every backend")
    parser.add_argument("--duplicates", type=float, default=0.0, help="fraction of messages delivered twice")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: in this process)")
    parser.add_argument("--kill", type=int, default=0, help="SIGKILLs of worker processes, spread over the run")
    parser.add_argument("--keep-primary", action="store_true", help="do not delete the primary stream half way")
    parser.add_argument("--concurrency", choices=("locked", "optimistic"), default="locked")
    parser.add_argument("--lease-timeout", type=float, default=3.0)
    parser.add_argument("--resend-after", type=float, default=20.0)
    parser.add_argument("--visibility", type=float, default=30.0, help="the redis queue's visibility timeout")
    parser.add_argument("--retry-cap", type=float, default=5.0,
                        help="the redis queue's longest backoff of a failed record (seconds)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between progress lines")
    parser.add_argument("--shared-servers", action="store_true",
                        help="use FSM_TEST_REDIS_URL / FSM_TEST_MOTO_URL instead of servers of its own")
    parser.add_argument("--moto-per-service", action=argparse.BooleanOptionalAction, default=None,
                        help="one moto_server for SQS and another for DynamoDB, each ARN routed to its own "
                             "by the settings' endpoints (default: on for --store dynamodb --bus sqs, "
                             "off with --shared-servers)")
    parser.add_argument("--stock-moto", action="store_true",
                        help="moto_server as installed, not bench/soak_moto.py (whose SQS does not walk the "
                             "whole queue for every message: at 300 messages a ReceiveMessage took 0.6 s)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(json.loads(os.environ["FSM_SOAK_PLAN"]))
    for name in ("chaos", "duplicates"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name} is a probability between 0 and 1")
    if args.kill and not args.workers:
        parser.error("--kill needs worker processes: give --workers N")
    if min(args.instances, args.steps) < 1 or min(args.workers, args.kill) < 0:
        parser.error("--instances and --steps must be at least 1, --workers and --kill not negative")
    kinds = ["redis"] + (["moto"] if "dynamodb" in (args.store,) or args.bus == "sqs" else [])
    per_service = args.moto_per_service
    if per_service is None:
        per_service = args.store == "dynamodb" and args.bus == "sqs" and not args.shared_servers
    if per_service:
        if args.store != "dynamodb" or args.bus != "sqs":
            parser.error("--moto-per-service splits DynamoDB and SQS: it needs --store dynamodb --bus sqs")
        kinds.append("moto-sqs")    # started here even with --shared-servers (moto's is then DynamoDB's)
    log_dir = Path(tempfile.mkdtemp(prefix="fsm-soak-"))
    if args.shared_servers:
        from servers import running_servers

        shared = [kind for kind in kinds if "-" not in kind]
        urls, started = private_servers([kind for kind in kinds if "-" in kind], log_dir, args.stock_moto)
        try:
            with running_servers(*shared) as found:
                report = _run(args, {**found, **urls}, log_dir)
        finally:
            for process in started:
                process.stop()
    else:
        urls, started = private_servers(kinds, log_dir, args.stock_moto)
        try:
            report = _run(args, urls, log_dir)
        finally:
            for process in started:
                process.stop()
    print("\n".join(report.lines()), flush=True)
    return 0 if report.ok else 1


def _run(args: argparse.Namespace, urls: Mapping[str, str], log_dir: Path) -> Report:
    return run_soak(urls.get("moto"), urls["redis"], args.instances, args.steps, args.chaos, args.lease_timeout,
                    args.timeout, log_dir=log_dir, store=args.store, bus=args.bus, duplicates=args.duplicates,
                    workers=args.workers, kill=args.kill, remove_primary=not args.keep_primary,
                    concurrency=args.concurrency, resend_after=args.resend_after, visibility=args.visibility,
                    retry_cap=args.retry_cap, every=args.every, sqs_moto=urls.get("moto-sqs"))


if __name__ == "__main__":
    sys.exit(main())
