"""Child instances a state runs, and their join. Pure: no I/O.

A state with a :class:`~fsm.model.Spawn` (``invoke: {machine}``, ``map:``, ASL
``Parallel`` and ``Map``) starts one child instance per entry of its plan when it is
entered. Each child's id is derived from the parent's id, the step the state was
entered at and the child's index, so every copy of the starting commit names the same
children and a start is idempotent.

A child that finishes (done, failed or cancelled) sends its parent an event bound to
that visit of the state (a ``timer``-kind message, dropped quietly once the state was
left), with an event id derived from the child's id: the inbox appends it once, and the
join, kept in the parent's snapshot (committed with each step), counts each index once
more. The join is therefore exact whatever order children finish in, however often
their messages are delivered, without a read-modify-write race: only the lease holder
of the parent applies its inbox, one event per committed step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .message import ID_PATTERN, Kind, Message
from .model import Machine, Spawn

CHILD = "fsm.child"          # the event a finished child sends its parent
THRESHOLD = "States.ExceedToleratedFailureThreshold"


@dataclass(frozen=True)
class Start:
    """A child to start: its id, machine and input, and where its result goes."""

    child_id: str
    machine: str
    input: Any
    index: int
    state: str     # the parent's state that runs it
    stamp: int     # the step that state was entered at


@dataclass(frozen=True)
class Stop:
    """A running child to cancel (its parent left the state, or the join failed)."""

    child_id: str
    machine: str


def prefix(cid: str, stamp: int, order: int) -> str:
    """What a visit's child ids start with: ``PARENT:STAMP.ORDER`` (a digest of the
    parent id when the whole would not be a valid id)."""
    text = f"{cid}:{stamp}.{order}"
    if len(text) + 8 <= 128 and ID_PATTERN.fullmatch(text):
        return text
    return f"{hashlib.sha256(cid.encode()).hexdigest()[:32]}:{stamp}.{order}"


def child_id(prefix_: str, index: int) -> str:
    return f"{prefix_}:{index}"


def result_event_id(child: str, kind: str = "child") -> str:
    """The event id of a child's result (``child``) or of its cancellation (``stop``):
    the same for every copy."""
    text = f"{kind}-{child}"
    return text if ID_PATTERN.fullmatch(text) else f"{kind}-" + hashlib.sha256(child.encode()).hexdigest()[:40]


def open_join(spawn: Spawn, plan: list[tuple[str, Any]], prefix_: str, state: str, stamp: int
              ) -> tuple[dict[str, Any], list[Start]]:
    """A new join for ``plan`` and the children to start now (all, or the first
    ``max_concurrency``)."""
    join: dict[str, Any] = {"prefix": prefix_, "stamp": stamp, "n": len(plan), "next": 0,
                            "running": {}, "results": {}, "failed": {}, "pending": [list(p) for p in plan]}
    return join, _more(spawn, join, state)


def _more(spawn: Spawn, join: dict[str, Any], state: str) -> list[Start]:
    starts = []
    while join["pending"] and (not spawn.max_concurrency or len(join["running"]) < spawn.max_concurrency):
        machine, given = join["pending"].pop(0)
        index = join["next"]
        join["next"] += 1
        join["running"][str(index)] = machine
        starts.append(Start(child_id(join["prefix"], index), machine, given, index, state, join["stamp"]))
    return starts


@dataclass(frozen=True)
class Settled:
    """What one child's result did to the join: more children to start, and, when the
    join is over, the event the state raises (``done`` or ``error``) with its data and
    the children to cancel."""

    starts: list[Start]
    event: tuple[str, dict[str, Any]] | None = None
    stops: list[Stop] | None = None


def take_result(spawn: Spawn, join: dict[str, Any], state: str, data: Mapping[str, Any]) -> Settled:
    """Count one child's result (a second copy of it changes nothing): ``data`` is the
    event's, its ``result`` already fetched from the payload store if it was stowed."""
    key, result = str(data.get("index")), data.get("result") or {}
    if key not in join["running"]:
        return Settled([])
    del join["running"][key]
    if "error" in result:
        join["failed"][key] = {"error": str(result.get("error") or "Error"), "cause": str(result.get("cause") or "")}
        join["results"][key] = {"Error": join["failed"][key]["error"], "Cause": join["failed"][key]["cause"]}
        if _beyond_tolerance(spawn, join):
            stops = running(join)
            join["running"], join["pending"] = {}, []
            return Settled([], ("error", _error(spawn, join, key)), stops)
    else:
        join["results"][key] = result.get("output")
    starts = _more(spawn, join, state)
    if join["running"] or join["pending"]:
        return Settled(starts)
    return Settled(starts, (f"xstate.done.state.{state}", {"output": output(spawn, join)}))


