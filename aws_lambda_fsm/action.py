"""aws-lambda-fsm's ``Action``, as a lambda-fsm action.

An aws-lambda-fsm action differs from ours in three ways, each bridged here so that it
runs unchanged:

* its constructor is ``Action(name, event=None)``, while lambda-fsm's loader creates
  actions as ``cls(name=..., params=...)``: a subclass's own ``__init__`` that takes no
  ``params`` is wrapped to accept (and store) them;
* the base class is usable as it is (YAML names ``aws_lambda_fsm.action.Action`` as a
  placeholder): its ``execute`` does nothing and returns the default ``event``;
* its ``execute`` reads ``context`` and ``obj`` with aws-lambda-fsm's names: a
  subclass's ``execute`` receives them through :class:`aws_lambda_fsm.fsm.Context` and
  :class:`aws_lambda_fsm.fsm.Obj`, and what it changes is carried back.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from fsm import model
from fsm.model import max_retry_event

from .fsm import Context, Obj

__all__ = ["Action", "max_retry_event"]


class Action(model.Action):
    """Subclass it and implement ``execute(self, context, obj)``, as on aws-lambda-fsm."""

    def __init__(self, name: str = "", event: str | None = None, params: Mapping[str, Any] | None = None):
        super().__init__(name, params)
        self.event = event

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "__init__" in own and not _takes_params(own["__init__"]):
            cls.__init__ = _accepting_params(own["__init__"])  # type: ignore[method-assign]
        if "execute" in own:
            cls.execute = _with_legacy_arguments(own["execute"])  # type: ignore[method-assign]

    def execute(self, context: model.Context, obj: dict[str, Any]) -> str | None:
        return self.event


def _takes_params(init: Callable[..., None]) -> bool:
    try:
        parameters = inspect.signature(init).parameters.values()
    except (TypeError, ValueError):  # no signature to read: leave it alone
        return True
    return any(p.name == "params" or p.kind is p.VAR_KEYWORD for p in parameters)


def _accepting_params(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def __init__(self: Action, *args: Any, params: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.params = dict(params or {})
        # An __init__ that never called ours must still leave what lambda-fsm reads.
        vars(self).setdefault("name", kwargs.get("name") or (args[0] if args else type(self).__name__))
        vars(self).setdefault("event", None)

    return __init__


def _with_legacy_arguments(execute: Callable[..., str | None]) -> Callable[..., str | None]:
    @functools.wraps(execute)
    def wrapper(self: Action, context: model.Context, obj: dict[str, Any]) -> str | None:
        if isinstance(context, Context):  # a subclass's execute calling super().execute
            return execute(self, context, obj)
        legacy_context, legacy_obj = Context.lend(context, self), Obj(obj)
        try:
            return execute(self, legacy_context, legacy_obj)
        finally:
            legacy_context.give_back(context)
            if legacy_obj != obj:
                obj.clear()
                obj.update(legacy_obj)

    return wrapper
