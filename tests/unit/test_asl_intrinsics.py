"""Every intrinsic function (fsm.asl.intrinsics), nested calls and escapes."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest

from fsm.asl import intrinsics

DATA = {"n": 3, "s": "a,b,,c", "list": [1, 2, 2, "2", 3, 1], "obj": {"a": 1, "b": {"x": 1}}, "other": {"b": {"y": 2}},
        "text": "hello", "json": "{\"k\": [1, 2]}", "nothing": None}
CTX = {"Execution": {"Id": "exec-1"}}


def run(text: str) -> object:
    return intrinsics.evaluate(intrinsics.parse(text), DATA, CTX)


@pytest.mark.parametrize("text, expected", [
    ("States.Format('n={} and {}', $.n, $.text)", "n=3 and hello"),
    ("States.Format('{}{}{}', true, null, 1.5)", "truenull1.5"),
    ("States.Format('id {}', $$.Execution.Id)", "id exec-1"),
    ("States.Format('braces \\{\\} quote \\' slash \\\\ {}', 'x')", "braces {} quote ' slash \\ x"),
    ("States.Format('obj {}', $.obj)", 'obj {"a":1,"b":{"x":1}}'),
    ("States.StringToJson($.json)", {"k": [1, 2]}),
    ("States.JsonToString($.obj)", '{"a":1,"b":{"x":1}}'),
    ("States.Array(1, 'two', $.n, States.Array())", [1, "two", 3, []]),
    ("States.ArrayPartition($.list, 4)", [[1, 2, 2, "2"], [3, 1]]),
    ("States.ArrayContains($.list, '2')", True),
    ("States.ArrayContains($.list, 9)", False),
    ("States.ArrayRange(1, 9, 2)", [1, 3, 5, 7, 9]),
    ("States.ArrayRange(5, 1, -2)", [5, 3, 1]),
    ("States.ArrayGetItem($.list, 4)", 3),
    ("States.ArrayLength($.list)", 6),
    ("States.ArrayUnique($.list)", [1, 2, "2", 3]),
    ("States.Base64Encode($.text)", base64.b64encode(b"hello").decode()),
    ("States.Base64Decode('aGVsbG8=')", "hello"),
    ("States.Hash($.text, 'SHA-256')", hashlib.sha256(b"hello").hexdigest()),
    ("States.Hash($.text, 'MD5')", hashlib.md5(b"hello").hexdigest()),
    ("States.Hash($.text, 'SHA-1')", hashlib.sha1(b"hello").hexdigest()),
    ("States.JsonMerge($.obj, $.other, false)", {"a": 1, "b": {"y": 2}}),
    ("States.JsonMerge($.obj, $.other, true)", {"a": 1, "b": {"x": 1, "y": 2}}),
    ("States.MathAdd($.n, -5)", -2),
    ("States.StringSplit($.s, ',')", ["a", "b", "c"]),
    ("States.StringSplit('a.b+c', '.+')", ["a", "b", "c"]),
    ("States.ArrayLength(States.StringSplit(States.Format('{}-{}', 'x', 'y'), '-'))", 2),
])
def test_each_function(text: str, expected: object) -> None:
    assert run(text) == expected


def test_random_and_uuid() -> None:
    assert all(5 <= run("States.MathRandom(5, 8)") < 8 for _ in range(50))  # type: ignore[operator]
    assert run("States.MathRandom(0, 1000, 7)") == run("States.MathRandom(0, 1000, 7)")
    value = run("States.UUID()")
    uuid4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert isinstance(value, str) and re.fullmatch(uuid4, value)


@pytest.mark.parametrize("text, message", [
    ("States.Format('{} {}', 1)", "more {} than the 1 arguments"),
    ("States.Format('{}', 1, 2)", "2 arguments for 1 {}"),
    ("States.ArrayLength($.n)", "must be an array, got number"),
    ("States.ArrayGetItem($.list, 6)", "outside the array"),
    ("States.ArrayPartition($.list, 0)", "more than 0"),
    ("States.ArrayRange(1, 2, 0)", "cannot be 0"),
    ("States.ArrayRange(0, 2000, 1)", "more than 1000"),
    ("States.MathAdd(1.5, 1)", "must be an integer"),
    ("States.MathRandom(3, 3)", "more than the start"),
    ("States.StringToJson('{nope')", "not JSON"),
    ("States.Base64Decode('***')", "not base64"),
    ("States.Hash($.text, 'SHA-3')", "unknown algorithm"),
    ("States.JsonMerge($.obj, $.list, false)", "must be an object"),
    ("States.ArrayLength($.missing)", "could not be found"),
])
def test_runtime_failures(text: str, message: str) -> None:
    with pytest.raises(intrinsics.IntrinsicError, match=re.escape(message)):
        run(text)


@pytest.mark.parametrize("text, message", [
    ("States.Nope(1)", "unknown intrinsic function 'States.Nope'"),
    ("States.ArrayLength()", "States.ArrayLength takes 1 argument, got 0"),
    ("States.UUID(1)", "takes 0 argument"),
    ("States.Format('x'", "expected ',' or ')'"),
    ("States.Format('x)", "unterminated string"),
    ("States.Format('\\n')", "is no escape"),
    ("States.Array($.a[)", "argument"),
    ("States.Array(1) junk", "unexpected text"),
    ("States.Array(" * 11 + ")" * 11, "more than 10 nested"),
])
def test_syntax_problems_are_load_errors(text: str, message: str) -> None:
    with pytest.raises(intrinsics.IntrinsicSyntax, match=re.escape(message)):
        intrinsics.parse(text)


def test_ten_nested_calls_are_allowed() -> None:
    text = "States.Array(" * 10 + ")" * 10
    assert json.dumps(run(text)) == "[" * 10 + "]" * 10
