"""``fsm watch``: follow instances as they change, by polling the store.

Polling reads what the stores committed, so it follows instances whatever runs them
(Lambda, ``fsm worker``, the embedded runtime in another process) and needs nothing
configured. It only reads: unlike ``fsm status`` on the embedded runtime it fires no
timers and heals nothing, so watching an instance never changes it. Several commits
between two polls are filled in from the history, so every transition is printed once.

The dashboard (``fsm ui``) pushes its live updates from the same helpers:
:func:`current_view` for one instance and :class:`FleetWatch` for a list.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import UnknownInstance
from ..record import FINISHED
from .client import status_view
from .delivery import freshest_record
from .wiring import Wiring

Change = dict[str, Any]     # one printed line: time, correlation_id, machine, step, state, status, event, note
Lister = Callable[[str | None, str | None], tuple[list[dict[str, Any]], str | None]]
PAGE = 100                  # instances read per listing call
MAX_PAGES = 20              # per poll: a burst of more changes than this waits for the next poll


def fingerprint(view: dict[str, Any]) -> tuple[Any, ...]:
    """What changes with every commit (a transition, a failed attempt, a rejected event)."""
    return view["steps"], view["status"], view["state"], view["retries"], view["updated_at"]


def current_view(wiring: Wiring, cid: str) -> dict[str, Any] | None:
    """The instance's status as ``fsm status --json`` shows it, read without side effects."""
    found = freshest_record(wiring, cid)
    return status_view(found[1]) if found else None


# -- one instance -------------------------------------------------------------------------


class Trail:
    """One instance as last printed, and the lines that bring it up to date.

    ``since`` says where its story starts: ``None``, where it stands now (``fsm watch
    ID``); an ISO time, after the history entries up to then (an instance that was there
    when ``--all`` started); ``""``, at its first entry (one that started since)."""

    def __init__(self, wiring: Wiring, cid: str, since: str | None = None):
        self.wiring, self.cid, self.since = wiring, cid, since
        self.last: tuple[Any, ...] | None = None
        self.seen: int | None = None     # history entries already printed, once known
        self.view: dict[str, Any] | None = None

    def poll(self) -> list[Change]:
        found = freshest_record(self.wiring, self.cid)
        if found is None:
            return []
        index, record = found
        mark = fingerprint(status_view(record))
        if mark == self.last:
            return []
        history = self.wiring.stores[index].history(self.cid)
        # Read again after the history: the view shown is at least as new as every entry.
        again = freshest_record(self.wiring, self.cid)
        self.view = status_view((again or found)[1])
        self.last = mark   # the first read's: a commit between the two reads shows next poll
        if self.seen is None:
            if self.since is None:
                self.seen = len(history)
                return [snapshot_line(self.view)]
            self.seen = sum(1 for entry in history if entry["time"] <= self.since)
        start, self.seen = self.seen, len(history)
        return changes_from(self.view, history[start:])


def changes_from(view: dict[str, Any], entries: list[dict[str, Any]]) -> list[Change]:
    """Lines for new history entries; the last one that is the view's own commit carries
    the instance's status, the ones the polls skipped over show none (``-``)."""
    lines = [entry_line(view, entry) for entry in entries]
    if lines and lines[-1]["time"] == view["updated_at"]:
        lines[-1].update(state=view["state"], status=view["status"])
    else:
        lines.append(snapshot_line(view))
    return lines


def entry_line(view: dict[str, Any], entry: dict[str, Any]) -> Change:
    note = (f"rejected: {entry['error']}" if entry.get("rejected") else
            f"cancelled: {entry['cancelled']}" if entry.get("cancelled") else
            f"attempt failed: {entry['error']}" if entry.get("error") else None)
    return {"time": entry["time"], "correlation_id": view["correlation_id"], "machine": view["machine"],
            "step": entry["step"], "state": entry.get("to") or entry.get("from"), "status": None,
            "event": entry.get("event"), "note": note}


def snapshot_line(view: dict[str, Any]) -> Change:
    return {"time": view["updated_at"], "correlation_id": view["correlation_id"], "machine": view["machine"],
            "step": view["steps"], "state": view["state"], "status": view["status"], "event": None,
            "note": view["last_error"] if view["status"] == "failed" else None}


def format_line(change: Change, with_id: bool = False) -> str:
    who = f"{change['correlation_id']}  " if with_id else ""
    event = f"  event={change['event']}" if change["event"] else ""
    note = f"  {change['note']}" if change["note"] else ""
    line = (f"{change['time'] or '-'}  {who}step {change['step']:>4}  {change['state'] or '(start)':<20} "
            f"{change['status'] or '-':<9}{event}{note}")
    return line.rstrip()


