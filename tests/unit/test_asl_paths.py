"""JSONPath (fsm.asl.paths) and the data flow of one state (fsm.asl.data)."""

from __future__ import annotations

import re

import pytest

from fsm.asl import data, paths
from fsm.asl.errors import AslError

DOC = {"a": {"b": [1, 2, 3], "c": "x"}, "store": {"book": [
    {"title": "A", "price": 8, "tags": ["new"]}, {"title": "B", "price": 12}, {"title": "C", "price": 5.5}]},
    "odd key": 1, "n": None}
CTX = {"Execution": {"Id": "run-1"}, "State": {"Name": "S"}}


@pytest.mark.parametrize("path, expected", [
    ("$", DOC),
    ("$.a.c", "x"),
    ("$.a.b[0]", 1),
    ("$.a.b[-1]", 3),
    ("$['a']['c']", "x"),
    ("$[\"odd key\"]", 1),
    ("$.n", None),
    ("$$.Execution.Id", "run-1"),
    ("$$", CTX),
])
def test_definite_paths_select_one_value(path: str, expected: object) -> None:
    assert paths.parse(path).definite
    assert paths.parse(path).get(DOC, CTX) == expected


@pytest.mark.parametrize("path, expected", [
    ("$.a.b[*]", [1, 2, 3]),
    ("$.a.*", [[1, 2, 3], "x"]),
    ("$.a.b[0:2]", [1, 2]),
    ("$.a.b[::2]", [1, 3]),
    ("$.a.b[0,2]", [1, 3]),
    ("$.store.book[*].title", ["A", "B", "C"]),
    ("$..price", [8, 12, 5.5]),
    ("$.store.book[?(@.price < 10)].title", ["A", "C"]),
    ("$.store.book[?(@.price > 6 && @.price < 10)].title", ["A"]),
    ("$.store.book[?(@.price == 12 || @.title == 'C')].title", ["B", "C"]),
    ("$.store.book[?(@.tags)].title", ["A"]),
    ("$.store.book[?(!@.tags)].title", ["B", "C"]),
    ("$.store.book[?(@.title != 'A')].price", [12, 5.5]),
    ("$.missing[*]", []),
    ("$['a','store'].c", ["x"]),
])
def test_indefinite_paths_select_every_match(path: str, expected: object) -> None:
    assert not paths.parse(path).definite
    assert paths.parse(path).get(DOC, CTX) == expected


@pytest.mark.parametrize("path, detail", [
    ("$.nope", "no field 'nope'"),
    ("$.a.c.d", "a string has no field 'd'"),
    ("$.a.b[7]", "index 7 is out of range"),
])
def test_a_definite_path_that_finds_nothing_says_where(path: str, detail: str) -> None:
    with pytest.raises(paths.NotFound, match=detail):
        paths.parse(path).get(DOC)
    assert not paths.parse(path).exists(DOC)


@pytest.mark.parametrize("path, reason", [
    ("a.b", "a path starts with '$'"),
    ("$.a[", "expected"),
    ("$.a[?(@.x <)]", "expected @.path"),
    ("$..", "expected a field name"),
    ("$.a[1:2:0]", "step cannot be 0"),
    ("$.a b", "expected '.', '..' or '['"),
])
def test_bad_paths_are_refused_with_the_place(path: str, reason: str) -> None:
    with pytest.raises(paths.PathError, match=re.escape(reason)):
        paths.parse(path)


def test_a_reference_path_holds_names_and_indices_only() -> None:
    assert paths.reference("$.a.b[0]").definite
    with pytest.raises(paths.PathError, match="only names and indices"):
        paths.reference("$.a[*]")
    with pytest.raises(paths.PathError, match="context object"):
        paths.reference("$$.Execution")


# -- ResultPath ------------------------------------------------------------------------


@pytest.mark.parametrize("path, expected", [
    ("$", "R"),
    ("$.r", {"a": 1, "b": {"c": 2}, "r": "R"}),
    ("$.b.c", {"a": 1, "b": {"c": "R"}}),
    ("$.x.y.z", {"a": 1, "b": {"c": 2}, "x": {"y": {"z": "R"}}}),
])
def test_result_path_writes_into_a_copy(path: str, expected: object) -> None:
    raw = {"a": 1, "b": {"c": 2}}
    assert data.merge(raw, paths.reference(path), "R") == expected
    assert raw == {"a": 1, "b": {"c": 2}}


