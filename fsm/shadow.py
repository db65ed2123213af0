"""Notice a user's module that takes one of our top-level names where we need ours.

``fsm``, ``config``, ``sources`` and ``actions`` are lambda-fsm's top-level import names,
and a user's ``config.py`` or ``actions.py`` beside their Lambda handler or ``fsm.yaml``
may come first on ``sys.path``. That is only wrong when a name that must be ours reaches
theirs, so only then do we stop, naming the file:

* the framework imports ``config`` and ``sources`` itself: :func:`check_packages`
  refuses a user's module that would be (or was) imported under either name, before it
  fails later with a baffling error;
* the YAML may name one of our modules (``actions.wait.Sleep``): :func:`shadow_note`
  gives the loader the file that took its place, for an error at the YAML line.

A user's ``actions.py`` whose classes the YAML names as ``actions.MyAction`` is theirs to
use: aws-lambda-fsm's examples keep their actions in just such a module. And a folder
holding another copy of lambda-fsm (a checkout on ``sys.path`` beside the installed
package) is no user's module.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any

from .errors import ShadowedModule

TOP_LEVEL = ("fsm", "config", "sources", "actions")
FRAMEWORK_IMPORTS = ("config", "sources")  # imported by lambda-fsm whatever the YAML says
ROOT = Path(__file__).resolve().parent.parent


def check_packages() -> None:
    """Refuse a user's module that would stand in for ``config`` or ``sources``."""
    for name in FRAMEWORK_IMPORTS:
        origin = origin_of(name)
        if origin is not None and not is_lambda_fsm(name, origin):
            raise ShadowedModule(f"{origin} takes the import name {name!r} from lambda-fsm's own {name!r} "
                                 f"package, which lambda-fsm imports itself: rename it "
                                 f"(lambda-fsm's top-level names are {', '.join(TOP_LEVEL)})")


def shadow_note(module_name: str) -> str | None:
    """Why a YAML name for one of our modules (``actions.wait``) reaches another module.

    A name under one of our top-level packages that our package has must resolve to
    ours; one our package lacks (``actions.MyAction``) is the user's to define.
    """
    top, _, rest = module_name.partition(".")
    if top not in TOP_LEVEL or not rest or not _lambda_fsm_has(module_name):
        return None
    origin = origin_of(top)
    if origin is None or is_lambda_fsm(top, origin):
        return None
    return (f"{origin} is imported as {top!r} and hides lambda-fsm's own {top!r} package, where "
            f"{module_name} lives: rename your module (and the names in the YAML that use it)")


def hidden_note(module_name: str) -> str:
    """For ``actions.MyAction`` (or ``config.MyAction``) missing from our package, which
    defines no actions at its top: the user's module of that name that lost to ours."""
    origin = origin_of(module_name) if module_name in TOP_LEVEL and module_name != "fsm" else None
    if origin is None or not is_lambda_fsm(module_name, origin):
        return ""
    hidden = [str(path) for path in _candidates(module_name) if not is_lambda_fsm(module_name, path)]
    if hidden:
        return (f"; {module_name!r} is lambda-fsm's own package here, which hides your "
                f"{', '.join(hidden)}: rename your module")
    return (f"; {module_name!r} is lambda-fsm's own package here: no module of yours by that name "
            "is on sys.path")


def origin_of(name: str) -> Path | None:
    """Where the top-level module ``name`` came from, or else where ``import name`` would
    find it now (without importing it)."""
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__file__", None):
        return Path(module.__file__)
    try:
        spec = getattr(module, "__spec__", None) if module is not None else importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return _spec_origin(spec)


def is_lambda_fsm(name: str, origin: Path) -> bool:
    """Whether ``origin`` is lambda-fsm's package ``name``: ours, or that of another copy
    of lambda-fsm (an installed one and a checkout may both be on ``sys.path``)."""
    package = origin.parent if origin.name.startswith("__init__.") else origin
    if package.name != name:
        return False
    return package.parent == ROOT or (package.is_dir() and _holds_lambda_fsm(package.parent))


def _holds_lambda_fsm(folder: Path) -> bool:
    return any((folder / "fsm" / f"shadow{suffix}").is_file() for suffix in (".py", ".pyc"))


def _lambda_fsm_has(module_name: str) -> bool:
    base = ROOT.joinpath(*module_name.split("."))
    return base.with_name(base.name + ".py").is_file() or (base / "__init__.py").is_file()


def _candidates(name: str) -> list[Path]:
    """Every module named ``name`` on ``sys.path``, whichever wins: with a ``name.py``
    beside a ``name/`` package (lambda-fsm installed in a Lambda's task root beside the
    user's handler) the package wins, but the module is the user's intent."""
    found: list[Path] = []
    for entry in sys.path:
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, [entry or "."])
        except (ImportError, ValueError):
            spec = None
        for origin in (_spec_origin(spec), Path(entry or ".") / f"{name}.py"):
            if origin is not None and origin.is_file() and origin.resolve() not in found:
                found.append(origin.resolve())
    return found


def _spec_origin(spec: Any) -> Path | None:
    if spec is None:
        return None
    if spec.origin and spec.has_location:
        return Path(spec.origin)
    locations = list(spec.submodule_search_locations or ())  # a namespace package: a bare folder
    return Path(locations[0]) if locations else None
