"""What ``fsm`` exits with, and the one line it says, when something is wrong.

0 success, 1 a runtime failure, 2 bad input. Bad input is always exactly one line on
stderr, starting ``fsm COMMAND:``, naming the input (the flag, the environment variable,
the settings file's line and key) with its value, and saying what is accepted. Every test
runs real ``python -m fsm`` processes in its own ``tmp_path`` on a sqlite store there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

OK, FAILED, BAD_INPUT = 0, 1, 2
ACCEPTED_STORES = ("a store is memory://, sqlite:///REL/PATH or sqlite:////ABS/PATH, redis://[:PASSWORD@]HOST:PORT/DB, "
                   "rediss://[:PASSWORD@]HOST:PORT/DB, memcached://HOST:PORT or "
                   "arn:aws:dynamodb:REGION:ACCOUNT:table/NAME")

MACHINES = """
machines:
  - name: signup
    max_retries: 1
    retry_base_delay: 0.01
    retry_max_delay: 0.01
    states:
      - {name: mailing, initial: true, do_action: exit_codes_acts.Mail, transitions: [{event: sent, target: waiting}]}
      - {name: waiting, transitions: [{event: VERIFY, target: verified}]}
      - {name: verified, final: true}
  - name: broken
    max_retries: 1
    retry_base_delay: 0.01
    retry_max_delay: 0.01
    states:
      - {name: mailing, initial: true, do_action: exit_codes_acts.Broken, transitions: [{event: sent, target: done}]}
      - {name: done, final: true}
"""
ACTIONS = """
from fsm import Action


class Mail(Action):
    def execute(self, context, obj):
        return "sent"


class Broken(Action):
    def execute(self, context, obj):
        raise RuntimeError("smtp down")
"""


class Fsm:
    """``python -m fsm`` in one folder, with no ``FSM_*`` variable but those given."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.store = f"sqlite:///{folder / 'x.sqlite3'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FSM_")}

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fsm", *args], cwd=self.folder, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=60, check=False)

    def on_store(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self(*args, "--store", self.store, env=env)


@pytest.fixture
def fsm(tmp_path: Path) -> Fsm:
    (tmp_path / "fsm.yaml").write_text(MACHINES.lstrip(), encoding="utf-8")
    (tmp_path / "exit_codes_acts.py").write_text(ACTIONS, encoding="utf-8")
    return Fsm(tmp_path)


def one_bad_input_line(done: subprocess.CompletedProcess[str], command: str) -> str:
    """The single stderr line of a bad-input exit, checked for its shape."""
    assert done.returncode == BAD_INPUT, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"fsm {command}: "), lines[0]
    assert done.stdout == ""
    return lines[0]


# -- store URLs: flag, environment, settings file ---------------------------------------------


@pytest.mark.parametrize("url, problem", [
    ("memcached://127.0.0.1:notaport", "port 'notaport' is not a number from 1 to 65535"),
    ("memcached://127.0.0.1:99999", "port '99999' is not a number from 1 to 65535"),
    ("redis://127.0.0.1:0/0", "port '0' is not a number from 1 to 65535"),
    ("mongodb://127.0.0.1", "unknown scheme mongodb://"),
    ("memcache://127.0.0.1:11211", "unknown scheme memcache:// (did you mean memcached://127.0.0.1:11211?)"),
    ("sqlite://relative.db", "(did you mean sqlite:///relative.db?)"),
    ("", "the value is empty"),
])
def test_a_bad_store_flag_is_one_line_naming_it(fsm: Fsm, url: str, problem: str) -> None:
    line = one_bad_input_line(fsm("status", "abc", "--store", url), "status")
    assert line.startswith(f"fsm status: --store {url!r}: ")
    assert problem in line and line.endswith(ACCEPTED_STORES)


def test_the_environment_variable_gets_the_same_message(fsm: Fsm) -> None:
    line = one_bad_input_line(fsm("status", "abc", env={"FSM_STORE": "memcache://127.0.0.1:11211"}), "status")
    assert line.startswith("fsm status: environment variable FSM_STORE 'memcache://127.0.0.1:11211': unknown scheme")
    assert "did you mean memcached://" in line and line.endswith(ACCEPTED_STORES)


def test_a_settings_file_gets_the_same_message_at_its_line(fsm: Fsm) -> None:
    (fsm.folder / "settings.yaml").write_text("lease_timeout: 900\nstore: sqlite://relative.db\n", encoding="utf-8")
    line = one_bad_input_line(fsm("status", "abc", "--settings", "settings.yaml"), "status")
    assert line.startswith("fsm status: settings.yaml:2: settings 'store' 'sqlite://relative.db': a sqlite URL")
    assert line.endswith(ACCEPTED_STORES)


def test_a_stream_of_the_wrong_kind_is_refused_by_validate(fsm: Fsm) -> None:
    config = fsm.folder / "fsm.yaml"
    config.write_text("settings:\n  stream: redis://127.0.0.1:6379/0\n" + config.read_text(), encoding="utf-8")
    line = one_bad_input_line(fsm("validate", "fsm.yaml"), "validate")
    assert "settings 'stream' 'redis://127.0.0.1:6379/0': a redis:// URL cannot be a stream; a stream is" in line


