"""`fsm graph`: dot and Mermaid diagrams show every state, action and edge."""

from __future__ import annotations

import importlib
import logging
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.loader import load_text
from fsm.cli import main
from fsm.graph import to_dot, to_mermaid
from fsm.model import Action, Guard, Machine, State, Transition


class Noop(Action):
    def execute(self, context, obj):  # type: ignore[no-untyped-def]
        return None


class Below(Guard):
    def check(self, context, event_data):  # type: ignore[no-untyped-def]
        return True


@pytest.fixture(autouse=True)
def keep_fsm_logger() -> Iterator[None]:
    """`main` points the fsm logger at the (captured) stderr; put it back for later tests."""
    logger = logging.getLogger("fsm")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def machine_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    module = f"graph_acts_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent("""
        from fsm import Action

        class Charge(Action):
            def execute(self, context, obj):
                return "charged"

        class Greet(Action):
            def execute(self, context, obj):
                return None

        class Cleanup(Action):
            def execute(self, context, obj):
                return None

        class Refund(Action):
            def execute(self, context, obj):
                return None
    """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))  # also undoes the CLI's own sys.path additions
    importlib.invalidate_caches()
    path = tmp_path / "fsm.yaml"
    path.write_text(textwrap.dedent(f"""
        machines:
          - name: orders
            states:
              - name: new
                initial: true
                entry_action: {module}.Greet
                do_action: {{class: {module}.Charge, params: {{amount: 3}}}}
                exit_action: {module}.Cleanup
                transitions:
                  - {{event: charged, target: shipped, local: true}}
                  - {{event: cancel, target: cancelled, action: {module}.Refund}}
              - name: shipped
                timeout: 30
                transitions:
                  - {{event: timeout, target: cancelled}}
                  - {{event: delivered, target: done}}
              - {{name: cancelled, final: true}}
              - {{name: done, final: true}}
          - name: other
            states:
              - {{name: only, initial: true, final: true}}
    """), encoding="utf-8")
    return path


def graph(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["graph", str(path), *extra]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def test_dot_shows_states_actions_and_edges(machine_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = graph(machine_file, capsys, "--machine", "orders")
    assert out.startswith('digraph "orders" {')
    assert '"__start" -> "new";' in out
    assert '"new" [label="new\\nentry/ Greet\\ndo/ Charge\\nexit/ Cleanup"];' in out
    assert '"shipped" [label="shipped\\ntimeout 30s -> timeout"];' in out
    assert '"cancelled" [label="cancelled", peripheries=2];' in out
    assert '"new" -> "shipped" [label="charged (local)"];' in out
    assert '"new" -> "cancelled" [label="cancel / Refund"];' in out
    assert '"shipped" -> "done" [label="delivered"];' in out
    assert "other" not in out


def test_mermaid_shows_states_actions_and_edges(machine_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = graph(machine_file, capsys, "--format", "mermaid", "--machine", "orders")
    lines = out.splitlines()
    assert lines[:2] == ["stateDiagram-v2", "  [*] --> s0"]
    for line in ['  state "new" as s0', "  s0 : entry/ Greet", "  s0 : do/ Charge", "  s0 : exit/ Cleanup",
                 '  state "shipped" as s1', "  s1 : timeout 30s -> timeout", "  s0 --> s1 : charged (local)",
                 "  s0 --> s2 : cancel / Refund", "  s1 --> s3 : delivered", "  s2 --> [*]", "  s3 --> [*]"]:
        assert line in lines, line


def test_every_machine_is_drawn_when_none_is_named(machine_file: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = graph(machine_file, capsys)
    assert 'digraph "orders"' in out and 'digraph "other"' in out


def test_an_unknown_machine_lists_the_known_ones(machine_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(machine_file), "--machine", "nope"]) == 2
    assert "unknown machine 'nope'; defined: orders, other" in capsys.readouterr().err


def test_quotes_in_names_do_not_break_the_diagrams() -> None:
    odd = 'say "hi"'
    machine = Machine(name='m "1"', initial=odd, states={
        odd: State(name=odd, initial=True, do_action=Noop("x.Noop"),
                   transitions={'go "now"': Transition('go "now"', "end")}),
        "end": State(name="end", final=True)})
    dot = to_dot(machine)
    assert 'digraph "m \\"1\\"" {' in dot
    assert '"say \\"hi\\"" -> "end" [label="go \\"now\\""];' in dot
    mermaid = to_mermaid(machine)
    assert 'state "say #quot;hi#quot;" as s0' in mermaid
    assert "s0 --> s1 : go #quot;now#quot;" in mermaid


# -- statecharts: nested, parallel and history states ---------------------------------

CHART = """
machines:
  - name: player
    states:
      - name: standby
        initial: true
        transitions: [{event: POWER, target: hist}]
      - name: powered
        entry_action: acts.Noop
        transitions:
          - {event: POWER, target: standby}
          - {after: 2, target: standby}
          - {event: TICK, action: acts.Noop}
        states:
          - name: media
            initial: true
            transitions: [{event: RESET, target: media, internal: true}]
            states:
              - name: tape
                initial: true
                transitions: [{done: true, target: radio}]
                states:
                  - {name: playing, initial: true, transitions: [{event: PAUSE, target: paused}]}
                  - name: paused
                    transitions:
                      - {event: PLAY, target: playing, guard: acts.HasTape}
                      - {event: PLAY, target: ejected}
                  - {name: ejected, final: true}
              - {name: radio, transitions: [{event: TAPE, target: tape}, {event: LIGHTS, target: lamp.lit}]}
              - {name: back, history: shallow, target: radio}
          - {name: hist, history: deep}
      - name: service
        parallel: true
        transitions: [{done: true, target: standby}]
        states:
          - name: lamp
            states:
              - {name: dark, initial: true, transitions: [{event: FLIP, target: lit}]}
              - {name: lit, final: true}
          - name: fan
            states:
              - {name: still, initial: true, transitions: [{always: true, target: spinning, guard: acts.HasTape}]}
              - {name: spinning, final: true, transitions: []}
