"""A seeded generator of random XState v5 machine configs (JSON only) and event sequences.

``generate(seed)`` returns ``{"machine": <config>, "cases": [{"context": ..., "events": [...]}],
"features": [...]}``. The same seed gives the same machine on every run and platform.

What the machines contain (see ``docs/xstate-semantics-notes.md`` for what XState does with it):

* nesting to depth 3 (the root's children are depth 1), compound and parallel states
  (2-3 regions), final states (so ``onDone`` on compound and parallel states, and the
  machine itself finishing), shallow and deep history states (some with a default
  ``target``), used as transition targets;
* transitions sharing an event, guarded (``countBelow``, ``eventValueIs``, ``yes``, ``no``) and
  unguarded, in document order; targetless ones; targets written as a sibling name,
  ``sibling.child``, ``.child``, ``#id`` (explicit ids and default ``machineId.path`` ids);
  transitions to the source itself and to its descendants with and without ``reenter``;
* eventless ``always`` transitions, every one guarded by ``countBelow`` and incrementing
  ``count``, so all of a run's eventless steps together are bounded by the largest ``max``;
* ``log`` entry and exit actions on every state (the root included), so the order of
  entries and exits shows in ``context.log``; transition actions (``inc``, ``log``,
  ``setFromEvent``);
* optional features: ``wildcards`` (``*`` and ``foo.*`` descriptors), ``invoke`` (``fetchOk``
  and ``fetchFail`` actors with ``onDone``/``onError``).

Constraints that keep every run finite and comparable:

* the initial child of a compound state (and of a region) is never final, so entering a
  state by default never enters a final state;
* ``onDone`` targets are never final, history, or inside the finished state, so ``done``
  events cannot chain forever;
* ``always`` guards depend only on ``count``, never on the event, so an event no state
  accepts leaves value and context unchanged in XState (lambda-fsm rejects such an event);
* invoke ``onDone``/``onError`` targets never enter an invoking state by default.

Event sequences draw from the events the machine mentions plus ``NOPE`` (accepted nowhere);
most events carry ``value`` (0-2), which ``eventValueIs`` and ``setFromEvent`` read.

Run ``python tests/xstate/gen.py SEED`` to print one machine, or
``python tests/xstate/gen.py --check N`` to run seeds 0..N-1 through xstate and print
feature coverage and rejects.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from typing import Any

EVENTS = ["A", "B", "C", "D"]
WILDCARD_EVENTS = ["foo", "foo.bar", "foo.baz", "foo.bar.x"]
WILDCARD_KEYS = ["*", "foo.*", "foo.bar.*", "foo.bar"]
UNKNOWN_EVENT = "NOPE"
MAX_DEPTH = 3
MAX_NODES = 28
INITIAL_CONTEXT = {"count": 0, "log": [], "last": None}


@dataclass(eq=False)
class Node:
    key: str
    parent: Node | None
    kind: str  # atomic | compound | parallel | final | history
    depth: int
    children: list[Node] = field(default_factory=list)
    explicit_id: str | None = None
    history: str | None = None        # shallow | deep
    history_target: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    invokes: bool = False

    @property
    def path(self) -> list[str]:
        return [*self.parent.path, self.key] if self.parent else []

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def is_descendant_of(self, other: Node) -> bool:
        node = self.parent
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False

    @property
    def real_children(self) -> list[Node]:
        return [c for c in self.children if c.kind != "history"]


class Gen:
    def __init__(self, seed: int, *, wildcards: bool | None = None, invoke: bool | None = None):
        self.seed = seed
        self.rng = random.Random(seed)
        self.machine_id = f"g{seed}"
        # optional features: on for some seeds unless forced
        self.wildcards = self.rng.random() < 0.25 if wildcards is None else wildcards
        self.invoke = self.rng.random() < 0.3 if invoke is None else invoke
        self.count = 0
        self.tags = 0
        self.features: set[str] = set()
        self.events_used: set[str] = set()

    # ---- structure ---------------------------------------------------------------------

    def tag(self, prefix: str) -> str:
        self.tags += 1
        return f"{prefix}{self.tags}"

    def build(self) -> Node:
        rng = self.rng
        root = Node("", None, "parallel" if rng.random() < 0.12 else "compound", 0)
        self.count = 1
        self.fill(root)
        return root

    def fill(self, node: Node) -> None:
        rng = self.rng
        if node.kind == "parallel":
            self.features.add("parallel")
            for i in range(rng.choice([2, 2, 3])):
                region = Node(f"r{i + 1}", node, "compound", node.depth + 1)
                self.count += 1
                if node.depth + 1 >= MAX_DEPTH or rng.random() < 0.1:
                    region.kind = "atomic"
                else:
                    self.fill(region)
                    if rng.random() < 0.6 and not any(c.kind == "final" for c in region.children):
                        region.children.insert(len(region.real_children),
                                               Node("f", region, "final", region.depth + 1))
                        self.count += 1
                node.children.append(region)
        else:
            letters = "abcdefgh"
            n = rng.choice([2, 2, 3, 3, 4])
            for i in range(n):
                kind = "atomic"
                roll = rng.random()
                room = node.depth + 1 < MAX_DEPTH and self.count < MAX_NODES
                if i > 0 and roll < 0.2:
                    kind = "final"
                elif room and roll < 0.45:
                    kind = "compound"
                elif room and roll < 0.6:
                    kind = "parallel"
                child = Node(letters[i], node, kind, node.depth + 1)
                self.count += 1
                node.children.append(child)
                if kind in ("compound", "parallel"):
                    self.fill(child)
        # a history pseudo-state in some compound/parallel states (not the root)
        if node.parent is not None and node.kind in ("compound", "parallel") and rng.random() < 0.4:
            deep = rng.random() < 0.5
            hist = Node("hd" if deep else "h", node, "history", node.depth + 1, history="deep" if deep else "shallow")
            if node.kind == "compound" and rng.random() < 0.3:
                choices = [c for c in node.real_children if c.kind != "final"]
                hist.history_target = rng.choice(choices).key
            node.children.append(hist)
            self.count += 1

    # ---- targets -----------------------------------------------------------------------

    def state_id(self, node: Node) -> str:
        if node.explicit_id:
            return node.explicit_id
        return ".".join([self.machine_id, *node.path])

    def target_string(self, source: Node, target: Node) -> str:
        """One of the valid ways to write ``target`` from ``source``."""
        rng = self.rng
        options: list[tuple[str, str]] = [("#id", "#" + self.state_id(target))]
        if target.is_descendant_of(source):
            rel = target.path[len(source.path):]
            options.append((".child", "." + ".".join(rel)))
        if source.parent is not None and (target is source or any(
                target is sib or target.is_descendant_of(sib) for sib in source.parent.children)):
            rel = target.path[len(source.parent.path):]
            options.append(("sibling.child" if len(rel) > 1 else "sibling", ".".join(rel)))
        # prefer the relative forms a little
        name, text = rng.choice(options + options[1:])
        self.features.add(f"target:{name}")
        if target is source:
            self.features.add("target:self")
        if target.kind == "history":
            self.features.add(f"target:history-{target.history}")
        return text

    def default_entry(self, node: Node) -> list[Node]:
        """The states entering ``node`` by default enters (itself included)."""
        out = [node]
        if node.kind == "compound":
            out += self.default_entry(node.real_children[0])
        elif node.kind == "parallel":
            for child in node.real_children:
                out += self.default_entry(child)
        return out

    def entry_closure(self, node: Node) -> list[Node]:
        """Every state a transition targeting ``node`` may enter by default: its default
        entry, plus every region of each parallel ancestor (entered when the transition's
        domain lies above that ancestor)."""
        out = self.default_entry(node)
        anc = node.parent
        while anc is not None:
            if anc.kind == "parallel":
                for region in anc.real_children:
                    out += self.default_entry(region)
            anc = anc.parent
        return out

    def quiet_targets(self, exclude: Node | None = None) -> list[Node]:
        """Targets that enter neither a final nor an invoking state (nor a history one),
        so a transition taken on a ``done`` event cannot raise another one."""
        return [n for n in self.nodes if n.parent is not None and n.kind not in ("final", "history")
                and (exclude is None or (n is not exclude and not n.is_descendant_of(exclude)))
                and not any(m.invokes or m.kind == "final" for m in self.entry_closure(n))]

    # ---- config ------------------------------------------------------------------------

    def guard(self, *, for_always: bool = False) -> dict[str, Any]:
        rng = self.rng
        if for_always:
            self.features.add("guard:countBelow")
            return {"type": "countBelow", "params": {"max": rng.randint(1, 5)}}
        kind = rng.choice(["countBelow", "countBelow", "eventValueIs", "eventValueIs", "yes", "no"])
        self.features.add(f"guard:{kind}")
        if kind == "countBelow":
            return {"type": kind, "params": {"max": rng.randint(1, 4)}}
        if kind == "eventValueIs":
            return {"type": kind, "params": {"v": rng.randint(0, 2)}}
        return {"type": kind}

    def transition_actions(self, prefix: str = "t") -> list[Any]:
        rng = self.rng
        actions: list[Any] = [{"type": "log", "params": {"tag": self.tag(prefix)}}]
        if rng.random() < 0.4:
            actions.insert(rng.randint(0, len(actions)), "inc")
        if rng.random() < 0.25:
            actions.insert(rng.randint(0, len(actions)), "setFromEvent")
        if rng.random() < 0.3:
            actions.append({"type": "log", "params": {"tag": self.tag(prefix)}})
        return actions

    def event_transition(self, source: Node, all_nodes: list[Node]) -> dict[str, Any]:
        rng = self.rng
        t: dict[str, Any] = {}
        roll = rng.random()
        targets = [n for n in all_nodes if n.parent is not None]
        if roll < 0.2 or not targets:
            self.features.add("targetless")
        else:
            if roll < 0.35 and source in targets:
                target = source
            elif roll < 0.5 and any(n.is_descendant_of(source) for n in targets):
                target = rng.choice([n for n in targets if n.is_descendant_of(source)])
            elif roll < 0.62 and any(n.kind == "final" for n in targets):
                target = rng.choice([n for n in targets if n.kind == "final"])
            elif roll < 0.7 and any(n.kind == "history" for n in targets):
                target = rng.choice([n for n in targets if n.kind == "history"])
            else:
                target = rng.choice(targets)
            t["target"] = self.target_string(source, target)
            if rng.random() < 0.3:
                t["reenter"] = True
                self.features.add("reenter:true")
                if target is source:
                    self.features.add("self:reenter")
            elif target is source:
                self.features.add("self:no-reenter")
        t["actions"] = self.transition_actions()
        return t

    def on_config(self, node: Node, all_nodes: list[Node]) -> dict[str, Any]:
        rng = self.rng
        on: dict[str, Any] = {}
        pool = EVENTS + (WILDCARD_KEYS if self.wildcards else [])
        for _ in range(rng.choice([1, 1, 2, 2, 3])):
            event = rng.choice(pool)
            if event in on:
                continue
            if "*" in event:
                self.features.add("wildcard")
            n = rng.choice([1, 1, 2, 2, 3])
            ts = []
            for i in range(n):
                # `*` also matches xstate.done.* events: keep those transitions from raising more
                t = self.event_transition(node, self.quiet_targets() if "*" in event else all_nodes)
                if i < n - 1 or rng.random() < 0.35:
                    t["guard"] = self.guard()
                ts.append(t)
            if n > 1:
                self.features.add("shared-event")
            on[event] = ts if len(ts) > 1 or rng.random() < 0.5 else ts[0]
            if event not in WILDCARD_KEYS:
                self.events_used.add(event)
        return on

    def config_of(self, node: Node, all_nodes: list[Node]) -> dict[str, Any]:
        rng = self.rng
        cfg: dict[str, Any] = {}
        if node.explicit_id:
            cfg["id"] = node.explicit_id
        if node.kind == "history":
            cfg["type"] = "history"
            cfg["history"] = node.history
            if node.history_target:
                cfg["target"] = node.history_target
                self.features.add("history-target")
            self.features.add(f"history:{node.history}")
            return cfg
        label = ".".join(node.path) or "(root)"
        if node.kind == "final":
            cfg["type"] = "final"
            self.features.add("final")
        if node.kind == "parallel":
            cfg["type"] = "parallel"
        entry: list[Any] = [{"type": "log", "params": {"tag": "+" + label}}]
        exit_: list[Any] = [{"type": "log", "params": {"tag": "-" + label}}]
        if rng.random() < 0.1:
            entry.append("inc")
        if rng.random() < 0.05:
            entry.append("setFromEvent")
        cfg["entry"] = entry
        cfg["exit"] = exit_
        if node.kind == "compound":
            cfg["initial"] = node.real_children[0].key
            if node.parent is not None and any(c.kind == "final" for c in node.children) and rng.random() < 0.7:
                cfg["onDone"] = self.done_transition(node, all_nodes, "d")
                self.features.add("onDone:compound")
        if node.kind == "parallel" and node.parent is not None and rng.random() < 0.8 and all(
                any(g.kind == "final" for g in r.children) for r in node.real_children):
            cfg["onDone"] = self.done_transition(node, all_nodes, "d")
            self.features.add("onDone:parallel")
        if node.kind != "final" and rng.random() < (0.25 if node.parent is None else 0.75):
            cfg["on"] = self.on_config(node, all_nodes)
        if node.kind != "final" and node.parent is not None and rng.random() < 0.15:
            always = []
            for _ in range(rng.choice([1, 1, 2])):
                t: dict[str, Any] = {"guard": self.guard(for_always=True)}
                if rng.random() < 0.6:
                    targets = [n for n in all_nodes if n.parent is not None]
                    t["target"] = self.target_string(node, rng.choice(targets))
                    if rng.random() < 0.2:
                        t["reenter"] = True
                acts = self.transition_actions("a")
                acts.insert(rng.randint(0, len(acts)), "inc")  # bounds the eventless steps
                t["actions"] = acts
                always.append(t)
            cfg["always"] = always if len(always) > 1 else always[0]
            self.features.add("always")
        if node.invokes:
            cfg["invoke"] = self.invoke_config(node, all_nodes)
        if node.children:
            cfg["states"] = {c.key: self.config_of(c, all_nodes) for c in node.children}
        return cfg

    def done_transition(self, node: Node, all_nodes: list[Node], prefix: str) -> dict[str, Any]:
        t: dict[str, Any] = {"actions": [{"type": "log", "params": {"tag": self.tag(prefix)}}]}
        safe = self.quiet_targets(exclude=node)
        if safe and self.rng.random() < 0.7:
            t["target"] = self.target_string(node, self.rng.choice(safe))
        return t

    def invoke_config(self, node: Node, all_nodes: list[Node]) -> dict[str, Any]:
        rng = self.rng
        src = rng.choice(["fetchOk", "fetchOk", "fetchFail"])
        self.features.add(f"invoke:{src}")
        inv: dict[str, Any] = {"src": src}
        if rng.random() < 0.5:
            inv["id"] = f"job{self.tag('')}"
        inv["onDone"] = self.done_transition(node, all_nodes, "od")
        inv["onDone"]["actions"].insert(0, "setFromOutput")
        inv["onError"] = self.done_transition(node, all_nodes, "oe")
        return inv

    def events(self) -> list[dict[str, Any]]:
        rng = self.rng
        pool = sorted(self.events_used) + [UNKNOWN_EVENT]
        if self.wildcards:
            pool += WILDCARD_EVENTS
        out = []
        for _ in range(rng.randint(8, 16)):
            event: dict[str, Any] = {"type": rng.choice(pool)}
            if rng.random() < 0.75:
                event["value"] = rng.randint(0, 2)
            out.append(event)
        return out

    def generate(self) -> dict[str, Any]:
        root = self.build()
        nodes = self.nodes = list(root.walk())
        depth = max(n.depth for n in nodes if n.kind != "history")
        self.features.add(f"depth:{depth}")
        for n in nodes:
            if n.parent is not None and n.kind != "history" and self.rng.random() < 0.15:
                n.explicit_id = f"i{self.tag('')}"
        if self.invoke:
            atomic = [n for n in nodes if n.kind == "atomic" and n.parent is not None]
            for n in self.rng.sample(atomic, min(len(atomic), self.rng.randint(1, 2))):
                n.invokes = True
        config = {"id": self.machine_id, "context": dict(INITIAL_CONTEXT)}
        config.update(self.config_of(root, nodes))
        if self.wildcards:
            self.features.add("wildcards")
        return {"machine": config,
                "cases": [{"context": dict(INITIAL_CONTEXT), "events": self.events()}],
                "features": sorted(self.features)}


def generate(seed: int, **options: Any) -> dict[str, Any]:
    """The machine and event sequence of ``seed`` (deterministic)."""
    return Gen(seed, **options).generate()


def equivalence_jobs(scale: int = 1) -> list[tuple[str, dict[str, Any]]]:
    """The generated machines the equivalence test compares, named: 64 seeds with the
    optional features drawn at random, 12 forcing wildcards, 12 forcing invoke (``scale``
    multiplies the counts, for longer runs)."""
    jobs = [(f"gen-{seed}", generate(seed)) for seed in range(64 * scale)]
    jobs += [(f"gen-wild-{seed}", generate(seed, wildcards=True)) for seed in range(1000, 1000 + 12 * scale)]
    jobs += [(f"gen-invoke-{seed}", generate(seed, invoke=True)) for seed in range(2000, 2000 + 12 * scale)]
    return jobs


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--check":
        import harness
        jobs = [generate(seed) for seed in range(int(argv[1]))]
        results = harness.run_batch([{"machine": j["machine"], "cases": j["cases"]} for j in jobs])
        coverage: dict[str, int] = {}
        rejected = []
        for seed, (job, result) in enumerate(zip(jobs, results)):
            if "error" in result or any("error" in step for case in result["cases"] for step in case):
                rejected.append((seed, result.get("error") or next(
                    s["error"] for c in result["cases"] for s in c if "error" in s)))
                continue
            for f in job["features"]:
                coverage[f] = coverage.get(f, 0) + 1
        print(json.dumps({"coverage": dict(sorted(coverage.items())), "rejected": rejected}, indent=1))
        return 0
    print(json.dumps(generate(int(argv[0]) if argv else 0), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
