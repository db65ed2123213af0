"""Moving an instance from the version of a machine it started on to another: pure.

A machines file may hold several versions of one machine (``name`` + ``version``). Each
instance runs on the version it started on until it is migrated. A migration maps each
active state (``states:``; a state it does not name keeps its name) and may transform the
context (``action:``). From version 1 to 3 the migrations are chained: 1 -> 2 as version 2
declares it, then 2 -> 3 as version 3 does; a version that declares none maps every state
to itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import codec
from .chart import Snapshot, value
from .engine import label
from .model import Context, Machine
from .record import Record


@dataclass
class Moved:
    fields: dict[str, Any]   # what the record takes: version, state, chart, context


@dataclass
class Stuck:
    reason: str


def ordered_versions(machine: Machine) -> list[str]:
    return sorted(machine.versions or {machine.version: machine}, key=version_key)


def version_key(version: str) -> tuple[int, Any]:
    return (0, int(version)) if version.lstrip("-").isdigit() else (1, version)


def migrate(latest: Machine, record: Record, to: str) -> Moved | Stuck:
    """The record's fields at version ``to``, or why it cannot move."""
    source = str(record.get("version") or "")
    target = latest.at_version(to)
    if target is None:
        return Stuck(f"machine {latest.name!r} has no version {to!r}; loaded: {', '.join(ordered_versions(latest))}")
    versions = ordered_versions(latest)
    snapshot = Snapshot.of(record.get("chart"), record.get("state"), record.get("step", 0))
    if source == to:
        if snapshot is None or all(p in target.states for p in snapshot.active):
            return Stuck(f"already at version {to}")
        path = [to]  # its version's definition changed under it: that version's own mapping
    elif source not in versions or to not in versions or version_key(source) > version_key(to):
        path = [to]  # an unknown (or later) version: straight to the target, by its own migration
    else:
        path = versions[versions.index(source) + 1:versions.index(to) + 1]
    if snapshot is None:
        return Stuck("it has not entered its first state yet")
    context = codec.copy(record.get("context") or {})
    current = source
    for step_to in path:
        machine = latest.at_version(step_to)
        assert machine is not None
        migration = next((m for m in machine.migrations if m.source == current), None)
        mapping = migration.states if migration else {}
        active = dict.fromkeys(mapping.get(p, p) for p in snapshot.active)
        missing = sorted(p for p in active if p not in machine.states)
        if missing:
            how = f"the migration from {current} to {step_to}" if migration else f"version {step_to} (no migration from {current})"
            return Stuck(f"{how} has no state {', '.join(map(repr, missing))}; map it under `migrations: - from: "
                         f"{current}`, `states:`")
        for path in list(active):  # a state mapped into a compound one brings its ancestors
            parent = machine.states[path].parent
            while parent is not None:
                active[parent] = None
                parent = machine.states[parent].parent
        entered = {mapping.get(p, p): stamp for p, stamp in snapshot.entered.items()}
        for path in active:
            entered.setdefault(path, record.get("step", 0))
        snapshot = Snapshot(active, {mapping.get(k, k): [mapping.get(p, p) for p in v]
                                     for k, v in snapshot.history.items()}, entered, list(snapshot.queue))
        if migration and migration.action is not None:
            ctx = Context(context, correlation_id=record.get("id", ""), machine=machine, steps=record.get("step", 0))
            migration.action.execute(ctx, {"from": current, "to": step_to, "record": dict(record)})
            context = ctx.user_data()
        current = step_to
    fields: dict[str, Any] = {"version": to, "state": label(target, snapshot), "context": context,
                              "migrate_to": None}
    if target.chart:
        chart = snapshot.to_dict()
        chart["value"] = value(target, snapshot.active)
        fields["chart"] = chart
    else:
        fields["chart"] = None
    return Moved(fields)
