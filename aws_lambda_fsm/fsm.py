"""aws-lambda-fsm's ``Context``: lambda-fsm's context, seen through aws-lambda-fsm's API.

Both are dicts of user data with the instance's system fields as attributes, and most
attributes agree (``correlation_id``, ``steps``, ``retries``, ``max_retries``,
``current_state``, ``current_event``). What differs is mapped here; what has no
meaning on lambda-fsm (leases, payloads, the transition object) raises
:class:`~aws_lambda_fsm._unsupported.UnsupportedAttribute` with what to use instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from fsm import model

from ._unsupported import UnsupportedAttribute, UnsupportedKey, refuse_module

# Context attributes of aws-lambda-fsm without a counterpart: what to use instead.
_ATTRIBUTES = {
    "current_transition": "use context.current_state and context.current_event",
    "lease_primary": "lambda-fsm's leases are its own business, and fenced: use obj['fence_token']",
    "lease_timeout": "lambda-fsm's leases are its own business (setting `lease_timeout`)",
    "additional_delay_seconds": "wait with lambda-fsm's actions.wait.Sleep or a state `timeout:`",
    "to_payload_dict": "lambda-fsm's messages have their own format; the user data is dict(context)",
    "from_payload_dict": "lambda-fsm's messages have their own format",
    "dispatch": "lambda-fsm's dispatcher runs the transitions; return the next event instead",
    "initialize": "start an instance with fsm.client.start or `fsm start`",
}

# obj keys of aws-lambda-fsm without a counterpart: what to use instead.
_OBJ_KEYS = {
    "payload": "the message is obj['message']",
    "context": "the context is the `context` argument",
    "sent": "lambda-fsm sends the next message after the transition commits",
    "delay": "wait with lambda-fsm's actions.wait.Sleep or a state `timeout:`",
    "lambda_record": "obj['source'] says where the message came from",
    "lambda_context": "lambda-fsm does not hand the Lambda context to actions",
}


class Context(model.Context):
    """What an aws-lambda-fsm action receives as ``context`` for the length of one call.

    It is a copy, lent by :meth:`lend` and returned by :meth:`give_back`, so that
    lambda-fsm's own context class stays free of aws-lambda-fsm's names.
    """

    current_action: Any

    def __init__(self, name: str = "", initial_system_context: Mapping[str, Any] | None = None,
                 initial_user_context: Mapping[str, Any] | None = None, initial_state: Any = None,
                 max_retries: int | None = None):
        """aws-lambda-fsm's constructor, for the unit tests of actions that build a context."""
        system = dict(initial_system_context or {})
        super().__init__(initial_user_context, correlation_id=system.get("correlation_id") or uuid.uuid4().hex,
                         steps=system.get("steps", 0), retries=system.get("retries", 0),
                         current_state=initial_state, current_event=system.get("current_event"))
        self.machine_name = system.get("machine_name", name)
        self.max_retries = system.get("max_retries", 5 if max_retries is None else max_retries)
        self.current_action = None

    @classmethod
    def lend(cls, context: Mapping[str, Any], action: Any) -> Context:
        if isinstance(context, model.Context):
            legacy = cls.__new__(cls)
            dict.update(legacy, context)
            vars(legacy).update(vars(context))
        else:  # a plain dict, from a unit test
            legacy = cls(initial_user_context=context)
        legacy.current_action = action
        return legacy

    def give_back(self, context: dict[str, Any]) -> None:
        """Carry the user data the action changed back to the context that is committed."""
        if dict(context) != dict(self):
            context.clear()
            context.update(self)

    @property
    def name(self) -> str:
        """aws-lambda-fsm's name for the machine's name."""
        return self.machine_name

    def user_context(self) -> dict[str, Any]:
        return dict(self)

    def system_context(self) -> dict[str, Any]:
        """The system fields under aws-lambda-fsm's keys; a snapshot, not a view."""
        state = self.current_state
        return {"machine_name": self.machine_name, "correlation_id": self.correlation_id,
                "current_state": state.name if state is not None else None,
                "current_event": self.current_event, "steps": self.steps, "retries": self.retries,
                "max_retries": self.max_retries}

    def __getattr__(self, name: str) -> Any:
        if name in _ATTRIBUTES:
            raise UnsupportedAttribute(f"context.{name} is aws-lambda-fsm's, and lambda-fsm has no "
                                       f"counterpart: {_ATTRIBUTES[name]}", name=name, obj=self)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r} (an aws-lambda-fsm "
                             "context here has: correlation_id, name, machine_name, current_state, "
                             "current_event, current_action, steps, retries, max_retries, "
                             "user_context(), system_context())", name=name, obj=self)


class Obj(dict):
    """What an aws-lambda-fsm action receives as ``obj``: lambda-fsm's, with a clear
    refusal of aws-lambda-fsm's keys that have no counterpart."""

    def __missing__(self, key: Any) -> Any:
        if key not in _OBJ_KEYS:
            raise KeyError(key)
        raise UnsupportedKey(f"obj[{key!r}] is aws-lambda-fsm's, and lambda-fsm has no counterpart: "
                             f"{_OBJ_KEYS[key]} (obj holds {', '.join(map(repr, self))})")


def __getattr__(name: str) -> Any:
    """``from aws_lambda_fsm.fsm import FSM``: refused with a reason, not a bare ImportError."""
    if name == "FSM":
        raise refuse_module(f"{__name__}.FSM")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
