"""``Sleep``: wait a while in a state, durably, without holding a Lambda or a worker.

A sleeping action (``time.sleep``) would pay for the whole wait and be lost with its
process. ``Sleep`` instead asks the dispatcher for a timer: it leaves
``obj["schedule"] = {"event": EVENT, "delay": SECONDS}`` and returns ``None``, so the
instance settles (``waiting``). The dispatcher commits the timer message in the same
outbox as the transition, exactly like a state's ``timeout:``, so it survives a crash,
and a timer whose state was left meanwhile (an external event came first) is ignored.

Use it as the do action of the state that should wait, with a transition on its event::

    - name: cooling_off
      do_action: {class: actions.wait.Sleep, params: {seconds: 300, event: wake}}
      transitions: [{event: wake, target: retry_payment}]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsm import Action, Context
from fsm.errors import InvalidDefinition

SCHEDULE_KEY = "schedule"


class Sleep(Action):
    """params: ``seconds`` (a number, 0 or more) and ``event`` (sent when they are up)."""

    def __init__(self, name: str = "", params: Mapping[str, Any] | None = None):
        super().__init__(name, params)
        unknown = sorted(set(self.params) - {"seconds", "event"})
        if unknown:
            raise InvalidDefinition(f"{self.name}: unknown params {unknown}; allowed: seconds, event")
        seconds = self.params.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise InvalidDefinition(f"{self.name}: params `seconds` must be a number, 0 or more; got {seconds!r}")
        event = self.params.get("event")
        if not isinstance(event, str) or not event:
            raise InvalidDefinition(f"{self.name}: params `event` must name the event sent when the time "
                                    f"is up (the state needs a transition on it); got {event!r}")
        self.seconds = float(seconds)
        self.event = event

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        obj[SCHEDULE_KEY] = {"event": self.event, "delay": self.seconds}
        return None
