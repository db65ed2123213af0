"""``fsm watch``: a real ``python -m fsm watch`` process follows instances that other
``python -m fsm`` processes move, through one sqlite store in ``tmp_path``.

The watcher only polls the store, so what it prints must be what the other processes
committed: every transition once (several commits between two polls are filled in from
the history), the instance's status on the line of its latest commit, and an exit code
that says how the instance ended.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

OK, FAILED, BAD_INPUT = 0, 1, 2
MACHINES = """
machines:
  - name: order
    max_retries: 1
    retry_base_delay: 0.01
    retry_max_delay: 0.01
    states:
      - {name: placed, initial: true, do_action: watch_acts.Accept, transitions: [{event: accepted, target: waiting}]}
      - name: waiting
        transitions:
          - {event: NOTE, target: waiting}
          - {event: PAY, target: paying}
          - {event: BREAK, target: breaking}
      - {name: paying, do_action: watch_acts.Pay, transitions: [{event: paid, target: shipped}]}
      - {name: breaking, do_action: watch_acts.Broken, transitions: [{event: fixed, target: shipped}]}
      - {name: shipped, final: true}
"""
ACTIONS = """
from fsm import Action


class Accept(Action):
    def execute(self, context, obj):
        return "accepted"


class Pay(Action):
    def execute(self, context, obj):
        return "paid"


class Broken(Action):
    def execute(self, context, obj):
        raise RuntimeError("printer on fire")
"""


class Folder:
    """``python -m fsm`` in one folder, on its own sqlite store."""

    def __init__(self, path: Path):
        self.path = path
        self.store = f"sqlite:///{path / 'watch.sqlite3'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FSM_")}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fsm", *args, "--store", self.store]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=self.path, env=self.env, capture_output=True, text=True,
                              timeout=60, check=False)

    def start(self) -> str:
        done = self.run("start", "--machine", "order")
        assert done.returncode == OK, done.stderr
        return done.stdout.strip()

    def watch(self, *args: str) -> Watcher:
        return Watcher(subprocess.Popen(self.argv("watch", *args, "--interval", "0.05"), cwd=self.path,
                                        env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))


class Watcher:
    """A running ``fsm watch``; its stdout lines arrive in a queue as they are printed."""

    def __init__(self, process: subprocess.Popen[str]):
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float = 10.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.process.kill()
            pytest.fail(f"fsm watch printed nothing for {timeout}s; stderr: {self.process.stderr.read()}")

    def finish(self, timeout: float = 10.0) -> tuple[int, list[str], str]:
        """Its exit code, the lines not read yet, and its stderr."""
        code = self.process.wait(timeout=timeout)
        time.sleep(0.05)  # the reader thread takes the last lines
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        assert self.process.stderr is not None
        return code, rest, self.process.stderr.read()

    def stop(self) -> tuple[int, list[str], str]:
        self.process.send_signal(signal.SIGINT)
        return self.finish()


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    (tmp_path / "fsm.yaml").write_text(MACHINES.lstrip(), encoding="utf-8")
    (tmp_path / "watch_acts.py").write_text(ACTIONS, encoding="utf-8")
    return Folder(tmp_path)


def columns(line: str) -> list[str]:
    return line.split()


def test_watch_prints_every_transition_another_process_makes_and_exits_0_when_done(folder: Folder) -> None:
    cid = folder.start()
    watcher = folder.watch(cid)
    first = columns(watcher.next_line())            # where it stands when the watch begins
    assert first[1:] == ["step", "2", "waiting", "waiting"]
    # One `fsm send` runs three transitions; the watcher sees each, however it polls.
    assert folder.run("send", cid, "PAY").returncode == OK
    code, lines, stderr = watcher.finish()
    assert code == OK, stderr
    # Step 3 may have been seen as it stood (running) or only in the history (no status).
    assert [columns(line)[1:4] for line in lines] == [["step", "3", "paying"], ["step", "4", "shipped"]]
    assert columns(lines[0])[4] in ("-", "running") and columns(lines[1])[4] == "done"
    assert "event=PAY" in lines[0] and "event=paid" in lines[1]
    assert stderr == ""


def test_watch_exits_1_when_the_instance_fails_and_says_why_on_one_line(folder: Folder) -> None:
    cid = folder.start()
    watcher = folder.watch(cid, "--json")
    assert json.loads(watcher.next_line())["status"] == "waiting"
    assert folder.run("send", cid, "BREAK").returncode == FAILED
    code, lines, stderr = watcher.finish()
    changes = [json.loads(line) for line in lines]
    assert code == FAILED
    # Entering `breaking` runs its do action, which fails: the instance stays in `waiting`,
    # and each failed attempt (the first one, then its retry) is a line of its own.
    assert [(c["step"], c["state"], c["event"]) for c in changes] == [(3, "waiting", "BREAK")] * 2
    assert all("attempt failed: RuntimeError: printer on fire" in c["note"] for c in changes)
    assert changes[-1]["status"] == "failed"
    assert stderr.splitlines() == [(f"fsm watch: instance {cid}: failed in state waiting after 2 steps "
                                   "(RuntimeError: printer on fire)")]


def test_watch_all_follows_every_instance_of_a_machine_until_ctrl_c(folder: Folder) -> None:
    before = folder.start()
    watcher = folder.watch("--all", "--machine", "order")
    # The watcher prints only changes made after it started: nudge the instance that was
    # already there until one shows, which also proves its first poll is done.
    deadline = time.monotonic() + 15
    while True:
        assert folder.run("send", before, "NOTE").returncode == OK
        try:
            line = watcher.lines.get(timeout=1.0)
            break
        except queue.Empty:
            assert time.monotonic() < deadline, "fsm watch --all never printed the change"
    assert columns(line)[1] == before and "event=NOTE" in line
    later = folder.start()                         # new since the watch began: its whole story
    seen = [watcher.next_line() for _ in range(2)]
    assert [columns(line)[1:6] for line in seen] == [
        [later, "step", "1", "placed", "-"], [later, "step", "2", "waiting", "waiting"]]
    code, _, stderr = watcher.stop()
    assert code == OK and stderr == ""


def test_watch_needs_an_id_or_all_and_knows_unknown_ids(folder: Folder) -> None:
    nothing = folder.run("watch")
    assert nothing.returncode == BAD_INPUT
    assert nothing.stderr.splitlines() == [("fsm watch: give an instance ID, or --all (with --machine NAME) "
                                           "for every instance")]
    unknown = folder.run("watch", "nobody-here")
    assert unknown.returncode == FAILED
    assert len(unknown.stderr.splitlines()) == 1 and "no instance 'nobody-here'" in unknown.stderr
    wrong = folder.run("watch", "--all", "--machine", "nope")
    assert wrong.returncode == BAD_INPUT and "unknown machine 'nope'" in wrong.stderr
