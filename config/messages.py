"""How the loader words a message: a suggestion for a misspelt name, and a value shown
cut short (the top file's) or described by type and size only (an imported file's, which
may be any file an import reached). Nothing here reads a file or reports a problem."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Any


def suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def short(value: Any, limit: int = 60) -> str:
    """A value for a message: its repr, cut short (a whole mapping would drown the message).
    Built piece by piece and stopped at the limit, so a huge value costs no more than a small one."""
    text = "".join(_repr_pieces(value, limit + 1))[: limit + 1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _repr_pieces(value: Any, room: int) -> Iterator[str]:
    """``repr(plain(value))`` in pieces, at least ``room`` characters of them when there are."""
    if isinstance(value, (dict, list)):
        pairs = isinstance(value, dict)
        yield "{" if pairs else "["
        for index, item in enumerate(value.items() if pairs else value):
            if room <= 0:
                return
            text = "".join(_repr_pieces(item[0], room)) + ": " if pairs else ""
            text += "".join(_repr_pieces(item[1] if pairs else item, room))
            yield (", " if index else "") + text
            room -= len(text) + 2
        yield "}" if pairs else "]"
    else:
        text = repr(value[: room + 1]) if isinstance(value, str) and len(value) > room else repr(value)
        yield text


def described(value: Any) -> str:
    """A value's type and size, never its content."""
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, bool):
        return "true or false"
    kinds = {int: "an integer", float: "a number"}
    return kinds.get(type(value), f"a {type(value).__name__}")


# Quoted text in a PyYAML reason: a tag, an anchor, a character of the file.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_TOKEN = re.compile(r"<[a-z ]+>|.|\\.")  # PyYAML's own token names, one character


def masked(reason: str) -> str:
    """A PyYAML reason about an imported file, with any quoted text longer than one
    character (a tag or an anchor name, written in the file) replaced by its length."""
    def length(match: re.Match[str]) -> str:
        inner = match.group(0)[1:-1]
        return match.group(0) if _TOKEN.fullmatch(inner) else f"({len(inner)} characters)"
    return _QUOTED.sub(length, reason)
