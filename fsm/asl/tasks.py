"""Task resources: a Python ``fsm.Action`` mapped in the machines file, or a Lambda
function (:mod:`fsm.asl.lambdas`). Running one with ``TimeoutSeconds`` or
``HeartbeatSeconds`` puts it on a thread with a deadline.

A Python resource's ``execute(context, obj)`` gets the task's effective input as
``obj["input"]`` and the context object as ``obj["context_object"]``; its return value
is the result. An exception it raises is the error named after its class (its message
the cause); ``fsm.Failed(error, cause)`` names the error itself. A task that overruns
``TimeoutSeconds``, or goes ``HeartbeatSeconds`` without calling ``self.heartbeat()``,
fails with ``States.Timeout``; its thread cannot be stopped and is left to finish, its
result ignored.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from fsm.model import HEARTBEAT, Action, Context

from .errors import AslError, from_exception


class Resource:
    """Something a Task state calls: ``call(input, context, obj) -> result``."""

    def call(self, given: Any, context: Context, obj: dict[str, Any]) -> Any:
        raise NotImplementedError


class PythonResource(Resource):
    def __init__(self, action: Action):
        self.action = action

    def call(self, given: Any, context: Context, obj: dict[str, Any]) -> Any:
        return self.action.execute(context, obj)

    def __repr__(self) -> str:
        return f"<PythonResource {self.action!r}>"


def run(resource: Resource, given: Any, context: Context, obj: dict[str, Any], timeout: float | None = None,
        heartbeat: float | None = None, clock: Callable[[], float] = time.monotonic) -> Any:
    """Call ``resource`` within the deadlines; :class:`AslError` for any failure."""
    if timeout is None and heartbeat is None:
        try:
            return _json(resource.call(given, context, obj))
        except Exception as exc:  # noqa: BLE001 - the task's failure, whatever it is
            raise from_exception(exc) from None
    return _json(_with_deadline(resource, given, context, obj, timeout, heartbeat, clock))


def _with_deadline(resource: Resource, given: Any, context: Context, obj: dict[str, Any], timeout: float | None,
                   heartbeat: float | None, clock: Callable[[], float]) -> Any:
    started = clock()
    beats = [started]
    outcome: dict[str, Any] = {}

    def beat() -> None:
        beats.append(clock())

    def work() -> None:
        HEARTBEAT.set(beat)
        try:
            outcome["result"] = resource.call(given, context, obj)
        except BaseException as exc:  # noqa: BLE001 - reported on the caller's thread
            outcome["error"] = exc

    runner = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True,
                              name="fsm-asl-task")
    runner.start()
    while True:
        now = clock()
        waits = []
        if timeout is not None:
            waits.append(started + timeout - now)
        if heartbeat is not None:
            waits.append(beats[-1] + heartbeat - now)
        left = min(waits)
        if left <= 0:
            break
        runner.join(min(left, 0.05))
        if not runner.is_alive():
            break
    if runner.is_alive():
        now = clock()
        if timeout is not None and now - started >= timeout:
            raise AslError("States.Timeout", f"the task ran longer than TimeoutSeconds ({timeout:g} s)")
        raise AslError("States.Timeout", f"the task sent no heartbeat for HeartbeatSeconds ({heartbeat:g} s)",
                       also=("States.HeartbeatTimeout",))
    if "error" in outcome:
        raise from_exception(outcome["error"]) from None
    return outcome.get("result")


def _json(result: Any) -> Any:
    """The result as JSON (tuples become lists); a result JSON cannot hold is an error."""
    if result is None or isinstance(result, (str, bool, int, float)):
        return result
    try:
        return json.loads(json.dumps(result, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise AslError("States.Runtime", f"the task's result is not JSON: {exc}") from None
