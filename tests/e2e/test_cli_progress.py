"""What ``fsm`` prints while and after it works, and that the README's first machine runs
as written.

On a terminal, long commands say what happens on stderr (each transition, each retry with
its delay, the worker's rate); with ``--json``, or when stderr is a pipe, they print only
their result. The terminal is a real pseudo-terminal (``pty``) around ``python -m fsm``;
the pipes are plain ``subprocess`` pipes.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OK, FAILED = 0, 1

MACHINES = """
machines:
  - name: flaky
    max_retries: 3
    retry_base_delay: 0.05
    retry_max_delay: 0.05
    states:
      - name: mailing
        initial: true
        do_action: {class: progress_acts.Mail, params: {failures: 2}}
        transitions: [{event: sent, target: waiting}]
      - name: waiting
        timeout: 0.2
        transitions: [{event: VERIFY, target: verified}, {event: timeout, target: verified}]
      - {name: verified, final: true}
  - name: patient
    states:
      - {name: mailing, initial: true, do_action: {class: progress_acts.Mail, params: {failures: 0}},
         transitions: [{event: sent, target: waiting}]}
      - {name: waiting, transitions: [{event: VERIFY, target: verified}]}
      - {name: verified, final: true}
  - name: broken
    max_retries: 0
    states:
      - {name: mailing, initial: true, do_action: {class: progress_acts.Mail, params: {failures: 9}},
         transitions: [{event: sent, target: done}]}
      - {name: done, final: true}
"""
ACTIONS = """
from pathlib import Path

from fsm import Action


class Mail(Action):
    \"\"\"Fails its first ``failures`` attempts per instance (counted in a file), then works.\"\"\"

    def execute(self, context, obj):
        tries = Path(f"tries-{context.correlation_id}")
        done = int(tries.read_text()) if tries.exists() else 0
        tries.write_text(str(done + 1))
        if done < self.params["failures"]:
            raise RuntimeError("smtp down")
        return "sent"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "fsm.yaml").write_text(MACHINES.lstrip(), encoding="utf-8")
    (tmp_path / "progress_acts.py").write_text(ACTIONS, encoding="utf-8")
    return tmp_path


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FSM_")}


def store(folder: Path) -> list[str]:
    return ["--store", f"sqlite:///{folder / 'x.sqlite3'}"]


def piped(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsm", *args], cwd=folder, env=clean_env(), capture_output=True,
                          text=True, timeout=60, check=False)


def in_terminal(folder: Path, *args: str, stdout_piped: bool = False) -> tuple[int, str, str]:
    """Run ``fsm`` with stderr (and stdout, unless ``stdout_piped``, as in ``ID=$(fsm ...)``)
    on a pseudo-terminal; return the exit code, what reached the terminal, and stdout if piped."""
    terminal, child_side = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "fsm", *args], cwd=folder, env=clean_env(), stdin=child_side,
                               stdout=subprocess.PIPE if stdout_piped else child_side, stderr=child_side)
    os.close(child_side)
    shown = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(terminal)
    stdout = process.stdout.read().decode() if process.stdout else ""
    return process.wait(timeout=10), shown.decode().replace("\r\n", "\n"), stdout


# -- progress ----------------------------------------------------------------------------------


def test_start_on_a_terminal_shows_each_retry_with_its_delay_and_each_step(folder: Path) -> None:
    code, shown, _ = in_terminal(folder, "start", "--machine", "flaky", "--correlation-id", "ada", *store(folder))
    lines = shown.splitlines()
    assert code == OK and lines[-1] == "ada", shown
    retries = [line for line in lines if line.lstrip().startswith("retrying")]
    assert len(retries) == 2, shown
    for line in retries:
        assert "(start)" in line and "error=RuntimeError: smtp down; next try in" in line
        assert 0 <= float(re.search(r"next try in ([0-9.]+)s", line)[1]) <= 0.05
    steps = [line.split()[:3] for line in lines if line.startswith("step")]
    assert steps == [["step", "1", "mailing"], ["step", "2", "waiting"]], shown


def test_progress_reaches_the_terminal_when_only_stdout_is_captured(folder: Path) -> None:
    """``ID=$(fsm start ...)``: the id goes to the variable, the progress to the person."""
    code, shown, stdout = in_terminal(folder, "start", "--machine", "flaky", *store(folder), stdout_piped=True)
    assert code == OK and re.fullmatch(r"[0-9a-f]{32}\n", stdout)
    assert "retrying" in shown and "step    2  waiting" in shown and stdout.strip() not in shown


def test_start_through_pipes_prints_only_the_id(folder: Path) -> None:
    done = piped(folder, "start", "--machine", "flaky", "--correlation-id", "ada", *store(folder))
    assert (done.returncode, done.stdout, done.stderr) == (OK, "ada\n", "")


def test_the_worker_on_a_terminal_says_what_it_reads_and_its_rate(folder: Path) -> None:
    assert piped(folder, "start", "--machine", "flaky", "--correlation-id", "ada", *store(folder)).returncode == OK
    time.sleep(0.25)  # the waiting state's timeout is due: work for the worker
    code, shown, _ = in_terminal(folder, "worker", "--idle-exit", "1.3", *store(folder))
    lines = shown.splitlines()
    assert code == OK
    assert lines[0] == "worker: releasing due timers; stops after 1.3s idle"
    rate = [line for line in lines if re.match(r"worker: \d+ messages in [0-9.]+s \([0-9.]+/s\); ", line)]
    assert len(rate) == 1 and "1 timers released" in rate[0], shown
    assert lines[-1] == "worker: 1 records (0 failed), 1 timers released"


