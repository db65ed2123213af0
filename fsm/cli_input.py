"""What the ``fsm`` command takes from its command line: flags' values checked, with bad
input raised as :class:`UsageError` (exit 2, one line naming the flag and what to give)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, NoReturn

from .message import ID_PATTERN

BAD_INPUT = 2


class UsageError(Exception):
    """Bad input the command line itself finds (a flag's value, a missing file)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, like every other bad input: argparse's
    own usage block would bury the line that says what is wrong."""

    def error(self, message: str) -> NoReturn:
        self.exit(BAD_INPUT, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _json_arg(text: str | None, flag: str) -> dict[str, Any]:
    """A JSON object from the command line. NaN and Infinity are refused: Python's json
    takes them, but they are not JSON and no other language would read them back."""
    if text is None:
        return {}
    text = _file_or_text(text, flag)
    shown = text if len(text) <= 60 else text[:57] + "..."
    try:
        value = json.loads(text, parse_constant=_not_json)
    except ValueError as exc:
        raise UsageError(f"{flag} is not valid JSON: {exc} (got {shown!r}); give a JSON object "
                         """such as '{"key": "value"}'""") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object such as '{{\"key\": \"value\"}}', "
                         f"got a JSON {type(value).__name__} ({shown!r})")
    return value


def _json_value(text: str, flag: str) -> Any:
    """Any JSON value from the command line (an object, array, string, number, ...)."""
    text = _file_or_text(text, flag)
    shown = text if len(text) <= 60 else text[:57] + "..."
    try:
        return json.loads(text, parse_constant=_not_json)
    except ValueError as exc:
        raise UsageError(f"{flag} is not valid JSON: {exc} (got {shown!r}); give a JSON value such as "
                         """'{"key": "value"}', '[1, 2]' or '"text"' (quoted for the shell)""") from None


def _file_or_text(text: str, flag: str) -> str:
    """``file://PATH`` (as the AWS CLI takes it) reads the JSON from a file: a command line
    holds at most 128 KB per argument."""
    if not text.startswith("file://"):
        return text
    path = text[len("file://"):]
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UsageError(f"{flag} {text!r}: cannot read {path!r}: {reason}") from None


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON, which has no NaN or Infinity")


def _id(value: str | None, name: str) -> str | None:
    """An instance id as given, or ``None`` if not given; an empty or malformed one is bad
    input (an empty one would otherwise quietly mean "make one up")."""
    if value is not None and not ID_PATTERN.fullmatch(value):
        raise UsageError(f"{name} {value!r} is not an id: ids are 1 to 128 characters "
                         "from A-Z a-z 0-9 _ . : -")
    return value


def _given(value: str | None, name: str) -> str | None:
    if value is not None and not value.strip():
        leave_out = " or leave the flag out" if name.startswith("--") else ""
        raise UsageError(f"{name} is empty; give a non-empty value{leave_out}")
    return value


def _whole_number(text: str, flag: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        upper = f" to {high}" if high < 10**12 else " up"
        raise UsageError(f"{flag} {text!r} must be a whole number from {low}{upper}")
    return value
