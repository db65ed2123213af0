"""The YAML loader: an aws-lambda-fsm fsm.yaml loads, and every mistake is reported as
``FILE:LINE: message`` naming the machine, state, key or event.

Each bad file below marks the line the problem must be reported at with ``#!``, and
produces exactly that one problem: no crash, and no cascade of follow-on messages.
"""

from __future__ import annotations

import importlib
import textwrap
import uuid
from pathlib import Path

import pytest

from config.loader import Definitions, load_file, load_text
from fsm import Action, InvalidDefinition

ACTIONS = '''
from fsm import Action


class Record(Action):
    def execute(self, context, obj):
        obj.setdefault("calls", []).append(self.params.get("tag", self.name))
        return self.params.get("event")


class NotAnAction:
    def execute(self, context, obj):
        return None


class NoExecute(Action):
    pass


def a_function(context, obj):
    return None
'''


@pytest.fixture
def acts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a fresh action module in tmp_path (unique, so sys.modules never clashes)."""
    name = f"acts_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(ACTIONS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return name


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def marked_line(path: Path) -> int:
    """The 1-based line carrying the ``#!`` marker."""
    lines = [n for n, line in enumerate(path.read_text().splitlines(), 1) if "#!" in line]
    assert len(lines) == 1, f"mark exactly one line of {path} with #!"
    return lines[0]


def problems(path: Path) -> list[str]:
    with pytest.raises(InvalidDefinition) as caught:
        load_file(path)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def only_problem(path: Path) -> str:
    """Assert the file has exactly one problem, at its marked line; return the message."""
    found = problems(path)
    assert len(found) == 1, "\n".join(found)
    prefix = f"{path}:{marked_line(path)}: "
    assert found[0].startswith(prefix), f"{found[0]!r} does not start with {prefix!r}"
    return found[0][len(prefix):]


def valid_machine(name: str = "m") -> str:
    """One machine as a `machines:` entry; tests edit it with str.replace to add a mistake."""
    return f"""
  - name: {name}
    states:
      - name: a
        initial: true
        transitions:
          - {{event: go, target: b}}
      - name: b
        final: true
"""


# ---- a valid aws-lambda-fsm-style file --------------------------------------------------


def aws_style(acts: str) -> str:
    return f"""
    settings:
      store: [memory://]
    machines:
      - name: orders
        max_retries: 3
        retry_base_delay: 0.5
        retry_max_delay: 30
        version: 2
        states:
          - name: start
            initial: true
            entry_action: {acts}.Record
            do_action:
              class: {acts}.Record
              params: {{tag: do-start, event: pay, limits: {{amount: 10, currencies: [EUR, USD]}}}}
            exit_action: {acts}.Record
            transitions:
              - target: paying
                event: pay
                action: {acts}.Record
                local: true
          - name: paying
            do_action: {acts}.Record
            timeout: 30
            timeout_event: expired
            transitions:
              - {{target: done, event: paid}}
              - {{target: done, event: expired, action: {{class: {acts}.Record, params: {{tag: refund}}}}}}
          - name: done
            final: true
            entry_action: {acts}.Record
      - name: tiny
        states:
          - name: only
            initial: true
            final: true
    """


def test_an_aws_lambda_fsm_style_file_loads(tmp_path: Path, acts: str) -> None:
    path = write(tmp_path, "fsm.yaml", aws_style(acts))
    definitions = load_file(path)
    assert isinstance(definitions, Definitions)
    assert definitions.settings == {"store": ["memory://"]}
    assert definitions.files == [str(path)]
    orders = definitions.machine("orders")
    assert (orders.initial, orders.max_retries, orders.retry_base_delay, orders.retry_max_delay,
            orders.version, orders.source) == ("start", 3, 0.5, 30.0, "2", f"{path}:4")
    start, paying, done = orders.state("start"), orders.state("paying"), orders.state("done")
    assert start.initial and not start.final and done.final
    for action in (start.entry_action, start.do_action, start.exit_action, paying.do_action, done.entry_action):
        assert isinstance(action, Action) and type(action).__name__ == "Record"
    pay = start.transitions["pay"]
    assert (pay.target, pay.local, type(pay.action).__name__) == ("paying", True, "Record")
    assert paying.transitions["paid"].action is None and paying.transitions["paid"].local is False
    assert (paying.timeout, paying.timeout_event) == (30, "expired")
    assert paying.transitions["expired"].action.params == {"tag": "refund"}
    tiny = definitions.machine("tiny")
    assert (tiny.max_retries, tiny.retry_base_delay, tiny.retry_max_delay, tiny.version) == (5, 1.0, 60.0, "")


