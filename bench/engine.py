#!/usr/bin/env python
"""Throughput and memory of the embedded local runtime (not a timed test: it prints figures).

    python bench/engine.py [--quick] [--profile] [--instances N] [--waiting N]

1. Transitions per second of a 10-state linear machine (no-op do actions that return the
   next event), many instances at once, through ``fsm.app.wiring.build`` and
   ``fsm.app.local.LocalRuntime``: every instance's start message is put on the embedded
   bus, then ``drain()`` runs them all, interleaved (``drain`` rows); and one instance at
   a time through ``fsm.client.Client.start`` (``client`` rows: each start also drives
   the instance to its end and reads its record back). On ``memory://`` and
   ``sqlite:///FILE``, and on a real redis-server and memcached when they can be had
   (see bench/servers.py).
2. Memory with 10,000 instances waiting in a settled state on ``memory://``: the peak
   and retained Python heap (tracemalloc) and the growth of the process's peak RSS
   (``resource.getrusage(...).ru_maxrss``).
3. With ``--profile`` (or when ``memory://`` misses the target), the top cProfile costs
   of the ``memory://`` drain run.

Target: at least 20,000 transitions/s on ``memory://`` (drain).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if __name__ == "__main__":
    # The YAML names actions as ``engine.Next``: let that resolve to this very module
    # rather than importing the file a second time.
    sys.modules.setdefault("engine", sys.modules[__name__])

from servers import Servers

from config.loader import load_text
from config.settings import Settings
from fsm import Action
from fsm.app.local import LocalRuntime
from fsm.app.wiring import Wiring, build
from fsm.client import Client
from fsm.dispatcher import Outcome
from fsm.message import Message
from fsm.model import Context, Machine
from fsm.ports import Envelope

TARGET = 20_000.0
RUN = uuid.uuid4().hex[:8]   # every correlation id of this process starts with bench-RUN-
STATES = 10


class Next(Action):
    """A no-op do action: returns the event in its params (default ``next``)."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        return self.params.get("event", "next")


def linear_yaml(states: int = STATES, name: str = "linear") -> str:
    lines = [f"machines:\n  - name: {name}\n    states:\n"]
    for i in range(states):
        if i == states - 1:
            lines.append(f"      - {{name: s{i}, final: true}}\n")
        else:
            initial = ", initial: true" if i == 0 else ""
            lines.append(f"      - {{name: s{i}{initial}, do_action: engine.Next, "
                         f"transitions: [{{event: next, target: s{i + 1}}}]}}\n")
    return "".join(lines)


# s0 runs and moves on; s1 has no do action, so the instance settles there, waiting.
WAITING_YAML = """
machines:
  - name: waiter
    states:
      - {name: s0, initial: true, do_action: engine.Next, transitions: [{event: next, target: s1}]}
      - {name: s1, transitions: [{event: go, target: s2}]}
      - {name: s2, final: true}
"""


def machines() -> dict[str, Machine]:
    return {**load_text(linear_yaml(), "bench/engine.py:linear").machines,
            **load_text(WAITING_YAML, "bench/engine.py:waiter").machines}


@dataclass
class Row:
    store: str
    mode: str
    instances: int
    transitions: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.transitions / self.seconds if self.seconds > 0 else 0.0


def open_wiring(store_url: str, defs: dict[str, Machine]) -> Wiring:
    return build(defs, Settings(store=[store_url]))


def start_messages(machine: Machine, count: int, batch: str) -> list[Envelope]:
    envelopes = []
    for i in range(count):
        msg = Message(machine=machine.name, correlation_id=f"bench-{RUN}-{batch}-{i}", context={},
                      version=machine.version, sent_at=time.time())
        envelopes.append(Envelope(msg.encode(), msg.correlation_id, msg.dedup_id))
    return envelopes


