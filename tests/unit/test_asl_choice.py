"""Choice rules (fsm.asl.choice): every operator, its Path form, And/Or/Not, the tests."""

from __future__ import annotations

import pytest

from fsm.asl import choice
from fsm.asl.errors import AslError

INPUT = {"s": "banana", "t": "cherry", "n": 5, "m": 7.5, "b": True, "f": False, "z": None,
         "ts": "2024-01-31T12:00:00Z", "later": "2024-01-31T13:00:00.250+01:00", "ts2": "2024-02-01T00:00:00Z",
         "nested": {"x": 1}}


def rule(raw: dict) -> choice.Rule:
    problems: list[str] = []
    compiled = choice.compile_rule(raw, "Choices[0]", problems, False)
    assert problems == [] and compiled is not None
    return compiled


def holds(raw: dict) -> bool:
    return rule(raw)(INPUT, {})


@pytest.mark.parametrize("op, value, expected", [
    ("StringEquals", "banana", True), ("StringEquals", "apple", False),
    ("StringLessThan", "cherry", True), ("StringGreaterThan", "apple", True),
    ("StringLessThanEquals", "banana", True), ("StringGreaterThanEquals", "banana", True),
    ("StringGreaterThanEquals", "c", False),
])
def test_string_comparisons(op: str, value: str, expected: bool) -> None:
    assert holds({"Variable": "$.s", op: value}) is expected


@pytest.mark.parametrize("op, value, expected", [
    ("NumericEquals", 5, True), ("NumericEquals", 5.0, True), ("NumericLessThan", 6, True),
    ("NumericGreaterThan", 5, False), ("NumericLessThanEquals", 5, True), ("NumericGreaterThanEquals", 4.5, True),
])
def test_numeric_comparisons(op: str, value: float, expected: bool) -> None:
    assert holds({"Variable": "$.n", op: value}) is expected


@pytest.mark.parametrize("op, value, expected", [
    ("TimestampEquals", "2024-01-31T12:00:00Z", True),
    ("TimestampEquals", "2024-01-31T13:00:00+01:00", True),   # the same instant
    ("TimestampLessThan", "2024-01-31T12:00:01Z", True),
    ("TimestampGreaterThan", "2024-01-31T11:59:59.999Z", True),
    ("TimestampLessThanEquals", "2024-01-31T12:00:00Z", True),
    ("TimestampGreaterThanEquals", "2024-02-01T00:00:00Z", False),
])
def test_timestamp_comparisons(op: str, value: str, expected: bool) -> None:
    assert holds({"Variable": "$.ts", op: value}) is expected


def test_boolean_equals() -> None:
    assert holds({"Variable": "$.b", "BooleanEquals": True})
    assert not holds({"Variable": "$.f", "BooleanEquals": True})


@pytest.mark.parametrize("raw, expected", [
    ({"Variable": "$.s", "StringEqualsPath": "$.s"}, True),
    ({"Variable": "$.s", "StringLessThanPath": "$.t"}, True),
    ({"Variable": "$.s", "StringGreaterThanPath": "$.t"}, False),
    ({"Variable": "$.s", "StringLessThanEqualsPath": "$.t"}, True),
    ({"Variable": "$.s", "StringGreaterThanEqualsPath": "$.t"}, False),
    ({"Variable": "$.n", "NumericEqualsPath": "$.n"}, True),
    ({"Variable": "$.n", "NumericLessThanPath": "$.m"}, True),
    ({"Variable": "$.n", "NumericGreaterThanPath": "$.m"}, False),
    ({"Variable": "$.n", "NumericLessThanEqualsPath": "$.m"}, True),
    ({"Variable": "$.n", "NumericGreaterThanEqualsPath": "$.m"}, False),
    ({"Variable": "$.b", "BooleanEqualsPath": "$.f"}, False),
    ({"Variable": "$.ts", "TimestampEqualsPath": "$.ts"}, True),
    ({"Variable": "$.ts", "TimestampLessThanPath": "$.later"}, True),
    ({"Variable": "$.ts", "TimestampGreaterThanPath": "$.ts2"}, False),
    ({"Variable": "$.ts", "TimestampLessThanEqualsPath": "$.ts2"}, True),
    ({"Variable": "$.ts2", "TimestampGreaterThanEqualsPath": "$.ts"}, True),
    ({"Variable": "$.n", "StringEqualsPath": "$.s"}, False),            # types differ: no match
])
def test_path_forms(raw: dict, expected: bool) -> None:
    assert holds(raw) is expected