def test_params_reach_the_action_as_self_params(tmp_path: Path, acts: str) -> None:
    path = write(tmp_path, "fsm.yaml", aws_style(acts))
    action = load_file(path).machine("orders").state("start").do_action
    assert action.params == {"tag": "do-start", "event": "pay",
                             "limits": {"amount": 10, "currencies": ["EUR", "USD"]}}
    assert type(action.params["limits"]) is dict and type(action.params["limits"]["currencies"]) is list
    assert action.name == f"{acts}.Record"
    obj: dict = {}
    assert action.execute(None, obj) == "pay"  # type: ignore[arg-type]
    assert obj == {"calls": ["do-start"]}
    assert load_file(path).machine("orders").state("start").entry_action.params == {}


def test_max_retries_zero_means_no_retries(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:" + valid_machine().replace("- name: m", "- name: m\n    max_retries: 0"))
    assert load_file(path).machine("m").max_retries == 0


def test_load_text_and_an_unknown_machine() -> None:
    definitions = load_text("machines:" + valid_machine("alpha"))
    assert list(definitions.machines) == ["alpha"]
    with pytest.raises(InvalidDefinition, match="unknown machine 'beta'; defined: alpha"):
        definitions.machine("beta")


def test_yaml_merge_keys_and_anchors_work(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        states:
          - &base {name: a, initial: true, transitions: [{event: go, target: b}]}
          - <<: *base
            name: b
            initial: false
          - {name: c, final: true} #!
    """)
    # b takes a's transitions through the merge key; c is unreachable, and that is all
    assert only_problem(path) == "machine 'm', state 'c': unreachable from the initial state 'a'"


# ---- imports -------------------------------------------------------------------------


def test_imports_resolve_relative_to_the_importing_file(tmp_path: Path) -> None:
    write(tmp_path, "sub/more.yaml", "machines:" + valid_machine("beside"))
    write(tmp_path, "sub/fsm.yaml", "machines:\n  - import: more.yaml\n  - import: deeper/last.yaml\n")
    write(tmp_path, "sub/deeper/last.yaml", "machines:" + valid_machine("deepest"))
    definitions = load_file(tmp_path / "sub" / "fsm.yaml")
    assert sorted(definitions.machines) == ["beside", "deepest"]
    assert definitions.files[0] == str(tmp_path / "sub" / "fsm.yaml")


def test_imports_fall_back_to_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "shared.yaml", "machines:" + valid_machine("shared"))
    write(tmp_path, "conf/fsm.yaml", "machines:\n  - import: shared.yaml" + valid_machine("own"))
    monkeypatch.chdir(tmp_path)
    assert sorted(load_file(tmp_path / "conf" / "fsm.yaml").machines) == ["own", "shared"]


def test_a_file_beside_the_importer_wins_over_the_current_directory(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "x.yaml", "machines:" + valid_machine("from_cwd"))
    write(tmp_path, "conf/x.yaml", "machines:" + valid_machine("beside"))
    write(tmp_path, "conf/fsm.yaml", "machines:\n  - import: x.yaml\n")
    monkeypatch.chdir(tmp_path)
    assert list(load_file(tmp_path / "conf" / "fsm.yaml").machines) == ["beside"]


def test_a_file_imported_twice_is_loaded_once(tmp_path: Path) -> None:
    write(tmp_path, "common.yaml", "machines:" + valid_machine("common"))
    write(tmp_path, "a.yaml", "machines:\n  - import: common.yaml\n")
    write(tmp_path, "fsm.yaml", "machines:\n  - import: a.yaml\n  - import: common.yaml\n")
    assert list(load_file(tmp_path / "fsm.yaml").machines) == ["common"]


def test_a_missing_import_is_reported_at_the_import_line(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:\n  - import: nowhere.yaml #!\n")
    message = only_problem(path)
    assert message.startswith("import 'nowhere.yaml': file not found")
    assert str(tmp_path / "nowhere.yaml") in message


def test_an_import_cycle_is_reported_with_its_chain(tmp_path: Path) -> None:
    b = write(tmp_path, "b.yaml", "machines:\n  - import: fsm.yaml #!\n")
    path = write(tmp_path, "fsm.yaml", "machines:\n  - import: b.yaml" + valid_machine())
    found = problems(path)
    assert found == [f"{b}:{marked_line(b)}: import 'fsm.yaml' makes a cycle: {path} -> {b} -> {path}"]


def test_a_file_importing_itself_is_a_cycle(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:\n  - import: fsm.yaml #!\n")
    assert "makes a cycle" in only_problem(path)


def test_settings_in_an_imported_file_are_reported_not_ignored(tmp_path: Path) -> None:
    other = write(tmp_path, "other.yaml", "settings: {store: [memory://]} #!\nmachines: []\n")
    write(tmp_path, "fsm.yaml", "machines:\n  - import: other.yaml\n")
    found = problems(tmp_path / "fsm.yaml")
    assert found == [f"{other}:1: `settings:` is only read from the top file, not from an imported one; "
                     + "move it there"]


# ---- one test per kind of problem ------------------------------------------------------


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        states: a: b #!
    """)
    assert only_problem(path) == "YAML syntax error: mapping values are not allowed here"


def test_an_unclosed_bracket_is_reported_where_it_opened(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        states: [a, b #!
    """)
    assert only_problem(path) == ("YAML syntax error: expected ',' or ']', but got '<stream end>' "
                                  "(while parsing a flow sequence that began at line 3)")


def test_duplicate_yaml_key_is_not_silently_dropped(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        name: n #!
        states: []
    """)
    assert only_problem(path) == "YAML error: duplicate key 'name' (first at line 2)"


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", "- just #!\n- a list\n")
    assert only_problem(path).startswith("the file must be a mapping with a `machines:` list")


@pytest.mark.parametrize("where, text, named", [
    ("top level", "machines: []\nmachine: [] #!\n", "top level: unknown key 'machine' (did you mean 'machines'?)"),
    ("machine", "machines:" + valid_machine().replace("states:", "max_retry: 3 #!\n    states:"),
     "machine 'm': unknown key 'max_retry' (did you mean 'max_retries'?)"),
    ("state", "machines:" + valid_machine().replace("initial: true", "initial: true\n        do_actoin: x.Y #!"),
     "machine 'm', state 'a': unknown key 'do_actoin' (did you mean 'do_action'?)"),
    ("transition", "machines:" + valid_machine().replace("target: b}", "target: b, evnt: x} #!"),
     "machine 'm', state 'a', transition on 'go': unknown key 'evnt' (did you mean 'event'?)"),
])
def test_unknown_key_suggests_the_closest_allowed_one(tmp_path: Path, where: str, text: str, named: str) -> None:
    message = only_problem(write(tmp_path, "fsm.yaml", text))
    assert message.startswith(named), message
    assert "; allowed: " in message


def test_unknown_action_key(tmp_path: Path, acts: str) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:" + valid_machine().replace(
        "initial: true", f"initial: true\n        entry_action: {{class: {acts}.Record, parms: {{}}}} #!"))
    assert only_problem(path) == ("machine 'm', state 'a', entry_action: unknown key 'parms' "
                                  "(did you mean 'params'?); allowed: class, params")


