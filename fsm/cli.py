"""The ``fsm`` command.

Exit codes everywhere: 0 success, 1 a runtime failure (instance failed, event rejected,
unknown id, backend down), 2 bad input or usage. Every error is one line per problem on
stderr starting ``fsm COMMAND:``, so a script can tell which command failed and a person
what to fix. ``fsm status`` and ``fsm history`` exit 0 for any instance they find, a
failed one included: the question was answered.

Commands that run instances in this process (the embedded runtime) can take seconds of
retries; on a terminal they say what happens on stderr as it happens. With ``--json``, or
when stderr is not a terminal, they print nothing but their result.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cli_input import (  # noqa: F401 - the commands in fsm/app take them from here
    BAD_INPUT,
    Parser,
    UsageError,
    _file_or_text,
    _given,
    _id,
    _json_arg,
    _json_value,
    _whole_number,
)
from .shadow import check_packages

OK, FAILED = 0, 1
Say = Callable[[str], None]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return BAD_INPUT
    from .errors import FsmError
    from .logs import configure

    configure(os.environ.get("FSM_LOG_LEVEL", "ERROR"))
    try:
        check_packages()
        return args.func(args)
    except (FsmError, UsageError) as exc:
        return _report(args.command, exc)
    except KeyboardInterrupt:
        return FAILED
    except BrokenPipeError:  # `fsm status ID | head -3`
        sys.stderr.close()
        return OK
    except OSError as exc:  # a store file that cannot be created, a full disk: no traceback
        return _report(args.command, exc)


def _report(command: str, exc: Exception) -> int:
    """One ``fsm COMMAND:`` line per problem on stderr; the exit code the error's kind means."""
    from .errors import (
        InstanceError,
        InvalidDefinition,
        MalformedMessage,
        ShadowedModule,
        UnknownBackend,
        UnknownMachine,
    )

    if isinstance(exc, InvalidDefinition | ShadowedModule | MalformedMessage | UnknownMachine | UnknownBackend
                  | UsageError):
        code, text = BAD_INPUT, str(exc)
    elif isinstance(exc, InstanceError):
        code, text = FAILED, str(exc)
    else:
        code, text = FAILED, f"{type(exc).__name__}: {exc}"
    for line in text.splitlines() or [type(exc).__name__]:
        print(f"fsm {command}: {line}", file=sys.stderr)
    return code


# -- input --------------------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> str:
    from .app.wiring import default_config_path

    given = _given(getattr(args, "file", None), "FILE") or _given(getattr(args, "config", None), "--config")
    path = given or default_config_path()
    if not Path(path).exists():
        raise UsageError(f"config file {path!r} not found (give one, or set FSM_CONFIG)")
    return path


def _definitions(args: argparse.Namespace):
    from config.loader import load_file

    path = _config_path(args)
    for folder in (str(Path(path).resolve().parent), os.getcwd()):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    check_packages()  # again: the folders just added may hold a config.py or actions.py
    return load_file(path, settings_file=_given(getattr(args, "settings", None), "--settings"))


def _app(args: argparse.Namespace):
    from .app.wiring import App

    stores = [part.strip() for part in args.store.split(",")] if getattr(args, "store", None) is not None else None
    settings_file = _given(getattr(args, "settings", None), "--settings")
    return App.load(definitions=_definitions(args), settings_file=settings_file, store=stores)


def _client(args: argparse.Namespace, say: Say | None = None):
    """A client on the settings the flags name; ``say`` gets a line per transition."""
    from .app.client import Client

    wiring = _app(args).wiring
    return Client(wiring=wiring, on_outcome=_narrator(say, wiring) if say else None)


# -- output -------------------------------------------------------------------------------


def _progress(args: argparse.Namespace) -> Say | None:
    """Where progress goes: stderr, only for a person at a terminal (as git does). With
    ``--json``, or stderr in a pipe or a file, a command prints only its result."""
    if getattr(args, "json", False) or not sys.stderr.isatty():
        return None
    return lambda line: print(line, file=sys.stderr, flush=True)


def _narrator(say: Say, wiring: Any) -> Callable[[Any], None]:
    def narrate(outcome: Any) -> None:
        delay = _retry_delay(wiring, outcome.correlation_id) if outcome.result == "retrying" else None
        for line in _outcome_lines(outcome, delay):
            say(line)

    return narrate


