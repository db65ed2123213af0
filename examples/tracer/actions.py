"""The tracer's actions, written against aws-lambda-fsm's API: ``context`` is a dict of
the instance's data with its system fields as attributes, ``obj`` the message's."""

from __future__ import annotations

from typing import Any

from aws_lambda_fsm.action import Action


class Lap(Action):
    """Count a lap and note where it ran; ``done`` after ``context['laps']`` laps."""

    def execute(self, context: Any, obj: dict[str, Any]) -> str:
        context["count"] = context.get("count", 0) + 1
        context.setdefault("trace", []).append(f"{context.current_state.name}@{context.steps}")
        return "done" if context["count"] >= context.get("laps", 3) else "next"


class Report(Action):
    """Leave a summary in the context, from the system fields aws-lambda-fsm offered."""

    def execute(self, context: Any, obj: dict[str, Any]) -> None:
        context["report"] = {"machine": context.name, "correlation_id": context.correlation_id,
                             "laps": context["count"], "retries": context.retries}
