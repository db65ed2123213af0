"""The three rooms: the core (``fsm/*.py``) imports no composition, no config, no adapter
and no I/O library; only the entry points at their public paths reach into the
composition (``fsm/app``), which alone knows which adapters exist."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = {"handler.py", "cli.py", "cli_input.py", "client.py", "container.py", "__main__.py"}
FORBIDDEN = ("fsm.app", "config", "sources", "actions", "boto3", "botocore", "redis", "pymemcache", "yaml")
CORE = sorted(p for p in (ROOT / "fsm").glob("*.py") if p.name not in ENTRY_POINTS)


def imported_modules(path: Path) -> list[str]:
    """Absolute module names a file imports, relative imports resolved against ``fsm``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "fsm" if node.level == 1 else "" if node.level == 0 else "<above fsm>"
            module = ".".join(part for part in (base, node.module or "") if part)
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


def test_the_core_is_the_fsm_package_less_its_entry_points() -> None:
    assert {p.name for p in CORE} >= {"dispatcher.py", "engine.py", "lease.py", "message.py", "model.py",
                                      "ports.py", "record.py", "errors.py"}


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_a_core_module_imports_no_composition_config_or_adapter(path: Path) -> None:
    bad = [name for name in imported_modules(path)
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, f"fsm/{path.name} imports {bad}: the core is composed, it does not compose"


def test_the_check_catches_what_it_is_for(tmp_path: Path) -> None:
    """The checker itself: relative and absolute imports of the composition are both seen."""
    sample = tmp_path / "sample.py"
    sample.write_text("from .app.wiring import build\nimport sources.sqs\nfrom config import settings\n")
    found = imported_modules(sample)
    assert "fsm.app.wiring" in found and "sources.sqs" in found and "config.settings" in found


@pytest.mark.parametrize("name", ["handler.py", "client.py", "container.py"])
def test_entry_points_stay_thin(name: str) -> None:
    """Entry points at their public paths delegate: no class or long function of their own."""
    tree = ast.parse((ROOT / "fsm" / name).read_text(encoding="utf-8"))
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    long_functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and len(n.body) > 8]
    assert not classes and not long_functions


def test_every_service_module_that_reads_records_offers_the_whole_reader() -> None:
    from sources.registry import RECORD_SOURCES, record_reader

    for event_source in RECORD_SOURCES:
        reader = record_reader(event_source)
        assert reader.EVENT_SOURCE == event_source
        for hook in ("item_id", "ordered", "read_record"):
            assert callable(getattr(reader, hook)), f"{reader.__name__} lacks {hook}"


def test_the_event_shapes_kept_with_the_tests_are_the_shared_ones() -> None:
    """tests/events is a copy of the project's shared/lambda-events, for checkouts without it."""
    shared = ROOT.parent / "shared" / "lambda-events"
    if not shared.is_dir():
        pytest.skip("no shared/ folder beside this checkout to compare with")
    for kept in (ROOT / "tests" / "events").glob("*.json"):
        assert kept.read_text(encoding="utf-8") == (shared / kept.name).read_text(encoding="utf-8"), kept.name