def test_the_worker_through_pipes_prints_one_line_or_json(folder: Path) -> None:
    done = piped(folder, "worker", "--idle-exit", "0", *store(folder))
    assert (done.returncode, done.stdout, done.stderr) == (OK, "worker: 0 records (0 failed), 0 timers released\n", "")
    code, shown, _ = in_terminal(folder, "worker", "--idle-exit", "0", "--json", *store(folder))
    assert code == OK and json.loads(shown) == {"records": 0, "failed": 0, "timers": 0, "healed": 0}


# -- what the commands print ---------------------------------------------------------------------


def test_run_json_prints_only_the_final_status(folder: Path) -> None:
    """As the README's command table says it does."""
    documented = " ".join(readme_section("The command line").split())
    assert "``--json`` prints only the final status, one JSON object as ``fsm status --json`` prints it" in documented
    done = piped(folder, "run", "fsm.yaml", "--machine", "flaky", "--json", *store(folder))
    assert done.returncode == OK and len(done.stdout.splitlines()) == 1, done.stdout
    status = json.loads(done.stdout)
    assert set(status) == {"correlation_id", "machine", "version", "state", "value", "status", "steps", "retries", "context",
                           "last_error", "updated_at", "created_at", "output", "error", "cause", "parent", "children"}
    assert (status["status"], status["state"], status["steps"], status["retries"]) == ("waiting", "waiting", 2, 0)


def test_run_lists_retries_with_their_delay(folder: Path) -> None:
    done = piped(folder, "run", "fsm.yaml", "--machine", "flaky", *store(folder))
    retries = [line for line in done.stdout.splitlines() if line.lstrip().startswith("retrying")]
    assert done.returncode == OK and len(retries) == 2 and all("next try in" in line for line in retries)


def test_status_text_prints_a_dash_for_nothing(folder: Path) -> None:
    piped(folder, "start", "--machine", "broken", "--correlation-id", "bad", *store(folder))
    piped(folder, "start", "--machine", "patient", "--correlation-id", "ok", *store(folder))
    failed = dict(line.split(": ", 1) for line in piped(folder, "status", "bad", *store(folder)).stdout.splitlines())
    healthy = dict(line.split(": ", 1) for line in piped(folder, "status", "ok", *store(folder)).stdout.splitlines())
    assert (failed["         state"], failed["        status"]) == ("-", "failed")
    assert healthy["    last_error"] == "-"
    assert "None" not in "".join(failed.values()) + "".join(healthy.values())


def test_cancel_says_where_the_instance_is_now(folder: Path) -> None:
    piped(folder, "start", "--machine", "patient", "--correlation-id", "ada", *store(folder))
    done = piped(folder, "cancel", "ada", *store(folder))
    assert (done.returncode, done.stderr) == (OK, "")
    assert done.stdout == "ada: cancelled in state waiting after 2 steps (cancelled: cancelled by user)\n"


# -- the README's first machine ------------------------------------------------------------------


def readme_section(title: str) -> str:
    text = (ROOT / "README.rst").read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n{'-' * len(title)}\n")
    end = text.index("\n-----", start + len(title) + 10)
    return text[start:text.rindex("\n", start, end)]


def literal_blocks(section: str) -> list[tuple[str, str]]:
    """``(the paragraph before it, the block)`` for each ``::`` literal block."""
    found = []
    for match in re.finditer(r"([^\n]*(?:\n[^\n]+)*)::\n\n((?:    [^\n]*\n|\n)+)", section):
        block = "\n".join(line[4:] for line in match[2].splitlines()).strip("\n") + "\n"
        found.append((match[1], block))
    return found


def test_the_readme_first_machine_runs_as_written(tmp_path: Path) -> None:
    blocks = literal_blocks(readme_section("A first machine"))
    files = {re.search(r"``([\w.]+)``", intro)[1]: block for intro, block in blocks[:2]}
    assert set(files) == {"fsm.yaml", "signup_actions.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    transcript = blocks[2][1].splitlines()
    commands = [line[2:] for line in transcript if line.startswith("$ ")]
    expected = {line[2:]: transcript[i + 1] for i, line in enumerate(transcript[:-1])
                if line.startswith("$ ") and not transcript[i + 1].startswith("$ ")}
    script = [f'fsm() {{ "{sys.executable}" -m fsm "$@"; }}', "set -eo pipefail"]
    for number, command in enumerate(commands):
        script += [f"echo '@@ {number}'", command]
    script += [f"echo '@@ {len(commands)}'", 'echo "$ID"']
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == OK, f"{done.stdout}\n{done.stderr}"
    *outputs, cid = re.split(r"^@@ \d+\n", done.stdout, flags=re.MULTILINE)[1:]
    cid = cid.strip()
    said = dict(zip(commands, outputs, strict=True))
    for command, line in expected.items():
        assert said[command].splitlines() == [line], (command, said[command])
    assert said["fsm send $ID VERIFY"] == f"{cid}: done in state verified after 3 steps\n"
    assert "status: done" in said["fsm status $ID"] and "state: verified" in said["fsm status $ID"]
    assert len(said["fsm history $ID"].splitlines()) == 3
    assert (tmp_path / "outbox" / f"{cid}.txt").read_text().startswith("To: ada@example.com\n")
