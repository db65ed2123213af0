"""Input written to hurt: the findings of the "hostile input" issue, each with a time bound.

YAML that expands (aliases) or nests without end is refused in milliseconds at a line;
numbers that would leave an instance waiting forever are refused at load; ``import:``
reads only inside the allowed folders and no message shows what an imported file holds;
a dead-lettered payload is logged as its size and hash, never its content.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from protocol_kit import HandBus

from config.loader import load_file, load_text
from config.settings import Settings, load_settings
from config.yamlsource import MAX_DEPTH
from fsm.app import App
from fsm.app.intake import handle_event
from fsm.app.wiring import build
from fsm.errors import InvalidDefinition
from fsm.logs import redact

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 1.0     # every refusal below must come faster than this...
MEGABYTES = 50.0  # ...and allocate less than this at its peak
MACHINE = """
  - name: m
    states:
      - name: a
        initial: true
        transitions: [{event: go, target: b}]
      - name: b
        final: true
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def measured(load: Callable[[], Any]) -> tuple[list[str], float, float]:
    """The problems ``load`` raised, its seconds and its peak allocation in megabytes."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        load()
        found: list[str] = []
    except InvalidDefinition as exc:
        found = exc.problems
    finally:
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    return found, seconds, peak


def bomb_anchors(levels: int, width: int, indent: str = "") -> str:
    """The "billion laughs": each anchor a list of ``width`` aliases of the one before;
    the last, ``*b{levels - 1}``, stands for ``width ** levels`` strings."""
    lines = [f"{indent}b0: &b0 [{','.join(['lol'] * width)}]"]
    lines += [f"{indent}b{n}: &b{n} [{','.join([f'*b{n - 1}'] * width)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


# ---- alias bombs ---------------------------------------------------------------------------

BOMBS = {  # where the expanded value would have been walked: an error message, settings, params
    "machines entry": bomb_anchors(9, 9) + "machines: *b8\n",
    "state value": bomb_anchors(9, 9) + "machines:\n  - {name: m, states: *b8}\n",
    "settings": "settings:\n" + bomb_anchors(9, 9, "  ") + "machines: []\n",
    "action params": "machines:\n  - name: m\n    states:\n      - name: a\n        initial: true\n"
                     "        do_action: {class: x.Y, params: {p: &p0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]}}\n"
                     + "".join(f"        d{n}: &p{n} [{','.join([f'*p{n - 1}'] * 9)}]\n" for n in range(1, 9)),
    "whole document": "".join(f"- &x{n} [{','.join([f'*x{n - 1}'] * 9) if n else 'a,a,a,a,a,a,a,a,a'}]\n"
                              for n in range(10)),
    "wider (the MemoryError one)": bomb_anchors(10, 12) + "machines: *b9\n",
}


@pytest.mark.parametrize("text", BOMBS.values(), ids=BOMBS.keys())
def test_an_alias_bomb_is_refused_at_its_line_fast_and_small(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "fsm.yaml", text)
    found, seconds, peak = measured(lambda: load_file(path, environ={}))
    assert len(found) == 1 and found[0].startswith(f"{path}:"), found
    assert "YAML error: aliases expand this value to more than 100,000 values" in found[0]
    assert int(found[0].split(":")[1]) > 1  # the line of an anchor that multiplies, not a default
    assert seconds < SECONDS and peak < MEGABYTES, (len(text), seconds, peak)


def test_a_bomb_in_a_settings_file_is_refused_the_same_way(tmp_path: Path) -> None:
    path = write(tmp_path, "settings.yaml", "settings:\n" + bomb_anchors(9, 9, "  ") + "  store: *b8\n")
    with pytest.raises(InvalidDefinition) as caught:
        started = time.perf_counter()
        load_settings(settings_file=str(path), environ={})
    assert time.perf_counter() - started < SECONDS
    assert str(caught.value).startswith(f"{path}:")
    assert "aliases expand this value to more than 100,000 values" in str(caught.value)


def test_a_bomb_run_through_the_cli_stays_small(tmp_path: Path) -> None:
    """In a process of its own, so its resident memory is measured, not only Python's allocations."""
    path = write(tmp_path, "fsm.yaml", BOMBS["wider (the MemoryError one)"])
    probe = textwrap.dedent("""
        import json, resource, sys, time
        from config.loader import load_file
        from fsm.errors import InvalidDefinition
        before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
        try:
            load_file(sys.argv[1], environ={})
        except InvalidDefinition as exc:
            problems = exc.problems
        seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"problems": problems, "seconds": seconds, "grew_mb": (after - before) / 1024}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60,
                            env=env, check=False)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["problems"][0].startswith(f"{path}:") and "aliases expand" in outcome["problems"][0]
    assert outcome["seconds"] < SECONDS and outcome["grew_mb"] < MEGABYTES, outcome
    cli = subprocess.run([sys.executable, "-m", "fsm", "validate", str(path)], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path, check=False)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr and f"{path}:" in cli.stderr


def test_anchors_and_merge_keys_as_aws_lambda_fsm_files_use_them_still_load(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: orders
        max_retries: &retries 3
        retry_base_delay: &base 0.5
        states:
          - &start {name: start, initial: true, transitions: [{event: go, target: waiting}]}
          - &waiting
            name: waiting
            timeout: 60
            timeout_event: late
            transitions:
              - {event: paid, target: done}
              - {event: late, target: done}
          - &done {name: done, final: true}
      - name: refunds
        max_retries: *retries
        retry_base_delay: *base
        states:
          - *start
          - <<: *waiting
            timeout: 30
          - *done
    """)
    machines = load_file(path, environ={}).machines
    assert (machines["orders"].states["waiting"].timeout, machines["refunds"].states["waiting"].timeout) == (60, 30)
    assert set(machines["refunds"].states["waiting"].transitions) == {"paid", "late"}
    assert (machines["refunds"].max_retries, machines["refunds"].retry_base_delay) == (3, 0.5)


