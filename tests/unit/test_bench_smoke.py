"""The benchmarks still run: each script at a tiny size (``--quick``), as a user runs it.

They print figures rather than assert them; these tests only check that every section
was printed and nothing failed. Servers come from FSM_TEST_* or are started on free
ports by bench/servers.py; a missing one is reported as skipped by the script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the benchmarks start (or use) real servers

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def run(script: str, *args: str, timeout: float = 60.0) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, capture_output=True,
                          check=False, text=True, timeout=timeout, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, f"{script} {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def test_engine_quick() -> None:
    out = run("engine.py", "--quick")
    assert "== memory: 500 instances waiting in state s1 on memory:// ==" in out
    assert "traced heap retained" in out and "peak RSS growth" in out
    rows = [line for line in out.splitlines() if line.startswith(("memory://", "sqlite:///"))]
    assert len(rows) == 4, out          # drain and client, on memory and sqlite
    assert "target: >= 20,000 transitions/s on memory:// (drain):" in out


def test_roundtrips_quick_with_a_short_long_run() -> None:
    out = run("roundtrips.py", "--quick", "--long", "--steps", "30")
    assert "ERROR" not in out, out
    lines = out.splitlines()
    happy = next(line for line in lines if line.startswith("happy path (transition of a running instance)"))
    figures = happy.split(")")[-1].split()
    assert len(figures) == 5 and all(f.isdigit() or f == "-" for f in figures), happy
    assert any(line.startswith("verdict") for line in lines)
    for pair in ("SQS + redis", "Kinesis + DynamoDB (checkpoint)", "DynamoDB stream + DynamoDB", "SNS + memcached"):
        assert any(line.startswith(pair) for line in lines), pair
    assert "31 messages = 31 transitions" in out
    assert any(line.startswith("verdict: ") for line in lines)


def test_redis_batches_quick() -> None:
    out = run("redis_batches.py", "--quick")
    lines = out.splitlines()
    if lines[0].startswith("redis: skipped"):
        return
    rows = {line.split()[0]: float(line.split()[1]) for line in lines[2:4]}
    assert set(rows) == {"optimistic", "locked"}, out
    assert all(trips < 1 for trips in rows.values()), out    # batches of 10: below one per transition


def test_statecharts_quick() -> None:
    out = run("statecharts.py", "--quick", timeout=30)
    assert "ERROR" not in out, out
    lines = out.splitlines()
    assert lines[0].startswith("== statecharts: one event's cost on memory:// (Dispatcher.handle")
    for title in ("flat: internal step", "flat: external event", "nested: external event, exits/enters 3 levels",
                  "parallel: external event, 2 regions take it"):
        row = next(line for line in lines if line.startswith(title))
        figures = row[46:].split()       # us/event, wall, x flat, client + dispatch = total, record B, history B
        assert len(figures) == 10 and figures[4] == "+" and figures[6] == "=", row
        assert all(float(f) > 0 for f in figures[:2]) and figures[7].isdigit(), row
        assert figures[8].isdigit() and figures[9].isdigit(), row
    assert "breakdown per event:" in out
    assert "  nested-event     'left.l2.l3'; chart" in lines
    assert "  flat-event       'a'; flat" in lines
