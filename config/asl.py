"""Amazon States Language (Step Functions) definitions, compiled onto the statechart model.

A definition becomes one machine, plus one generated machine per Parallel branch
(``NAME/State/0``, ``NAME/State/1``...) and per Map iterator (``NAME/State``), nested
as deep as the definition nests. Each ASL state is a state of the same name (a name
holding '.' or ',' has them replaced by '_') whose do action (:mod:`fsm.asl.runtime`)
does its work and returns the event for where it leads:

- Task: ``next``, ``catch.N``, ``retry`` (back into itself, after a durable wake-up
  for the backoff), ``fail``; one step each (none of its transitions is local).
- Pass, Choice, Wait, Succeed, Fail: local transitions (no message of their own); a
  Wait of more than 0 seconds waits durably.
- Parallel and Map: ``X (input)`` computes the children's inputs, ``X`` runs the
  children (a ``Spawn``), ``X (output)`` applies the results, or the children's error
  through ``Retry`` and ``Catch``.
- End: the hidden final state ``(end)``. ``fail`` raises ``fsm.Failed`` in a step of
  its own, so the error is the instance's.

Every problem is reported through ``problem(line, message)``, all of them, before any
machine is built; a Choice without ``Default`` is a warning (``warn``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from fsm.asl import choice, data, intrinsics, lambdas, runtime
from fsm.asl.errors import KNOWN, Catcher, Retrier
from fsm.asl.paths import json_type
from fsm.asl.tasks import PythonResource
from fsm.model import Action, Machine, Spawn, State, Transition

from .yamlsource import Located, plain

END = "(end)"
FLOW = {"InputPath", "OutputPath"}
COMMON = {"Type", "Comment"}
TRANSITION = {"Next", "End"}
RESULTS = {"Parameters", "ResultSelector", "ResultPath", "Retry", "Catch"}
KEYS: dict[str, set[str]] = {
    "Task": COMMON | FLOW | TRANSITION | RESULTS | {"Resource", "TimeoutSeconds", "TimeoutSecondsPath",
                                                   "HeartbeatSeconds", "HeartbeatSecondsPath"},
    "Pass": COMMON | FLOW | TRANSITION | {"Parameters", "ResultPath", "Result"},
    "Choice": COMMON | FLOW | {"Choices", "Default"},
    "Wait": COMMON | FLOW | TRANSITION | {"Seconds", "SecondsPath", "Timestamp", "TimestampPath"},
    "Succeed": COMMON | FLOW,
    "Fail": COMMON | {"Error", "ErrorPath", "Cause", "CausePath"},
    "Parallel": COMMON | FLOW | TRANSITION | RESULTS | {"Branches"},
    "Map": COMMON | FLOW | TRANSITION | RESULTS | {"ItemsPath", "ItemSelector", "Iterator", "ItemProcessor",
                                                  "MaxConcurrency", "ToleratedFailureCount",
                                                  "ToleratedFailurePercentage", "Label"},
}
UNSUPPORTED = {"ItemReader", "ItemBatcher", "ResultWriter", "Credentials", "MaxConcurrencyPath",
               "ToleratedFailureCountPath", "ToleratedFailurePercentagePath", "Arguments", "Output", "Assign",
               "QueryLanguage", "Items"}
ACTIONS = {"Task": runtime.TaskAction, "Pass": runtime.PassAction, "Choice": runtime.ChoiceAction,
           "Wait": runtime.WaitAction, "Succeed": runtime.SucceedAction, "Fail": runtime.FailAction,
           "Parallel": runtime.PrepareAction, "Map": runtime.PrepareAction}

Problem = Callable[[int, str], None]


class AslCompiler:
    """One ASL definition (a located JSON document) -> its machines. ``resources``
    maps a Task's ``Resource`` to an ``fsm.Action`` (``None``: mapped, but the class
    could not be loaded; already reported)."""

    def __init__(self, doc: Located, name: str, resources: Mapping[str, Action | None], problem: Problem,
                 warn: Problem, options: Mapping[str, Any]):
        self.doc, self.name, self.resources = doc, name, resources
        self.problem, self.warn = problem, warn
        self.options = {**options, "max_retries": 0}
        self.machines: list[Machine] = []
        self.failed = False

    def compile(self) -> list[Machine]:
        """The machine first, then its generated ones; ``[]`` when there were problems."""
        self.definition(self.doc, self.name, "", top=True)
        return [] if self.failed else self.machines

    def report(self, line: int, message: str) -> None:
        self.failed = True
        self.problem(line, message)

    # -- one definition (the top, a branch, an iterator) --------------------------------

    def definition(self, raw: Any, name: str, label: str, top: bool = False) -> None:
        where = label or f"asl machine {name!r}"
        if not isinstance(raw, Located):
            self.report(getattr(raw, "line", self.doc.line), f"{where}: a definition must be an object with "
                        "`StartAt` and `States`")
            return
        allowed = {"StartAt", "States", "Comment"} | ({"Version", "TimeoutSeconds", "QueryLanguage"} if top else
                                                      {"ProcessorConfig"})
        for key in raw:
            if key not in allowed:
                self.report(raw.line_of(key), f"{where}: unknown key {key!r}; allowed here: "
                            f"{', '.join(sorted(allowed))}")
        if top and raw.get("QueryLanguage") not in (None, "JSONPath"):
            self.report(raw.line_of("QueryLanguage"), f"{where}: only the JSONPath query language is supported")
        if top and raw.get("TimeoutSeconds") is not None:
            self.warn(raw.line_of("TimeoutSeconds"), f"{where}: the execution's `TimeoutSeconds` is not enforced")
        config = raw.get("ProcessorConfig")  # INLINE or DISTRIBUTED: either way, one child instance per item
        if isinstance(config, dict) and config.get("Mode", "INLINE") not in ("INLINE", "DISTRIBUTED"):
            self.report(raw.line_of("ProcessorConfig"), f"{where}: `Mode` must be INLINE or DISTRIBUTED")
        states, start = raw.get("States"), raw.get("StartAt")
        if not isinstance(states, Located) or not states:
            self.report(raw.line_of("States"), f"{where}: `States` must be a non-empty object of states")
            return
        if not isinstance(start, str) or start not in states:
            shown = "missing" if start is None else repr(start)
            self.report(raw.line_of("StartAt"), f"{where}: `StartAt` is {shown}; it must name one of the states: "
                        f"{', '.join(map(str, states))}")
        paths = self.paths(states)
        # where a transition into each state goes: a Parallel or Map is entered at `X (input)`
        entries = {name: f"{path} (input)" if isinstance(states[name], dict) and
                   states[name].get("Type") in ("Parallel", "Map") else path for name, path in paths.items()}
        built: dict[str, State] = {}
        edges: dict[str, list[str]] = {}
        for state_name, state_raw in states.items():
            state_where = f"{where}, state {state_name!r}"
            if not isinstance(state_raw, Located):
                self.report(states.line_of(state_name), f"{state_where}: a state must be an object")
                continue
            found = self.state(name, str(state_name), state_raw, state_where, paths, entries, states)
            if found is not None:
                edges[str(state_name)] = found[1]
                for state in found[0]:
                    built[state.path] = state
        if isinstance(start, str) and start in states:
            self.reachable(start, edges, states, where)
        built[END] = State(END, path=END, final=True)
        if isinstance(start, str) and start in paths:
            self.machines.append(Machine(name=name, states=built, initial=entries[start], xstate=True, takes_events=False,
                                         start=runtime.start(self.name), output=runtime.output,
                                         source=f"{self.doc.line}", **self.options))

    def paths(self, states: Located) -> dict[str, str]:
        """Each ASL name's state path: the name, with '.' and ',' made '_', unique."""
        taken, found = {END}, {}
        for name in states:
            base = path = str(name).replace(".", "_").replace(",", "_")
            count = 1
            while path in taken or f"{path} (input)" in taken:
                count += 1
                path = f"{base}~{count}"
            taken.update({path, f"{path} (input)", f"{path} (output)"})
            found[str(name)] = path
        return found

    def reachable(self, start: str, edges: dict[str, list[str]], states: Located, where: str) -> None:
        seen, todo = {start}, deque([start])
        while todo:
            for target in edges.get(todo.popleft(), ()):
                if target not in seen and target in states:
                    seen.add(target)
                    todo.append(target)
        for name in states:
            if name not in seen and str(name) in edges:
                self.report(states.line_of(name), f"{where}, state {name!r}: unreachable from `StartAt` {start!r}")

    # -- one state --------------------------------------------------------------------

    def state(self, machine: str, name: str, raw: Located, where: str, paths: dict[str, str],
              entries: dict[str, str], states: Located) -> tuple[list[State], list[str]] | None:
        kind = raw.get("Type")
        if kind not in KEYS:
            self.report(raw.line_of("Type"), f"{where}: `Type` must be one of {', '.join(KEYS)}, got "
                        f"{'nothing' if kind is None else repr(kind)}")
            return None
        for key in raw:
            if key in UNSUPPORTED:
                self.report(raw.line_of(key), f"{where}: `{key}` is not supported")
            elif key not in KEYS[kind]:
                self.report(raw.line_of(key), f"{where}: unknown key {key!r} for a {kind} state; allowed: "
                            f"{', '.join(sorted(KEYS[kind]))}")
        targets: list[str] = []

        def target(asl_name: Any, key: str, line: int) -> str:
            if not isinstance(asl_name, str) or asl_name not in states:
                self.report(line, f"{where}: `{key}` {asl_name!r} is not a state of this definition; states: "
                            f"{', '.join(map(str, states))}")
                return END
            targets.append(asl_name)
            return entries[asl_name]

        own = paths[name]
        found = self.spec(machine, name, kind, raw, where)
        if found is None:
            return None
        spec, spawn = found
        on: list[Transition] = []
        local = kind != "Task"   # a Task is one step; the rest cost no message of their own
        if kind in ("Choice", "Succeed", "Fail"):
            for key in TRANSITION & set(raw):
                self.report(raw.line_of(key), f"{where}: a {kind} state has no `{key}`")
            after = END
        else:
            has_next, has_end = "Next" in raw, raw.get("End") is True
            if "End" in raw and not isinstance(raw.get("End"), bool):
                self.report(raw.line_of("End"), f"{where}: `End` must be true or false")
            if has_next == has_end:
                self.report(raw.line, f"{where}: give exactly one of `Next` and `End: true`")
            after = target(raw["Next"], "Next", raw.line_of("Next")) if has_next else END
        if kind == "Choice":
            rules = raw.get("Choices") if isinstance(raw.get("Choices"), list) else []
            for index, rule in enumerate(rules):
                line = getattr(rule, "line", raw.line_of("Choices"))
                if isinstance(rule, dict) and "Next" in rule:
                    on.append(Transition(f"choice.{index}", target(rule["Next"], "Next", line), local=True))
                elif isinstance(rule, dict):
                    self.report(line, f"{where}, Choices[{index}]: a rule of `Choices` needs `Next`")
            if "Default" in raw:
                on.append(Transition("default", target(raw["Default"], "Default", raw.line_of("Default")),
                                     local=True))
            else:
                self.warn(raw.line, f"{where}: no `Default`: when no rule matches, the execution fails with "
                          "States.NoChoiceMatched")
        elif kind != "Fail":
            on.append(Transition("next", after, local=local))
        catches = raw.get("Catch") if isinstance(raw.get("Catch"), list) else []
        for index, catcher in enumerate(spec.catchers):
            line = getattr(catches[index], "line", raw.line_of("Catch"))
            on.append(Transition(f"catch.{index}", target(catcher.next, "Next", line), local=local))
        on.append(Transition("fail", None, actions=(runtime.RaiseFailure(),)))
        action = ACTIONS[kind](spec)
        if spawn is None:
            if spec.retriers:
                on.append(Transition("retry", own))
            return [State(name=own, path=own, do_action=action, on=tuple(on))], targets
        return self.spawning(spec, spawn, own, action, on), targets

    def spawning(self, spec: runtime.Spec, spawn: Spawn, own: str, prepare: Action,
                 on: list[Transition]) -> list[State]:
        """A Parallel or Map: ``X (input)`` -> ``X`` (the children) -> ``X (output)``."""
        entry, out = f"{own} (input)", f"{own} (output)"
        stash = runtime.Stash()
        retry = (Transition("retry", entry),) if spec.retriers else ()
        return [
            State(name=entry, path=entry, do_action=prepare,
                  on=(Transition("run", own, local=True), *[t for t in on if t.event != "next"], *retry)),
            State(name=own, path=own, spawn=spawn,
                  on=(Transition(f"xstate.done.state.{own}", out, actions=(stash,)),
                      Transition("error", out, actions=(stash,)))),
            State(name=out, path=out, do_action=runtime.FinishAction(spec), on=(*on, *retry)),
        ]

    # -- what a state's actions need ----------------------------------------------------

    def collect(self, raw: Located, key: str, build: Callable[[list[str]], Any]) -> Any:
        """``build(problems)``, each problem it adds reported at ``key``'s line."""
        problems: list[str] = []
        value = build(problems)
        for message in problems:
            self.report(raw.line_of(key), message)
        return value

    def path_field(self, raw: Located, key: str, where: str, reference: bool = False) -> Any:
        value = raw.get(key, data.ABSENT)
        return self.collect(raw, key, lambda p: data.path_or_null(plain(value) if value is not data.ABSENT else value,
                                                                  key, where, p, reference))

    def template(self, raw: Located, key: str, where: str) -> data.Template | None:
        if key not in raw:
            return None
        return self.collect(raw, key, lambda p: data.template(plain(raw[key]), f"{where}, {key}", p))

    def number(self, raw: Located, key: str, where: str, low: float, integer: bool = True,
               high: float | None = None) -> Any:
        value = raw.get(key)
        if value is None:
            return None
        bad = not isinstance(value, (int, float)) or isinstance(value, bool) or \
            (integer and not float(value).is_integer())
        if bad or value < low or (high is not None and value > high):
            kind = "an integer" if integer else "a number"
            limit = f" from {low:g} to {high:g}" if high is not None else f" of at least {low:g}"
            self.report(raw.line_of(key), f"{where}: `{key}` must be {kind}{limit}, got {value!r}")
            return None
        return value

    def spec(self, machine: str, name: str, kind: str, raw: Located, where: str
             ) -> tuple[runtime.Spec, Spawn | None] | None:
        fields: dict[str, Any] = {}
        selector_key = "Parameters" if kind != "Map" else None
        flow = data.Flow(input_path=self.path_field(raw, "InputPath", where),
                         output_path=self.path_field(raw, "OutputPath", where),
                         parameters=self.template(raw, selector_key, where) if selector_key else None,
                         result_selector=self.template(raw, "ResultSelector", where),
                         result_path=self.path_field(raw, "ResultPath", where, reference=True))
        if kind in ("Task", "Parallel", "Map"):
            fields["retriers"] = self.retriers(raw, where)
            fields["catchers"] = self.catchers(raw, where)
        spawn = None
        if kind == "Pass" and "Result" in raw:
            fields["result"] = plain(raw["Result"])
        elif kind == "Task":
            fields.update(self.task(raw, where))
        elif kind == "Choice":
            rules = raw.get("Choices")
            if not isinstance(rules, list) or not rules:
                self.report(raw.line_of("Choices"), f"{where}: `Choices` must be a non-empty list of rules")
                rules = []
            compiled = [self.collect(raw, "Choices", lambda p, r=r, i=i: choice.compile_rule(
                plain(r), f"{where}, Choices[{i}]", p, True)) for i, r in enumerate(rules)]
            fields.update(rules=tuple(r for r in compiled if r is not None), default="Default" in raw)
        elif kind == "Wait":
            fields["wait"] = self.one_of(raw, ("Seconds", "SecondsPath", "Timestamp", "TimestampPath"), where, True)
        elif kind == "Fail":
            fields["error"] = self.one_of(raw, ("Error", "ErrorPath"), where, False)
            fields["cause"] = self.one_of(raw, ("Cause", "CausePath"), where, False)
        elif kind == "Parallel":
            branches = raw.get("Branches")
            if not isinstance(branches, list) or not branches:
                self.report(raw.line_of("Branches"), f"{where}: `Branches` must be a non-empty list of definitions")
                branches = []
            names = tuple(f"{machine}/{name}/{i}" for i in range(len(branches)))
            for index, branch in enumerate(branches):
                self.definition(branch, names[index], f"{where}, branch {index}")
            fields["children"] = names
            spawn = Spawn(runtime.plan, machines=names, tolerated_failures=None,
                          tolerated_percentage=None)
        elif kind == "Map":
            fields.update(self.map(machine, name, raw, where))
            spawn = fields.pop("spawn")
        return runtime.Spec(name, kind, flow, **fields), spawn

    def one_of(self, raw: Located, keys: tuple[str, ...], where: str, required: bool) -> tuple[str, Any] | None:
        given = [k for k in keys if k in raw]
        if len(given) > 1 or (required and not given):
            self.report(raw.line, f"{where}: give {'exactly' if required else 'at most'} one of "
                        f"{', '.join(f'`{k}`' for k in keys)}")
            return None
        if not given:
            return None
        key = given[0]
        value = raw[key]
        if key in ("ErrorPath", "CausePath") and intrinsics.is_intrinsic(value):
            return self.collect(raw, key, lambda p: (key, data.template({"v.$": value}, f"{where}, {key}", p)))
        if key.endswith("Path"):
            path = self.path_field(raw, key, where)
            return (key, path) if path not in (data.ABSENT, None) else None
        if key == "Seconds":
            value = self.number(raw, key, where, 0)
        elif key == "Timestamp" and choice.timestamp(value) is None:
            self.report(raw.line_of(key), f"{where}: `Timestamp` must be an RFC 3339 timestamp such as "
                        f"2024-01-31T12:00:00Z, got {value!r}")
            return None
        elif not isinstance(value, str):
            self.report(raw.line_of(key), f"{where}: `{key}` must be a string, got {json_type(plain(value))}")
            return None
        return None if value is None else (key, value)

    def task(self, raw: Located, where: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        resource = raw.get("Resource")
        if not isinstance(resource, str) or not resource:
            self.report(raw.line_of("Resource"), f"{where}: a Task needs `Resource`, a string")
        elif resource in self.resources:
            action = self.resources[resource]
            found["resource"] = PythonResource(action) if action is not None else None
            self.failed = self.failed or action is None
        elif lambdas.is_lambda(resource):
            found["resource"] = lambdas.LambdaResource(resource)
        else:
            self.report(raw.line_of("Resource"), f"{where}: `Resource` {resource!r} is not mapped to a class and "
                        "is not a Lambda function ARN; map it under `resources:` in the machines file "
                        "(`RESOURCE: module.Class`)")
        for key in ("TimeoutSeconds", "HeartbeatSeconds"):
            if key in raw and key + "Path" in raw:
                self.report(raw.line_of(key), f"{where}: give `{key}` or `{key}Path`, not both")
            found[key[:-7].lower()] = self.number(raw, key, where, 1) if key in raw else \
                self.path_field(raw, key + "Path", where, reference=True) if key + "Path" in raw else None
        for key in ("timeout", "heartbeat"):
            if found[key] is data.ABSENT:
                found[key] = None
        if isinstance(found["timeout"], (int, float)) and isinstance(found["heartbeat"], (int, float)) \
                and found["heartbeat"] >= found["timeout"]:
            self.report(raw.line_of("HeartbeatSeconds"), f"{where}: `HeartbeatSeconds` must be less than "
                        "`TimeoutSeconds`")
        return found

    def map(self, machine: str, name: str, raw: Located, where: str) -> dict[str, Any]:
        if "ItemSelector" in raw and "Parameters" in raw:
            self.report(raw.line_of("Parameters"), f"{where}: give `ItemSelector` or the older `Parameters`, "
                        "not both")
        selector = "ItemSelector" if "ItemSelector" in raw else "Parameters"
        processors = [k for k in ("ItemProcessor", "Iterator") if k in raw]
        child = f"{machine}/{name}"
        if len(processors) != 1:
            self.report(raw.line, f"{where}: a Map needs exactly one of `ItemProcessor` and the older `Iterator`")
        else:
            self.definition(raw[processors[0]], child, f"{where}, {processors[0]}")
        count = self.number(raw, "ToleratedFailureCount", where, 0)
        share = self.number(raw, "ToleratedFailurePercentage", where, 0, integer=False, high=100)
        concurrency = self.number(raw, "MaxConcurrency", where, 0)
        spawn = Spawn(runtime.plan, max_concurrency=int(concurrency or 0), machines=(child,),
                      tolerated_failures=count,  # type: ignore[arg-type]
                      tolerated_percentage=None if share is None else float(share))  # type: ignore[arg-type]
        return {"items_path": self.path_field(raw, "ItemsPath", where), "children": (child,), "spawn": spawn,
                "item_selector": self.template(raw, selector, where)}

    def retriers(self, raw: Located, where: str) -> tuple[Retrier, ...]:
        found = []
        items = self.policies(raw, "Retry", where)
        for index, item in enumerate(items):
            label = f"{where}, Retry[{index}]"
            self.keys(item, {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds",
                             "JitterStrategy", "Comment"}, label)
            jitter = item.get("JitterStrategy", "NONE")
            if jitter not in ("FULL", "NONE"):
                self.report(item.line_of("JitterStrategy"), f"{label}: `JitterStrategy` must be FULL or NONE")
            interval = self.number(item, "IntervalSeconds", label, 1)
            attempts = self.number(item, "MaxAttempts", label, 0)
            backoff = self.number(item, "BackoffRate", label, 1, integer=False)
            cap = self.number(item, "MaxDelaySeconds", label, 1)
            found.append(Retrier(self.errors(item, label, index == len(items) - 1),
                                 float(1 if interval is None else interval), int(3 if attempts is None else attempts),
                                 float(2.0 if backoff is None else backoff), None if cap is None else float(cap),
                                 jitter == "FULL"))
        return tuple(found)

    def catchers(self, raw: Located, where: str) -> tuple[Catcher, ...]:
        found = []
        items = self.policies(raw, "Catch", where)
        for index, item in enumerate(items):
            label = f"{where}, Catch[{index}]"
            self.keys(item, {"ErrorEquals", "Next", "ResultPath", "Comment"}, label)
            if not isinstance(item.get("Next"), str):
                self.report(item.line_of("Next"), f"{label}: a catcher needs `Next`, a state's name")
            found.append(Catcher(self.errors(item, label, index == len(items) - 1), str(item.get("Next")),
                                 self.path_field(item, "ResultPath", label, reference=True)))
        return tuple(found)

    def policies(self, raw: Located, key: str, where: str) -> list[Located]:
        items = raw.get(key)
        if items is None:
            return []
        if not isinstance(items, list) or not all(isinstance(i, Located) for i in items):
            self.report(raw.line_of(key), f"{where}: `{key}` must be a list of objects")
            return []
        return items

    def errors(self, item: Located, label: str, last: bool) -> tuple[str, ...]:
        names = item.get("ErrorEquals")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            self.report(item.line_of("ErrorEquals"), f"{label}: `ErrorEquals` must be a non-empty list of error names")
            return ()
        for name in names:
            if name.startswith("States.") and name not in KNOWN:
                self.report(item.line_of("ErrorEquals"), f"{label}: unknown error name {name!r}; the States.* "
                            f"names are {', '.join(sorted(KNOWN))}")
        if "States.ALL" in names and (len(names) > 1 or not last):
            self.report(item.line_of("ErrorEquals"), f"{label}: `States.ALL` must stand alone, in the last "
                        "retrier or catcher")
        return tuple(names)

    def keys(self, item: Located, allowed: set[str], label: str) -> None:
        for key in item:
            if key not in allowed:
                self.report(item.line_of(key), f"{label}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}")


def compile_definition(doc: Located, name: str, resources: Mapping[str, Action | None], problem: Problem,
                       warn: Problem, options: Mapping[str, Any]) -> list[Machine]:
    """The machines of one ASL definition (the definition's own first), or ``[]`` when
    ``problem`` was called."""
    return AslCompiler(doc, name, resources, problem, warn, options).compile()


def is_definition(doc: Any) -> bool:
    """A JSON document that is an ASL definition rather than a machines file."""
    return isinstance(doc, dict) and "StartAt" in doc and "States" in doc
