"""Choice rules, compiled at load and evaluated per run. Pure.

A rule is a comparison (``Variable`` plus one operator), or ``And``/``Or`` (a list of
rules) or ``Not`` (one rule). A comparison of values of the wrong type is false (a
``StringEquals`` on a number is not a match); a ``Variable`` (or an operator's ``...Path``)
that is not in the input is ``States.Runtime``, except under ``IsPresent``.
Timestamps are RFC 3339 (``2024-01-31T12:00:00Z``, ``...T12:00:00.5+02:00``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from . import paths
from .errors import AslError
from .paths import is_number

Rule = Callable[[Any, Any], bool]   # (the effective input, the context object) -> matched

_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def timestamp(value: Any) -> dt.datetime | None:
    """An RFC 3339 timestamp as an aware datetime, or None."""
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    head, _, tail = text.partition(".")
    if tail:  # Python takes at most microseconds
        digits = re.match(r"\d+", tail).group(0)  # type: ignore[union-attr]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tail[len(digits):]}"
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def _string(a: Any) -> str | None:
    return a if isinstance(a, str) else None


def _number(a: Any) -> float | None:
    return a if is_number(a) else None


def _boolean(a: Any) -> bool | None:
    return a if isinstance(a, bool) else None


_KINDS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "String": (_string, "a string"), "Numeric": (_number, "a number"), "Boolean": (_boolean, "true or false"),
    "Timestamp": (timestamp, "an RFC 3339 timestamp string"),
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b, "LessThan": lambda a, b: a < b, "GreaterThan": lambda a, b: a > b,
    "LessThanEquals": lambda a, b: a <= b, "GreaterThanEquals": lambda a, b: a >= b,
}
COMPARISONS = {f"{kind}{op}" for kind in _KINDS for op in _COMPARE if kind != "Boolean" or op == "Equals"}
TESTS = {"IsPresent", "IsNull", "IsString", "IsNumeric", "IsBoolean", "IsTimestamp"}
OPERATORS = COMPARISONS | {c + "Path" for c in COMPARISONS} | TESTS | {"StringMatches"}


def _lookup(path: paths.Path, data: Any, ctx: Any, field: str) -> Any:
    try:
        return path.get(data, ctx)
    except paths.NotFound as exc:
        raise AslError("States.Runtime", f"Choice `{field}`: {exc}") from None


def compile_rule(raw: Any, where: str, problems: list[str], top: bool) -> Rule | None:
    """A rule from its JSON, every problem added to ``problems`` (``top``: a rule of
    ``Choices``, which has ``Next``; nested ones have none)."""
    if not isinstance(raw, dict):
        problems.append(f"{where}: a choice rule must be an object")
        return None
    extra = {"Next"} if top else set()
    if "Next" in raw and not top:
        problems.append(f"{where}: a rule inside And, Or or Not has no `Next`")
    for key in ("And", "Or"):
        if key in raw:
            unknown = set(raw) - {key, "Comment"} - extra
            if unknown:
                problems.append(f"{where}: `{key}` goes alone; unexpected {', '.join(sorted(map(repr, unknown)))}")
            items = raw[key]
            if not isinstance(items, list) or not items:
                problems.append(f"{where}: `{key}` must be a non-empty list of rules")
                return None
            rules = [compile_rule(r, f"{where}.{key}[{i}]", problems, False) for i, r in enumerate(items)]
            if any(r is None for r in rules):
                return None
            if key == "And":
                return lambda data, ctx: all(r(data, ctx) for r in rules)  # type: ignore[misc]
            return lambda data, ctx: any(r(data, ctx) for r in rules)  # type: ignore[misc]
    if "Not" in raw:
        inner = compile_rule(raw["Not"], f"{where}.Not", problems, False)
        return None if inner is None else (lambda data, ctx: not inner(data, ctx))
    return _comparison(raw, where, problems, extra)


def _comparison(raw: dict[str, Any], where: str, problems: list[str], extra: set[str]) -> Rule | None:
    variable = raw.get("Variable")
    operators = [k for k in raw if k in OPERATORS]
    unknown = set(raw) - OPERATORS - {"Variable", "Comment"} - extra
    if unknown:
        problems.append(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(sorted(map(repr, unknown)))} in a choice rule")
    if not isinstance(variable, str):
        problems.append(f"{where}: a comparison needs `Variable`, a path")
        return None
    path = paths.checked(variable, f"{where}: `Variable`", problems)
    if path is None:
        return None
    if len(operators) != 1:
        problems.append(f"{where}: a comparison has exactly one operator, got "
                        f"{', '.join(operators) or 'none'}")
        return None
    op, value = operators[0], raw[operators[0]]
    if op in TESTS:
        if not isinstance(value, bool):
            problems.append(f"{where}: `{op}` must be true or false")
            return None
        return _test(op, value, path)
    if op == "StringMatches":
        if not isinstance(value, str):
            problems.append(f"{where}: `StringMatches` must be a string pattern")
            return None
        pattern = _wildcard(value)
        return lambda data, ctx: isinstance(found := _lookup(path, data, ctx, "Variable"), str) and \
            bool(pattern.fullmatch(found))
    by_path = op.endswith("Path")
    name = op[:-4] if by_path else op
    kind = next(k for k in _KINDS if name.startswith(k))
    convert, described = _KINDS[kind]
    compare = _COMPARE[name[len(kind):]]
    if by_path:
        if not isinstance(value, str):
            problems.append(f"{where}: `{op}` must be a path")
            return None
        other = paths.checked(value, f"{where}: `{op}`", problems)
        if other is None:
            return None

        def by_reference(data: Any, ctx: Any) -> bool:
            a = convert(_lookup(path, data, ctx, "Variable"))
            b = convert(_lookup(other, data, ctx, op))
            return a is not None and b is not None and compare(a, b)
        return by_reference
    expected = convert(value)
    if expected is None:
        problems.append(f"{where}: `{op}` must be {described}, got {paths.json_type(value)}")
        return None

    def by_value(data: Any, ctx: Any) -> bool:
        found = convert(_lookup(path, data, ctx, "Variable"))
        return found is not None and compare(found, expected)
    return by_value


def _test(op: str, wanted: bool, path: paths.Path) -> Rule:
    if op == "IsPresent":
        return lambda data, ctx: path.exists(data, ctx) == wanted
    check: Callable[[Any], bool] = {
        "IsNull": lambda v: v is None, "IsString": lambda v: isinstance(v, str),
        "IsNumeric": is_number, "IsBoolean": lambda v: isinstance(v, bool),
        "IsTimestamp": lambda v: timestamp(v) is not None}[op]
    return lambda data, ctx: check(_lookup(path, data, ctx, "Variable")) == wanted


def _wildcard(pattern: str) -> re.Pattern[str]:
    """``*`` matches any text; ``\\*`` is a star and ``\\\\`` a backslash."""
    out, pos = [], 0
    while pos < len(pattern):
        char = pattern[pos]
        if char == "\\" and pos + 1 < len(pattern):
            out.append(re.escape(pattern[pos + 1]))
            pos += 2
            continue
        out.append(".*" if char == "*" else re.escape(char))
        pos += 1
    return re.compile("".join(out), re.DOTALL)