def _retry_delay(wiring: Any, cid: str) -> float | None:
    """The backoff before the next attempt, as the commit that scheduled it recorded it
    (the instance's outbox): the line about a retry says how long the wait will be."""
    from .app.delivery import freshest_record

    found = freshest_record(wiring, cid)
    outbox = (found[1].get("outbox") or []) if found else []
    return max((float(entry.get("delay") or 0.0) for entry in outbox), default=None)


def _outcome_lines(outcome: Any, delay: float | None) -> list[str]:
    lines = [f"step {hop.step + 1:>4}  {hop.target:<20} event={hop.event or '-':<16} "
             f"retries={outcome.retries} duration={hop.duration * 1000:.2f}ms" for hop in outcome.hops]
    if outcome.result in ("retrying", "failed", "rejected"):
        then = f"; next try in {delay:.2f}s" if delay is not None else ""
        lines.append(f"{outcome.result:>9}  {outcome.state or '(start)':<20} retries={outcome.retries} "
                     f"error={outcome.error}{then}")
    return lines


def _summary(status: dict[str, Any]) -> str:
    where = f"in state {status['state']}" if status["state"] else "before its first state"
    error = f" ({status['last_error']})" if status["last_error"] else ""
    return f"{status['correlation_id']}: {status['status']} {where} after {status['steps']} steps{error}"


def _verdict(args: argparse.Namespace, status: dict[str, Any]) -> int:
    """Exit 1, saying why on stderr, when the instance this command ran has failed."""
    if status["status"] != "failed":
        return OK
    print(f"fsm {args.command}: instance {_summary(status)}", file=sys.stderr)
    return FAILED


def _settled(args: argparse.Namespace, client: Any, cid: str) -> int:
    """On the embedded runtime the instance has run: say where it is, fail if it failed."""
    if client.runtime is None:
        return OK
    status = client.status(cid)
    print(_summary(status))
    return _verdict(args, status)


# -- commands -----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from config.settings import load_settings

    definitions = _definitions(args)
    load_settings(definitions.settings, environ={})  # the file's own `settings:` must be valid too
    for machine in definitions.machines.values():
        finals = sum(1 for s in machine.states.values() if s.final)
        print(f"{machine.name}: {len(machine.states)} states, initial {machine.initial!r}, "
              f"{finals} final, max_retries {machine.max_retries} ({machine.source})")
    for warning in definitions.warnings:
        print(warning, file=sys.stderr)
    return OK


def cmd_graph(args: argparse.Namespace) -> int:
    from .graph import to_dot, to_mermaid

    definitions = _definitions(args)
    names = [args.machine] if args.machine is not None else sorted(definitions.machines)
    render = to_mermaid if args.format == "mermaid" else to_dot
    print("\n\n".join(render(definitions.machine(name)) for name in names))
    return OK


def _start_input(args: argparse.Namespace) -> Any:
    """What the instance starts with: ``--input`` (any JSON value) or ``--context`` (a JSON
    object), never both; ``NO_INPUT`` for neither."""
    from .app.client import NO_INPUT

    if args.input is not None and args.context is not None:
        raise UsageError("give --input or --context, not both (--context is --input restricted to a JSON object)")
    if args.input is not None:
        return _json_value(args.input, "--input")
    return _json_arg(args.context, "--context") if args.context is not None else NO_INPUT


def _machine_name(args: argparse.Namespace, machines: Any) -> str:
    """``--machine``, or the one machine the file defines when it defines one (generated
    child machines, named ``PARENT/...``, are not counted: they are started by their
    parent)."""
    if args.machine is not None:
        return _given(args.machine, "--machine") or ""
    names = sorted(name for name in machines if "/" not in name)
    if len(names) == 1:
        return names[0]
    where = getattr(args, "file", None) or getattr(args, "config", None) or "the config"
    defined = f"it defines {', '.join(names)}" if names else "it defines none that can be started"
    raise UsageError(f"give the machine to start with --machine NAME: {where} does not define exactly one "
                     f"machine ({defined})")


