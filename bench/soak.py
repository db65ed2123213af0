"""The soak run: many instances through SQS + DynamoDB under injected faults, with the
primary queue deleted half way. Every instance must finish, each step exactly once.

    python bench/soak.py [--instances 1000] [--steps 20] [--chaos 0.2]

needs moto_server and redis-server: it starts them on free loopback ports, or uses
FSM_TEST_MOTO_URL / FSM_TEST_REDIS_URL. ``tests/soak`` runs ``run_soak`` at 50 x 20.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from fsm import Action

if __name__ == "__main__":
    # The machine names its action `soak.SoakStep`: run as a script, this module must be
    # that `soak`, or the action would be a second copy without the redis connection.
    sys.modules.setdefault("soak", sys.modules[__name__])

REDIS: dict[str, Any] = {}


class SoakStep(Action):
    """Records (instance, step) in an idempotent redis set, and counts raw runs apart."""

    def execute(self, context: Any, obj: dict[str, Any]) -> str:
        client, run = REDIS["client"], REDIS["run"]
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
class Report:
    instances: int
    steps: int
    completed: int = 0
    lost: int = 0
    duplicates: int = 0
    raw_executions: int = 0
    re_executions: int = 0
    steps_committed_twice: int = 0
    wrong_step_sets: int = 0
    retries: int = 0
    failovers: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    faults_in_metrics: int = 0
    wall_time: float = 0.0

    def lines(self) -> list[str]:
        return [f"{k:>22}: {v}" for k, v in self.__dict__.items()]


def run_soak(moto_url: str, redis_url: str, instances: int = 50, steps: int = 20, chaos: float = 0.2,
             lease_timeout: float = 3.0, timeout: float = 900.0) -> Report:
    import redis

    from config.loader import load_text
    from config.settings import Settings
    from fsm.app import App
    from fsm.app.resources import create_resources
    from fsm.app.wiring import build
    from fsm.app.worker import run_worker
    from fsm.client import Client
    from fsm.errors import RecoverableError
    from fsm.ports import NullMetrics

    # moto_server takes any credentials, but boto3 wants some and a region.
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
    os.environ["AWS_ENDPOINT_URL"] = moto_url
    from sources.aws import make_client

    os.environ["AWS_ENDPOINT_URL"] = moto_url
    run = f"soak-{uuid.uuid4().hex[:8]}"
    REDIS.update(client=redis.Redis.from_url(redis_url), run=run)
    arn = "arn:aws:{}:us-east-1:123456789012:{}"
    table = arn.format("dynamodb", f"table/{run}")
    primary, secondary = arn.format("sqs", f"{run}-a"), arn.format("sqs", f"{run}-b")
    base: dict[str, Any] = {"store": [table], "stream": [primary, secondary], "lease_timeout": lease_timeout,
                            "resend_after": 20.0,
                            "aws": {"connect_timeout": 1, "read_timeout": 5, "max_attempts": 1}}
    list(create_resources(Settings(**base)))
    settings = Settings(**base, chaos={table: chaos, primary: chaos, secondary: chaos})
    definitions = load_text(machine_yaml(steps))
    metrics = NullMetrics()
    wiring = build(definitions.machines, settings, metrics=metrics)
    app = App(definitions, settings, wiring)
    client = Client(wiring=wiring)
    began = time.monotonic()
    ids = [f"{run}-{n}" for n in range(instances)]
    for cid in ids:
        for _ in range(20):  # the start itself may hit a fault: starting again is idempotent
            try:
                client.start("soak", {}, cid)
                break
            except RecoverableError:
                continue
    sqs = make_client("sqs", "us-east-1")
    state = {"deleted": False, "checked": 0.0, "done": 0}
    total = instances * steps

    def should_stop() -> bool:
        if not state["deleted"] and metrics.counts.get("Transitions", 0) >= total / 2:
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=f"{run}-a")["QueueUrl"])
            state["deleted"] = True
        # Transitions undercounts (a commit whose reply was lost is not counted): look at
        # the instances themselves, every few seconds once the second half has started.
        if state["deleted"] and time.monotonic() - state["checked"] > 3:
            state["checked"] = time.monotonic()
            state["done"] = sum(1 for cid in ids if _status(wiring, cid) == "done")
        return state["done"] == instances or time.monotonic() - began > timeout

    run_worker(app, [primary, secondary], should_stop=should_stop)
    report = Report(instances, steps, wall_time=round(time.monotonic() - began, 1))
    r = REDIS["client"]
    for cid in ids:
        status = _status(wiring, cid)
        report.completed += status == "done"
        report.lost += status != "done"
        members = r.smembers(f"{run}:steps:{cid}")
        report.wrong_step_sets += {int(m) for m in members} != set(range(steps))
        committed = [h["step"] for h in _history(wiring, cid) if not h.get("error") and not h.get("rejected")]
        report.steps_committed_twice += len(committed) - len(set(committed))
    report.raw_executions = int(r.get(f"{run}:raw") or 0)
    report.re_executions = report.raw_executions - total
    report.duplicates = int(metrics.counts.get("Duplicates", 0))
    report.retries = int(metrics.counts.get("Retries", 0))
    report.failovers = int(metrics.counts.get("Failovers", 0))
    for wrapper in wiring.chaos:
        for kind, n in wrapper.injected.items():
            report.faults[kind] = report.faults.get(kind, 0) + n
    report.faults_in_metrics = int(metrics.counts.get("FaultsInjected", 0))
    return report


def _status(wiring: Any, cid: str) -> str | None:
    record = _unwrapped(wiring).get(cid)
    return record["status"] if record else None


def _unwrapped(wiring: Any) -> Any:
    """The store behind the chaos wrapper: the checks read it without injected faults."""
    return getattr(wiring.stores[0], "target", wiring.stores[0])


def _history(wiring: Any, cid: str) -> list[dict[str, Any]]:
    return _unwrapped(wiring).history(cid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--chaos", type=float, default=0.2)
    args = parser.parse_args()
    from servers import running_servers  # bench/servers.py

    with running_servers("moto", "redis") as urls:
        report = run_soak(urls["moto"], urls["redis"], args.instances, args.steps, args.chaos,
                          timeout=3600)
    print("\n".join(report.lines()))
    ok = report.completed == args.instances and not report.steps_committed_twice and not report.wrong_step_sets
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
