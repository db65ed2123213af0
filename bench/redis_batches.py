#!/usr/bin/env python
"""Redis round trips per transition when Lambda hands over batches (not a timed test: it
prints figures).

    python bench/redis_batches.py [--quick] [--instances N] [--batch-size N] [--states N]

N instances of a linear machine run to their end through ``fsm.handler``'s own code
(``fsm.app.intake.handle_event``) in SQS batches of ``--batch-size`` records (Lambda's
default is 10), the messages each batch sends making the next batches, on a real
redis-server (``FSM_TEST_REDIS_URL``, else one started here). Every command the store sends
alone and every pipeline it executes is one round trip. Printed per concurrency mode:
round trips per transition, and transitions per second of the whole run.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lambda_records import sqs_record  # noqa: E402
from servers import Servers  # noqa: E402

from config.loader import load_text  # noqa: E402
from config.settings import Settings  # noqa: E402
from fsm.app import App  # noqa: E402
from fsm.app.cost import linear_machine_yaml  # noqa: E402
from fsm.app.intake import handle_event  # noqa: E402
from fsm.app.wiring import build  # noqa: E402
from fsm.message import Message  # noqa: E402
from sources.redis import RedisStore  # noqa: E402

QUEUE = "arn:aws:sqs:us-east-1:123456789012:fsm-bench"


class Collect:
    """The stream: keeps what a batch sends, for the next batches."""

    url, max_delay = "collect://", 900.0

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send(self, envelope: Any) -> None:
        self.bodies.append(envelope.body)

    def send_batch(self, envelopes: Any) -> None:
        self.bodies.extend(e.body for e in envelopes)


class Counting:
    """A redis client counting round trips: commands sent alone, and pipelines (the
    tests count with it too: tests/integration/test_redis_batches.py)."""

    def __init__(self, inner: Any):
        self.inner, self.trips = inner, 0

    def execute_command(self, *args: Any, **kw: Any) -> Any:
        self.trips += 1
        return self.inner.execute_command(*args, **kw)

    def evalsha(self, *args: Any) -> Any:
        return self.execute_command("EVALSHA", *args)

    def register_script(self, script: str) -> Any:
        from redis.commands.core import Script
        return Script(self, script)     # its calls come through evalsha above

    def pipeline(self, *args: Any, **kw: Any) -> Any:
        pipe = self.inner.pipeline(*args, **kw)
        execute = pipe.execute

        def counted(*a: Any, **k: Any) -> Any:
            self.trips += 1
            return execute(*a, **k)

        pipe.execute = counted
        return pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def run(url: str, mode: str, instances: int, batch: int, states: int) -> tuple[float, float]:
    import redis

    definitions = load_text(linear_machine_yaml(states), "bench/redis_batches.py")
    settings = Settings(store=["memory://"], concurrency=mode)
    bus = Collect()
    wiring = build(definitions.machines, settings, bus=bus)
    client = Counting(redis.Redis.from_url(url))
    store = RedisStore(url, client=client, prefix=f"bench-{uuid.uuid4().hex[:8]}:")
    wiring.stores[0] = wiring.dispatcher.stores[0] = store
    app = App(definitions, settings, wiring)
    cids = [f"rb-{uuid.uuid4().hex[:12]}" for _ in range(instances)]
    bus.bodies = [Message(machine="linear", correlation_id=cid, context={"n": 0}).encode() for cid in cids]
    client.trips, transitions = 0, 0
    began = time.perf_counter()
    while bus.bodies:
        taken, bus.bodies = bus.bodies[:batch], bus.bodies[batch:]
        event = {"Records": [copy.deepcopy(sqs_record(body, QUEUE)) for body in taken]}
        for n, record in enumerate(event["Records"]):
            record["messageId"] = f"{n}-{uuid.uuid4().hex[:8]}"
        if handle_event(app, event)["batchItemFailures"]:
            raise RuntimeError("a record failed")
        transitions += len(taken)
    seconds = time.perf_counter() - began
    for cid in cids:
        if store.get(cid)["status"] != "done":
            raise RuntimeError(f"{cid} did not finish")
    return client.trips / transitions, transitions / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 instances: proves the script works")
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--states", type=int, default=10)
    args = parser.parse_args(argv)
    if args.quick:
        args.instances = 20
    with Servers() as servers:
        url = servers.redis()
        if url is None:
            print(f"redis: skipped ({servers.missing.get('redis')})")
            return 0
        print(f"{args.instances} instances x {args.states} states, SQS batches of {args.batch_size}, "
              f"redis-server at {url.split('@')[-1]}, python {sys.version.split()[0]}, pid {os.getpid()}")
        print(f"{'concurrency':<14}{'round trips per transition':>28}{'transitions/s':>16}")
        for mode in ("optimistic", "locked"):
            trips, rate = run(url, mode, args.instances, args.batch_size, args.states)
            print(f"{mode:<14}{trips:>28.3f}{rate:>16,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