def run_drain(store_url: str, label: str, defs: dict[str, Machine], count: int,
              profile: cProfile.Profile | None = None) -> Row:
    """Put ``count`` start messages on the embedded bus, then time ``drain()``."""
    wiring = open_wiring(store_url, defs)
    done = {"transitions": 0, "finished": 0}

    def seen(outcome: Outcome) -> None:
        done["transitions"] += len(outcome.hops)
        done["finished"] += outcome.status == "done"

    runtime = LocalRuntime(wiring, on_outcome=seen)
    for envelope in start_messages(defs["linear"], count, uuid.uuid4().hex[:6]):
        runtime.bus.send(envelope)
    gc.collect()
    began = time.perf_counter()
    if profile is not None:
        profile.enable()
    handled = runtime.drain()
    if profile is not None:
        profile.disable()
    seconds = time.perf_counter() - began
    wiring.close()
    if done["finished"] != count or handled != count * STATES:
        raise SystemExit(f"{label}: expected {count} finished instances and {count * STATES} messages, "
                         f"got {done['finished']} and {handled}")
    return Row(label, "drain", count, done["transitions"], seconds)


def run_client(store_url: str, label: str, defs: dict[str, Machine], count: int) -> Row:
    """``Client.start`` one instance after another (each runs to its end before returning)."""
    wiring = open_wiring(store_url, defs)
    counted = {"transitions": 0}
    client = Client(wiring=wiring, on_outcome=lambda o: counted.__setitem__(
        "transitions", counted["transitions"] + len(o.hops)))
    batch = uuid.uuid4().hex[:6]
    gc.collect()
    began = time.perf_counter()
    for i in range(count):
        client.start("linear", correlation_id=f"bench-{RUN}-{batch}-c{i}")
    seconds = time.perf_counter() - began
    last = client.status(f"bench-{RUN}-{batch}-c{count - 1}")
    wiring.close()
    if last["status"] != "done":
        raise SystemExit(f"{label}: the last instance is {last['status']}, not done")
    return Row(label, "client", count, counted["transitions"], seconds)


# ---- memory ------------------------------------------------------------------------------


def maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024   # Linux reports KiB


def settle_waiting(wiring: Wiring, count: int) -> LocalRuntime:
    runtime = LocalRuntime(wiring)
    machine = wiring.dispatcher.machines["waiter"]
    batch = uuid.uuid4().hex[:6]
    for start in range(0, count, 1000):   # in slices: the bus never holds them all at once
        for envelope in start_messages(machine, min(1000, count - start), f"{batch}-{start}"):
            runtime.bus.send(envelope)
        runtime.drain()
    return runtime


def measure_memory(defs: dict[str, Machine], count: int) -> list[tuple[str, str]]:
    """Two runs on fresh wirings: one for RSS (no tracing overhead), one under tracemalloc."""
    gc.collect()
    rss_before = maxrss_bytes()
    wiring = open_wiring("memory://", defs)
    settle_waiting(wiring, count)
    rss_after = maxrss_bytes()
    check_waiting(wiring, count)
    del wiring
    gc.collect()

    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    wiring = open_wiring("memory://", defs)
    settle_waiting(wiring, count)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    store = wiring.stores[0]
    records = getattr(store, "_records", {})
    history = getattr(store, "_history", {})
    record_bytes = sum(len(text) for text in records.values())
    history_bytes = sum(len(text) for texts in history.values() for text in texts)
    retained = current - base
    rows = [
        ("waiting instances", f"{count}"),
        ("traced heap retained", f"{_mib(retained)}  ({retained / count:,.0f} B per instance)"),
        ("traced heap peak", f"{_mib(peak - base)}"),
        ("record JSON held", f"{_mib(record_bytes)}  ({record_bytes / count:,.0f} B per instance)"),
        ("history JSON held", f"{_mib(history_bytes)}  ({history_bytes / count:,.0f} B per instance)"),
        ("peak RSS growth", (f"{_mib(max(0, rss_after - rss_before))}  (ru_maxrss {_mib(rss_before)} -> "
                             f"{_mib(rss_after)}, untraced run)")),
    ]
    return rows


def check_waiting(wiring: Wiring, count: int) -> None:
    store = wiring.stores[0]
    records = getattr(store, "_records", None)
    if records is None:
        return
    waiting = sum(1 for text in records.values() if json.loads(text)["status"] == "waiting")
    if waiting != count:
        raise SystemExit(f"expected {count} waiting instances, found {waiting}")


def _mib(n: float) -> str:
    return f"{n / 2**20:8.1f} MiB"


# ---- output ------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    print(f"{'store':<30} {'mode':<6} {'instances':>9} {'transitions':>11} {'seconds':>8} "
          f"{'transitions/s':>13}  note")
    for r in rows:
        print(f"{r.store:<30} {r.mode:<6} {r.instances:>9} {r.transitions:>11} {r.seconds:>8.3f} "
              f"{r.rate:>13,.0f}  {r.note}")