@pytest.mark.parametrize("raw, expected", [
    ({"Variable": "$.n", "StringEquals": "5"}, False),
    ({"Variable": "$.s", "NumericEquals": 5}, False),
    ({"Variable": "$.b", "NumericEquals": 1}, False),
    ({"Variable": "$.s", "TimestampEquals": "2024-01-31T12:00:00Z"}, False),
])
def test_a_comparison_of_another_type_is_false(raw: dict, expected: bool) -> None:
    assert holds(raw) is expected


@pytest.mark.parametrize("raw, expected", [
    ({"Variable": "$.s", "IsPresent": True}, True), ({"Variable": "$.gone", "IsPresent": True}, False),
    ({"Variable": "$.gone", "IsPresent": False}, True), ({"Variable": "$.z", "IsNull": True}, True),
    ({"Variable": "$.s", "IsNull": True}, False), ({"Variable": "$.s", "IsString": True}, True),
    ({"Variable": "$.n", "IsString": False}, True), ({"Variable": "$.m", "IsNumeric": True}, True),
    ({"Variable": "$.b", "IsNumeric": True}, False), ({"Variable": "$.f", "IsBoolean": True}, True),
    ({"Variable": "$.ts", "IsTimestamp": True}, True), ({"Variable": "$.s", "IsTimestamp": True}, False),
])
def test_type_tests(raw: dict, expected: bool) -> None:
    assert holds(raw) is expected


@pytest.mark.parametrize("pattern, expected", [
    ("ban*", True), ("*an*", True), ("*nana", True), ("b*x", False), ("banana", True), ("*", True),
])
def test_string_matches(pattern: str, expected: bool) -> None:
    assert holds({"Variable": "$.s", "StringMatches": pattern}) is expected


def test_string_matches_escapes() -> None:
    data = {"v": "log*.txt", "w": "a\\b"}
    assert rule({"Variable": "$.v", "StringMatches": "log\\*.txt"})(data, {})
    assert not rule({"Variable": "$.v", "StringMatches": "log\\*.txt"})({"v": "logs.txt"}, {})
    assert rule({"Variable": "$.w", "StringMatches": "a\\\\b"})(data, {})


def test_and_or_not() -> None:
    yes, no = {"Variable": "$.n", "NumericEquals": 5}, {"Variable": "$.n", "NumericEquals": 6}
    assert holds({"And": [yes, yes]}) and not holds({"And": [yes, no]})
    assert holds({"Or": [no, yes]}) and not holds({"Or": [no, no]})
    assert holds({"Not": no}) and not holds({"Not": yes})
    assert holds({"And": [{"Not": no}, {"Or": [no, {"Variable": "$.s", "StringMatches": "b*"}]}]})


def test_a_missing_variable_is_a_runtime_error() -> None:
    with pytest.raises(AslError) as caught:
        holds({"Variable": "$.gone", "StringEquals": "x"})
    assert caught.value.error == "States.Runtime" and "gone" in caught.value.cause


def test_context_object_variables() -> None:
    assert rule({"Variable": "$$.State.Name", "StringEquals": "S"})({}, {"State": {"Name": "S"}})


@pytest.mark.parametrize("raw, message", [
    ({"Variable": "$.n", "NumericEquals": "5"}, "`NumericEquals` must be a number, got string"),
    ({"Variable": "$.n"}, "exactly one operator, got none"),
    ({"Variable": "$.n", "NumericEquals": 1, "StringEquals": "x"}, "exactly one operator"),
    ({"NumericEquals": 1}, "needs `Variable`"),
    ({"Variable": "n", "NumericEquals": 1}, "`Variable`: invalid JSONPath"),
    ({"Variable": "$.n", "NumericEqulas": 1}, "unknown key 'NumericEqulas'"),
    ({"Variable": "$.n", "IsNull": "yes"}, "`IsNull` must be true or false"),
    ({"Variable": "$.t", "TimestampEquals": "yesterday"}, "RFC 3339"),
    ({"And": []}, "non-empty list"),
    ({"Not": {"Variable": "$.n", "NumericEquals": 1, "Next": "X"}}, "has no `Next`"),
])
def test_problems_at_load(raw: dict, message: str) -> None:
    problems: list[str] = []
    choice.compile_rule(raw, "Choices[0]", problems, False)
    assert any(message in p for p in problems), problems
