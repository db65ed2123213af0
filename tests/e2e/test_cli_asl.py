"""The command line for machines that start from any input and end with an output (ASL):
``--input``, ``--machine`` left out for a file with one machine, the status's ``output``,
``error``, ``cause``, ``parent`` and ``children`` (``fsm status --children``), and an ASL
``.json`` file given as FILE.

Commands run in this process (``fsm.cli.main``) on an sqlite store in the test's folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsm.cli import UsageError, _machine_name, main

OK, FAILED, BAD_INPUT = 0, 1, 2

ONE_MACHINE = """
machines:
  - name: greet
    max_retries: 0
    states:
      - {name: hello, initial: true, do_action: cli_asl_acts.Greet, transitions: [{event: greeted, target: bye}]}
      - {name: bye, final: true}
"""
TWO_MACHINES = ONE_MACHINE + """
  - name: broken
    max_retries: 0
    states:
      - {name: trying, initial: true, do_action: cli_asl_acts.Broken, transitions: [{event: ok, target: fine}]}
      - {name: fine, final: true}
"""
ACTIONS = """
from fsm import Action


class Greet(Action):
    def execute(self, context, obj):
        context["greeting"] = "hello " + str(context.get("name", "nobody"))
        return "greeted"


class Broken(Action):
    def execute(self, context, obj):
        raise RuntimeError("smtp down")
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "one.yaml").write_text(ONE_MACHINE, encoding="utf-8")
    (tmp_path / "two.yaml").write_text(TWO_MACHINES, encoding="utf-8")
    (tmp_path / "cli_asl_acts.py").write_text(ACTIONS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("FSM_")]:
        monkeypatch.delenv(name)
    yield tmp_path


STORE = ("--store", "sqlite:///fsm.db")


def fsm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main([*args, *(STORE if args[0] not in ("validate", "graph", "export") else ())])
    except SystemExit as exc:     # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def bad_input(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = fsm(capsys, *args)
    assert (code, out) == (BAD_INPUT, "") and len(err.splitlines()) == 1, (code, out, err)
    return err.strip()


# ---- --input and --machine --------------------------------------------------------------


