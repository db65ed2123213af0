"""Logic shared by adapters that evaluate ``swap`` conditions in Python
(memory, sqlite, memcached) instead of inside the backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsm import codec
from fsm.ports import Record, Scalar


def matches(current: Record | None, expect: Mapping[str, Scalar] | None) -> bool:
    if expect is None:
        return current is None
    if current is None:
        return False
    for name, value in expect.items():  # a plain loop: this runs twice per transition
        if current.get(name) != value:
            return False
    return True


def merged(current: Record | None, fields: Mapping[str, Any]) -> Record:
    record = dict(current or {})
    record.update(fields)
    return record


def dumps(value: Any) -> str:
    return codec.dumps(value)
