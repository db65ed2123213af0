"""JSON for the hot path: orjson when installed, else the standard library.

A transition encodes and decodes its message, record and context several times; orjson
does that about five times faster than ``json``, which is most of the embedded
runtime's time (see bench/engine.py). Both produce compact JSON that the other reads.
orjson writes NaN as null instead of refusing it, so values that come from users are
checked with :func:`fsm.model.check_json` (the standard library, ``allow_nan=False``)
before they reach this module. orjson refuses to write integers beyond 64 bits and reads
them as floats; a text holding one is written by the standard library behind one leading
space (still JSON, for any reader), which tells :func:`loads` to read it the same way.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    orjson = None


if orjson is not None:

    def dumps(value: Any) -> str:
        try:
            return orjson.dumps(value).decode()
        except TypeError:  # integers beyond 64 bits: valid JSON that orjson refuses
            # ... and that orjson would read back as floats: the leading space (still
            # JSON) tells loads to read this text with the standard library.
            return " " + json.dumps(value, separators=(",", ":"), allow_nan=False)

    def loads(data: str | bytes) -> Any:
        """orjson, but the standard library for a text ``dumps`` wrote with it (one with
        integers beyond 64 bits, which orjson would read as floats)."""
        return json.loads(data) if data[:1] in (" ", b" ") else orjson.loads(data)

else:

    def dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)

    loads = json.loads


def loads_exact(data: str | bytes) -> Any:
    """:func:`loads` for texts that may have been written before :func:`dumps` marked the
    ones it wrote with the standard library (records in a store): read again with it when
    orjson's answer holds a float past 2**63, which may have been such an integer."""
    value = loads(data)
    return json.loads(data) if orjson is not None and _huge_float(value) else value


def _huge_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if abs(item) >= 9.2e18:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def copy(value: Any) -> Any:
    """A deep copy of a JSON value (faster than ``copy.deepcopy`` for JSON data)."""
    return loads(dumps(value))
