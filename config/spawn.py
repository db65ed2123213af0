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

from collections.abc import Callable, Mapping
from typing import Any

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
    from fsm.asl import dataflow

    return dataflow.check_template(template)


def _render(template: Any, data: Any, context_object: Mapping[str, Any]) -> Any:
    from fsm.asl import dataflow

    return dataflow.template(template, data, context_object)


def invoke_spawn(spec: Mapping[str, Any]) -> Spawn:
    machine, template = spec["machine"], spec.get("input")

    def plan(context: Context, event_data: Mapping[str, Any]) -> list[tuple[str, Any]]:
        data = dict(context)
        given = _render(template, data, _context_object(context)) if template is not None else data
        return [(machine, given)]

    return Spawn(plan, single=True, machines=(machine,))


def map_spawn(spec: Mapping[str, Any]) -> Spawn:
    from fsm.asl import paths

    machine, template, items = spec["machine"], spec.get("input"), paths.parse(spec["items"])

    def plan(context: Context, event_data: Mapping[str, Any]) -> list[tuple[str, Any]]:
        data = dict(context)
        found = items.get(data)
        if not isinstance(found, list):
            raise TypeError(f"map items {spec['items']!r} selected a {type(found).__name__}, not a list")
        return [(machine, _item_input(template, data, context, index, item)) for index, item in enumerate(found)]

    tolerated = spec.get("tolerated_failures")
    percentage = spec.get("tolerated_failure_percentage")
    return Spawn(plan, max_concurrency=int(spec.get("max_concurrency") or 0),
                 tolerated_failures=int(tolerated) if tolerated is not None else None,
                 tolerated_percentage=float(percentage) if percentage is not None else None,
                 machines=(machine,))


def _item_input(template: Any, data: Any, context: Context, index: int, item: Any) -> Any:
    if template is None:
        return item
    return _render(template, data, {**_context_object(context), "Map": {"Item": {"Index": index, "Value": item}}})


def _context_object(context: Context) -> dict[str, Any]:
    return {"Execution": {"Id": context.correlation_id}, "StateMachine": {"Name": context.machine_name},
            "State": {"Name": context.current_state.name if context.current_state else ""}}


BUILDERS: dict[str, tuple[dict[str, Any], Callable[[Mapping[str, Any]], Spawn]]] = {
    "invoke": (INVOKE, invoke_spawn), "map": (MAP, map_spawn)}