def output(spawn: Spawn, join: Mapping[str, Any]) -> Any:
    results = [join["results"].get(str(i)) for i in range(join["n"])]
    return results[0] if spawn.single and results else results


def _beyond_tolerance(spawn: Spawn, join: Mapping[str, Any]) -> bool:
    failed, total = len(join["failed"]), max(join["n"], 1)
    if spawn.tolerated_failures is None and spawn.tolerated_percentage is None:
        return failed > 0
    return (spawn.tolerated_failures is not None and failed > spawn.tolerated_failures) or \
        (spawn.tolerated_percentage is not None and failed * 100.0 / total > spawn.tolerated_percentage)


def _error(spawn: Spawn, join: Mapping[str, Any], key: str) -> dict[str, Any]:
    if spawn.tolerated_failures is None and spawn.tolerated_percentage is None:
        return dict(join["failed"][key])
    return {"error": THRESHOLD, "cause": f"{len(join['failed'])} of {join['n']} children failed, more than "
                                          "the tolerated failures"}


def running(join: Mapping[str, Any]) -> list[Stop]:
    return [Stop(child_id(join["prefix"], int(i)), m) for i, m in sorted(join["running"].items(), key=lambda kv: int(kv[0]))]


def child_ids(record: Mapping[str, Any], limit: int = 1000) -> list[str]:
    """The ids of the children an instance started (the record's ``children``: one
    ``{"state", "prefix", "count"}`` per visit of a state that runs children)."""
    found: list[str] = []
    for visit in record.get("children") or ():
        for index in range(int(visit.get("count") or 0)):
            if len(found) >= limit:
                return found
            found.append(child_id(str(visit["prefix"]), index))
    return found


# -- the messages a step owes its family ------------------------------------------------


def start_message(start: Start, child: Machine, parent: Mapping[str, Any], context: dict[str, Any],
                  now: float) -> Message:
    """A child's first step: created where it is missing, a duplicate where it exists."""
    return Message(machine=start.machine, correlation_id=start.child_id, kind=Kind.STEP, context=context,
                   version=child.version, sent_at=now,
                   parent={**parent, "state": start.state, "stamp": start.stamp, "index": start.index})


def stop_message(stop: Stop, parent_id: str, now: float) -> Message:
    return Message(machine=stop.machine, correlation_id=stop.child_id, kind=Kind.CANCEL,
                   event_id=result_event_id(stop.child_id, "stop"), sent_at=now,
                   reason=f"its parent {parent_id!r} no longer waits for it")


def result_message(record: Mapping[str, Any], result: dict[str, Any], now: float) -> Message | None:
    """What a finished child sends its parent: ``{"output"}`` or ``{"error", "cause"}`` (or
    the payload store's reference to it), bound to the parent's visit of the state that
    started it."""
    parent = record.get("parent")
    if not parent:
        return None
    return Message(machine=parent["machine"], correlation_id=parent["id"], kind=Kind.TIMER, event=CHILD,
                   state=parent["state"], step=int(parent["stamp"]), version=parent.get("version") or "",
                   store=int(parent.get("store") or 0), event_id=result_event_id(record["id"]), sent_at=now,
                   data={"result": result, "state": parent["state"], "index": parent["index"], "id": record["id"]})


def visits(record: Mapping[str, Any], snapshot_joins: Mapping[str, Any], starts: list[Start],
           keep: int = 50) -> list[dict[str, Any]] | None:
    """The record's ``children`` after a step that started some: one entry per visit
    (``None``: no new visit, the field stays as it is)."""
    if not starts:
        return None
    known = list(record.get("children") or ())
    seen = {v["prefix"] for v in known}
    added = False
    for start in starts:
        found = snapshot_joins.get(start.state)
        prefix_ = start.child_id.rsplit(":", 1)[0]
        if prefix_ not in seen:
            seen.add(prefix_)
            known.append({"state": start.state, "prefix": prefix_,
                          "count": found["n"] if found else start.index + 1})
            added = True
    return known[-keep:] if added else None
