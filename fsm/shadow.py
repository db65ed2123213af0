"""Notice a user's module that hides one of our top-level packages.

``fsm``, ``actions``, ``sources`` and ``config`` are top-level import names; a user's
``config.py`` or ``actions.py`` beside their Lambda handler or ``fsm.yaml`` comes first
on ``sys.path`` and would be imported instead of ours, failing later with a baffling
error (or, worse, silently working until one of our modules is needed). Fail early,
naming the file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import ShadowedModule

PACKAGES = ("config", "actions", "sources")


def check_packages() -> None:
    root = Path(__file__).resolve().parent.parent
    for name in PACKAGES:
        ours = root / name / "__init__.py"
        loaded = sys.modules.get(name)
        origin = getattr(loaded, "__file__", None)
        if origin and Path(origin).resolve() != ours:
            raise ShadowedModule(_message(Path(origin), name))
        for entry in sys.path:
            folder = Path(entry or ".").resolve()
            if folder == root:
                break
            for candidate in (folder / f"{name}.py", folder / name / "__init__.py", folder / name):
                if candidate.exists() and candidate.resolve() != ours.parent:
                    raise ShadowedModule(_message(candidate, name))


def _message(path: Path, name: str) -> str:
    return (f"{path} shadows lambda-fsm's {name!r} package: rename it (lambda-fsm uses the "
            f"top-level import names fsm, {', '.join(PACKAGES)})")
