"""ECS, as an event source: the "ECS Task State Change" events EventBridge delivers when a
task started by ``actions.ecs.RunTask`` stops, read into the event its instance waits for.

Exit code 0 of the task's container is the event ``done``, anything else ``failed``
(data: ``exit_code``, ``reason``, ``task_arn``, ``stop_code``). The task's instance is
found in the container environment ``RunTask`` set, which ECS echoes in its events.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fsm.errors import MalformedMessage
from fsm.logs import log
from fsm.message import check_correlation_id

DETAIL_TYPE = "ECS Task State Change"
DONE_EVENT = "done"
FAILED_EVENT = "failed"
ENV_CORRELATION_ID = "FSM_CORRELATION_ID"
ENV_EVENT_ID = "FSM_EVENT_ID"


def is_task_change(event: Mapping[str, Any]) -> bool:
    return event.get("detail-type") == DETAIL_TYPE


def event_from_task_change(event: Mapping[str, Any]) -> tuple[str, str, dict[str, Any], str] | None:
    """``(correlation_id, event, data, event_id)`` for a stopped task that ``RunTask``
    started; ``None`` for every other ECS event (other statuses, other tasks)."""
    detail = event.get("detail") or {}
    if detail.get("lastStatus") != "STOPPED":
        return None
    found = _fsm_override(detail)
    if found is None:
        return None
    container_name, env = found
    cid = env[ENV_CORRELATION_ID]
    try:
        check_correlation_id(cid)
    except MalformedMessage as exc:
        log(logging.WARNING, "ECS task with a malformed FSM_CORRELATION_ID ignored",
            task_arn=detail.get("taskArn"), error=str(exc))
        return None
    task_arn = str(detail.get("taskArn") or "")
    event_id = env.get(ENV_EVENT_ID) or f"task:{cid}:{task_arn}"
    container = _container(detail, container_name)
    exit_code = container.get("exitCode")
    data: dict[str, Any] = {"exit_code": exit_code, "task_arn": task_arn}
    if exit_code == 0:
        return cid, DONE_EVENT, data, event_id
    data["reason"] = (container.get("reason") or detail.get("stoppedReason") or detail.get("stopCode")
                      or "the task stopped without an exit code")
    data["stop_code"] = detail.get("stopCode")
    return cid, FAILED_EVENT, data, event_id


def _fsm_override(detail: Mapping[str, Any]) -> tuple[str, dict[str, str]] | None:
    """The container override ``RunTask`` wrote (the one naming an instance)."""
    for entry in (detail.get("overrides") or {}).get("containerOverrides") or []:
        env = {str(e.get("name")): str(e.get("value", "")) for e in entry.get("environment") or []}
        if env.get(ENV_CORRELATION_ID):
            return str(entry.get("name") or ""), env
    return None


def _container(detail: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    containers = list(detail.get("containers") or [])
    named = [c for c in containers if c.get("name") == name]
    return (named or containers or [{}])[0]