"""

# path -> the path of the box it must be drawn in (None: the top level)
PARENTS = {
    "standby": None, "powered": None, "powered.media": "powered", "powered.media.tape": "powered.media",
    "powered.media.tape.playing": "powered.media.tape", "powered.media.tape.paused": "powered.media.tape",
    "powered.media.tape.ejected": "powered.media.tape", "powered.media.radio": "powered.media",
    "powered.media.back": "powered.media", "powered.hist": "powered", "service": None,
    "service.lamp": "service", "service.lamp.dark": "service.lamp", "service.lamp.lit": "service.lamp",
    "service.fan": "service", "service.fan.still": "service.fan", "service.fan.spinning": "service.fan",
}
BOXES = {"powered", "powered.media", "powered.media.tape", "service", "service.lamp", "service.fan"}


@pytest.fixture
def chart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    from config.loader import load_text

    module = f"graph_chart_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent("""
        from fsm import Action, Guard

        class Noop(Action):
            def execute(self, context, obj):
                return None

        class HasTape(Guard):
            def check(self, context, event_data):
                return True
    """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return load_text(CHART.replace("acts.", f"{module}."), "chart.yaml").machine("player")


def dot_structure(text: str) -> tuple[dict[str, str | None], dict[str, str | None], dict[str, list[str]],
                                      list[tuple[str, str, str]]]:
    """(node -> enclosing cluster, cluster -> enclosing cluster, cluster -> its attribute
    lines, edges as (tail, head, attributes)) of the dot text this module writes."""
    import re

    nodes: dict[str, str | None] = {}
    clusters: dict[str, str | None] = {}
    attributes: dict[str, list[str]] = {}
    edges: list[tuple[str, str, str]] = []
    stack: list[str] = []
    for line in text.splitlines()[1:-1]:
        line = line.strip()
        if opened := re.fullmatch(r'subgraph "cluster_(.+)" \{', line):
            clusters[opened[1]] = stack[-1] if stack else None
            attributes[opened[1]] = []
            stack.append(opened[1])
        elif line == "}":
            stack.pop()
        elif edge := re.fullmatch(r'"([^"]+)" -> "([^"]+)"(?: \[(.*)\])?;', line):
            edges.append((edge[1], edge[2], edge[3] or ""))
        elif node := re.fullmatch(r'"([^"]+)" \[.*\];', line):
            nodes[node[1]] = stack[-1] if stack else None
        elif stack:
            attributes[stack[-1]].append(line)
    assert not stack, "unbalanced subgraphs"
    return nodes, clusters, attributes, edges


def test_dot_draws_compound_and_parallel_states_as_clusters(chart: Machine) -> None:
    out = to_dot(chart)
    assert "  compound=true; newrank=true;" in out.splitlines()
    nodes, clusters, attributes, edges = dot_structure(out)
    # every box is a cluster inside its parent's cluster; every other state a node in it
    assert set(clusters) == BOXES
    for path, parent in PARENTS.items():
        if path in BOXES:
            assert clusters[path] == parent, path
        else:
            assert nodes[path] == parent, path
    # a compound state's initial marker sits in its cluster and points at its initial child
    for box, initial in (("powered", "__start:powered.media"), ("powered.media", "__start:powered.media.tape"),
                         ("powered.media.tape", "powered.media.tape.playing"),
                         ("service.lamp", "service.lamp.dark"), ("service.fan", "service.fan.still")):
        assert nodes[f"__start:{box}"] == box
        assert (f"__start:{box}", initial) in [(t, h) for t, h, _ in edges], box
    # the parallel state is labelled so, its regions dashed; a history state is H or H*
    assert attributes["service"][0] == 'label="service (parallel)\\l";'
    assert 'labeljust=l; style="rounded,dashed";' in attributes["service.lamp"]
    assert 'labeljust=l; style="rounded";' in attributes["powered.media"]
    assert '"powered.hist" [label="H*", shape=circle];' in out
    assert '"powered.media.back" [label="H", shape=circle];' in out
    # the box's own entry action and its targetless / internal self transitions are noted in its label
    assert attributes["powered"][0] == 'label="powered\\lentry/ Noop\\lTICK / Noop (internal)\\l";'
    assert attributes["powered.media"][0] == 'label="media\\lRESET (internal)\\l";'
    # every edge joins declared nodes; one into or out of a box is clipped at its border
    assert all(t in nodes or t == "__start" for t, _, _ in edges) and all(h in nodes for _, h, _ in edges)
    for edge in [
        ("__start", "standby", ""),
        ("standby", "powered.hist", 'label="POWER"'),
        ("__start:powered", "standby", 'label="POWER", ltail="cluster_powered"'),
        ("__start:powered", "standby", 'label="after 2s", ltail="cluster_powered"'),
        ("powered.media.tape.playing", "powered.media.tape.paused", 'label="PAUSE"'),
        ("powered.media.tape.paused", "powered.media.tape.playing", 'label="PLAY [HasTape]"'),
        ("powered.media.tape.paused", "powered.media.tape.ejected", 'label="PLAY"'),
        ("__start:powered.media.tape", "powered.media.radio", 'label="done", ltail="cluster_powered.media.tape"'),
        ("powered.media.radio", "__start:powered.media.tape", 'label="TAPE", lhead="cluster_powered.media.tape"'),
        ("powered.media.radio", "service.lamp.lit", 'label="LIGHTS"'),
        ("powered.media.back", "powered.media.radio", "style=dashed"),  # the history's default
        ("__regions:service", "standby", 'label="done", ltail="cluster_service"'),
        ("service.fan.still", "service.fan.spinning", 'label="always [HasTape]"'),
    ]:
        assert edge in edges, edge
    assert len(edges) == 19, edges   # 13 transitions, the 6 start markers
    assert '"service.lamp.lit" [label="lit", peripheries=2];' in out


def test_the_statechart_dot_parses(chart: Machine, tmp_path: Path) -> None:
    import shutil
    import subprocess

    out = to_dot(chart)
    if shutil.which("dot") is None:
        assert out.count("{") == out.count("}")
        depth = 0
        for line in out.splitlines():
            depth += line.endswith("{") - (line.strip() == "}")
            assert depth >= 0
        assert depth == 0
        return
    done = subprocess.run(["dot", "-Tsvg"], input=out, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.count('class="cluster"') == len(BOXES)


def test_mermaid_draws_statecharts_as_nested_blocks(chart: Machine) -> None:
    import re

    out = to_mermaid(chart)
    lines = out.splitlines()
    assert lines[:2] == ["stateDiagram-v2", "  [*] --> s0"]
    ids = {path: f"s{i}" for i, path in enumerate(chart.states)}
    paths = {sid: path for path, sid in ids.items()}
    declared: dict[str, str | None] = {}     # id -> the block it is declared in
    blocks: dict[str, str | None] = {}       # block id -> the block it sits in
    firsts: dict[str, str] = {}              # block id -> its first line
    dividers: dict[str, int] = {}
    edges: list[tuple[str, str, str, str | None]] = []   # (from, to, label, block)
    names: dict[str, str] = {}
    stack: list[str] = []
    for line in lines[1:]:
        text = line.strip()
        depth = len(stack) if text == "}" else len(stack) + 1
        assert len(line) - len(line.lstrip()) == 2 * depth, line   # indented by depth
        block = stack[-1] if stack else None
        if opened := re.fullmatch(r"state (s\d+) \{", text):
            assert declared[opened[1]] == block        # the block opens where it was declared
            blocks[opened[1]] = block
            stack.append(opened[1])
        elif text == "}":
            stack.pop()
        elif text == "--":
            assert block is not None and chart.states[paths[block]].parallel
            dividers[block] = dividers.get(block, 0) + 1
        elif state := re.fullmatch(r'state "([^"]+)" as (s\d+)', text):
            declared[state[2]] = block
            names[state[2]] = state[1]
        elif edge := re.fullmatch(r"(\S+) --> (\S+)(?: : (.*))?", text):
            edges.append((edge[1], edge[2], edge[3] or "", block))
        else:
            assert re.fullmatch(r"s\d+ : .+", text), text     # a note on a state
        if block is not None:
            firsts.setdefault(block, text)
    assert not stack
    # each state is declared in its parent's block; compound blocks start with their initial marker
    for path, parent in PARENTS.items():
        assert declared[ids[path]] == (ids[parent] if parent else None), path
    assert set(blocks) == {ids[b] for b in BOXES}
    for box in BOXES - {"service"}:
        state = chart.states[box]
        assert firsts[ids[box]] == f"[*] --> {ids[state.initial_child or state.children[0]]}", box
    assert dividers == {ids["service"]: 1}                # two regions, one separator
    assert names[ids["powered.hist"]] == "H*" and names[ids["powered.media.back"]] == "H"
    assert names[ids["service"]] == "service"
    # an edge sits in a block only between two children of it; others at the top level
    assert len(edges) == 22, edges   # 13 transitions, 6 start markers, 3 end markers
    for source, target, _, block in edges:
        for end in (source, target):
            assert end == "[*]" or end in declared, end
        if block is not None and "[*]" not in (source, target):
            assert declared[source] == declared[target] == block
    s = ids
    for edge in [
        (s["standby"], s["powered.hist"], "POWER", None),
        (s["powered"], s["standby"], "POWER", None),
        (s["powered"], s["standby"], "after 2s", None),
        (s["powered.media.tape.paused"], s["powered.media.tape.playing"], "PLAY [HasTape]", s["powered.media.tape"]),
        (s["powered.media.tape"], s["powered.media.radio"], "done", s["powered.media"]),
        # between states deep in two boxes, which Mermaid cannot lay out: to the target's box
        (s["powered.media.radio"], s["service"], "LIGHTS (to lamp.lit)", None),
        (s["powered.media.back"], s["powered.media.radio"], "", s["powered.media"]),
        (s["service"], s["standby"], "done", None),
        (s["service.fan.still"], s["service.fan.spinning"], "always [HasTape]", s["service.fan"]),
        (s["powered.media.tape.ejected"], "[*]", "", s["powered.media.tape"]),
    ]:
        assert edge in edges, edge
    assert f"  {s['powered']} : TICK / Noop (internal)" in lines
    assert f"    {s['powered.media']} : RESET (internal)" in lines


def test_a_flat_machine_with_guards_and_eventless_transitions_stays_flat() -> None:
    machine = Machine(name="m", initial="a", states={
        "a": State(name="a", initial=True, on=(
            Transition("go", "b", guard=Below("x.Below")),
            Transition("go", "a", Noop("x.Inc"), reenter=False),
            Transition("", "b"),
            Transition("xstate.after.1500.a", "b", delay=1.5))),
        "b": State(name="b", final=True)})
    dot = to_dot(machine)
    assert "compound" not in dot and "subgraph" not in dot
    for edge in ['  "a" -> "b" [label="go [Below]"];', '  "a" -> "a" [label="go / Inc (internal)"];',
                 '  "a" -> "b" [label="always"];', '  "a" -> "b" [label="after 1.5s"];']:
        assert edge in dot.splitlines(), edge
    mermaid = to_mermaid(machine).splitlines()
    assert "{" not in "".join(mermaid)
    for line in ["  s0 --> s1 : go [Below]", "  s0 --> s0 : go / Inc (internal)", "  s0 --> s1 : always",
                 "  s0 --> s1 : after 1.5s"]:
        assert line in mermaid, line


def test_a_state_running_children_names_their_machine() -> None:
    machines = load_text("""
machines:
  - name: item
    states: [{name: a, initial: true, transitions: [{event: go, target: b}]}, {name: b, final: true}]
  - name: fan
    states:
      - {name: spread, initial: true, map: {items: $.xs, machine: item, max_concurrency: 4},
         transitions: [{done: true, target: end}]}
      - {name: end, final: true}
""").machines
    assert "children/ item, 4 at once" in to_mermaid(machines["fan"])
    assert "children/ item, 4 at once" in to_dot(machines["fan"])
