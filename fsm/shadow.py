"""Notice a user's module that hides one of our top-level packages.

``fsm``, ``actions``, ``sources`` and ``config`` are top-level import names; a user's
``config.py`` beside their Lambda handler comes first on ``sys.path`` and would be
imported instead of ours, failing later with a baffling error. Fail early, naming it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import ShadowedModule

PACKAGES = ("config", "actions", "sources")


def check_packages() -> None:
    root = Path(__file__).resolve().parent.parent
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin).resolve() if spec and spec.origin else None
        if origin != root / name / "__init__.py":
            raise ShadowedModule(
                f"{origin or name!s} shadows lambda-fsm's {name!r} package; rename your module "
                f"(lambda-fsm uses the top-level names fsm, {', '.join(PACKAGES)})")