def follow(wiring: Wiring, cid: str, interval: float, emit: Callable[[Change], None],
           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Emit the instance's changes until it is finished; return its last status."""
    trail = Trail(wiring, cid)
    for change in trail.poll():
        emit(change)
    if trail.view is None:
        stores = ", ".join(store.url for store in wiring.stores)
        later = "" if wiring.embedded else " (or not started yet: no worker has run its first step)"
        raise UnknownInstance(f"no instance {cid!r} in {stores}{later}")
    while trail.view["status"] not in FINISHED:
        sleep(interval)
        for change in trail.poll():
            emit(change)
    return trail.view


# -- every instance of a machine ----------------------------------------------------------


class FleetWatch:
    """The instances a listing returns, most recently updated first: each poll reads pages
    until it reaches instances unchanged since the poll before, and returns the views of
    those that are new or changed. The first poll only takes note of what exists."""

    def __init__(self, lister: Lister, machine: str | None = None):
        self.lister, self.machine = lister, machine
        self.marks: dict[str, tuple[Any, ...]] = {}
        self.watermark: str | None = None   # the newest updated_at seen by the poll before

    def poll(self) -> list[dict[str, Any]]:
        first, newest, changed = self.watermark is None, self.watermark or "", []
        for view in self._recent(self.watermark or ""):
            newest = max(newest, view["updated_at"] or "")
            mark = fingerprint(view)
            if self.marks.get(view["correlation_id"]) != mark:
                self.marks[view["correlation_id"]] = mark
                changed.append(view)
        self.watermark = newest
        return [] if first else changed[::-1]   # oldest change first, as they happened

    def _recent(self, since: str) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            views, cursor = self.lister(self.machine, cursor)
            yield from views
            # The same millisecond may hold a commit the last poll missed: compare with <.
            if not cursor or not views or (since and (views[-1]["updated_at"] or "") < since):
                return


def lister_for(wiring: Wiring) -> Lister:
    """Pages of instances from the store ``Client.list`` reads (the first that keeps an
    index; :class:`fsm.app.listing.ListingUnsupported` when none does), as status views.
    Not ``Client.list`` itself: on the embedded runtime it fires due timers first, and
    watching must not run instances (the dashboard's streams run beside its requests)."""
    from .listing import listing_store

    store = listing_store(wiring.stores)

    def page(machine: str | None, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        records, after = store.list_instances(machine=machine, limit=PAGE, cursor=cursor)
        return [status_view(record) for record in records], after

    return page


def watch_fleet(wiring: Wiring, lister: Lister, machine: str | None, interval: float,
                emit: Callable[[Change], None], sleep: Callable[[float], None] = time.sleep) -> None:
    """Emit the changes of every instance (of ``machine``) until interrupted."""
    fleet, trails = FleetWatch(lister, machine), {}
    fleet.poll()
    started = fleet.watermark or ""
    while True:
        sleep(interval)
        for view in fleet.poll():
            cid = view["correlation_id"]
            if cid not in trails:
                # Seen at the start: only what happened since. New: its whole history.
                trails[cid] = Trail(wiring, cid, since=started if (view["created_at"] or "") <= started else "")
            for change in trails[cid].poll():
                emit(change)


# -- the command --------------------------------------------------------------------------


def cmd_watch(args: argparse.Namespace) -> int:
    from ..cli import OK, UsageError, _app, _id, _verdict

    cid = _id(args.id, "ID")
    if (cid is None) == (not args.all):
        raise UsageError("give an instance ID, or --all (with --machine NAME) for every instance")
    if args.machine is not None and not args.all:
        raise UsageError("--machine goes with --all; an ID already names one instance")
    if not (math.isfinite(args.interval) and args.interval > 0):
        raise UsageError(f"--interval {args.interval!r} must be a number of seconds above 0")
    application = _app(args)
    wiring = application.wiring
    emit = _printer(args.json, with_id=args.all)
    try:
        if cid is not None:
            return _verdict(args, follow(wiring, cid, args.interval, emit))
        if args.machine is not None:
            application.definitions.machine(args.machine)   # an unknown name is bad input
        watch_fleet(wiring, lister_for(wiring), args.machine, args.interval, emit)
    except KeyboardInterrupt:  # the way to stop watching: not a failure
        pass
    return OK


def _printer(as_json: bool, with_id: bool) -> Callable[[Change], None]:
    def emit(change: Change) -> None:
        print(json.dumps(change) if as_json else format_line(change, with_id), flush=True)

    return emit


def register(command: Callable[..., Any]) -> None:
    p = command("watch", cmd_watch, "print an instance's state changes as they happen")
    p.add_argument("id", metavar="ID", nargs="?", help="the instance's correlation id (or --all)")
    p.add_argument("--all", action="store_true", help="every instance (of --machine) instead of one, until Ctrl-C")
    p.add_argument("--machine", metavar="NAME", help="with --all: only this machine's instances")
    p.add_argument("--interval", metavar="SECONDS", type=float, default=0.5,
                   help="how often to read the store (default: 0.5)")
    p.add_argument("--json", action="store_true", help="one JSON object per change")