def test_input_object_is_the_first_context_and_the_one_machine_needs_no_flag(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = fsm(capsys, "run", "one.yaml", "--input", '{"name": "Ada"}', "--json")
    status = json.loads(out)
    assert (code, err) == (OK, "")
    assert (status["machine"], status["status"], status["context"]) == ("greet", "done",
                                                                         {"name": "Ada", "greeting": "hello Ada"})
    assert (status["error"], status["cause"], status["parent"], status["children"]) == (None, None, None, [])
    assert "output" in status


def test_start_takes_input_and_context_alike(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--input", "--context"):
        code, out, _ = fsm(capsys, "start", "--config", "one.yaml", flag, '{"name": "Bo"}')
        assert code == OK
        _, shown, _ = fsm(capsys, "status", out.strip(), "--config", "one.yaml", "--json")
        assert json.loads(shown)["context"] == {"name": "Bo", "greeting": "hello Bo"}


@pytest.mark.parametrize("flags, message", [
    (["--input", "[1, 2]"], ("fsm run: --input: machine 'greet' starts from a JSON object (its first context), "
                             "got a JSON array")),
    (["--input", '"text"'], ("fsm run: --input: machine 'greet' starts from a JSON object (its first context), "
                             "got a JSON string")),
    (["--input", "{nope"], "fsm run: --input is not valid JSON: "),
    (["--input", "NaN"], "fsm run: --input is not valid JSON: NaN is not JSON"),
    (["--input", "{}", "--context", "{}"], "fsm run: give --input or --context, not both"),
    (["--context", "[1]"], "fsm run: --context must be a JSON object"),
])
def test_bad_input_is_one_line_and_exit_2(folder: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
                                          message: str) -> None:
    assert bad_input(capsys, "run", "one.yaml", *flags).startswith(message)


def test_several_machines_need_machine(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = bad_input(capsys, "run", "two.yaml")
    assert line == ("fsm run: give the machine to start with --machine NAME: two.yaml does not define exactly one "
                    "machine (it defines broken, greet)")
    assert bad_input(capsys, "start", "--config", "two.yaml").startswith("fsm start: give the machine to start")
    code, out, _ = fsm(capsys, "run", "two.yaml", "--machine", "greet", "--json")
    assert code == OK and json.loads(out)["status"] == "done"


def test_generated_child_machines_do_not_count() -> None:
    import argparse

    args = argparse.Namespace(machine=None, file="wf.json")
    assert _machine_name(args, {"main": 1, "main/Map 1": 2, "main/Branch 0": 3}) == "main"
    with pytest.raises(UsageError, match=r"it defines a, b\)"):
        _machine_name(args, {"a": 1, "b": 2, "a/x": 3})
    with pytest.raises(UsageError, match="it defines none that can be started"):
        _machine_name(args, {"a/x": 3})


def test_a_start_hook_makes_the_first_context_of_any_input(folder: Path) -> None:
    """ASL machines set ``Machine.start``; the client hands it the input as given."""
    from config.loader import load_file
    from config.settings import load_settings
    from fsm.app.client import Client

    definitions = load_file("one.yaml")
    machine = definitions.machines["greet"]
    definitions.machines["greet"] = dataclasses.replace(machine, start=lambda value: {"name": value})
    client = Client(settings=load_settings({"store": "sqlite:///fsm.db"}, environ={}), definitions=definitions)
    try:
        for value, greeting in (([1, 2], "hello [1, 2]"), ("Ada", "hello Ada"), (None, "hello None"),
                                ({}, "hello {}")):
            cid = client.start("greet", input=value)
            assert client.status(cid)["context"] == {"name": value, "greeting": greeting}
        assert client.status(client.start("greet"))["context"]["name"] == {}      # no input: {}
        with pytest.raises(ValueError):
            client.start("greet", {"a": 1}, input=[1])
    finally:
        client.wiring.close()


# ---- the status: error, cause, output, parent, children ---------------------------------


def test_a_failed_instance_shows_error_and_cause(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = fsm(capsys, "run", "two.yaml", "--machine", "broken", "--json")
    status = json.loads(out)
    assert code == FAILED and status["status"] == "failed"
    assert (status["error"], status["cause"], status["output"]) == ("RuntimeError", "smtp down", None)
    code, out, _ = fsm(capsys, "status", status["correlation_id"], "--config", "two.yaml")
    shown = dict(line.split(": ", 1) for line in out.splitlines())
    assert code == OK and (shown["         error"], shown["         cause"]) == ("RuntimeError", "smtp down")
    assert (shown["        output"], shown["        parent"], shown["      children"]) == ("-", "-", "-")


def test_status_view_reads_error_cause_output_and_parent_from_the_record() -> None:
    from fsm.app.client import status_view

    base = {"id": "c", "machine": "m", "state": "s", "step": 3, "retries": 0, "context": {}}
    failed = status_view({**base, "status": "failed", "parent": {"id": "p-1", "state": "fan", "index": 2},
                          "last_error": {"message": "Payment.Declined: card expired", "error": "Payment.Declined",
                                         "cause": "the card expired in May"}})
    assert (failed["error"], failed["cause"], failed["parent"]) == ("Payment.Declined", "the card expired in May",
                                                                    "p-1")
    assert failed["last_error"] == "Payment.Declined: card expired"
    plain = status_view({**base, "status": "failed", "last_error": {"message": "something broke"}})
    assert (plain["error"], plain["cause"]) == (None, "something broke")
    done = status_view({**base, "status": "done", "output": [1, {"a": None}], "last_error": None})
    assert (done["output"], done["error"], done["cause"], done["parent"]) == ([1, {"a": None}], None, None, None)
    running = status_view({**base, "status": "running", "output": "stale"})
    assert running["output"] is None


def test_status_children_lists_each_child(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    join = pytest.importorskip("fsm.join")
    from sources.sqlite import SqliteStore

    prefix = join.prefix("mom", 2, 0)
    kids = [join.child_id(prefix, index) for index in range(2)]
    store = SqliteStore("sqlite:///fsm.db")
    common = {"machine": "greet", "version": "", "retries": 0, "fence": 0, "lease_owner": "", "lease_expires": 0,
              "updated_at": 1.7e9, "created_at": 1.7e9}
    assert store.swap("mom", None, {**common, "id": "mom", "status": "done", "state": "bye", "step": 2,
                                    "context": {}, "children": [{"state": "hello", "prefix": prefix,
                                                                 "count": 2}]}).ok
    assert store.swap(kids[0], None, {**common, "id": kids[0], "status": "done", "state": "bye", "step": 2,
                                      "context": {}, "parent": {"id": "mom", "state": "hello", "index": 0}}).ok
    store.close()
    code, out, err = fsm(capsys, "status", "mom", "--config", "one.yaml", "--children")
    lines = out.splitlines()
    assert (code, err) == (OK, "")
    assert f"      children: {kids[0]}, {kids[1]}" in lines
    table = lines[-3:]
    assert table[0].split() == ["CHILD", "MACHINE", "STATUS", "STATE"]
    assert table[1].split() == [kids[0], "greet", "done", "bye"]
    assert table[2].split() == [kids[1], "-", "missing", "-"]
    code, out, _ = fsm(capsys, "status", "mom", "--config", "one.yaml", "--children", "--json")
    status = json.loads(out)
    assert status["children"] == kids
    assert [(c["correlation_id"], c["status"]) for c in status["children_status"]] == [(kids[0], "done"),
                                                                                      (kids[1], "missing")]
    assert status["children_status"][0]["parent"] == "mom"
    code, out, _ = fsm(capsys, "status", "mom", "--config", "one.yaml", "--json")
    assert "children_status" not in json.loads(out)


# ---- an ASL file as FILE ------------------------------------------------------------------

PASS_THROUGH = {"Comment": "echo", "StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}}


def asl_loads(folder: Path) -> Any:
    """The loader's ASL support (another module): skip until it is there."""
    pytest.importorskip("config.asl")
    (folder / "echo.json").write_text(json.dumps(PASS_THROUGH), encoding="utf-8")
    return folder / "echo.json"


def test_an_asl_file_validates_graphs_and_runs_with_any_input(folder: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    asl_loads(folder)
    code, out, err = fsm(capsys, "validate", "echo.json")
    assert (code, err) == (OK, "") and out.strip()
    code, out, err = fsm(capsys, "graph", "echo.json")
    assert (code, err) == (OK, "") and out.strip()
    for value in ({"a": 1}, [1, 2], "text", 7, None):
        code, out, err = fsm(capsys, "run", "echo.json", "--input", json.dumps(value), "--json")
        status = json.loads(out)
        assert (code, err, status["status"], status["output"]) == (OK, "", "done", value), (value, out, err)
    code, out, _ = fsm(capsys, "start", "--config", "echo.json", "--input", "[3]")
    assert code == OK
    _, shown, _ = fsm(capsys, "status", out.strip(), "--config", "echo.json", "--json")
    assert json.loads(shown)["output"] == [3]


def test_an_asl_failure_shows_its_error_and_cause(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("config.asl")
    boom = {"StartAt": "Boom", "States": {"Boom": {"Type": "Fail", "Error": "Payment.Declined",
                                                   "Cause": "card expired"}}}
    (folder / "boom.json").write_text(json.dumps(boom), encoding="utf-8")
    code, out, _ = fsm(capsys, "run", "boom.json", "--input", '"x"', "--json")
    status = json.loads(out)
    assert (code, status["status"], status["error"], status["cause"], status["output"]) == (
        FAILED, "failed", "Payment.Declined", "card expired", None)


def test_validate_prints_a_choice_without_default_as_a_located_warning(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    flow = tmp_path / "pick.asl.json"
    flow.write_text(json.dumps({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsPresent": True, "Next": "D"}]},
        "D": {"Type": "Succeed"}}}))
    code, out, err = fsm(capsys, "validate", str(flow))
    assert code == 0 and out.startswith("pick: ")
    assert err.strip() == (f"{flow}:1: warning: asl machine 'pick', state 'C': no `Default`: when no rule matches, "
                           "the execution fails with States.NoChoiceMatched")


def test_json_flags_read_file_urls_as_the_aws_cli_does(tmp_path: Path, folder: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    given = tmp_path / "input.json"
    given.write_text(json.dumps({"name": "Ada"}))
    code, out, _ = fsm(capsys, "run", "one.yaml", "--input", f"file://{given}", "--json")
    assert code == 0 and json.loads(out.splitlines()[-1])["context"]["greeting"] == "hello Ada"
    line = bad_input(capsys, "run", "one.yaml", "--input", f"file://{tmp_path}/missing.json")
    assert "cannot read" in line and "missing.json" in line and "No such file" in line