def test_a_deep_but_reasonable_params_mapping_loads() -> None:
    depth = MAX_DEPTH - 12  # what the machine, state and action around the params take
    params = "{k: " * depth + "1" + "}" * depth
    text = "machines:" + MACHINE.replace("initial: true", f"initial: true\n        do_action: "
                                         f"{{class: fsm.Action, params: {params}}}")
    with pytest.raises(InvalidDefinition, match="does not implement execute"):  # got past the YAML
        load_text(text, environ={})


# ---- nesting -------------------------------------------------------------------------------

NESTED = {
    "flow sequences": "[" * 5000 + "]" * 5000,
    "flow mappings": "{a: " * 5000 + "1" + "}" * 5000,
    "block sequences": "- " * 5000 + "x",
    "block mappings": "".join(" " * n + f"k{n}:\n" for n in range(300)) + " " * 300 + "1\n",  # 3x the limit
}


@pytest.mark.parametrize("value", NESTED.values(), ids=NESTED.keys())
def test_deep_nesting_is_a_located_error_not_a_traceback(tmp_path: Path, value: str) -> None:
    whole = write(tmp_path, "whole.yaml", value)
    inside = write(tmp_path, "inside.yaml", "machines:\n  - name: m\n    states:\n" +
                   textwrap.indent(value, "      ") + "\n")
    for path in (whole, inside):
        found, seconds, peak = measured(lambda: load_file(path, environ={}))  # noqa: B023 - called at once
        assert len(found) == 1 and found[0].startswith(f"{path}:"), found
        assert found[0].endswith(f"YAML error: nested more than {MAX_DEPTH} levels deep")
        assert seconds < SECONDS and peak < MEGABYTES, (seconds, peak)


def test_a_deep_settings_file_is_a_located_error(tmp_path: Path) -> None:
    path = write(tmp_path, "settings.yaml", "store: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(InvalidDefinition, match=rf"^{path}:1: .*nested more than {MAX_DEPTH} levels deep"):
        load_settings(settings_file=str(path), environ={})


@pytest.mark.parametrize("text, message", [
    ("\n".join(["a0: &a0 [1]"] + [f"a{n}: &a{n} [*a{n - 1}]" for n in range(1, 300)]),
     f"aliases nest this value more than {MAX_DEPTH} levels deep"),
    ("machines: &loop [*loop]", "an alias refers to a value that contains it"),
    ("machines:\n  - name: m\n    version: 1" + "0" * 5000, "an integer longer than 1000 characters"),
    ("machines:\n  - name: m\n    version: 0x" + "f" * 900, "an integer of more than 1000 digits"),
], ids=["alias chain", "recursive alias", "long integer", "long hex integer"])
def test_other_shapes_built_to_hurt_are_located_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "fsm.yaml", text)
    found, seconds, _ = measured(lambda: load_file(path, environ={}))
    assert len(found) == 1 and found[0].startswith(f"{path}:") and found[0].endswith(message), found
    assert seconds < SECONDS


