"""Finding instances: ``fsm list`` and what :meth:`fsm.app.client.Client.list` needs.

A page comes from one store's index (:class:`fsm.ports.InstanceIndex`), most recently
updated first, filtered by machine, status, state and ``since``; the cursor it returns
leads to the next page. How each store keeps its index is in its module
(``sources/sqlite.py``, ``sources/redis.py``, ``sources/dynamodb.py``) and the paging
rules all stores share in ``sources/listing.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..errors import BackendError
from ..ports import InstanceIndex
from ..record import Status

MAX_LIMIT = 1000
LISTING_STORES = "memory://, sqlite:///PATH, redis://HOST:PORT/DB (rediss://) and DynamoDB tables"
COLUMNS = ("ID", "MACHINE", "STATE", "STATUS", "STEPS", "UPDATED_AT")


class ListingUnsupported(BackendError):
    """No configured store keeps an index of its instances (memcached cannot enumerate
    its keys): a configuration problem, so it names the stores and those that can."""


def listing_store(stores: Sequence[Any]) -> InstanceIndex:
    """The first store that can list (primary first, as failover orders them)."""
    for store in stores:
        if isinstance(store, InstanceIndex):
            return store
    names = ", ".join(getattr(store, "url", type(store).__name__) for store in stores)
    why = " (memcached cannot enumerate its keys)" if "memcached://" in names else ""
    raise ListingUnsupported(f"{names} cannot list instances{why}; stores that can: {LISTING_STORES}")


def epoch_seconds(value: float | str | datetime | None) -> float | None:
    """``since`` as epoch seconds, from epoch seconds or ISO 8601 (UTC unless it says
    otherwise), so a person can write ``2024-05-01T12:00Z`` and a script ``$(date +%s)``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"since {value!r} is not a time")
        return float(value)
    elif isinstance(value, str):
        try:
            return epoch_seconds(float(value.strip()))
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"since {value!r} is neither epoch seconds nor an ISO 8601 time such as "
                             "2024-05-01T12:00:00Z") from None
    else:
        raise TypeError(f"since must be epoch seconds or ISO 8601 text, not a {type(value).__name__}")
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def machine_with_state(machines: Mapping[str, Any], state: str) -> str:
    """The one loaded machine that has ``state``: state names belong to a machine, and
    the indexes find a state only within one."""
    names = sorted(name for name, machine in machines.items() if state in machine.states)
    if len(names) == 1:
        return names[0]
    if not names:
        raise ValueError(f"no loaded machine has a state {state!r}; give the machine too")
    raise ValueError(f"state {state!r} is in machines {', '.join(names)}; give the machine too")


# -- the command ----------------------------------------------------------------------------


def register(command: Any) -> None:
    p = command("list", cmd_list, "list instances, most recently updated first, a page at a time")
    p.add_argument("--machine", metavar="NAME", help="only this machine's instances")
    p.add_argument("--status", metavar="STATUS", help=f"only this status: {', '.join(Status)}")
    p.add_argument("--state", metavar="NAME", help="only instances in this state of --machine (which may be "
                                                   "left out when one loaded machine has such a state)")
    p.add_argument("--since", metavar="TIME",
                   help="only instances updated at or after TIME: epoch seconds or ISO 8601 (UTC by default)")
    p.add_argument("--limit", metavar="N", default="50", help=f"instances per page, 1 to {MAX_LIMIT} (default 50)")
    p.add_argument("--next", metavar="CURSOR", help="the page after the one that printed this cursor")
    p.add_argument("--json", action="store_true", help='print {"instances": [status objects], "next": CURSOR}')


def cmd_list(args: argparse.Namespace) -> int:
    from ..cli import FAILED, OK, UsageError, _client, _given

    filters = {"machine": _given(args.machine, "--machine"), "status": _status(args.status),
               "state": _given(args.state, "--state"), "since": _since(args.since), "limit": _limit(args.limit),
               "cursor": _given(args.next, "--next")}
    client = _client(args)
    try:
        page = client.list(**filters)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except ListingUnsupported as exc:
        print(f"fsm list: {exc}", file=sys.stderr)
        return FAILED
    if args.json:
        print(json.dumps(page))
        return OK
    for line in table(page["instances"]) or [_nothing(args, client.machines)]:
        print(line)
    if page["next"]:
        print(f"next page: {_again(args, page['next'])}")
    return OK


def table(instances: Iterable[Mapping[str, Any]]) -> list[str]:
    """Aligned columns, a header first; no lines for no instances."""
    rows = [[str(view["correlation_id"]), str(view["machine"]), view["state"] or "-", str(view["status"]),
             str(view["steps"]), view["updated_at"] or "-"] for view in instances]
    if not rows:
        return []
    widths = [max(len(row[n]) for row in [list(COLUMNS), *rows]) for n in range(len(COLUMNS))]
    return ["  ".join(cell.rjust(width) if n == 4 else cell.ljust(width)
                      for n, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in [list(COLUMNS), *rows]]


def _status(text: str | None) -> str | None:
    from ..cli import UsageError

    if text is not None and text not in tuple(Status):
        raise UsageError(f"--status {text!r} is not a status; give one of {', '.join(Status)}")
    return text


def _since(text: str | None) -> float | None:
    from ..cli import UsageError

    try:
        return epoch_seconds(text)
    except ValueError:
        raise UsageError(f"--since {text!r} is neither epoch seconds nor an ISO 8601 time "
                         "(such as 1714564800 or 2024-05-01T12:00:00Z)") from None


def _limit(text: str) -> int:
    from ..cli import UsageError

    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit {text!r} must be a whole number from 1 to {MAX_LIMIT}")
    return limit


def _nothing(args: argparse.Namespace, machines: Mapping[str, Any]) -> str:
    unknown = args.machine is not None and args.machine not in machines
    return "no instances" + (f" (machine {args.machine!r} is not in the loaded config)" if unknown else "")


def _again(args: argparse.Namespace, cursor: str) -> str:
    """The command that prints the next page: the same filters, and ``--next``."""
    words = ["fsm", "list"]
    for flag in ("config", "settings", "store", "machine", "status", "state", "since", "limit"):
        value = getattr(args, flag, None)
        if value is not None and not (flag == "limit" and value == "50"):
            words += [f"--{flag}", value]
    return shlex.join([*words, "--next", cursor])
