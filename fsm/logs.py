"""Structured logs: one JSON object per line, never user context values."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

logger = logging.getLogger("fsm")


def log(level: int, message: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, json.dumps({"message": message, **fields}, default=str, separators=(",", ":")))


def redact(body: Any, keep: int = 64) -> str:
    """Enough of a bad payload to recognise it, not enough to leak it."""
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} chars)"


def configure(level: str | int = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
