"""Intrinsic functions (``"key.$": "States.Format('{} x', $.n)"``). Pure but for
``States.UUID`` and ``States.MathRandom``.

An expression is parsed once, at load (:func:`parse`: an unknown function, a wrong
number of arguments or a syntax error is a load problem) and evaluated per run
(:func:`evaluate`: a value of the wrong type is :class:`IntrinsicError`, which the state
reports as ``States.IntrinsicFailure``). Arguments are quoted strings (``\\'``, ``\\\\``,
and in ``States.Format`` ``\\{`` and ``\\}``, escaped), numbers, ``true``, ``false``,
``null``, paths (``$.x``, ``$$.Execution.Id``) and nested calls.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import paths
from .paths import is_number, json_type

MAX_NESTING = 10
MAX_TEXT = 10_000          # characters Base64Encode, Base64Decode and Hash take
MAX_RANGE = 1000           # elements ArrayRange makes


class IntrinsicError(ValueError):
    """Evaluating an intrinsic failed (``States.IntrinsicFailure``)."""


class IntrinsicSyntax(ValueError):
    """An intrinsic that cannot be parsed, or calls an unknown function."""


@dataclass(frozen=True)
class Literal:
    value: Any
    raw: str = ""      # a string's text between the quotes, escapes kept (for Format)


@dataclass(frozen=True)
class PathArg:
    path: paths.Path


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


def parse(text: str) -> Call:
    parser = _Parser(text)
    call = parser.call(0)
    parser.space()
    if parser.pos != len(text):
        raise parser.fail("unexpected text after the call")
    return call


def is_intrinsic(text: str) -> bool:
    return isinstance(text, str) and text.startswith("States.")


class _Parser:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def fail(self, reason: str) -> IntrinsicSyntax:
        return IntrinsicSyntax(f"invalid intrinsic function {self.text!r} at character {self.pos + 1}: {reason}")

    def space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\n":
            self.pos += 1

    def call(self, depth: int) -> Call:
        if depth >= MAX_NESTING:
            raise self.fail(f"more than {MAX_NESTING} nested intrinsic functions")
        match = re.compile(r"States\.([A-Za-z0-9]+)").match(self.text, self.pos)
        if not match:
            raise self.fail("expected States.Name(...)")
        name = match.group(1)
        if name not in FUNCTIONS:
            raise IntrinsicSyntax(f"unknown intrinsic function 'States.{name}'; known: "
                                  f"{', '.join('States.' + n for n in sorted(FUNCTIONS))}")
        self.pos = match.end()
        self.space()
        if self.text[self.pos:self.pos + 1] != "(":
            raise self.fail(f"expected '(' after States.{name}")
        self.pos += 1
        args: list[Any] = []
        self.space()
        if self.text[self.pos:self.pos + 1] == ")":
            self.pos += 1
        else:
            while True:
                args.append(self.argument(depth))
                self.space()
                char = self.text[self.pos:self.pos + 1]
                self.pos += 1
                if char == ")":
                    break
                if char != ",":
                    self.pos -= 1
                    raise self.fail("expected ',' or ')'")
        low, high = ARITY[name]
        if not low <= len(args) <= (high if high is not None else len(args)):
            count = f"{low}" if low == high else f"{low} or more" if high is None else f"{low} to {high}"
            raise IntrinsicSyntax(f"States.{name} takes {count} argument{'s' if high != 1 else ''}, "
                                  f"got {len(args)} in {self.text!r}")
        return Call(name, tuple(args))

    def argument(self, depth: int) -> Any:
        self.space()
        rest = self.text[self.pos:]
        if rest.startswith("States."):
            return self.call(depth + 1)
        if rest.startswith("'"):
            return self.string()
        if rest.startswith("$"):
            end = self.path_end()
            text = self.text[self.pos:end]
            try:
                path = paths.parse(text)
            except paths.PathError as exc:
                raise self.fail(f"argument {text!r}: {exc.reason}") from None
            self.pos = end
            return PathArg(path)
        match = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?").match(self.text, self.pos)
        if match:
            self.pos = match.end()
            number = match.group(0)
            return Literal(float(number) if any(c in number for c in ".eE") else int(number))
        for word, value in (("true", True), ("false", False), ("null", None)):
            if rest.startswith(word):
                self.pos += len(word)
                return Literal(value)
        raise self.fail("expected a quoted string, a number, true, false, null, a path or States.Name(...)")

    def path_end(self) -> int:
        """Where a path argument ends: at ',' or ')' outside brackets and quotes."""
        depth, quote, pos = 0, "", self.pos
        while pos < len(self.text):
            char = self.text[pos]
            if quote:
                if char == "\\":
                    pos += 1
                elif char == quote:
                    quote = ""
            elif char in "'\"":
                quote = char
            elif char in "[(":
                depth += 1
            elif char in "])":
                if depth == 0:
                    break
                depth -= 1
            elif (char == "," or char.isspace()) and depth == 0:
                break
            pos += 1
        return pos

    def string(self) -> Literal:
        self.pos += 1
        start, out = self.pos, []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(self.text):
                    break
                following = self.text[self.pos + 1]
                if following not in "'{}\\":
                    raise self.fail(f"'\\{following}' is no escape; escape only ' {{ }} and \\")
                out.append(following)
                self.pos += 2
                continue
            if char == "'":
                raw = self.text[start:self.pos]
                self.pos += 1
                return Literal("".join(out), raw)
            out.append(char)
            self.pos += 1
        raise self.fail("unterminated string")


def evaluate(call: Call, data: Any, context_object: Any) -> Any:
    """The value of ``call`` over the state's data and the context object."""
    values = []
    for arg in call.args:
        if isinstance(arg, Call):
            values.append(evaluate(arg, data, context_object))
        elif isinstance(arg, PathArg):
            try:
                values.append(arg.path.get(data, context_object))
            except paths.NotFound as exc:
                raise IntrinsicError(f"States.{call.name}: {exc}") from None
        else:
            values.append(arg)
    function = FUNCTIONS[call.name]
    if call.name == "Format":
        first = call.args[0]
        if not isinstance(first, Literal) or not isinstance(first.value, str):
            if not isinstance(values[0], str):
                raise IntrinsicError("States.Format: the first argument must be a string")
            return _format(_escape(values[0]), values[1:])
        return _format(first.raw, [v.value if isinstance(v, Literal) else v for v in values[1:]])
    return function([v.value if isinstance(v, Literal) else v for v in values])