# ---- numbers -------------------------------------------------------------------------------

DELAYS = "the range is 0 to 31536000 seconds (a year)"
TIMEOUTS = "the range is more than 0, up to 31536000 seconds (a year)"


@pytest.mark.parametrize("line, message", [
    ("retry_base_delay: .nan", f"'retry_base_delay' must be a finite number, got nan; {DELAYS}"),
    ("retry_base_delay: -.inf", f"'retry_base_delay' must be a finite number, got -inf; {DELAYS}"),
    ("retry_max_delay: .inf", f"'retry_max_delay' must be a finite number, got inf; {DELAYS}"),
    ("retry_max_delay: -0.5", f"'retry_max_delay' must be 0 or more, got -0.5; {DELAYS}"),
    ("retry_max_delay: 1.0e+300", f"'retry_max_delay' must be at most 31536000 seconds, got 1e+300; {DELAYS}"),
    ("max_retries: 1001", "'max_retries' must be at most 1000, got 1001; the range is 0 to 1000"),
    ("max_retries: 1" + "0" * 40, ("'max_retries' must be at most 1000, got a number of 41 digits; "
                                  "the range is 0 to 1000")),
])
def test_machine_numbers_must_be_finite_and_in_range(line: str, message: str) -> None:
    text = "machines:" + MACHINE.replace("    states:", f"    {line}\n    states:")
    with pytest.raises(InvalidDefinition) as caught:
        load_text(text, environ={})
    assert caught.value.problems == [f"<string>:3: machine 'm': {message}"]


@pytest.mark.parametrize("value, shown, wrong", [
    (".nan", "nan", "a finite number"), (".inf", "inf", "a finite number"), ("-.inf", "-inf", "a finite number"),
    ("-1", "-1", "more than 0 seconds"), ("31536001", "31536001", "at most 31536000 seconds"),
])
def test_a_timeout_must_be_finite_and_in_range(value: str, shown: str, wrong: str) -> None:
    state = f"initial: true\n        timeout: {value}\n        timeout_event: go"
    with pytest.raises(InvalidDefinition) as caught:
        load_text("machines:" + MACHINE.replace("initial: true", state), environ={})
    assert caught.value.problems == [(f"<string>:6: machine 'm', state 'a': 'timeout' must be {wrong}, "
                                     f"got {shown}; {TIMEOUTS}")]


def test_the_ends_of_each_range_are_accepted() -> None:
    text = "machines:" + MACHINE.replace("    states:", "    max_retries: 1000\n    retry_base_delay: 0\n"
                                         "    retry_max_delay: 31536000\n    states:").replace(
        "initial: true", "initial: true\n        timeout: 31536000\n        timeout_event: go")
    machine = load_text(text, environ={}).machines["m"]
    assert (machine.max_retries, machine.retry_max_delay, machine.states["a"].timeout) == (1000, 31536000.0, 31536000)


# ---- imports -------------------------------------------------------------------------------