def test_no_initial_state(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        states: #!
          - {name: a, transitions: [{event: go, target: b}]}
          - {name: b, final: true}
    """)
    assert only_problem(path) == "machine 'm': no initial state; mark one with `initial: true`"


def test_several_initial_states(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        states:
          - {name: a, initial: true, transitions: [{event: go, target: b}]}
          - name: b
            initial: true #!
            final: true
    """)
    assert only_problem(path) == ("machine 'm': several initial states ('a', 'b'); "
                                  "mark exactly one with `initial: true`")


def test_transition_to_an_unknown_state(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        states:
          - name: a
            initial: true
            transitions:
              - {event: go, target: b}
              - event: oops
                target: dne #!
          - {name: done, final: true}
          - {name: b, transitions: [{event: finish, target: done}]}
    """)
    assert only_problem(path) == ("machine 'm', state 'a', transition on 'oops': unknown target state 'dne' "
                                  "(did you mean 'done'?); states: a, done, b")


def test_two_transitions_on_the_same_event(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        states:
          - name: a
            initial: true
            transitions:
              - {event: go, target: b}
              - {event: go, target: a} #!
          - {name: b, final: true}
    """)
    assert only_problem(path) == ("machine 'm', state 'a': two transitions on event 'go' (the first at line 7); "
                                  "the first has no guard, so the second could never be taken: give the first "
                                  "a `guard:` or remove one")


def test_transitions_out_of_a_final_state(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        states:
          - {name: a, initial: true, transitions: [{event: go, target: b}]}
          - name: b
            final: true
            transitions: #!
              - {event: again, target: a}
    """)
    assert only_problem(path) == ("machine 'm', state 'b': a final state cannot have transitions "
                                  "(entering it ends the instance or its region)")


def test_unreachable_state(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        states:
          - {name: a, initial: true, transitions: [{event: go, target: b}]}
          - {name: b, final: true}
          - name: island #!
            transitions: [{event: go, target: b}]
    """)
    assert only_problem(path) == "machine 'm', state 'island': unreachable from the initial state 'a'"


