"""The soak test at CI size: 20 instances x 20 steps through SQS + DynamoDB on
moto_server, 20% injected faults on every backend, a 3 s lease, the primary queue
deleted half way. One worker against moto_server does a few transitions a second under
these faults (most are redelivered once), so CI runs 400 transitions (about two minutes);
``FSM_SOAK_INSTANCES`` raises it, and ``bench/soak.py`` runs 1,000 instances."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from soak import run_soak

pytestmark = pytest.mark.soak


def test_every_instance_finishes_each_step_once_under_faults(private_moto: str, redis_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    moto_url = private_moto  # its own server: the parallel suite resets the shared one
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    instances = int(os.environ.get("FSM_SOAK_INSTANCES", "20"))
    report = run_soak(moto_url, redis_url, instances=instances, steps=20, chaos=0.2, timeout=600)
    print("\n".join(report.lines()))
    assert report.completed == instances and report.lost == 0
    assert report.wrong_step_sets == 0          # every instance recorded exactly steps 0..19
    assert report.steps_committed_twice == 0
    assert report.faults["before"] > 0 and report.faults["after"] > 0
    assert report.faults_in_metrics == report.faults["before"] + report.faults["after"]
    assert report.failovers > 0                 # the primary queue went away half way