SECRET = "root:x:0:0:hunter2-SECRET-4111111111111111:/root:/bin/bash"


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder holding the machines file, a folder beside it with a secret,
    and the current directory elsewhere (so its fallback cannot reach either)."""
    write(tmp_path, "outside/secret.txt", SECRET + "\n")
    write(tmp_path, "outside/keys.yaml", f"machines:\n  - name: x\n    max_retries: '{SECRET}'\n"
                                         f"password: '{SECRET}'\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path


def only(found: list[str]) -> str:
    assert len(found) == 1, found
    assert SECRET not in found[0] and "hunter2" not in found[0]
    return found[0]


@pytest.mark.parametrize("name", ["{root}/outside/secret.txt", "../outside/secret.txt", "/etc/passwd"])
def test_an_import_outside_the_top_files_folder_is_not_read(layout: Path, name: str) -> None:
    path = write(layout, "project/fsm.yaml", f"machines:\n  - import: {name.format(root=layout)}\n")
    found, seconds, _ = measured(lambda: load_file(path, environ={}))
    message = only(found)
    assert message.startswith(f"{path}:2: import ") and "is outside the folders imports may read" in message
    assert f"{layout / 'project'} (the top file's)" in message and "`import_roots`" in message
    assert seconds < SECONDS


def test_a_symlink_inside_the_folder_is_followed_before_the_check(layout: Path) -> None:
    path = write(layout, "project/fsm.yaml", "machines:\n  - import: innocent.yaml\n")
    (layout / "project" / "innocent.yaml").symlink_to(layout / "outside" / "secret.txt")
    message = only(problems(path, environ={}))
    assert "innocent.yaml" in message and "outside the folders imports may read" in message


def test_the_current_directory_fallback_stays_inside_the_current_directory(layout: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """From the project's root it finds files there (aws-lambda-fsm's rule); it never
    makes a file outside both folders readable."""
    write(layout, "project/shared.yaml", "machines:" + MACHINE)
    path = write(layout, "project/conf/fsm.yaml", "machines:\n  - import: shared.yaml\n")
    monkeypatch.chdir(layout / "project")
    assert list(load_file(path, environ={}).machines) == ["m"]
    monkeypatch.chdir(layout / "outside")
    inner = write(layout, "project/conf/other.yaml", "machines:\n  - import: secret.txt\n")
    assert "not looked for" in only(problems(inner, environ={}))


def test_an_imported_files_content_is_never_in_a_message(layout: Path) -> None:
    """Allowed by `import_roots`, the files are read: their keys may be named, their
    values only described."""
    path = write(layout, "project/fsm.yaml", f"""
    settings:
      import_roots: [../outside]
    machines:
      - import: {layout}/outside/secret.txt
      - import: ../outside/keys.yaml
    """)
    found = problems(path, environ={})
    assert not any(SECRET in line or "hunter2" in line for line in found), found
    keys = layout / "project" / ".." / "outside" / "keys.yaml"  # named as the import wrote it
    assert found == [
        (f"{layout}/outside/secret.txt:1: the file must be a mapping with a `machines:` list; "
        f"got a string of {len(SECRET)} characters"),
        f"{keys}:2: machine 'x': missing required key 'states' (the machine's states)",
        (f"{keys}:3: machine 'x': 'max_retries' must be an integer, got a string of "
        f"{len(SECRET)} characters (retries of a failing transition before the instance fails; default 5, "
        "0 for none)"),
        f"{keys}:4: top level: unknown key 'password'; allowed: machines, settings",
    ]


def test_yaml_errors_in_an_imported_file_do_not_quote_it(layout: Path) -> None:
    write(layout, "project/tag.yaml", "!hunter2-tag-value x\n")
    (layout / "project" / "binary.yaml").write_bytes(b"machines: []\n\xff\xfe hunter2")
    path = write(layout, "project/fsm.yaml", "machines:\n  - import: tag.yaml\n  - import: binary.yaml\n")
    found = problems(path, environ={})
    assert not any("hunter2" in line or "xff" in line for line in found), found
    assert f"{path}:3: cannot read {str(layout / 'project' / 'binary.yaml')!r}: not UTF-8 text (at byte 13)" in found
    assert f"{layout / 'project' / 'tag.yaml'}:1: YAML error: could not determine a constructor for the tag " \
           f"({len('!hunter2-tag-value')} characters)" in found


@pytest.mark.parametrize("where", ["top file", "settings file", "environment"])
def test_import_roots_come_from_every_settings_layer(layout: Path, where: str) -> None:
    write(layout, "shared/common.yaml", "machines:" + MACHINE)
    roots = "[../shared]" if where == "top file" else "[]"
    path = write(layout, "project/fsm.yaml", f"settings:\n  import_roots: {roots}\n"
                                             "machines:\n  - import: ../shared/common.yaml\n")
    settings = write(layout, "project/settings.yaml", "import_roots: ../shared\n")  # relative to itself
    environ = {"FSM_IMPORT_ROOTS": str(layout / "shared")} if where == "environment" else {}
    settings_file = str(settings) if where == "settings file" else None
    assert list(load_file(path, settings_file=settings_file, environ=environ).machines) == ["m"]
    assert load_settings({"import_roots": ["../shared"]}, environ={}).import_roots == ["../shared"]


def test_the_highest_layer_naming_import_roots_wins(layout: Path) -> None:
    write(layout, "shared/common.yaml", "machines:" + MACHINE)
    path = write(layout, "project/fsm.yaml", "settings:\n  import_roots: [../shared]\n"
                                             "machines:\n  - import: ../shared/common.yaml\n")
    message = only(problems(path, environ={"FSM_IMPORT_ROOTS": str(layout / "outside")}))
    assert "outside the folders imports may read" in message and str(layout / "outside") in message


def test_a_bad_import_roots_value_is_reported_where_it_is_written(layout: Path) -> None:
    path = write(layout, "project/fsm.yaml", "settings:\n  import_roots: 42\nmachines:\n  - import: /etc/passwd\n")
    found = problems(path, environ={})
    assert found[0] == (f"{path}:4: import '/etc/passwd': cannot read settings `import_roots`: {path}:2: "
                        "settings 'import_roots' must be a folder or a list of folders")
    with pytest.raises(InvalidDefinition, match="must be a folder or a list of folders"):
        load_settings(environ={"FSM_IMPORT_ROOTS": ""}, import_roots=[3])  # a flag gets the same check


def problems(path: Path, **options: Any) -> list[str]:
    with pytest.raises(InvalidDefinition) as caught:
        load_file(path, **options)
    return caught.value.problems


# ---- logs ----------------------------------------------------------------------------------

CARD, API_KEY = "4111 1111 1111 1111", "sk_live_51HhostileApiKeyValue"
STEPPER = "machines:" + MACHINE


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """What the ``fsm`` logger writes, whatever another test configured it to do."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("fsm")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def app() -> App:
    definitions = load_text(STEPPER, environ={})
    settings = Settings(store=["memory://"])
    wiring = build(definitions.machines, settings, bus=HandBus())
    wiring.routes.dead_letter = HandBus()
    return App(definitions, settings, wiring)