# -- the functions -------------------------------------------------------------------


def _need(name: str, value: Any, kind: str, what: str) -> Any:
    checks: dict[str, Callable[[Any], bool]] = {
        "string": lambda v: isinstance(v, str), "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict), "integer": _is_integer, "boolean": lambda v: isinstance(v, bool),
        "number": is_number}
    if not checks[kind](value):
        raise IntrinsicError(f"States.{name}: {what} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}, got "
                             f"{json_type(value)}")
    return int(value) if kind == "integer" else value


def _is_integer(value: Any) -> bool:
    return is_number(value) and float(value).is_integer()


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("{", "\\{").replace("}", "\\}")


def _format(raw: str, args: list[Any]) -> str:
    out, used, pos = [], 0, 0
    while pos < len(raw):
        char = raw[pos]
        if char == "\\" and pos + 1 < len(raw):
            out.append(raw[pos + 1])
            pos += 2
            continue
        if raw.startswith("{}", pos):
            if used >= len(args):
                raise IntrinsicError(f"States.Format: the template has more {{}} than the {len(args)} arguments")
            value = args[used]
            out.append(value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
            used += 1
            pos += 2
            continue
        out.append(char)
        pos += 1
    if used != len(args):
        raise IntrinsicError(f"States.Format: {len(args)} arguments for {used} {{}} in the template")
    return "".join(out)


def _array_partition(a: list[Any]) -> Any:
    items, size = _need("ArrayPartition", a[0], "array", "the first argument"), \
        _need("ArrayPartition", a[1], "integer", "the chunk size")
    if size <= 0:
        raise IntrinsicError("States.ArrayPartition: the chunk size must be more than 0")
    return [items[i:i + size] for i in range(0, len(items), size)]


def _array_range(a: list[Any]) -> Any:
    start, end, step = (_need("ArrayRange", v, "integer", w) for v, w in zip(a, ("start", "end", "step")))
    if step == 0:
        raise IntrinsicError("States.ArrayRange: the step cannot be 0")
    values = list(range(start, end + (1 if step > 0 else -1), step))
    if len(values) > MAX_RANGE:
        raise IntrinsicError(f"States.ArrayRange: {len(values)} elements, more than {MAX_RANGE}")
    return values


def _array_get_item(a: list[Any]) -> Any:
    items = _need("ArrayGetItem", a[0], "array", "the first argument")
    index = _need("ArrayGetItem", a[1], "integer", "the index")
    if not 0 <= index < len(items):
        raise IntrinsicError(f"States.ArrayGetItem: index {index} is outside the array of {len(items)}")
    return items[index]


def _array_unique(a: list[Any]) -> Any:
    kept: list[Any] = []
    seen: set[str] = set()
    for item in _need("ArrayUnique", a[0], "array", "the argument"):
        key = json.dumps(item, sort_keys=True) + json_type(item)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def _text(name: str, value: Any) -> str:
    text = _need(name, value, "string", "the argument")
    if len(text) > MAX_TEXT:
        raise IntrinsicError(f"States.{name}: the input has {len(text)} characters, more than {MAX_TEXT}")
    return text


def _base64_decode(a: list[Any]) -> Any:
    try:
        return base64.b64decode(_text("Base64Decode", a[0]), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise IntrinsicError(f"States.Base64Decode: not base64 of UTF-8 text ({exc})") from None


_HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


def _hash(a: list[Any]) -> Any:
    data = a[0] if isinstance(a[0], str) else json.dumps(a[0], separators=(",", ":"))
    data = _text("Hash", data)
    algorithm = _need("Hash", a[1], "string", "the algorithm")
    if algorithm not in _HASHES:
        raise IntrinsicError(f"States.Hash: unknown algorithm {algorithm!r}; use {', '.join(_HASHES)}")
    return hashlib.new(_HASHES[algorithm], data.encode("utf-8")).hexdigest()


def _json_merge(a: list[Any]) -> Any:
    left, right = _need("JsonMerge", a[0], "object", "the first argument"), \
        _need("JsonMerge", a[1], "object", "the second argument")
    deep = _need("JsonMerge", a[2], "boolean", "the third argument (deep merge)")
    return _merged(left, right) if deep else {**left, **right}


def _merged(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    out = dict(left)
    for key, value in right.items():
        out[key] = _merged(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def _string_to_json(a: list[Any]) -> Any:
    try:
        return json.loads(_need("StringToJson", a[0], "string", "the argument"))
    except json.JSONDecodeError as exc:
        raise IntrinsicError(f"States.StringToJson: not JSON ({exc.msg} at character {exc.pos + 1})") from None


def _math_random(a: list[Any]) -> Any:
    start, end = _need("MathRandom", a[0], "integer", "the start"), _need("MathRandom", a[1], "integer", "the end")
    if end <= start:
        raise IntrinsicError("States.MathRandom: the end must be more than the start")
    rng = random.Random(_need("MathRandom", a[2], "integer", "the seed")) if len(a) > 2 else random
    return rng.randrange(start, end)


def _math_add(a: list[Any]) -> Any:
    return _need("MathAdd", a[0], "integer", "the first argument") + _need("MathAdd", a[1], "integer",
                                                                          "the second argument")


def _string_split(a: list[Any]) -> Any:
    text = _need("StringSplit", a[0], "string", "the first argument")
    separators = _need("StringSplit", a[1], "string", "the separator")
    if not separators:
        return [text] if text else []
    return [part for part in re.split("[" + re.escape(separators) + "]", text) if part]


FUNCTIONS: dict[str, Callable[[list[Any]], Any]] = {
    "Format": lambda a: None,  # needs its raw template: see evaluate
    "StringToJson": _string_to_json,
    "JsonToString": lambda a: json.dumps(a[0], separators=(",", ":"), ensure_ascii=False),
    "Array": lambda a: list(a),
    "ArrayPartition": _array_partition,
    "ArrayContains": lambda a: any(x == a[1] and json_type(x) == json_type(a[1])
                                   for x in _need("ArrayContains", a[0], "array", "the first argument")),
    "ArrayRange": _array_range,
    "ArrayGetItem": _array_get_item,
    "ArrayLength": lambda a: len(_need("ArrayLength", a[0], "array", "the argument")),
    "ArrayUnique": _array_unique,
    "Base64Encode": lambda a: base64.b64encode(_text("Base64Encode", a[0]).encode("utf-8")).decode("ascii"),
    "Base64Decode": _base64_decode,
    "Hash": _hash,
    "JsonMerge": _json_merge,
    "MathRandom": _math_random,
    "MathAdd": _math_add,
    "StringSplit": _string_split,
    "UUID": lambda a: str(uuid.uuid4()),
}
# name -> (fewest, most arguments; None: any number)
ARITY: dict[str, tuple[int, int | None]] = {
    "Format": (1, None), "StringToJson": (1, 1), "JsonToString": (1, 1), "Array": (0, None),
    "ArrayPartition": (2, 2), "ArrayContains": (2, 2), "ArrayRange": (3, 3), "ArrayGetItem": (2, 2),
    "ArrayLength": (1, 1), "ArrayUnique": (1, 1), "Base64Encode": (1, 1), "Base64Decode": (1, 1),
    "Hash": (2, 2), "JsonMerge": (3, 3), "MathRandom": (2, 3), "MathAdd": (2, 2), "StringSplit": (2, 2),
    "UUID": (0, 0),
}
