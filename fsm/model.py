"""The van Gurp/Bosch object model: structure is shared, an instance is only data.

``Machine``, ``State`` and ``Transition`` are built once per process from YAML and never
change (flyweights). Everything that belongs to one running instance lives in its
:class:`Context`, which travels in every message.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import codec


class Action:
    """A command object. Subclass it and implement :meth:`execute`.

    ``execute`` returns the next event (a string) or ``None``. ``self.params`` holds the
    ``params:`` mapping given in YAML. Actions are shared by every instance, so keep
    per-instance data in ``context``, never on ``self``.
    """

    def __init__(self, name: str = "", params: Mapping[str, Any] | None = None):
        self.name = name or type(self).__name__
        self.params: dict[str, Any] = dict(params or {})

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        raise NotImplementedError(f"{type(self).__name__}.execute")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def max_retry_event(event: str) -> Callable:
    """On the instance's last retry, turn an exception from ``execute`` into ``event``.

    Lets a machine route around a step that keeps failing (to a compensation state, say)
    instead of ending ``failed``.
    """

    def decorate(execute: Callable) -> Callable:
        @functools.wraps(execute)
        def wrapper(self: Action, context: Context, obj: dict[str, Any]) -> str | None:
            try:
                return execute(self, context, obj)
            except Exception:
                if context.retries >= context.max_retries:
                    return event
                raise

        return wrapper

    return decorate


@dataclass(frozen=True)
class Transition:
    event: str
    target: str
    action: Action | None = None
    local: bool = False


@dataclass(frozen=True)
class State:
    name: str
    entry_action: Action | None = None
    do_action: Action | None = None
    exit_action: Action | None = None
    initial: bool = False
    final: bool = False
    transitions: Mapping[str, Transition] = field(default_factory=dict)
    timeout: float | None = None
    timeout_event: str = "timeout"

    @property
    def events(self) -> list[str]:
        return list(self.transitions)

    @property
    def external_events(self) -> list[str]:
        """The events an outsider may send here, sorted: the state's own timeout event
        is fired by its timer, not sent."""
        return sorted(e for e in self.transitions if not (self.timeout and e == self.timeout_event))


@dataclass(frozen=True)
class Machine:
    name: str
    states: Mapping[str, State]
    initial: str
    max_retries: int = 5
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    version: str = ""
    source: str = ""  # "file:line" where it was defined, for messages

    def state(self, name: str) -> State:
        return self.states[name]


class Context(dict):
    """User data (a plain dict) plus the instance's system fields as attributes.

    Only the dict items are user data; the attributes are filled in by the dispatcher.
    """

    correlation_id: str
    machine_name: str
    steps: int
    retries: int
    max_retries: int
    current_state: State | None
    current_event: str | None

    def __init__(self, data: Mapping[str, Any] | None = None, *, correlation_id: str = "",
                 machine: Machine | None = None, steps: int = 0, retries: int = 0,
                 current_state: State | None = None, current_event: str | None = None):
        super().__init__(data or {})
        self.correlation_id = correlation_id
        self.machine_name = machine.name if machine else ""
        self.max_retries = machine.max_retries if machine else 0
        self.steps = steps
        self.retries = retries
        self.current_state = current_state
        self.current_event = current_event

    def user_data(self) -> dict[str, Any]:
        """The user data, checked to be JSON: a bad value is named, never replaced."""
        data = dict(self)
        check_json(data)
        return data


def check_json(data: Mapping[str, Any]) -> None:
    """Refuse, naming the key, anything JSON would reject or silently change (a non-string
    key becomes a string; NaN is not JSON)."""
    from .errors import ContextNotSerialisable

    for key in data:
        if not isinstance(key, str):
            raise ContextNotSerialisable(repr(key), key)
    try:
        # The fast encoder writes NaN as null: its output proves the data clean only when
        # it holds no null at all; otherwise the standard library decides.
        if "null" not in codec.dumps(data):
            return
    except (TypeError, ValueError):
        pass
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError):
        for key, value in data.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise ContextNotSerialisable(str(key), value) from None
        raise
