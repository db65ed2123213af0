"""The actions a compiled ASL machine runs (see :mod:`config.asl` for the wiring).

The context holds the state's JSON document under ``"$"`` (the state's raw input while
it runs, its output once it is done) and the bookkeeping under ``"$$"``: the execution
(``Input``, ``StartTime``, and for a branch or iteration the parent's ``Id``), the
machine's name, and the current state's visit (``name``, ``entered``, retry
``attempts``, a Parallel's or Map's ``plan`` and children's ``outcome``, a ``failure``
about to be raised).

Every do action returns an event and never raises: ``next``, ``choice.N``,
``default``, ``catch.N``, ``retry`` (at once, or ``None`` with a durable wake-up
scheduled for the backoff), ``run`` (a Parallel or Map goes on to start its children),
or ``fail``, whose transition (a step of its own) raises ``fsm.Failed`` with the ASL
error and cause.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fsm.errors import Failed
from fsm.model import Action, Context

from . import data, tasks
from .choice import Rule, timestamp
from .errors import AslError, Catcher, Retrier, decide
from .paths import Path, is_number

DOC, BOOK = "$", "$$"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Spec:
    """One ASL state, compiled: what its actions need at run time."""

    name: str
    kind: str
    flow: data.Flow = field(default_factory=data.Flow)
    retriers: tuple[Retrier, ...] = ()
    catchers: tuple[Catcher, ...] = ()
    result: Any = data.ABSENT                      # Pass
    resource: tasks.Resource | None = None         # Task
    timeout: float | Path | None = None            # Task: seconds, or a path to them
    heartbeat: float | Path | None = None
    rules: tuple[Rule, ...] = ()                   # Choice
    default: bool = False
    wait: tuple[str, Any] | None = None            # Wait: (Seconds|SecondsPath|Timestamp|TimestampPath, value)
    error: tuple[str, Any] | None = None           # Fail: (Error|ErrorPath, value)
    cause: tuple[str, Any] | None = None
    items_path: Any = data.ABSENT                  # Map
    item_selector: data.Template | None = None
    children: tuple[str, ...] = ()                 # Parallel: a machine per branch; Map: the iterator's


def start(machine: str) -> Callable[[Any], dict[str, Any]]:
    """``Machine.start`` of a top-level ASL machine: the input is the first document.
    A branch or iteration gets ``{"$asl": {"input", "execution", "machine"}}`` from its
    parent's plan."""

    def first(given: Any) -> dict[str, Any]:
        if isinstance(given, dict) and isinstance(given.get("$asl"), dict):
            envelope = given["$asl"]
            return {DOC: envelope.get("input"), BOOK: {"execution": dict(envelope.get("execution") or {}),
                                                       "machine": envelope.get("machine") or machine}}
        return {DOC: given, BOOK: {"execution": {"Input": given, "StartTime": now_iso()}, "machine": machine}}
    return first


def output(context: Mapping[str, Any]) -> Any:
    """``Machine.output``: the document."""
    return context.get(DOC)


def _book(context: Context) -> dict[str, Any]:
    book = context.get(BOOK)
    if not isinstance(book, dict):
        book = context[BOOK] = {"execution": {}, "machine": context.machine_name}
    return book


def _visit(context: Context, spec: Spec) -> dict[str, Any]:
    """The current visit's bookkeeping; a new one unless this is a retry of ``spec``."""
    book = _book(context)
    visit = book.get("state")
    if not isinstance(visit, dict) or visit.get("name") != spec.name or not visit.get("retrying"):
        visit = book["state"] = {"name": spec.name, "entered": now_iso(), "attempts": []}
    visit.pop("retrying", None)
    return visit


def context_object(context: Context, spec: Spec, item: tuple[int, Any] | None = None) -> dict[str, Any]:
    book = _book(context)
    visit = book.get("state") or {}
    execution = dict(book.get("execution") or {})
    execution.setdefault("Id", context.correlation_id)
    execution.setdefault("Name", execution["Id"])
    return data.context_object(execution, spec.name, visit.get("entered", ""), book.get("machine", ""),
                               sum(visit.get("attempts") or ()), item)


