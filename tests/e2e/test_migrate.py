"""Versions of a machine side by side, and moving in-flight instances between them,
through the command line as an operator does it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

V1 = """
  - name: order
    version: 1
    states:
      - {name: cart, initial: true, transitions: [{event: PAY, target: paying}]}
      - {name: paying, transitions: [{event: PAID, target: done}]}
      - {name: done, final: true}
"""
V2 = """
  - name: order
    version: 2
    migrations:
      - from: 1
        states: {paying: checkout.card}
        action: mig_acts.Currency
    states:
      - {name: cart, initial: true, transitions: [{event: PAY, target: checkout}]}
      - name: checkout
        transitions: [{event: PAID, target: done}]
        states:
          - {name: card, initial: true, transitions: [{event: DECLINED, target: cart}]}
      - {name: done, final: true}
"""
ACTIONS = """
from fsm import Action

class Currency(Action):
    def execute(self, context, obj):
        context["currency"] = "EUR"
        context["migrated"] = [obj["from"], obj["to"]]
"""


def fsm(folder: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    store = ["--store", f"sqlite:///{folder}/s.sqlite3"] if args[0] != "validate" else []
    done = subprocess.run([sys.executable, "-m", "fsm", *args, *store],
                          cwd=folder, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == expect, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def machines(folder: Path, *versions: str) -> None:
    (folder / "fsm.yaml").write_text("machines:" + "".join(versions))


def status(folder: Path, cid: str) -> dict:
    return json.loads(fsm(folder, "status", cid, "--json").stdout)


def test_instances_keep_their_version_until_migrated(tmp_path: Path) -> None:
    (tmp_path / "mig_acts.py").write_text(textwrap.dedent(ACTIONS))
    machines(tmp_path, V1)
    old = fsm(tmp_path, "start", "--machine", "order").stdout.split()[0]
    fsm(tmp_path, "send", old, "PAY")
    parked = fsm(tmp_path, "start", "--machine", "order").stdout.split()[0]
    assert status(tmp_path, old)["state"] == "paying"

    machines(tmp_path, V1, V2)
    new = fsm(tmp_path, "start", "--machine", "order").stdout.split()[0]
    fsm(tmp_path, "send", new, "PAY")
    assert (status(tmp_path, new)["version"], status(tmp_path, new)["value"]) == ("2", {"checkout": "card"})
    assert (status(tmp_path, old)["version"], status(tmp_path, old)["state"]) == ("1", "paying")

    dry = json.loads(fsm(tmp_path, "migrate", "--machine", "order", "--to", "2", "--dry-run", "--json").stdout)
    assert (dry["moved"], dry["stayed"], dry["could_not_move"]) == (2, 1, 0)
    assert status(tmp_path, old)["version"] == "1"  # a dry run writes nothing

    machines(tmp_path, V2)  # version 1 is gone: its instances say so and refuse events
    problem = status(tmp_path, old)["problem"]
    assert "version '1' of machine 'order'" in problem and "fsm migrate --machine order --to 2" in problem
    refused = fsm(tmp_path, "send", old, "PAID", expect=2)
    assert "fsm migrate" in refused.stderr

    report = fsm(tmp_path, "migrate", "--machine", "order").stdout
    assert report.startswith("moved 2, after their current run 0, stayed 1, could not move 0 (to version 2)")
    moved = status(tmp_path, old)
    assert (moved["version"], moved["value"], moved["context"]) == \
        ("2", {"checkout": "card"}, {"currency": "EUR", "migrated": ["1", "2"]})
    assert "problem" not in moved
    fsm(tmp_path, "send", old, "PAID")
    assert status(tmp_path, old)["status"] == "done"
    assert status(tmp_path, parked)["version"] == "2"  # no mapping needed: `cart` is in both


def test_an_instance_whose_state_has_no_counterpart_cannot_move(tmp_path: Path) -> None:
    (tmp_path / "mig_acts.py").write_text(textwrap.dedent(ACTIONS))
    machines(tmp_path, V1)
    cid = fsm(tmp_path, "start", "--machine", "order").stdout.split()[0]
    fsm(tmp_path, "send", cid, "PAY")
    machines(tmp_path, V1, V2.replace("        states: {paying: checkout.card}\n", ""))
    report = fsm(tmp_path, "migrate", "--machine", "order", expect=1).stdout
    assert "could not move 1" in report
    assert f"{cid}: version 2 (no migration from 1) has no state 'paying'" in report or \
        f"{cid}: the migration from 1 to 2 has no state 'paying'" in report
    assert status(tmp_path, cid)["version"] == "1"


def test_two_definitions_of_one_version_are_refused(tmp_path: Path) -> None:
    (tmp_path / "mig_acts.py").write_text(textwrap.dedent(ACTIONS))
    machines(tmp_path, V1, V1)
    assert "duplicate machine name 'order'" in fsm(tmp_path, "validate", "fsm.yaml", expect=2).stderr


def test_a_running_instance_moves_in_the_commit_that_settles_it(tmp_path: Path) -> None:
    """`fsm migrate` marks a running instance; the dispatcher moves it when its run settles."""
    from config.loader import load_text
    from fsm.app.migrate import _move
    from fsm.dispatcher import Dispatcher, Routes
    from fsm.message import Message, decode
    from sources.memory import MemoryStore, MemoryTimers

    (tmp_path / "mig_once.py").write_text(textwrap.dedent("""
        from fsm import Action

        TRIES = []

        class FailOnce(Action):
            def execute(self, context, obj):
                TRIES.append(1)
                if len(TRIES) == 1:
                    raise RuntimeError("not yet")
                return "ok"
    """))
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        text = """
machines:
  - name: job
    version: VERSION
    retry_base_delay: 0
    states:
      - {name: start, initial: true, do_action: mig_once.FailOnce, transitions: [{event: ok, target: idle}]}
      - {name: idle, transitions: [{event: GO, target: end}]}
      - {name: end, final: true}
"""
        v1 = load_text(text.replace("VERSION", "1")).machines["job"]
        both = load_text(text.replace("VERSION", "1") + text.replace("VERSION", "2").replace("machines:\n", "")
                         .replace("{name: idle,", "{name: resting,").replace("target: idle", "target: resting")
                         + "    migrations: [{from: 1, states: {idle: resting}}]\n").machines
        sent: list[Any] = []
        bus = type("Bus", (), {"url": "hand://", "max_delay": float("inf"),
                               "send": lambda self, e: sent.append(e), "send_batch": lambda self, es: sent.extend(es)})()
        store = MemoryStore()
        d1 = Dispatcher({"job": v1}, [store], Routes(bus=bus, timers=MemoryTimers()))
        d1.handle(Message(machine="job", correlation_id="j1", context={}, version="1"))
        record = store.get("j1")
        assert (record["status"], record["version"]) == ("running", "1")  # its retry is on its way
        moved = _move(store, both["job"], record, "2", dry_run=False)
        assert moved["outcome"] == "scheduled" and store.get("j1")["migrate_to"] == "2"
        d2 = Dispatcher(both, [store], Routes(bus=bus, timers=MemoryTimers()))
        while sent:  # the retry, then the step it starts: the run settles in `idle`
            assert d2.handle(decode(sent.pop(0).body)).result == "committed"
        record = store.get("j1")
        assert (record["status"], record["version"], record["state"], record["migrate_to"]) == \
            ("waiting", "2", "resting", None)
    finally:
        sys.path.remove(str(tmp_path))