def eventbridge(detail: Any, source: str = "lambda-fsm", detail_type: str = "lambda-fsm message") -> dict[str, Any]:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": source,
            "account": "123456789012", "time": "2024-01-01T00:00:00Z", "region": "us-east-1",
            "resources": [], "detail": detail}


def message(**fields: Any) -> dict[str, Any]:
    return {"machine": "m", "correlation_id": uuid.uuid4().hex, "kind": "start",
            "context": {"card": CARD, "api_key": API_KEY}, **fields}


POISON = {
    "a message for an unknown machine": eventbridge(message(machine="nope")),
    "a field the message format lacks": eventbridge({**message(), "payment": {"card": CARD, "api_key": API_KEY}}),
    "someone else's event": eventbridge({"card": CARD, "api_key": API_KEY}, "com.example.shop", "Order Paid"),
}


@pytest.mark.parametrize("event", POISON.values(), ids=POISON.keys())
def test_a_dead_lettered_payload_is_logged_as_size_and_hash(app: App, log_lines: list[str],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             event: dict[str, Any]) -> None:
    monkeypatch.delenv("FSM_LOG_PAYLOADS", raising=False)
    handle_event(app, event)
    logged = [json.loads(line) for line in log_lines if "dead-lettered" in line]
    assert len(logged) == 1, log_lines
    assert CARD not in "\n".join(log_lines) and API_KEY not in "\n".join(log_lines)
    assert CARD.replace(" ", "")[:6] not in "\n".join(log_lines)
    kept = app.wiring.routes.dead_letter.sent[0].body  # type: ignore[union-attr]
    assert CARD in kept  # the dead-letter copy keeps everything: only the log is redacted
    assert logged[0]["payload"] == {"bytes": len(kept.encode()), "sha256": hashlib.sha256(kept.encode()).hexdigest()[:12]}


def test_a_wrong_typed_field_does_not_leak_through_the_reason(app: App, log_lines: list[str]) -> None:
    handle_event(app, eventbridge(message(data=f"{CARD} {API_KEY}")))
    assert CARD not in "\n".join(log_lines) and API_KEY not in "\n".join(log_lines)


def test_payloads_are_logged_only_when_a_debug_setting_asks() -> None:
    body = json.dumps({"card": CARD, "api_key": API_KEY})
    assert redact(body, environ={}) == {"bytes": len(body), "sha256": hashlib.sha256(body.encode()).hexdigest()[:12]}
    assert redact({"card": CARD}, environ={"FSM_LOG_PAYLOADS": "0"}).keys() == {"bytes", "sha256"}
    debug = redact(body, environ={"FSM_LOG_PAYLOADS": "1"})
    assert debug["content"] == body and debug["truncated"] is False
    assert redact(b"\xff" * 5000, environ={"FSM_LOG_PAYLOADS": "1"})["truncated"] is True