def test_a_worker_source_that_is_not_a_pollable_arn(fsm: Fsm) -> None:
    line = one_bad_input_line(fsm.on_store("worker", "--source", "sqs://orders", "--idle-exit", "0"), "worker")
    assert line.startswith("fsm worker: --source 'sqs://orders': sqs is named by an ARN")
    assert line.endswith("a source is arn:aws:sqs:REGION:ACCOUNT:QUEUE, arn:aws:kinesis:REGION:ACCOUNT:stream/NAME "
                         "or arn:aws:dynamodb:REGION:ACCOUNT:table/NAME")


# -- JSON and ids -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ['{"x": NaN}', '{"x": -Infinity}'])
def test_nan_and_infinity_are_not_json(fsm: Fsm, text: str) -> None:
    line = one_bad_input_line(fsm.on_store("start", "--machine", "signup", "--context", text), "start")
    assert line.startswith("fsm start: --context is not valid JSON: ")
    assert "is not JSON, which has no NaN or Infinity" in line and repr(text) in line


@pytest.mark.parametrize("args, named", [
    (["start", "--machine", "signup", "--correlation-id", ""], "--correlation-id ''"),
    (["status", ""], "ID ''"),
    (["send", "", "VERIFY"], "ID ''"),
    (["send", "abc", ""], "EVENT is empty"),
    (["send", "abc", "VERIFY", "--event-id", ""], "--event-id is empty"),
    (["cancel", ""], "ID ''"),
    (["status", "abc", "--settings", ""], "--settings is empty"),
    (["status", "abc", "--config", ""], "--config is empty"),
    (["validate", ""], "FILE is empty"),
])
def test_empty_ids_and_paths_are_bad_input(fsm: Fsm, args: list[str], named: str) -> None:
    line = one_bad_input_line(fsm(*args), args[0])
    assert line.startswith(f"fsm {args[0]}: {named}")
    assert not (fsm.folder / ".fsm").exists()  # refused before any store was opened


def test_usage_mistakes_are_one_line_too(fsm: Fsm) -> None:
    line = one_bad_input_line(fsm("run"), "run")
    assert line == "fsm run: the following arguments are required: FILE (see `fsm run --help`)"
    line = one_bad_input_line(fsm.on_store("worker", "--idle-exit", "nan"), "worker")
    assert line == "fsm worker: --idle-exit nan must be a number of seconds, 0 or more"


def test_graph_errors_say_graph(fsm: Fsm) -> None:
    line = one_bad_input_line(fsm("graph", "fsm.yaml", "--machine", "nope"), "graph")
    assert line == "fsm graph: unknown machine 'nope'; defined: broken, signup"
    (fsm.folder / "bad.yaml").write_text("machines:\n  - name: m\n    states:\n\t- name: a\n", encoding="utf-8")
    line = one_bad_input_line(fsm("graph", "bad.yaml"), "graph")
    assert line.startswith("fsm graph: bad.yaml:4: YAML syntax error: ")


# -- runtime failures, per command --------------------------------------------------------------


def test_start_exits_1_like_run_when_the_embedded_run_fails_the_instance(fsm: Fsm) -> None:
    started = fsm.on_store("start", "--machine", "broken", "--correlation-id", "job-1")
    assert (started.returncode, started.stdout) == (FAILED, "job-1\n")
    assert started.stderr.splitlines()[-1] == ("fsm start: instance job-1: failed before its first state after 0 "
                                               "steps (RuntimeError: smtp down)")
    ran = fsm("run", "fsm.yaml", "--machine", "broken", "--store", fsm.store)
    assert ran.returncode == FAILED and ran.stderr.splitlines()[-1].startswith("fsm run: instance ")


def test_status_and_history_of_a_failed_instance_exit_0(fsm: Fsm) -> None:
    assert fsm.on_store("start", "--machine", "broken", "--correlation-id", "job-1").returncode == FAILED
    status = fsm.on_store("status", "job-1")
    assert (status.returncode, status.stderr) == (OK, "") and "status: failed" in status.stdout
    assert fsm.on_store("history", "job-1").returncode == OK
    assert fsm.on_store("status", "job-2").returncode == FAILED  # unknown: the query failed


def test_a_healthy_start_exits_0(fsm: Fsm) -> None:
    started = fsm.on_store("start", "--machine", "signup", "--correlation-id", "ada")
    assert (started.returncode, started.stdout, started.stderr) == (OK, "ada\n", "")


# -- help ----------------------------------------------------------------------------------------


def test_every_argument_of_every_command_has_help() -> None:
    from fsm.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) >= {"validate", "graph", "run", "start", "send", "status", "history", "cancel",
                             "retry", "resume", "worker", "create-resources"}
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"fsm {name} {'/'.join(action.option_strings) or action.dest} has no help text"


def test_graph_help_explains_machine_and_format(fsm: Fsm) -> None:
    shown = " ".join(fsm("graph", "--help").stdout.split())
    assert "--machine NAME draw only this machine" in shown
    assert "Graphviz dot (default) or a Mermaid state diagram" in shown