class StepAction(Action):
    """A do action for one ASL state: the work, then the event for where it leads."""

    rng: Any = random

    def __init__(self, spec: Spec):
        super().__init__(f"{spec.kind}:{spec.name}")
        self.spec = spec

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        try:
            return self.work(context, obj)
        except AslError as error:
            return self.failed(context, obj, error)

    def work(self, context: Context, obj: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def begin(self, context: Context) -> tuple[Any, dict[str, Any]]:
        """The state's visit recorded; its raw input and its context object."""
        _visit(context, self.spec)
        return context.get(DOC), context_object(context, self.spec)

    def enter(self, context: Context) -> tuple[dict[str, Any], Any]:
        """:meth:`begin`, then the input after ``InputPath``: the context object and it."""
        raw, ctx = self.begin(context)
        return ctx, data.select(self.spec.flow.input_path, raw, ctx, "InputPath")

    def done(self, context: Context, document: Any) -> str:
        context[DOC] = document
        _book(context).pop("state", None)
        return "next"

    def failed(self, context: Context, obj: dict[str, Any], error: AslError) -> str | None:
        """Retry, catch or fail, as the state's ``Retry`` and ``Catch`` say."""
        spec, book = self.spec, _book(context)
        visit = book.get("state") if isinstance(book.get("state"), dict) else _visit(context, spec)
        attempts = list(visit.get("attempts") or [])
        decision = decide(error, spec.retriers, spec.catchers, attempts, self.rng)
        if decision.retry is not None:
            attempts += [0] * (decision.retry + 1 - len(attempts))
            attempts[decision.retry] += 1
            visit.update(attempts=attempts, retrying=True)
            visit.pop("plan", None)
            if decision.delay > 0:
                obj["schedule"] = {"event": "retry", "delay": decision.delay}
                return None
            return "retry"
        if decision.catch is not None:
            catcher = spec.catchers[decision.catch]
            try:
                context[DOC] = data.merge(context.get(DOC), catcher.result_path, error.output())
            except AslError as worse:
                return self.fail(context, worse)
            book.pop("state", None)
            return f"catch.{decision.catch}"
        return self.fail(context, error)

    @staticmethod
    def fail(context: Context, error: AslError) -> str:
        book = _book(context)
        book.pop("state", None)
        book["failure"] = {"Error": error.error, "Cause": error.cause}
        return "fail"


class RaiseFailure(Action):
    """The ``fail`` transition: the step fails for good with the recorded ASL error."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        failure = _book(context).get("failure") or {}
        raise Failed(str(failure.get("Error") or "States.Runtime"), str(failure.get("Cause") or ""))


class TaskAction(StepAction):
    def work(self, context: Context, obj: dict[str, Any]) -> str | None:
        spec = self.spec
        raw, ctx = self.begin(context)
        effective = data.select(spec.flow.input_path, raw, ctx, "InputPath")
        given = spec.flow.parameterised(effective, ctx)
        timeout, heartbeat = (self.seconds(s, effective, ctx, f) for s, f in
                              ((spec.timeout, "TimeoutSecondsPath"), (spec.heartbeat, "HeartbeatSecondsPath")))
        assert spec.resource is not None
        result = tasks.run(spec.resource, given, context, {**obj, "input": given, "context_object": ctx},
                           timeout, heartbeat)
        return self.done(context, spec.flow.output(raw, result, ctx))

    @staticmethod
    def seconds(value: Any, effective: Any, ctx: Any, field_name: str) -> float | None:
        if not isinstance(value, Path):
            return value
        found = data.select(value, effective, ctx, field_name)
        if not is_number(found) or found <= 0:
            raise AslError("States.Runtime", f"{field_name} {value.text!r} must select a positive number, "
                                             f"got {found!r}")
        return float(found)


class PassAction(StepAction):
    def work(self, context: Context, obj: dict[str, Any]) -> str | None:
        spec = self.spec
        raw, ctx = self.begin(context)
        given = spec.flow.effective_input(raw, ctx)
        result = given if spec.result is data.ABSENT else spec.result
        return self.done(context, spec.flow.output(raw, result, ctx))


class ChoiceAction(StepAction):
    def work(self, context: Context, obj: dict[str, Any]) -> str | None:
        spec = self.spec
        ctx, given = self.enter(context)
        event = next((f"choice.{i}" for i, rule in enumerate(spec.rules) if rule(given, ctx)),
                     "default" if spec.default else None)
        if event is None:
            raise AslError("States.NoChoiceMatched", f"no choice rule of state {spec.name!r} matched, and it has no "
                                                     "Default")
        self.done(context, data.select(spec.flow.output_path, given, ctx, "OutputPath"))
        return event


class WaitAction(StepAction):
    def work(self, context: Context, obj: dict[str, Any]) -> str | None:
        spec = self.spec
        ctx, given = self.enter(context)
        assert spec.wait is not None
        kind, value = spec.wait
        if kind.endswith("Path"):
            value = data.select(value, given, ctx, kind)
        if kind.startswith("Seconds"):
            if not is_number(value) or value < 0 or not math.isfinite(value):
                raise AslError("States.Runtime", f"Wait {kind} must give a number of seconds of 0 or more, got "
                                                 f"{value!r}")
            delay = float(value)
        else:
            when = timestamp(value)
            if when is None:
                raise AslError("States.Runtime", f"Wait {kind} must give an RFC 3339 timestamp, got {value!r}")
            delay = (when - dt.datetime.now(dt.UTC)).total_seconds()
        event = self.done(context, data.select(spec.flow.output_path, given, ctx, "OutputPath"))
        if delay <= 0:
            return event
        obj["schedule"] = {"event": "next", "delay": delay}
        return None


class SucceedAction(StepAction):
    def work(self, context: Context, obj: dict[str, Any]) -> str | None:
        spec = self.spec
        ctx, given = self.enter(context)
        return self.done(context, data.select(spec.flow.output_path, given, ctx, "OutputPath"))


class FailAction(StepAction):
    def work(self, context: Context, obj: dict[str, Any]) -> str | None:
        spec = self.spec
        raw, ctx = self.begin(context)
        texts = []
        for part in (spec.error, spec.cause):
            if part is None:
                texts.append("")
                continue
            kind, value = part
            if isinstance(value, data.Template):  # an intrinsic function
                value = value(raw, ctx)["v"]
            elif kind.endswith("Path"):
                value = data.select(value, raw, ctx, kind)
                if not isinstance(value, str):
                    raise AslError("States.Runtime", f"Fail {kind} must select a string, got {value!r}")
            texts.append(value)
        return self.fail(context, AslError(texts[0], texts[1]))


class PrepareAction(StepAction):
    """A Parallel's or Map's entry: its children's inputs, computed once (the plan),
    then ``run`` into the state that starts them."""

    def work(self, context: Context, obj: dict[str, Any]) -> str | None:
        spec = self.spec
        visit = _visit(context, spec)
        raw = context.get(DOC)
        ctx = context_object(context, spec)
        book = _book(context)
        execution = {**dict(book.get("execution") or {}), "Id": ctx["Execution"]["Id"],
                     "Name": ctx["Execution"]["Name"]}

        def envelope(given: Any) -> dict[str, Any]:
            return {"$asl": {"input": given, "execution": execution, "machine": book.get("machine", "")}}

        if spec.kind == "Parallel":
            given = spec.flow.effective_input(raw, ctx)
            plan = [[machine, envelope(given)] for machine in spec.children]
        else:
            effective = data.select(spec.flow.input_path, raw, ctx, "InputPath")
            items = data.select(spec.items_path, effective, ctx, "ItemsPath")
            if not isinstance(items, list):
                raise AslError("States.Runtime", f"ItemsPath must select an array, got a "
                                                 f"{type(items).__name__ if items is not None else 'null'}")
            selector = spec.item_selector
            plan = [[spec.children[0], envelope(
                selector(effective, context_object(context, spec, (index, item))) if selector else item)]
                for index, item in enumerate(items)]
        visit["plan"] = plan
        return "run"


def plan(context: Context, event_data: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``Spawn.plan``: what :class:`PrepareAction` computed."""
    visit = _book(context).get("state") or {}
    return [(machine, given) for machine, given in visit.get("plan") or ()]


class Stash(Action):
    """On a Parallel's or Map's ``done`` or ``error``: keep the event's data for
    :class:`FinishAction`."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        visit = _book(context).setdefault("state", {})
        visit.pop("plan", None)
        visit["outcome"] = dict(obj.get("event_data") or {})
        return None


class FinishAction(StepAction):
    """A Parallel's or Map's results (``ResultSelector``, ``ResultPath``,
    ``OutputPath``), or its children's error through ``Retry`` and ``Catch``."""

    def work(self, context: Context, obj: dict[str, Any]) -> str | None:
        spec = self.spec
        visit = _book(context).setdefault("state", {"name": spec.name, "attempts": []})
        outcome = visit.pop("outcome", None) or {}
        if "error" in outcome:
            raise AslError(str(outcome.get("error") or "States.BranchFailed"), str(outcome.get("cause") or ""))
        ctx = context_object(context, spec)
        return self.done(context, spec.flow.output(context.get(DOC), outcome.get("output"), ctx))
