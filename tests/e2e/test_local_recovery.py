"""A local ``fsm run`` stopped in the middle of an action, and the next command.

On the embedded runtime the process that runs an instance is the only thing that runs
it. Killed (SIGKILL) mid-action, it leaves its lease on the record and loses the message
it was handling; stopped with Ctrl-C (SIGINT), it gives the lease back. Either way the
next command on that instance carries on at once: it recognises a dead holder on this
host (its process is gone) and sends the instance's owed message again.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

MACHINE = """\
machines:
  - name: slow
    states:
      - name: first
        initial: true
        do_action: slow_actions.Go
        transitions: [{event: go, target: stuck}]
      - name: stuck
        do_action: slow_actions.Block
        transitions: [{event: go, target: end}]
      - {name: end, final: true}
"""
ACTIONS = """\
import os, time
from pathlib import Path
from fsm import Action

class Go(Action):
    def execute(self, context, obj):
        return "go"

class Block(Action):
    '''Blocks while the file `block` exists beside this module, after saying it started.'''
    def execute(self, context, obj):
        here = Path(__file__).parent
        (here / "started").write_text(str(os.getpid()))
        while (here / "block").exists():
            time.sleep(0.05)
        context["ran_in"] = os.getpid()
        return "go"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "fsm.yaml").write_text(MACHINE)
    (tmp_path / "slow_actions.py").write_text(ACTIONS)
    (tmp_path / "block").write_text("")
    return tmp_path


def fsm(workdir: Path, *args: str, **options) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSM_")}
    return subprocess.Popen([sys.executable, "-m", "fsm", *args, "--store", "sqlite:///state.sqlite3"],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **options)


def run(workdir: Path, *args: str) -> tuple[int, str, str]:
    process = fsm(workdir, *args)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def stopped_mid_action(workdir: Path, how: signal.Signals) -> int:
    """Start the instance, stop its process in the blocking action; the process's pid."""
    process = fsm(workdir, "run", "fsm.yaml", "--machine", "slow", "--correlation-id", "order-1")
    deadline = time.monotonic() + 30
    while not (workdir / "started").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(how)
    process.communicate(timeout=30)
    (workdir / "block").unlink()
    return process.pid


def lease_owner(workdir: Path) -> str:
    with sqlite3.connect(workdir / "state.sqlite3") as db:
        (record,) = db.execute("select record from instances where id = 'order-1'").fetchone()
    return json.loads(record)["lease_owner"]


@pytest.mark.parametrize("command", [["run", "fsm.yaml", "--machine", "slow", "--correlation-id", "order-1"],
                                     ["status", "order-1", "--config", "fsm.yaml", "--json"]])
def test_after_a_sigkill_mid_action_the_next_command_finishes_the_instance(workdir: Path,
                                                                           command: list[str]) -> None:
    killed = stopped_mid_action(workdir, signal.SIGKILL)
    assert lease_owner(workdir), "a killed holder cannot release its lease"
    code, out, err = run(workdir, *command)
    assert code == 0, err
    code, out, err = run(workdir, "status", "order-1", "--config", "fsm.yaml", "--json")
    status = json.loads(out.strip().splitlines()[-1])
    assert (status["status"], status["state"], status["steps"]) == ("done", "end", 3)
    assert status["context"]["ran_in"] not in (0, killed)  # run again, by the next command


def test_ctrl_c_releases_the_lease_and_the_next_command_goes_on(workdir: Path) -> None:
    stopped_mid_action(workdir, signal.SIGINT)
    assert lease_owner(workdir) == "", "Ctrl-C must give the lease back"
    code, out, err = run(workdir, "run", "fsm.yaml", "--machine", "slow", "--correlation-id", "order-1")
    assert code == 0, err
    assert "done in state end after 3 steps" in out


def test_resume_continues_a_local_instance_left_running(workdir: Path) -> None:
    stopped_mid_action(workdir, signal.SIGKILL)
    code, out, err = run(workdir, "resume", "order-1", "--config", "fsm.yaml")
    assert code == 0, err
    assert "now done in state end" in out and "Kinesis" not in out + err