def _start(args: argparse.Namespace, client: Any, cid: str | None) -> str:
    """Start the machine the flags name with what they give; bad input is a usage error."""
    from .app.client import NO_INPUT

    value = _start_input(args)
    name = _machine_name(args, client.machines)
    try:
        if value is NO_INPUT:
            return client.start(name, None, cid)
        return client.start(name, correlation_id=cid, input=value)
    except ValueError as exc:
        flag = "--input" if args.input is not None else "--context"
        raise UsageError(f"{flag}: {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    _start_input(args)      # bad flags before anything is loaded
    cid = _id(args.correlation_id, "--correlation-id")
    client = _client(args, None if args.json else print)
    if client.runtime is None:
        raise UsageError("`fsm run` drives the embedded runtime; unset `stream:` or use `fsm start`")
    status = client.status(_start(args, client, cid))
    print(json.dumps(status) if args.json else _summary(status))
    return _verdict(args, status)


def cmd_start(args: argparse.Namespace) -> int:
    _start_input(args)
    cid = _id(args.correlation_id, "--correlation-id")
    client = _client(args, _progress(args))
    cid = _start(args, client, cid)
    print(cid, flush=True)
    return _verdict(args, client.status(cid)) if client.runtime is not None else OK


def cmd_send(args: argparse.Namespace) -> int:
    cid, event = _id(args.id, "ID"), _given(args.event, "EVENT")
    data, event_id = _json_arg(args.data, "--data"), _given(args.event_id, "--event-id")
    if args.wait is not None and not (0 < args.wait <= 3600):
        raise UsageError(f"--wait must be more than 0 and at most 3600 seconds, got {args.wait:g}")
    client = _client(args, None if args.wait is not None else _progress(args))
    if args.wait is None:
        client.send_event(cid, event, data, event_id)
        return _settled(args, client, cid)
    seen = client.send_event(cid, event, data, event_id, wait=args.wait)
    print(json.dumps(seen))
    return OK if seen["event"]["applied"] else FAILED


def cmd_status(args: argparse.Namespace) -> int:
    cid = _id(args.id, "ID")
    client = _client(args)
    status = client.status(cid)
    children = _children_status(client, status["children"]) if args.children else None
    if args.json:
        print(json.dumps(status if children is None else {**status, "children_status": children}))
        return OK
    for key, value in status.items():
        shown = (json.dumps(value) if key in ("context", "output") and value is not None
                 else ", ".join(value) or "-" if key == "children" else "-" if value is None else value)
        print(f"{key:>14}: {shown}")
    if children:
        for line in _children_table(children):
            print(line)
    return OK


def _children_status(client: Any, ids: list[str]) -> list[dict[str, Any]]:
    """Each child's status, in the order the parent started them; a child no store holds
    (expired, or not started yet) is ``{"correlation_id": ID, "status": "missing"}``."""
    from .errors import UnknownInstance

    found = []
    for child in ids:
        try:
            found.append(client.status(child))
        except UnknownInstance:
            found.append({"correlation_id": child, "status": "missing"})
    return found


def _children_table(children: list[dict[str, Any]]) -> list[str]:
    rows = [["CHILD", "MACHINE", "STATUS", "STATE"]] + [
        [str(view["correlation_id"]), str(view.get("machine") or "-"), str(view["status"]),
         str(view.get("state") or "-")] for view in children]
    widths = [max(len(row[n]) for row in rows) for n in range(4)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def cmd_history(args: argparse.Namespace) -> int:
    cid = _id(args.id, "ID")
    if args.page is None and args.page_size is not None:
        raise UsageError("--page-size needs --page (without --page the whole history is printed)")
    page = _whole_number(args.page, "--page", 1, 10**12) if args.page is not None else None
    size = _whole_number(args.page_size, "--page-size", 1, 1000) if args.page_size is not None else 100
    client = _client(args)
    if page is None:
        entries = client.history(cid)
    else:
        try:
            found = client.history(cid, page=page, page_size=size)
        except ValueError as exc:
            raise UsageError(f"--page {page}: {exc}") from None
        entries = found["entries"]
    if args.json:
        print(json.dumps(entries if page is None else found))
        return OK
    for e in entries:
        note = (f"  rejected: {e['error']}" if e.get("rejected") else f"  error: {e['error']}" if e.get("error")
                else f"  cancelled: {e['cancelled']}" if e.get("cancelled") else "")
        print(f"{e['step']:>5}  {e['time']}  {e['from'] or '(start)'} --{e['event'] or '-'}--> "
              f"{e['to'] or '-'}  {e['duration'] * 1000:.2f}ms retries={e['retries']}{note}")
    if page is not None:
        print(f"page {found['page']} of {found['pages']} ({found['total']} entries)")
    return OK


def cmd_cancel(args: argparse.Namespace) -> int:
    cid = _id(args.id, "ID")
    client = _client(args, _progress(args))
    client.cancel(cid, args.reason)
    later = "" if client.runtime is not None else "; cancel sent: a worker applies it"
    print(_summary(client.status(cid)) + later)
    return OK


def cmd_retry(args: argparse.Namespace) -> int:
    cid = _id(args.id, "ID")
    client = _client(args, _progress(args))
    client.retry(cid)
    return _settled(args, client, cid)


def cmd_resume(args: argparse.Namespace) -> int:
    from .app.resume import resume

    cid = _id(args.id, "ID")
    outcome = resume(_app(args), cid)
    print(f"{cid}: {outcome}")
    return OK


def cmd_worker(args: argparse.Namespace) -> int:
    from config.settings import check_address

    from .app.worker import run_worker

    for arn in args.source:
        check_address("source", arn, "--source")
    if args.idle_exit is not None and not (math.isfinite(args.idle_exit) and args.idle_exit >= 0):
        raise UsageError(f"--idle-exit {args.idle_exit!r} must be a number of seconds, 0 or more")
    application = _app(args)
    if not args.source and not application.wiring.embedded and application.wiring.routes.timers is None:
        raise UsageError("nothing to do: give --source ARN, or configure a timer table (`retry:`)")
    say = _progress(args)
    if say:
        reading = f"polling {', '.join(args.source)} and releasing" if args.source else "releasing"
        stops = f"stops after {args.idle_exit:g}s idle" if args.idle_exit is not None else "Ctrl-C stops it"
        say(f"worker: {reading} due timers; {stops}")
    counts = run_worker(application, args.source, idle_exit=args.idle_exit,
                        on_progress=WorkerReport(say) if say else None)
    print(json.dumps(counts) if args.json else
          f"worker: {counts['records']} records ({counts['failed']} failed), {counts['timers']} timers released")
    return OK


class WorkerReport:
    """A line a second while the worker handles messages, with the rate over that second;
    none while it is idle, so an idle worker's terminal stays still."""

    def __init__(self, say: Say, clock: Callable[[], float] = time.monotonic):
        self.say, self.clock = say, clock
        self.since = clock()
        self.seen: dict[str, int] = {}

    def __call__(self, counts: dict[str, int]) -> None:
        now = self.clock()
        elapsed = now - self.since
        if elapsed < 1.0:
            return
        if any(value != self.seen.get(key, 0) for key, value in counts.items()):
            handled = counts["records"] - self.seen.get("records", 0)
            self.say(f"worker: {handled} messages in {elapsed:.1f}s ({handled / elapsed:.1f}/s); "
                     f"{counts['records']} in all ({counts['failed']} failed), "
                     f"{counts['timers']} timers released, {counts['healed']} healed")
        self.since, self.seen = now, dict(counts)


def cmd_create_resources(args: argparse.Namespace) -> int:
    from .app.resources import create_resources

    application = _app(args)
    for line in create_resources(application.settings):
        print(line)
    return OK


# -- the parser ---------------------------------------------------------------------------

ID_HELP = "the instance's correlation id (what `fsm start` printed)"


def _parser() -> Parser:
    parser = Parser(prog="fsm", description="lambda-fsm: durable state machines. Exit codes: 0 success, "
                                            "1 a runtime failure, 2 bad input or usage.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, func: Callable, help: str, file: bool = False, client: bool = True) -> Parser:
        p = sub.add_parser(name, help=help, description=help)
        if file:
            p.add_argument("file", metavar="FILE", help="the machines' file: YAML, or an ASL definition (.json)")
        elif client:
            p.add_argument("--config", metavar="FILE",
                           help="the machines' file, YAML or ASL .json (default: $FSM_CONFIG, then ./fsm.yaml)")
        if client:
            p.add_argument("--settings", metavar="FILE", help="a settings YAML file (default: $FSM_SETTINGS)")
            p.add_argument("--store", metavar="URL[,URL]", help="store URL(s), primary first, comma-separated "
                                                                "(default: $FSM_STORE, then sqlite:///.fsm/fsm.sqlite3)")
        p.set_defaults(func=func)
        return p

    _definition_commands(command)
    _instance_commands(command)
    p = command("worker", cmd_worker, "poll SQS, Kinesis and DynamoDB streams and release due timers")
    p.add_argument("--source", metavar="ARN", action="append", default=[],
                   help="a queue, stream or table ARN to read (repeatable)")
    p.add_argument("--idle-exit", metavar="SECONDS", type=float,
                   help="exit after this many seconds with nothing to do (default: run until stopped)")
    p.add_argument("--json", action="store_true", help="print the final counts as JSON, and no progress")
    command("create-resources", cmd_create_resources,
            "create the queues, streams, topics and tables the settings name (safe to run twice)")
    for module in OPERATOR_COMMANDS:
        importlib.import_module(module).register(command)
    return parser


# Commands that live beside what they operate on: each module's ``register(command)`` adds
# its subcommand through the same factory (so it takes --config/--settings/--store too)
# and keeps its heavier imports inside the command function.
OPERATOR_COMMANDS = ("fsm.app.template", "fsm.app.listing", "fsm.app.watch", "fsm.app.ui", "fsm.app.cost",
                     "fsm.app.migrate", "fsm.app.export")


def _definition_commands(command: Callable[..., Parser]) -> None:
    command("validate", cmd_validate, "check a machines file; print one line per machine", True, False)
    p = command("graph", cmd_graph, "print machines as a diagram", True, False)
    p.add_argument("--machine", metavar="NAME", help="draw only this machine (default: every machine)")
    p.add_argument("--format", choices=("dot", "mermaid"), default="dot",
                   help="Graphviz dot (default) or a Mermaid state diagram")
    p = command("run", cmd_run, "run an instance on the embedded runtime until it settles", True)
    _start_flags(p)
    p.add_argument("--correlation-id", metavar="ID", help="the instance's id (default: a new one)")
    p.add_argument("--json", action="store_true",
                   help="print only the final status, as one JSON object (no line per transition)")


def _start_flags(p: Parser) -> None:
    p.add_argument("--machine", metavar="NAME",
                   help="the machine to start (default: the file's one machine, when it defines one)")
    p.add_argument("--input", metavar="JSON|file://PATH",
                   help="what the instance starts with: any JSON value, which the machine's start hook makes "
                        "the first context of (ASL machines); otherwise a JSON object, the first context")
    p.add_argument("--context", metavar="JSON|file://PATH", help="the initial context, a JSON object (or --input)")


def _instance_commands(command: Callable[..., Parser]) -> None:
    p = command("start", cmd_start, "start an instance; prints its correlation id")
    _start_flags(p)
    p.add_argument("--correlation-id", metavar="ID",
                   help="the instance's id; a given one makes the start idempotent (default: a new one)")
    p = command("send", cmd_send, "send an external event to an instance")
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("event", metavar="EVENT", help="the event, one the instance's state has a transition on")
    p.add_argument("--data", metavar="JSON|file://PATH", help="event data, a JSON object (YAML machines merge it into the "
                                                  "context; XState machines give it to their actions)")
    p.add_argument("--event-id", metavar="ID", help="deduplicates retries of the same send (default: a new one)")
    p.add_argument("--wait", metavar="SECONDS", type=float, nargs="?", const=30.0,
                   help="wait until this event was applied (default 30 s) and print the status right after "
                        "it as JSON, with `event`: its position, whether it was applied, and why not; exit 1 "
                        "when it was rejected or not applied in time")
    p = command("status", cmd_status, "show where an instance is")
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("--json", action="store_true", help="print the status as one JSON object")
    p.add_argument("--children", action="store_true",
                   help="also show each child instance it started: id, machine, status, state (--json: "
                        "`children_status`, their status objects)")
    p = command("history", cmd_history, "show an instance's transitions")
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("--json", action="store_true", help="print the transitions as one JSON array (with --page: "
                                                       '{"page", "pages", "total", "entries"})')
    p.add_argument("--page", metavar="N", help="print only page N (from 1) and a footer `page N of M (T entries)`; "
                                               "only that page is read from the store")
    p.add_argument("--page-size", metavar="K", help="entries per page with --page, 1 to 1000 (default 100)")
    p = command("cancel", cmd_cancel, "cancel an instance; prints where it is now")
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("--reason", metavar="TEXT", default="cancelled by user",
                   help="kept in the history (default: 'cancelled by user')")
    p = command("retry", cmd_retry, "resume a failed instance from the message it failed on")
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p = command("resume", cmd_resume, "re-dispatch the message at an instance's last Kinesis checkpoint")
    p.add_argument("id", metavar="ID", help=ID_HELP)


if __name__ == "__main__":
    sys.exit(main())
