"""Structured logs: one JSON object per line, never user context values."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("fsm")

# With FSM_LOG_PAYLOADS=1, redact() adds this much of the payload itself, for debugging.
DEBUG_PAYLOAD_CHARS = 4096


def log(level: int, message: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, json.dumps({"message": message, **fields}, default=str, separators=(",", ":")))


def redact(body: Any, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A payload as its size and the start of its SHA-256, never its content.

    A payload that fails is the one most likely to carry what must not be logged (a card
    number, an API key), and its first characters are as much a leak as all of it. The
    hash of the UTF-8 text tells two payloads apart and, for a body with no dedup id of
    its own, is the start of its dead-letter copy's one. It hides a guessable short
    payload from nobody; a message carries a random id. ``FSM_LOG_PAYLOADS=1`` adds the
    content, read at each call, for debugging, never for production."""
    env = os.environ if environ is None else environ
    text = body if isinstance(body, (str, bytes)) else json.dumps(body, default=str, sort_keys=True)
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    summary: dict[str, Any] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()[:12]}
    if env.get("FSM_LOG_PAYLOADS") == "1":
        content = raw.decode("utf-8", "replace")
        summary["content"] = content[:DEBUG_PAYLOAD_CHARS]
        summary["truncated"] = len(content) > DEBUG_PAYLOAD_CHARS
    return summary


def configure(level: str | int = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
