"""Which of a user's modules may take one of lambda-fsm's top-level names.

Only a name that must be ours and reaches theirs is refused: ``config`` or ``sources``
(the framework imports them itself), or a YAML name for one of our modules
(``actions.wait.Sleep``). A user's ``actions.py`` named as ``actions.MyAction`` is fine,
and so is another copy of lambda-fsm (an installed one beside the checkout).

Each case runs in its own interpreter (``-I``: no PYTHONPATH, no script folder on
``sys.path``) with a ``sys.path`` of the test's making, so that no ``actions`` or
``config`` module of the test's ends up in this process's ``sys.modules``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fsm.shadow import is_lambda_fsm, shadow_note

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fsm", "config", "sources", "actions", "aws_lambda_fsm")

CHECK = """
from fsm.errors import ShadowedModule
from fsm.shadow import check_packages
try:
    check_packages()
except ShadowedModule as exc:
    print("refused:", exc)
else:
    print("accepted")
"""

LOAD = """
from config.loader import load_file
from fsm.errors import InvalidDefinition, ShadowedModule
try:
    definitions = load_file("fsm.yaml")
except (InvalidDefinition, ShadowedModule) as exc:
    print(f"{type(exc).__name__}: {exc}")
else:
    machine = definitions.machine("m")
    print("loaded", *(f"{s.name}={type(s.do_action).__module__}.{type(s.do_action).__name__}"
                      for s in machine.states.values() if s.do_action))
"""

USER_ACTIONS = """
from aws_lambda_fsm.action import Action


class Go(Action):
    def __init__(self, name, event=None):  # aws-lambda-fsm's constructor, params-less
        super().__init__(name, event)

    def execute(self, context, obj):
        return "go"
"""


def python(code: str, path: list[Path], cwd: Path) -> str:
    """Run ``code`` with ``path`` first on ``sys.path``; its stdout, or fail with stderr."""
    prelude = f"import sys\nsys.path[:0] = {[str(p) for p in path]!r}\n"
    done = subprocess.run([sys.executable, "-I", "-c", prelude + textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return folder


def machines(do_a: str, do_b: str = "") -> str:
    """A machine ``m`` whose state ``a`` runs ``do_a`` (line 5) and ``b`` ``do_b`` (line 9)."""
    return textwrap.dedent(f"""\
        machines:
        - name: m
          states:
          - name: a
            do_action: {do_a}
            initial: true
            transitions: [{{event: go, target: b}}]
          - name: b
            do_action: {do_b or "null"}
            transitions: [{{event: wake, target: c}}]
          - {{name: c, final: true}}
        """)


SLEEP = "{class: actions.wait.Sleep, params: {seconds: 1, event: wake}}"


# -- the packages the framework imports itself --------------------------------------------


@pytest.mark.parametrize("module", ["config.py", "sources.py", "sources/__init__.py"])
def test_a_module_that_would_be_imported_as_config_or_sources_is_refused(tmp_path: Path, module: str) -> None:
    write(tmp_path, {module: "x = 1\n"})
    out = python(CHECK, [tmp_path, ROOT], tmp_path)
    assert out.startswith("refused:") and str(tmp_path / module) in out, out


@pytest.mark.parametrize("module", ["actions.py", "actions/__init__.py", "config/settings.yaml",
                                    "sources/data.csv"])
def test_a_users_actions_module_or_a_folder_of_data_is_not_refused(tmp_path: Path, module: str) -> None:
    """``config/`` holding YAML is no package: our regular package wins over it."""
    write(tmp_path, {module: "x = 1\n"})
    assert python(CHECK, [tmp_path, ROOT], tmp_path) == "accepted"


def test_a_config_py_that_comes_after_ours_was_imported_is_harmless(tmp_path: Path) -> None:
    """Only what is or would be imported counts: the Lambda handler imports ours first."""
    write(tmp_path, {"config.py": "x = 1\n"})
    code = f"import config.loader\nsys.path.insert(0, {str(tmp_path)!r})\n{CHECK}"
    assert python(code, [ROOT], tmp_path) == "accepted"


def test_a_non_editable_install_is_not_reported_as_shadowing_itself(tmp_path: Path) -> None:
    """``pip install .`` then ``fsm ...`` in the checkout: lambda-fsm comes from
    site-packages, and the checkout (the current directory, put on ``sys.path`` by the
    command) holds another copy of the same packages, which is no user's module."""
    site = tmp_path / "site-packages"
    for name in PACKAGES:
        shutil.copytree(ROOT / name, site / name, ignore=shutil.ignore_patterns("__pycache__"))
    code = f"""
        import fsm
        assert fsm.__file__.startswith({str(site)!r}), fsm.__file__
        sys.path.insert(0, {str(ROOT)!r})
        {CHECK}
        import config
        print(config.__file__)
    """
    out = python(textwrap.dedent(code).replace("\n        ", "\n"), [site], ROOT).splitlines()
    assert out == ["accepted", str(ROOT / "config" / "__init__.py")]


