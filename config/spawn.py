"""YAML states that run child instances: ``invoke: {machine, input}`` and ``map: {items,
machine, input, max_concurrency, tolerated_failures}``, built into a
:class:`fsm.model.Spawn`.

``input`` is a template in Amazon States Language's ``Parameters`` form, evaluated
against the parent's context: a key ending in ``.$`` takes the value its path selects
(``"order.$": "$.order"``; in a map, ``$$.Map.Item.Value`` and ``$$.Map.Item.Index`` are
the item and its index), intrinsic functions included; other keys are copied as they
are. Without ``input``, an ``invoke`` child starts from a copy of the parent's context and
a ``map`` child from its item (an object).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fsm.asl import data, paths
from fsm.asl.errors import AslError
from fsm.errors import Failed
from fsm.model import Context, Spawn

INVOKE = {
    "machine": (str, "the machine a child instance of which runs while the state is active"),
    "input": (dict, "the child's first context: a template over the parent's context (`key.$: $.path`)"),
}
MAP = {
    "items": (str, "a JSONPath into the context selecting the list to map over (`$.items`)"),
    "machine": (str, "the machine each item's child instance runs"),
    "input": (dict, "each child's first context: a template (`$$.Map.Item.Value` is the item)"),
    "max_concurrency": (int, "children running at once; 0 (default) for all"),
    "tolerated_failures": (int, "failed children tolerated before the state raises `error`; default 0"),
    "tolerated_failure_percentage": ((int, float), "failed children tolerated, in percent of them"),
}


def check_template(template: Any) -> list[str]:
    """What is wrong with an ``input`` template's paths and intrinsics (empty: nothing)."""
    problems: list[str] = []
    data.template(template, "input", problems)
    return problems


def _compiled(template: Any) -> data.Template | None:
    return data.template(template, "input", []) if template is not None else None


def invoke_spawn(spec: Mapping[str, Any]) -> Spawn:
    machine, template = spec["machine"], _compiled(spec.get("input"))

    def plan(context: Context, event_data: Mapping[str, Any]) -> list[tuple[str, Any]]:
        given = dict(context)
        with _as_failed():
            return [(machine, template(given, _context_object(context)) if template is not None else given)]

    return Spawn(plan, single=True, machines=(machine,))


def map_spawn(spec: Mapping[str, Any]) -> Spawn:
    machine, template, items = spec["machine"], _compiled(spec.get("input")), paths.parse(spec["items"])

    def plan(context: Context, event_data: Mapping[str, Any]) -> list[tuple[str, Any]]:
        given = dict(context)
        found = items.get(given)
        if not isinstance(found, list):
            raise Failed("States.Runtime", f"map items {spec['items']!r} selected {paths.json_type(found)}, not a list")
        with _as_failed():
            return [(machine, _item_input(template, given, context, index, item)) for index, item in enumerate(found)]

    tolerated = spec.get("tolerated_failures")
    percentage = spec.get("tolerated_failure_percentage")
    return Spawn(plan, max_concurrency=int(spec.get("max_concurrency") or 0),
                 tolerated_failures=int(tolerated) if tolerated is not None else None,
                 tolerated_percentage=float(percentage) if percentage is not None else None,
                 machines=(machine,))


@contextlib.contextmanager
def _as_failed() -> Iterator[None]:
    """A template that cannot be evaluated (a path the context lacks) fails the step at
    once, with ASL's error name: retrying cannot help."""
    try:
        yield
    except AslError as exc:
        raise Failed(exc.error, exc.cause) from None


def _item_input(template: data.Template | None, given: Any, context: Context, index: int, item: Any) -> Any:
    if template is None:
        return item
    return template(given, {**_context_object(context), "Map": {"Item": {"Index": index, "Value": item}}})


def _context_object(context: Context) -> dict[str, Any]:
    return {"Execution": {"Id": context.correlation_id}, "StateMachine": {"Name": context.machine_name},
            "State": {"Name": context.current_state.name if context.current_state else ""}}


BUILDERS: dict[str, tuple[dict[str, Any], Callable[[Mapping[str, Any]], Spawn]]] = {
    "invoke": (INVOKE, invoke_spawn), "map": (MAP, map_spawn)}
