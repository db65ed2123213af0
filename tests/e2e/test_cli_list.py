"""``fsm list``: real ``python -m fsm list`` processes in a tmp folder, on a sqlite store
there that the test fills through the client first.

It prints a table (or ``--json``), newest first, and the command for the next page; bad
filters are bad input (exit 2, one line); a store that cannot list exits 1, one line.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

MACHINES = """
machines:
  - name: order
    states:
      - {name: placed, initial: true, transitions: [{event: PAY, target: paid}, {event: DROP, target: dropped}]}
      - {name: paid, final: true}
      - {name: dropped, final: true}
  - name: refund
    states:
      - {name: asked, initial: true, transitions: [{event: OK, target: refunded}]}
      - {name: refunded, final: true}
"""
ORDERS = [f"order-{n}" for n in range(7)]


class Fsm:
    """``python -m fsm`` in one folder, on its sqlite store, with no other ``FSM_*`` variable."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.store = f"sqlite:///{folder / 'fsm.sqlite3'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FSM_")}

    def __call__(self, *args: str, store: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fsm", *args, "--store", store or self.store], cwd=self.folder,
                              env=self.env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def fsm(tmp_path_factory: pytest.TempPathFactory) -> Fsm:
    """Seven orders (order-6 newest; 1 and 4 paid, 2 dropped) and a refund, started last."""
    from config.settings import load_settings
    from fsm.app.client import Client

    folder = tmp_path_factory.mktemp("list")
    (folder / "fsm.yaml").write_text(MACHINES.lstrip(), encoding="utf-8")
    fsm = Fsm(folder)
    client = Client(settings=load_settings({"store": fsm.store}, environ={}), config=str(folder / "fsm.yaml"))
    for cid in ORDERS:
        client.start("order", correlation_id=cid)
    client.start("refund", correlation_id="refund-0")
    fsm.since = time.time()         # type: ignore[attr-defined]
    for cid, event in [("order-1", "PAY"), ("order-4", "PAY"), ("order-2", "DROP")]:
        client.send_event(cid, event)
    client.wiring.close()
    return fsm


def ids_of(table: str) -> list[str]:
    return [line.split()[0] for line in table.splitlines()[1:] if not line.startswith("next page:")]


def test_a_table_newest_first(fsm: Fsm) -> None:
    done = fsm("list")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ID", "MACHINE", "STATE", "STATUS", "STEPS", "UPDATED_AT"]
    assert ids_of(done.stdout) == ["order-2", "order-4", "order-1", "refund-0", "order-6", "order-5", "order-3",
                                   "order-0"]
    row = next(line for line in lines if line.startswith("order-2 "))
    assert row.split()[1:5] == ["order", "dropped", "done", "2"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row.split()[5])
    assert not any(line.startswith("next page:") for line in lines)


def test_filters_combine(fsm: Fsm) -> None:
    assert ids_of(fsm("list", "--machine", "order", "--status", "waiting").stdout) == \
        ["order-6", "order-5", "order-3", "order-0"]
    assert ids_of(fsm("list", "--state", "paid").stdout) == ["order-4", "order-1"]     # one machine has it
    assert ids_of(fsm("list", "--machine", "refund", "--state", "asked", "--status", "waiting").stdout) == \
        ["refund-0"]
    since = fsm.since                                                                  # type: ignore[attr-defined]
    assert ids_of(fsm("list", "--since", repr(since)).stdout) == ["order-2", "order-4", "order-1"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since - 3600)) + "Z"
    assert len(ids_of(fsm("list", "--since", iso).stdout)) == 8
    assert fsm("list", "--machine", "nothing").stdout.strip() == \
        "no instances (machine 'nothing' is not in the loaded config)"


def test_json_is_status_views_and_the_cursor(fsm: Fsm) -> None:
    done = fsm("list", "--status", "done", "--limit", "2", "--json")
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert [v["correlation_id"] for v in page["instances"]] == ["order-2", "order-4"] and page["next"]
    assert set(page["instances"][0]) >= {"machine", "state", "status", "steps", "context", "updated_at"}
    rest = json.loads(fsm("list", "--status", "done", "--limit", "2", "--json", "--next", page["next"]).stdout)
    assert [v["correlation_id"] for v in rest["instances"]] == ["order-1"] and rest["next"] is None


@pytest.mark.slow   # a process per page
def test_the_next_page_hint_pages_through_everything_once(fsm: Fsm) -> None:
    seen, args = [], ["list", "--limit", "3"]
    for _ in range(10):
        done = fsm(*args)
        assert done.returncode == 0, done.stderr
        seen += ids_of(done.stdout)
        hint = [line for line in done.stdout.splitlines() if line.startswith("next page: ")]
        if not hint:
            break
        words = shlex.split(hint[0][len("next page: "):])
        assert words[:2] == ["fsm", "list"] and "--store" in words and words[-2] == "--next"
        args = words[1:words.index("--store")] + words[words.index("--store") + 2:]
    assert seen == ["order-2", "order-4", "order-1", "refund-0", "order-6", "order-5", "order-3", "order-0"]


@pytest.mark.parametrize("args, says", [
    (["--status", "sleeping"], "--status 'sleeping' is not a status; give one of running, waiting, done"),
    (["--limit", "0"], "--limit '0' must be a whole number from 1 to 1000"),
    (["--limit", "1001"], "--limit '1001' must be a whole number from 1 to 1000"),
    (["--limit", "ten"], "--limit 'ten' must be a whole number from 1 to 1000"),
    (["--since", "yesterday"], "--since 'yesterday' is neither epoch seconds nor an ISO 8601 time"),
    (["--next", "garbage"], "cursor 'garbage' is not one a listing returned"),
    (["--state", "nowhere"], "no loaded machine has a state 'nowhere'; give the machine too"),
    (["--machine", ""], "--machine is empty"),
])
def test_bad_filters_are_bad_input(fsm: Fsm, args: list[str], says: str) -> None:
    done = fsm("list", *args)
    assert done.returncode == 2 and done.stdout == "", (done.returncode, done.stdout, done.stderr)
    (line,) = done.stderr.splitlines()
    assert line.startswith("fsm list: ") and says in line, line


def test_a_store_that_cannot_list_is_a_runtime_failure(fsm: Fsm) -> None:
    done = fsm("list", store="memcached://127.0.0.1:9")
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("fsm list: memcached://127.0.0.1:9 cannot list instances")
    assert "stores that can: memory://, sqlite:///PATH" in line
