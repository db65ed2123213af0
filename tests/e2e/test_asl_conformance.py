"""Amazon States Language conformance: the corpus in ``tests/asl_corpus`` run two ways.

Each corpus file holds one definition and its cases; a case's ``expect`` is what AWS Step
Functions answers according to its documentation: ``{"status": "SUCCEEDED", "output": ...}``
or ``{"status": "FAILED", "error": ..., "cause": ...}`` (``cause`` left out where it is
implementation-specific: then only the error is compared).

* ``test_reference``: moto's Step Functions interpreter (``tests/asl_reference.py``) gives
  the expected answer. This checks the expectations themselves. A case marked
  ``moto_differs`` is one where moto disagrees with the AWS documentation; the documentation
  wins, and the test is skipped with moto's answer in the reason.
* ``test_executor``: the framework's ASL executor (``fsm run FILE.asl.json --input JSON
  --json``, in-process) gives the expected answer, ``moto_differs`` or not.

Run the reference side alone with
``python -m pytest -q -n 0 tests/e2e/test_asl_conformance.py -k reference``.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
CORPUS = TESTS / "asl_corpus"


def _load() -> list[Any]:
    params = []
    for path in sorted(CORPUS.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        names = [case["name"] for case in doc["cases"]]
        assert len(set(names)) == len(names), f"{path.name}: case names repeat"
        for case in doc["cases"]:
            params.append(pytest.param(path.stem, doc["definition"], case,
                                       id=f"{path.stem}:{case['name']}"))
    return params


CASES = _load()


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: 1 and 1.0 are the same number, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def mismatch(expect: dict, got: dict) -> str | None:
    """Why ``got`` is not the answer ``expect`` describes, or None when it is."""
    if got.get("status") != expect["status"]:
        return f"status {got.get('status')!r}, expected {expect['status']!r}"
    if expect["status"] == "SUCCEEDED":
        if "output" not in got or not json_equal(got["output"], expect["output"]):
            return f"output {json.dumps(got.get('output'))}, expected {json.dumps(expect['output'])}"
        return None
    if got.get("error") != expect["error"]:
        return f"error {got.get('error')!r}, expected {expect['error']!r}"
    if "cause" in expect and got.get("cause") != expect["cause"]:
        return f"cause {got.get('cause')!r}, expected {expect['cause']!r}"
    return None


def _describe(stem: str, case: dict, got: dict, why: str) -> str:
    return (f"{stem}:{case['name']}: {why}\n  input:  {json.dumps(case['input'])}\n"
            f"  expect: {json.dumps(case['expect'])}\n  got:    {json.dumps(got)}")


# ---- (1) the reference: moto -----------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_answers() -> dict[str, dict]:
    """Every case's answer from moto, all in one ``mock_aws`` context (starting moto per case
    would cost seconds each)."""
    pytest.importorskip("moto")
    sys.path.insert(0, str(TESTS))
    try:
        from asl_reference import run_reference_many
    finally:
        sys.path.remove(str(TESTS))
    keys, runs = [], []
    for param in CASES:
        _stem, definition, case = param.values
        keys.append(param.id)
        runs.append((definition, case["input"]))
    return dict(zip(keys, run_reference_many(runs)))


@pytest.mark.slow  # the whole corpus on moto: ~30 s, a few Waits and Retry intervals included
@pytest.mark.xdist_group("asl_moto")  # one worker runs moto once, not once per worker
@pytest.mark.parametrize("stem,definition,case", CASES)
def test_reference(moto_answers: dict[str, dict], stem: str, definition: dict, case: dict) -> None:
    got = moto_answers[f"{stem}:{case['name']}"]
    why = mismatch(case["expect"], got)
    if "moto_differs" in case:
        if why is None:
            return  # moto has caught up with AWS here
        pytest.skip(f"moto differs from AWS ({case['moto_differs']}); moto: {json.dumps(got)}")
    assert why is None, _describe(stem, case, got, why)


# ---- (2) ours: the framework's ASL executor --------------------------------------------------

HAVE_EXECUTOR = importlib.util.find_spec("fsm.asl") is not None
STATUSES = {"done": "SUCCEEDED", "failed": "FAILED"}


def run_ours(tmp_path: Path, capsys: pytest.CaptureFixture[str], stem: str, definition: dict,
             data: Any) -> dict:
    """Run one definition on the framework via ``fsm run`` in-process; the answer in the
    shape of ``expect``."""
    from fsm.cli import main

    path = tmp_path / f"{stem}.asl.json"
    path.write_text(json.dumps(definition), encoding="utf-8")
    capsys.readouterr()  # drop anything printed before
    try:
        code = main(["run", str(path), "--input", json.dumps(data), "--json"])
    except SystemExit as exc:  # argparse: a usage error
        code = exc.code
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.strip()]
    if not lines:
        raise AssertionError(f"`fsm run` printed nothing (exit {code}); stderr:\n{captured.err}")
    try:
        status = json.loads(lines[-1])
    except ValueError:
        raise AssertionError(f"`fsm run` did not end with a JSON line (exit {code}):\n"
                             f"{captured.out}\nstderr:\n{captured.err}") from None
    got: dict[str, Any] = {"status": STATUSES.get(status.get("status"), status.get("status"))}
    if got["status"] == "SUCCEEDED":
        got["output"] = status.get("output")
    else:
        for key in ("error", "cause"):
            if status.get(key) is not None:
                got[key] = status[key]
    return got


@pytest.mark.slow  # ~25 s for the corpus
@pytest.mark.skipif(not HAVE_EXECUTOR, reason="the ASL executor (fsm/asl) is not there yet")
@pytest.mark.parametrize("stem,definition,case", CASES)
def test_executor(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                  stem: str, definition: dict, case: dict) -> None:
    # The default store is ./.fsm/fsm.sqlite3: keep each run's instances and timers (a Wait
    # leaves one) in this test's own directory, never in a shared one.
    monkeypatch.chdir(tmp_path)
    for name in ("FSM_STORE", "FSM_SETTINGS", "FSM_CONFIG", "FSM_STREAM"):
        monkeypatch.delenv(name, raising=False)
    got = run_ours(tmp_path, capsys, stem, definition, case["input"])
    why = mismatch(case["expect"], got)
    assert why is None, _describe(stem, case, got, why)


# ---- the corpus itself -----------------------------------------------------------------------


def test_corpus_shape() -> None:
    """Every file has a definition, a note and well-formed cases; enough of them."""
    files = sorted(CORPUS.glob("*.json"))
    assert len(files) >= 64
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert set(doc) <= {"definition", "cases", "note"}, path.name
        assert doc["note"] and doc["cases"], path.name
        assert "StartAt" in doc["definition"] and "States" in doc["definition"], path.name
        for case in doc["cases"]:
            assert set(case) <= {"name", "input", "expect", "moto_differs"}, (path.name, case)
            expect = case["expect"]
            if expect["status"] == "SUCCEEDED":
                assert set(expect) == {"status", "output"}, (path.name, case["name"])
            else:
                assert expect["status"] == "FAILED" and "error" in expect, (path.name, case["name"])
                assert set(expect) <= {"status", "error", "cause"}, (path.name, case["name"])
