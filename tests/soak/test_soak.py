"""The soak at CI size (``bench/soak.py``): 20 instances x 20 steps on a redis store and an
SQS-shaped queue in redis (``bench/soak_queue.py``), 20% injected faults on every backend
(half before the call, half after it was applied), 2% of messages delivered twice, the
primary queue deleted half way with the messages in it, two worker processes of which one
is killed with SIGKILL and restarted. Every instance must finish, every step be committed
once and the ``Transitions`` counter be exact. About 30 s: short leases, visibility
timeout and re-send delay keep the run's tail short. ``FSM_SOAK_INSTANCES`` raises the
size; ``python bench/soak.py`` runs any size and the moto_server variant."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from soak import run_soak

pytestmark = pytest.mark.soak


def test_every_instance_finishes_each_step_once_under_fire(private_redis: Callable[..., Any],
                                                            tmp_path: Path) -> None:
    url, _ = private_redis()  # its own server: the store's keys and pending index are the run's alone
    instances = int(os.environ.get("FSM_SOAK_INSTANCES", "20"))
    report = run_soak(None, url, instances=instances, steps=20, chaos=0.2, lease_timeout=1.0, timeout=55,
                      store="redis", bus="redis", duplicates=0.02, workers=2, kill=1, resend_after=3.0,
                      visibility=2.0, retry_cap=2.0, every=5.0, log_dir=tmp_path)
    print("\n".join(report.lines()))
    assert report.lost == 0 and report.finished == instances
    assert report.wrong_step_sets == 0              # every instance ran exactly steps 0..19
    assert report.committed_twice == 0
    assert report.committed == instances * 21       # the first step and 20 moves each
    assert report.counters_exact or report.counted_by_kills, report.counters()
    assert report.faults["before"] > 0 and report.faults["after"] > 0
    assert report.duplicates_injected > 0
    assert report.failovers > 0                     # the primary queue went away half way
    assert report.primary_removed.endswith("messages in it")
    assert report.kills == 1
    assert report.ok
