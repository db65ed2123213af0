"""``fsm migrate``: move in-flight instances of a machine to another of its versions.

Waiting instances move at once (one conditional write each, which loses to any concurrent
change: such an instance is reported as having stayed, to be tried again). Running ones
are marked, and move in the commit that settles their current run. Finished ones stay.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..migrate import Moved, migrate
from ..record import FINISHED, Status


def register(command: Any) -> None:
    p = command("migrate", cmd_migrate, "move in-flight instances of a machine to another of its versions")
    p.add_argument("--machine", metavar="NAME", required=True, help="the machine whose instances move")
    p.add_argument("--to", metavar="VERSION", help="the version to move them to (default: the highest loaded)")
    p.add_argument("--dry-run", action="store_true", help="report what would move; write nothing")
    p.add_argument("--json", action="store_true", help="print the counts and each instance's outcome as JSON")


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..cli import FAILED, OK, UsageError, _client, _given
    from .listing import ListingUnsupported, listing_store

    name = _given(args.machine, "--machine")
    client = _client(args)
    latest = client.machines.get(name or "")
    if latest is None:
        raise UsageError(f"--machine: unknown machine {name!r}; loaded: {', '.join(sorted(client.machines)) or 'none'}")
    to = _given(args.to, "--to") or latest.version
    if latest.at_version(to) is None:
        raise UsageError(f"--to: machine {name!r} has no version {to!r}; loaded: "
                         f"{', '.join(latest.versions) or latest.version or '(unversioned)'}")
    try:
        stores = [listing_store(client.wiring.stores)]
    except ListingUnsupported as exc:
        print(f"fsm migrate: {exc}", file=sys.stderr)
        return FAILED
    outcomes: list[dict[str, Any]] = []
    for store in stores:
        cursor = None
        while True:
            records, cursor = store.list_instances(machine=name, limit=500, cursor=cursor)
            for record in records:
                outcomes.append(_move(store, latest, record, to, args.dry_run))
            if cursor is None:
                break
    counts = {kind: sum(1 for o in outcomes if o["outcome"] == kind)
              for kind in ("moved", "scheduled", "stayed", "could_not_move")}
    if args.json:
        print(json.dumps({"to": to, "dry_run": args.dry_run, **counts, "instances": outcomes}))
    else:
        verb = "would move" if args.dry_run else "moved"
        print(f"{verb} {counts['moved']}, after their current run {counts['scheduled']}, stayed "
              f"{counts['stayed']}, could not move {counts['could_not_move']} (to version {to})")
        for o in outcomes:
            if o["outcome"] == "could_not_move":
                print(f"  {o['correlation_id']}: {o['reason']}")
    return FAILED if counts["could_not_move"] else OK


def _move(store: Any, latest: Any, record: dict[str, Any], to: str, dry_run: bool) -> dict[str, Any]:
    cid = record["id"]
    found: dict[str, Any] = {"correlation_id": cid, "version": record.get("version") or "", "status": record["status"]}
    if record["status"] in FINISHED:
        return {**found, "outcome": "stayed", "reason": f"{record['status']}: nothing to move"}
    expect = {"fence": record["fence"], "lease_owner": "", "status": record["status"], "step": record["step"]}
    if record["status"] == Status.RUNNING:
        # Its state is known only when its run settles: the dispatcher moves it then (and
        # says in last_error if it cannot).
        if str(record.get("version") or "") == to:
            return {**found, "outcome": "stayed", "reason": f"already at version {to}"}
        if not dry_run and not store.swap(cid, expect, {"migrate_to": to}).ok:
            return {**found, "outcome": "stayed", "reason": "it changed while moving; run fsm migrate again"}
        return {**found, "outcome": "scheduled"}
    moved = migrate(latest, record, to)
    if not isinstance(moved, Moved):
        kind = "stayed" if moved.reason.startswith("already at") else "could_not_move"
        return {**found, "outcome": kind, "reason": moved.reason}
    if not dry_run and not store.swap(cid, expect, moved.fields).ok:
        return {**found, "outcome": "stayed", "reason": "it changed while moving; run fsm migrate again"}
    return {**found, "outcome": "moved", "state": moved.fields["state"]}
