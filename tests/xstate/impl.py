"""The named actions, guards and actors of the XState equivalence tests, for lambda-fsm.

They mirror the implementations ``run.mjs`` gives xstate, one for one:

=================  ==========================================  =========================
name               XState (run.mjs)                            here
=================  ==========================================  =========================
``inc``            ``count += 1``                              :class:`Inc`
``log``            ``log.push(params.tag)``                    :class:`Log`
``setFromEvent``   ``last = event.value ?? null``              :class:`SetFromEvent`
``setFromOutput``  ``last = event.output ?? null``             :class:`SetFromOutput`
``countBelow``     ``count < params.max``                      :class:`CountBelow`
``eventValueIs``   ``event.value === params.v``                :class:`EventValueIs`
``yes`` / ``no``   ``true`` / ``false``                        :class:`Yes` / :class:`No`
``fetchOk``        promise resolving to ``{"ok": true}``       :class:`FetchOk`
``fetchFail``      promise rejecting with ``Error("boom")``    :class:`FetchFail`
=================  ==========================================  =========================

Actions never mutate a value in place (``log`` gets a new list), like ``assign``, so a
context shared with an earlier snapshot never changes under it. Everything is
deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsm import Action, Guard

ACTIONS = {"inc": "impl.Inc", "log": "impl.Log", "setFromEvent": "impl.SetFromEvent",
           "setFromOutput": "impl.SetFromOutput"}
GUARDS = {"countBelow": "impl.CountBelow", "eventValueIs": "impl.EventValueIs", "yes": "impl.Yes",
          "no": "impl.No"}
ACTORS = {"fetchOk": "impl.FetchOk", "fetchFail": "impl.FetchFail"}


def _event_data(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("event_data") or {}


class Inc(Action):
    def execute(self, context, obj):
        context["count"] = context.get("count", 0) + 1


class Log(Action):
    def execute(self, context, obj):
        context["log"] = [*context.get("log", []), self.params["tag"]]


class SetFromEvent(Action):
    def execute(self, context, obj):
        context["last"] = _event_data(obj).get("value")


class SetFromOutput(Action):
    def execute(self, context, obj):
        context["last"] = _event_data(obj).get("output")


class CountBelow(Guard):
    def check(self, context, event_data):
        return context.get("count", 0) < self.params["max"]


class EventValueIs(Guard):
    def check(self, context, event_data):
        return _strict_equal((event_data or {}).get("value"), self.params["v"])


def _strict_equal(a: Any, b: Any) -> bool:
    """JavaScript's ``===`` on JSON values: 1 === 1.0, but 1 !== true and 1 !== "1"."""
    number = (int, float)
    if isinstance(a, number) and isinstance(b, number) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b
    return type(a) is type(b) and a == b


class Yes(Guard):
    def check(self, context, event_data):
        return True


class No(Guard):
    def check(self, context, event_data):
        return False


class FetchOk(Action):
    """An invoked actor: its return value is the ``done`` output."""

    def execute(self, context, obj):
        return {"ok": True}


class FetchFail(Action):
    """An invoked actor that fails: its exception is the ``error``."""

    def execute(self, context, obj):
        raise RuntimeError("boom")
