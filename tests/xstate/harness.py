"""Python side of the XState reference: install xstate once, run machines through ``run.mjs``.

``ensure_installed()`` runs ``npm install --no-audit --no-fund`` in this directory when
``node_modules/xstate`` is missing. It raises (never skips) when node or npm is unavailable.
A file lock keeps parallel pytest workers from installing at the same time.
``run_batch(jobs)`` sends every job to ONE node process and returns its results in order.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "run.mjs"


class ReferenceUnavailable(RuntimeError):
    """node/npm missing, or installing xstate failed."""


def ensure_installed() -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise ReferenceUnavailable("node and npm are required for the XState equivalence tests "
                                   f"(node: {node}, npm: {npm})")
    if (HERE / "node_modules" / "xstate" / "package.json").exists():
        return
    lock_path = Path(tempfile.gettempdir()) / f"lambda-fsm-xstate-{zlib.crc32(str(HERE).encode()):08x}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (HERE / "node_modules" / "xstate" / "package.json").exists():
                return
            done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=HERE, check=False,
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0 or not (HERE / "node_modules" / "xstate").exists():
                raise ReferenceUnavailable(f"npm install failed in {HERE}:\n{done.stdout}\n{done.stderr}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_batch(jobs: list[dict[str, Any]], *, timeout: float = 120) -> list[dict[str, Any]]:
    """Each job is ``{"machine": ..., "cases": [...]}``; each result ``{"cases": [[step...]...]}``
    or ``{"error": ...}`` (xstate refused the machine)."""
    ensure_installed()
    done = subprocess.run(["node", str(RUNNER)], input=json.dumps({"batch": jobs}), cwd=HERE, check=False,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"run.mjs failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout)["batch"]
