"""Placeholder: being written."""

from __future__ import annotations

from typing import Any


def register(command: Any) -> None:
    pass