def test_the_copies_of_lambda_fsm_are_told_apart_from_a_users_modules(tmp_path: Path) -> None:
    write(tmp_path, {"config.py": "", "sources/__init__.py": "", "copy/fsm/shadow.py": "",
                     "copy/config/__init__.py": ""})
    assert is_lambda_fsm("config", ROOT / "config" / "__init__.py")
    assert is_lambda_fsm("config", tmp_path / "copy" / "config" / "__init__.py")
    assert not is_lambda_fsm("config", tmp_path / "config.py")
    assert not is_lambda_fsm("sources", tmp_path / "sources" / "__init__.py")
    assert not is_lambda_fsm("actions", ROOT / "config" / "__init__.py")


def test_names_outside_our_modules_are_never_shadowed() -> None:
    """``actions.MyAction`` names no module of ours: it is the user's to define."""
    assert shadow_note("actions") is None
    assert shadow_note("shop.actions") is None
    assert shadow_note("actions.no_such_module") is None
    assert shadow_note("actions.wait") is None  # ours, and ours is what this process has


# -- names in the YAML ----------------------------------------------------------------------


def test_a_users_actions_py_named_as_actions_my_action_just_works(tmp_path: Path) -> None:
    write(tmp_path, {"actions.py": USER_ACTIONS, "fsm.yaml": machines("actions.Go")})
    assert python(LOAD, [ROOT], tmp_path) == "loaded a=actions.Go"


def test_the_machines_files_folder_comes_before_a_checkout_on_the_path(tmp_path: Path) -> None:
    """``fsm run examples/tracer/fsm.yaml`` in a checkout: the current directory, already
    on ``sys.path``, holds our ``actions``; the tracer's own ``actions.py`` must win."""
    write(tmp_path, {"actions.py": USER_ACTIONS, "fsm.yaml": machines("actions.Go")})
    assert python(LOAD, [ROOT, tmp_path], tmp_path) == "loaded a=actions.Go"


def test_our_sleep_beside_no_actions_py_of_the_users_loads(tmp_path: Path) -> None:
    write(tmp_path, {"go_actions.py": USER_ACTIONS, "fsm.yaml": machines("go_actions.Go", SLEEP)})
    assert python(LOAD, [ROOT], tmp_path) == "loaded a=go_actions.Go b=actions.wait.Sleep"


@pytest.mark.parametrize("module", ["actions.py", "actions/__init__.py"])
def test_our_sleep_reached_through_a_users_actions_is_a_located_error(tmp_path: Path, module: str) -> None:
    """Both names in one file: the user's action loads, ours is reported at its line."""
    write(tmp_path, {module: USER_ACTIONS, "fsm.yaml": machines("actions.Go", SLEEP)})
    out = python(LOAD, [ROOT], tmp_path)
    assert out.startswith("InvalidDefinition: ") and len(out.splitlines()) == 1, out
    assert f"fsm.yaml:9: machine 'm', state 'b', do_action: cannot import 'actions.wait.Sleep': " \
           f"{tmp_path / module} is imported as 'actions' and hides lambda-fsm's own 'actions' package" in out


def test_a_users_actions_package_with_its_own_wait_module_is_refused(tmp_path: Path) -> None:
    """``actions.wait.Sleep`` is documented as ours: reaching a user's class by it is wrong."""
    write(tmp_path, {"actions/__init__.py": "", "actions/wait.py": USER_ACTIONS.replace("Go", "Sleep"),
                     "fsm.yaml": machines("actions.wait.Sleep")})
    out = python(LOAD, [ROOT], tmp_path)
    assert "fsm.yaml:5:" in out and f"{tmp_path / 'actions' / '__init__.py'} is imported as 'actions'" in out


def test_a_config_py_hidden_by_ours_is_named_when_the_yaml_needs_it(tmp_path: Path) -> None:
    write(tmp_path, {"config.py": USER_ACTIONS, "fsm.yaml": machines("config.Go")})
    out = python(LOAD, [ROOT], tmp_path)
    assert "fsm.yaml:5:" in out and "module 'config' has no 'Go'" in out
    assert f"'config' is lambda-fsm's own package here, which hides your {tmp_path / 'config.py'}" in out


def test_a_sources_py_beside_the_machines_file_is_refused_as_soon_as_it_is_on_the_path(tmp_path: Path) -> None:
    write(tmp_path, {"sources.py": "x = 1\n", "go_actions.py": USER_ACTIONS,
                     "fsm.yaml": machines("go_actions.Go")})
    out = python(LOAD, [ROOT], tmp_path)
    assert out.startswith(f"ShadowedModule: {tmp_path / 'sources.py'} takes the import name 'sources'"), out