def print_profile(profile: cProfile.Profile, transitions: int, top: int) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"cProfile of the memory:// drain run ({transitions} transitions, "
          f"{total / max(transitions, 1) * 1e6:.1f} us of profiled time per transition), top {top} by tottime:")
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    for line in lines[start:]:
        if line.strip():
            print("  " + line.rstrip())
    out = io.StringIO()
    pstats.Stats(profile, stream=out).strip_dirs().sort_stats("cumulative").print_stats(top)
    print(f"top {top} by cumulative time:")
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    for line in lines[start:]:
        if line.strip():
            print("  " + line.rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the script works")
    parser.add_argument("--profile", action="store_true", help="always print the cProfile of memory://")
    parser.add_argument("--instances", type=int, help="instances for the memory:// runs")
    parser.add_argument("--waiting", type=int, help="waiting instances for the memory figures")
    parser.add_argument("--repeat", type=int, help="memory:// drain runs (the best is kept)")
    parser.add_argument("--no-servers", action="store_true", help="skip redis-server and memcached")
    args = parser.parse_args(argv)
    quick = args.quick
    n_memory = args.instances or (100 if quick else 5000)
    n_other = max(10, n_memory // 10) if quick else 500
    n_client = 20 if quick else 500
    n_waiting = args.waiting or (500 if quick else 10_000)
    repeat = args.repeat or (1 if quick else 3)
    defs = machines()

    print(f"lambda-fsm engine benchmark{' (--quick)' if quick else ''}: Python {platform.python_version()}, "
          f"{platform.machine()}, pid {os.getpid()}")
    print(f"machine: {STATES}-state linear, no-op do actions; 1 transition = 1 message = 1 committed step")
    print()

    memory_rows = measure_memory(defs, n_waiting)
    print(f"== memory: {n_waiting} instances waiting in state s1 on memory:// ==")
    for name, value in memory_rows:
        print(f"{name:<22} {value}")
    print()

    rows: list[Row] = []
    runs = [run_drain("memory://", "memory://", defs, n_memory) for _ in range(repeat)]
    best = max(runs, key=lambda r: r.rate)
    if repeat > 1:
        best.note = (f"best of {repeat}; median {statistics.median(r.rate for r in runs):,.0f}/s")
    rows.append(best)
    rows.append(run_client("memory://", "memory://", defs, n_client))
    with tempfile.TemporaryDirectory(prefix="fsm-bench-") as tmp:
        sqlite_url = f"sqlite:///{tmp}/bench.sqlite3"
        rows.append(run_drain(sqlite_url, "sqlite:///TMP/bench.sqlite3", defs, n_other))
        rows.append(run_client(sqlite_url, "sqlite:///TMP/bench.sqlite3", defs, max(5, n_client // 2)))
    skipped: list[str] = []
    if not args.no_servers:
        with Servers() as servers:
            for kind in ("redis", "memcached"):
                url = servers.url(kind)
                if url is None:
                    skipped.append(f"{kind}: {servers.missing.get(kind, 'unavailable')}")
                    continue
                label = f"{url.split('://')[0]}://127.0.0.1 (server)"
                try:
                    rows.append(run_drain(url, label, defs, n_other))
                    rows.append(run_client(url, label, defs, max(5, n_client // 2)))
                finally:
                    cleanup(kind, url)
    print("== throughput: transitions per second ==")
    print_table(rows)
    for line in skipped:
        print(f"skipped {line}")
    rate = best.rate
    verdict = "MET" if rate >= TARGET else "NOT MET"
    print(f"target: >= {TARGET:,.0f} transitions/s on memory:// (drain): {verdict} ({rate:,.0f}/s, "
          f"{1e6 / rate if rate else 0:.1f} us per transition)")

    if args.profile or (rate < TARGET and not quick):
        profile = cProfile.Profile()
        profiled = run_drain("memory://", "memory://", defs, min(n_memory, 2000), profile=profile)
        print()
        print_profile(profile, profiled.transitions, 25)
    return 0


def cleanup(kind: str, url: str) -> None:
    """Leave nothing behind on a shared redis (this run's keys start with ``fsm:{bench-RUN-``)."""
    if kind != "redis":
        return      # memcached: the keys are unique per run and memcached evicts them
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"fsm:{{bench-{RUN}-*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
