"""``report``: how code inside an ECS task (started by ``actions.ecs.RunTask``) tells its
instance how the work went.

Everything it needs is in the environment ``RunTask`` gave the container, so the task
image needs lambda-fsm and the bus's client library (boto3), but not the machines' YAML
nor the store: the event goes onto the stream as an ordinary event message, and the
worker that takes it from there reads the instance's state from the store.

The shell alternative, for images that have the config file: ``fsm send
"$FSM_CORRELATION_ID" EVENT --data '{...}' --event-id "$FSM_EVENT_ID"``.

The report carries ``FSM_EVENT_ID``, as does the ECS "Task State Change" event of the
same task: whichever of the two is applied first moves the instance, and the other is
acknowledged as a duplicate. Report before the process exits, and exit 0 after a
report, or the two may race with different events.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from ..errors import FsmError
from ..message import Kind, Message, check_correlation_id, new_event_id
from ..model import check_json
from ..ports import Envelope, EventBus

REQUIRED = ("FSM_CORRELATION_ID", "FSM_MACHINE", "FSM_REPORT_TO")


class ReportError(FsmError):
    """The container cannot report: it was not started by RunTask, or has no stream."""


def report(event: str, data: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None,
           bus: EventBus | None = None) -> str:
    """Send ``event`` (with ``data``, merged into the context) to this task's instance.

    Returns the event id. ``environ`` and ``bus`` replace ``os.environ`` and the bus
    opened from ``FSM_REPORT_TO``, for tests.
    """
    env = os.environ if environ is None else environ
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        hint = (" RunTask sets FSM_REPORT_TO from its `report_to` param or the first `stream` of the "
                "settings; on the embedded runtime there is none, and the ECS task-state event reports "
                "the exit code instead." if missing == ["FSM_REPORT_TO"] else
                " Is this process running in a task started by actions.ecs.RunTask?")
        raise ReportError(f"cannot report {event!r}: environment variables {missing} are not set.{hint}")
    if not isinstance(event, str) or not event:
        raise ReportError(f"an event must be a non-empty string, got {event!r}")
    payload = dict(data or {})
    check_json(payload)
    cid = check_correlation_id(env["FSM_CORRELATION_ID"])
    event_id = env.get("FSM_EVENT_ID") or new_event_id()
    # Events carry no position: the dispatcher applies them at whatever step the store
    # says the instance is on, so step and fence stay 0 here.
    msg = Message(machine=env["FSM_MACHINE"], correlation_id=cid, kind=Kind.EVENT, event=event, data=payload,
                  event_id=event_id, state=env.get("FSM_STATE") or None, sent_at=time.time())
    if bus is None:
        from sources.registry import open_adapter

        bus = open_adapter("bus", env["FSM_REPORT_TO"], endpoint_url=env.get("FSM_ENDPOINT_URL") or None)
    bus.send(Envelope(msg.encode(), cid, msg.dedup_id))
    return event_id