def test_result_path_null_keeps_the_input_and_absent_replaces_it() -> None:
    assert data.merge({"a": 1}, None, "R") == {"a": 1}
    assert data.merge({"a": 1}, data.ABSENT, "R") == "R"


def test_result_path_into_arrays() -> None:
    assert data.merge({"l": [1, 2]}, paths.reference("$.l[1]"), "R") == {"l": [1, "R"]}
    with pytest.raises(AslError) as caught:
        data.merge({"l": [1, 2]}, paths.reference("$.l[5]"), "R")
    assert caught.value.error == "States.ResultPathMatchFailure"


@pytest.mark.parametrize("raw, path", [("text", "$.r"), ({"a": "text"}, "$.a.b"), ({"a": [1]}, "$.a.b"),
                                       ({"a": None}, "$.a.b")])
def test_result_path_through_something_that_is_not_an_object_fails(raw: object, path: str) -> None:
    with pytest.raises(AslError) as caught:
        data.merge(raw, paths.reference(path), "R")
    assert caught.value.error == "States.ResultPathMatchFailure"
    assert "not an object" in caught.value.cause


# -- the whole flow --------------------------------------------------------------------


def flow(**raw: object) -> data.Flow:
    problems: list[str] = []
    built = data.Flow(
        input_path=data.path_or_null(raw.get("InputPath", data.ABSENT), "InputPath", "s", problems),
        parameters=data.template(raw["Parameters"], "s", problems) if "Parameters" in raw else None,
        result_selector=data.template(raw["ResultSelector"], "s", problems) if "ResultSelector" in raw else None,
        result_path=data.path_or_null(raw.get("ResultPath", data.ABSENT), "ResultPath", "s", problems, True),
        output_path=data.path_or_null(raw.get("OutputPath", data.ABSENT), "OutputPath", "s", problems))
    assert problems == []
    return built


def test_input_parameters_result_selector_result_path_output_path() -> None:
    f = flow(InputPath="$.order", Parameters={"id.$": "$.id", "fixed": [{"deep.$": "$.id"}], "who.$": "$$.State.Name"},
             ResultSelector={"total.$": "$.sum", "first.$": "States.ArrayGetItem($.items, 0)"},
             ResultPath="$.result", OutputPath="$.result")
    raw = {"order": {"id": 7}, "other": True}
    given = f.effective_input(raw, CTX)
    assert given == {"id": 7, "fixed": [{"deep": 7}], "who": "S"}
    assert f.output(raw, {"sum": 10, "items": ["a", "b"]}, CTX) == {"total": 10, "first": "a"}


def test_null_input_and_output_paths_give_an_empty_object() -> None:
    f = flow(InputPath=None, OutputPath=None)
    assert f.effective_input({"a": 1}, CTX) == {}
    assert f.output({"a": 1}, "R", CTX) == {}


def test_runtime_path_failures_name_the_field() -> None:
    with pytest.raises(AslError) as caught:
        flow(InputPath="$.missing").effective_input({"a": 1}, CTX)
    assert (caught.value.error, "InputPath" in caught.value.cause) == ("States.Runtime", True)
    with pytest.raises(AslError) as caught:
        flow(Parameters={"x.$": "$.missing"}).effective_input({"a": 1}, CTX)
    assert caught.value.error == "States.Runtime" and "'x.$'" in caught.value.cause
    with pytest.raises(AslError) as caught:
        flow(Parameters={"x.$": "States.ArrayLength($.a)"}).effective_input({"a": 1}, CTX)
    assert caught.value.error == "States.IntrinsicFailure"


def test_template_problems_are_collected_at_load() -> None:
    problems: list[str] = []
    data.template({"a.$": "nope", "b.$": 3, "c": {"d.$": "States.Nope()"}, "e.$": "$.ok"}, "Parameters", problems)
    assert len(problems) == 3
    assert "a path starts with '$'" in problems[0]
    assert "must be a path or an intrinsic function" in problems[1]
    assert "unknown intrinsic function 'States.Nope'" in problems[2]
