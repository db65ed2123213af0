"""How data flows through a state, as in Step Functions. Pure.

A state's raw input goes ``InputPath`` -> ``Parameters`` (or ``ItemSelector``) -> the
work -> ``ResultSelector`` -> ``ResultPath`` (merged into the raw input) -> ``OutputPath``.
Payload templates are compiled once, at load (:func:`template`); every path in them is
checked then. Run-time failures raise :class:`~fsm.asl.errors.AslError` with the error
name Step Functions gives: ``States.Runtime`` for a path that finds nothing
(``InputPath``, ``OutputPath``, ``ItemsPath``, a template's ``.$``), which nothing
catches; ``States.IntrinsicFailure``; ``States.ResultPathMatchFailure``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import intrinsics, paths
from .errors import AslError

ABSENT = object()   # a path field not given (null is a value: ResultPath null discards)


@dataclass(frozen=True)
class Template:
    """A compiled payload template: constants, paths and intrinsic calls in place."""

    build: Callable[[Any, Any], Any]

    def __call__(self, data: Any, context_object: Any) -> Any:
        return self.build(data, context_object)


def template(raw: Any, where: str, problems: list[str], missing: str = "States.Runtime") -> Template:
    """Compile ``raw`` (any JSON); a ``key.$`` whose value is not a valid path or
    intrinsic adds a message to ``problems`` (and yields null at run time). A path that
    finds nothing at run time is the error ``missing`` names."""
    return Template(_compile(raw, where, problems, missing))


def _compile(raw: Any, where: str, problems: list[str], missing: str) -> Callable[[Any, Any], Any]:
    if isinstance(raw, list):
        items = [_compile(item, where, problems, missing) for item in raw]
        return lambda data, ctx: [item(data, ctx) for item in items]
    if not isinstance(raw, dict):
        return lambda data, ctx: raw
    fields: list[tuple[str, Callable[[Any, Any], Any]]] = []
    for key, value in raw.items():
        key = str(key)
        if key.endswith(".$"):
            fields.append((key[:-2], _dynamic(key, value, where, problems, missing)))
        else:
            fields.append((key, _compile(value, f"{where}.{key}", problems, missing)))
    return lambda data, ctx: {name: build(data, ctx) for name, build in fields}


def _dynamic(key: str, value: Any, where: str, problems: list[str], missing: str) -> Callable[[Any, Any], Any]:
    if not isinstance(value, str):
        problems.append(f"{where}: {key!r} ends in '.$', so its value must be a path or an intrinsic function, "
                        f"got {paths.json_type(value)}")
        return lambda data, ctx: None
    if intrinsics.is_intrinsic(value):
        try:
            call = intrinsics.parse(value)
        except intrinsics.IntrinsicSyntax as exc:
            problems.append(f"{where}: {key!r}: {exc}")
            return lambda data, ctx: None

        def run(data: Any, ctx: Any) -> Any:
            try:
                return intrinsics.evaluate(call, data, ctx)
            except intrinsics.IntrinsicError as exc:
                raise AslError("States.IntrinsicFailure", f"{key!r}: {exc}") from None
        return run
    path = paths.checked(value, f"{where}: {key!r}", problems)
    if path is None:
        return lambda data, ctx: None

    def select(data: Any, ctx: Any) -> Any:
        try:
            return path.get(data, ctx)
        except paths.NotFound as exc:
            raise AslError(missing,
                           f"the JSONPath {value!r} specified for the field {key!r} could not be found in the "
                           f"input ({exc})") from None
    return select


def path_or_null(raw: Any, field: str, where: str, problems: list[str], reference: bool = False) -> Any:
    """A path field: :data:`ABSENT`, ``None`` (null) or a parsed path."""
    if raw is ABSENT or raw is None:
        return raw
    if not isinstance(raw, str):
        problems.append(f"{where}: `{field}` must be a path string or null, got {paths.json_type(raw)}")
        return ABSENT
    path = paths.checked(raw, f"{where}: `{field}`", problems, reference)
    return ABSENT if path is None else path


# -- run time --------------------------------------------------------------------------


def select(path: Any, data: Any, context_object: Any, field: str) -> Any:
    """``InputPath``, ``OutputPath``, ``ItemsPath``: the value, ``{}`` for null, the data
    itself when absent."""
    if path is ABSENT:
        return data
    if path is None:
        return {}
    try:
        return path.get(data, context_object)
    except paths.NotFound as exc:
        raise AslError("States.Runtime", f"{field}: {exc}") from None


def merge(raw_input: Any, path: Any, result: Any) -> Any:
    """``ResultPath``: the result in place of the input (absent or ``$``), the input
    unchanged (null), or the input with the result written at the path."""
    if path is ABSENT:
        return result
    if path is None:
        return raw_input
    try:
        return paths.put(raw_input, path, result)
    except paths.NoPlace as exc:
        raise AslError("States.ResultPathMatchFailure",
                       f"unable to apply ResultPath {path.text!r} to the input: {exc}") from None


@dataclass(frozen=True)
class Flow:
    """One state's data-flow fields, compiled."""

    input_path: Any = ABSENT
    parameters: Template | None = None
    result_selector: Template | None = None
    result_path: Any = ABSENT
    output_path: Any = ABSENT

    def effective_input(self, raw_input: Any, context_object: Any) -> Any:
        """``InputPath`` then ``Parameters``: what the work gets."""
        return self.parameterised(select(self.input_path, raw_input, context_object, "InputPath"), context_object)

    def parameterised(self, data: Any, context_object: Any) -> Any:
        """``Parameters`` applied to the input after ``InputPath``."""
        return self.parameters(data, context_object) if self.parameters is not None else data

    def output(self, raw_input: Any, result: Any, context_object: Any) -> Any:
        """``ResultSelector``, ``ResultPath``, ``OutputPath``: the state's output."""
        if self.result_selector is not None:
            result = self.result_selector(result, context_object)
        merged = merge(raw_input, self.result_path, result)
        return select(self.output_path, merged, context_object, "OutputPath")


def context_object(execution: dict[str, Any], state: str, entered: str, machine: str, retries: int = 0,
                   item: tuple[int, Any] | None = None) -> dict[str, Any]:
    """The ``$$`` object: ``Execution`` (``Id``, ``Input``, ``Name``, ``StartTime``),
    ``State`` (``Name``, ``EnteredTime``, ``RetryCount``), ``StateMachine`` (``Id``,
    ``Name``) and, in a Map's ``ItemSelector``, ``Map.Item`` (``Index``, ``Value``)."""
    found = {"Execution": execution, "State": {"Name": state, "EnteredTime": entered, "RetryCount": retries},
             "StateMachine": {"Id": machine, "Name": machine}}
    if item is not None:
        found["Map"] = {"Item": {"Index": item[0], "Value": item[1]}}
    return found