def test_a_dead_end_state(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        states:
          - {name: a, initial: true, transitions: [{event: go, target: stuck}]}
          - name: stuck #!
    """)
    assert only_problem(path).startswith("machine 'm', state 'stuck': not final and has no transitions")


def test_a_timeout_without_a_transition_on_its_event(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:" + valid_machine().replace(
        "initial: true", "initial: true\n        timeout: 5 #!"))
    assert only_problem(path) == ("machine 'm', state 'a': has a timeout but no transition on its "
                                  "timeout event 'timeout'")


def test_duplicate_state_name(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", """
    machines:
      - name: m
        states:
          - {name: a, initial: true, transitions: [{event: go, target: b}]}
          - {name: b, final: true}
          - {name: a, final: true} #!
    """)
    assert only_problem(path) == "machine 'm': duplicate state name 'a' (first at line 4)"


def test_duplicate_machine_name_across_an_import(tmp_path: Path) -> None:
    write(tmp_path, "other.yaml", "machines:" + valid_machine("twice"))
    path = write(tmp_path, "fsm.yaml", "machines:\n  - import: other.yaml" + valid_machine("twice").replace(
        "name: twice", "name: twice #!"))
    assert only_problem(path) == f"duplicate machine name 'twice' (first defined at {tmp_path / 'other.yaml'}:2)"


CONSTRUCTOR_RAISES = """
from fsm import Action


class Record(Action):
    def __init__(self, **kwargs):
        raise ValueError("no")

    def execute(self, context, obj):
        return None
"""


@pytest.mark.parametrize("module_source, spec, reason", [
    (None, "{module}_missing.Record",
     "cannot import '{module}_missing.Record': ModuleNotFoundError: No module named '{module}_missing'"),
    ("raise RuntimeError('no database here')", "{module}.Record",
     "cannot import '{module}.Record': RuntimeError: no database here"),
    ("import not_installed_anywhere_xyz", "{module}.Record",
     "cannot import '{module}.Record': ModuleNotFoundError: No module named 'not_installed_anywhere_xyz'"),
    ("class Recorder: pass", "{module}.Record",
     "cannot import '{module}.Record': module '{module}' has no 'Record' (did you mean 'Recorder'?)"),
    ("", "Record", "'Record' is not a dotted path like `module.ClassName`"),
    (CONSTRUCTOR_RAISES, "{module}.Record", "cannot create '{module}.Record': ValueError: no"),
])
def test_an_action_that_cannot_be_imported_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    module_source: str | None, spec: str, reason: str) -> None:
    module = f"broken_{uuid.uuid4().hex[:10]}"
    if module_source is not None:
        (tmp_path / f"{module}.py").write_text(module_source + "\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    path = write(tmp_path, "fsm.yaml", "machines:" + valid_machine().replace(
        "initial: true", f"initial: true\n        do_action: {spec.format(module=module)} #!"))
    assert only_problem(path) == f"machine 'm', state 'a', do_action: {reason.format(module=module)}"


@pytest.mark.parametrize("name, kind", [("NotAnAction", "a class"), ("a_function", "a function")])
def test_an_action_that_is_not_an_action_subclass(tmp_path: Path, acts: str, name: str, kind: str) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:" + valid_machine().replace(
        "target: b}", f"target: b, action: {acts}.{name}}} #!"))
    assert only_problem(path) == (f"machine 'm', state 'a', transition on 'go', action: '{acts}.{name}' "
                                  f"is not a subclass of fsm.Action (it is {kind})")


def test_an_action_without_execute(tmp_path: Path, acts: str) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:" + valid_machine().replace(
        "final: true", f"final: true\n        entry_action:\n          class: {acts}.NoExecute #!"))
    assert only_problem(path) == (f"machine 'm', state 'b', entry_action: '{acts}.NoExecute' "
                                  "does not implement execute(context, obj)")


@pytest.mark.parametrize("line, message", [
    ("max_retries: \"three\"", "machine 'm': 'max_retries' must be an integer, got 'three'"),
    ("max_retries: 2.5", "machine 'm': 'max_retries' must be an integer, got 2.5"),
    ("retry_base_delay: soon", "machine 'm': 'retry_base_delay' must be a number, got 'soon'"),
    ("version: [1]", "machine 'm': 'version' must be a string or an integer, got [1]"),
    ("max_retries: -1", "machine 'm': 'max_retries' must be 0 or more, got -1"),
])
def test_wrong_machine_value_types(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:" + valid_machine().replace("states:", f"{line} #!\n    states:"))
    assert only_problem(path).startswith(message)


@pytest.mark.parametrize("old, new, message", [
    ("initial: true", "initial: yes-please #!",
     "machine 'm', state 'a': 'initial' must be true or false, got 'yes-please'"),
    ("final: true", "final: 1 #!", "machine 'm', state 'b': 'final' must be true or false, got 1"),
    ("target: b}", "target: b, local: sure} #!",
     "machine 'm', state 'a', transition on 'go': 'local' must be true or false, got 'sure'"),
    ("initial: true", "initial: true\n        timeout: \"5\" #!",
     "machine 'm', state 'a': 'timeout' must be a number, got '5'"),
    ("initial: true", "initial: true\n        timeout: 0 #!",
     "machine 'm', state 'a': 'timeout' must be more than 0 seconds, got 0"),
    ("initial: true", "initial: true\n        entry_action: 42 #!",
     "machine 'm', state 'a': 'entry_action' must be a string or a mapping, got 42"),
    ("{event: go, target: b}", "{event: 7, target: b} #!",
     "machine 'm', state 'a', transition: 'event' must be a string, got 7"),
    ("{event: go, target: b}", "{target: b} #!",
     "machine 'm', state 'a', transition: give exactly one of `event:`, `after: SECONDS`, `always: true` or `done: true`"),
    ("final: true", "final: true\n      - {final: true} #!", "machine 'm', unnamed state: missing required key 'name'"),
])
def test_wrong_state_and_transition_value_types(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:" + valid_machine().replace(old, new, 1))
    assert only_problem(path).startswith(message)


def test_an_event_yaml_reads_as_a_boolean_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:" + valid_machine().replace(
        "{event: go, target: b}", "{event: on, target: b} #!"))
    assert only_problem(path) == ("machine 'm', state 'a', transition: 'event' must be a string, got True "
                                  "(the event that triggers it); YAML reads unquoted yes, no, on, off, "
                                  "true and false as booleans: quote it")


def test_wrong_params_type(tmp_path: Path, acts: str) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:" + valid_machine().replace(
        "initial: true", f"initial: true\n        do_action: {{class: {acts}.Record, params: [1]}} #!"))
    assert only_problem(path).startswith("machine 'm', state 'a', do_action: 'params' must be a mapping, got [1]")


def test_entries_that_are_not_mappings(tmp_path: Path) -> None:
    path = write(tmp_path, "fsm.yaml", "machines:\n  - just-a-name #!\n")
    assert only_problem(path).startswith("each entry of `machines:` must be a machine or `- import: file.yaml`")


# ---- everything at once ---------------------------------------------------------------


def test_every_problem_in_a_file_is_reported_in_line_order(tmp_path: Path, acts: str) -> None:
    path = write(tmp_path, "fsm.yaml", f"""
    machines:
      - name: shop
        max_retries: "three"
        states:
          - name: a
            initial: yes-please
            do_action: {acts}.Nope
            transitions:
              - {{event: go, target: b}}
              - {{event: go, target: c}}
          - name: b
            final: true
            transitions: [{{event: back, target: a}}]
          - name: c
            initail: true
            transitions: [{{event: stop, target: nowhere}}]
      - name: shop
        states: []
      - import: missing.yaml
    """)
    expected = [
        (3, "machine 'shop': 'max_retries' must be an integer"),
        (6, "machine 'shop', state 'a': 'initial' must be true or false"),
        (7, f"machine 'shop', state 'a', do_action: cannot import '{acts}.Nope': module '{acts}' has no 'Nope'"),
        (10, "machine 'shop', state 'a': two transitions on event 'go'"),
        (13, "machine 'shop', state 'b': a final state cannot have transitions"),
        (15, "machine 'shop', state 'c': unknown key 'initail' (did you mean 'initial'?)"),
        (16, "machine 'shop', state 'c', transition on 'stop': unknown target state 'nowhere'"),
        (17, "duplicate machine name 'shop'"),
        (18, "machine 'shop': no initial state"),
        (19, "import 'missing.yaml': file not found"),
    ]
    found = problems(path)
    assert len(found) == len(expected), "\n".join(found)
    for problem, (line, start) in zip(found, expected):
        assert problem.startswith(f"{path}:{line}: {start}"), problem


def test_the_loader_knows_every_key_that_starts_children() -> None:
    """The loader imports the spawn builders only for a state that has one of their keys
    (``SPAWN_KEYS``, kept beside it so a plain config never loads them)."""
    from config import loader, spawn
    assert loader.SPAWN_KEYS == tuple(spawn.BUILDERS)
