"""The ``fsm`` command. Exit codes everywhere: 0 success, 1 a runtime failure
(instance failed, event rejected, unknown id, backend down), 2 bad input or usage."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .shadow import check_packages

OK, FAILED, BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return BAD_INPUT
    from .errors import (
        FsmError,
        InstanceError,
        InvalidDefinition,
        MalformedMessage,
        ShadowedModule,
        UnknownMachine,
    )
    from .logs import configure

    configure(os.environ.get("FSM_LOG_LEVEL", "ERROR"))
    try:
        check_packages()
        return args.func(args)
    except (InvalidDefinition, ShadowedModule, MalformedMessage, UnknownMachine, UsageError) as exc:
        print(f"fsm {args.command}: {exc}" if not isinstance(exc, InvalidDefinition) else str(exc),
              file=sys.stderr)
        return BAD_INPUT
    except InstanceError as exc:
        print(f"fsm {args.command}: {exc}", file=sys.stderr)
        return FAILED
    except FsmError as exc:
        print(f"fsm {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return FAILED
    except BrokenPipeError:  # `fsm status ID | head -3`
        sys.stderr.close()
        return OK


# -- helpers ------------------------------------------------------------------------------


def _json_arg(text: str | None, name: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def _config_path(args: argparse.Namespace) -> str:
    from .app.wiring import default_config_path

    path = getattr(args, "file", None) or getattr(args, "config", None) or default_config_path()
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
    return load_file(path)


def _client(args: argparse.Namespace, on_outcome: Callable | None = None):
    from .app.client import Client

    return Client(wiring=_app(args).wiring, on_outcome=on_outcome)


def _print_outcome(outcome) -> None:
    for hop in outcome.hops:
        print(f"step {hop.step + 1:>4}  {hop.target:<20} event={hop.event or '-':<16} "
              f"retries={outcome.retries} duration={hop.duration * 1000:.2f}ms", flush=True)
    if outcome.result in ("retrying", "failed", "rejected"):
        print(f"{outcome.result:>9}  {outcome.state or '-':<20} retries={outcome.retries} "
              f"error={outcome.error}", flush=True)


# -- commands -----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from config.settings import load_settings

    definitions = _definitions(args)
    load_settings(definitions.settings, environ={})  # the file's own `settings:` must be valid too
    for machine in definitions.machines.values():
        finals = sum(1 for s in machine.states.values() if s.final)
        print(f"{machine.name}: {len(machine.states)} states, initial {machine.initial!r}, "
              f"{finals} final, max_retries {machine.max_retries} ({machine.source})")
    return OK


def cmd_graph(args: argparse.Namespace) -> int:
    from .graph import to_dot, to_mermaid

    definitions = _definitions(args)
    names = [args.machine] if args.machine else sorted(definitions.machines)
    render = to_mermaid if args.format == "mermaid" else to_dot
    print("\n\n".join(render(definitions.machine(name)) for name in names))
    return OK


def cmd_run(args: argparse.Namespace) -> int:
    client = _client(args, on_outcome=None if args.json else _print_outcome)
    if client.runtime is None:
        raise UsageError("`fsm run` drives the embedded runtime; unset `stream:` or use `fsm start`")
    cid = client.start(args.machine, _json_arg(args.context, "--context"), args.correlation_id)
    status = client.status(cid)
    if args.json:
        print(json.dumps(status))
    else:
        print(_summary(status))
    return FAILED if status["status"] == "failed" else OK


def _summary(status: dict[str, Any]) -> str:
    where = f"in state {status['state']}" if status["state"] else "before its first state"
    error = f" ({status['last_error']})" if status["last_error"] else ""
    return f"{status['correlation_id']}: {status['status']} {where} after {status['steps']} steps{error}"


def cmd_start(args: argparse.Namespace) -> int:
    client = _client(args)
    print(client.start(args.machine, _json_arg(args.context, "--context"), args.correlation_id))
    return OK


def cmd_send(args: argparse.Namespace) -> int:
    client = _client(args)
    client.send_event(args.id, args.event, _json_arg(args.data, "--data"), args.event_id)
    return _settled(client, args.id)


def _settled(client: Any, cid: str) -> int:
    """On the embedded runtime the instance has run: say where it is, fail if it failed."""
    if client.runtime is None:
        return OK
    status = client.status(cid)
    print(_summary(status))
    return FAILED if status["status"] == "failed" else OK


def cmd_status(args: argparse.Namespace) -> int:
    status = _client(args).status(args.id)
    if args.json:
        print(json.dumps(status))
    else:
        for key, value in status.items():
            print(f"{key:>14}: {json.dumps(value) if key == 'context' else value}")
    return FAILED if status["status"] == "failed" else OK


def cmd_history(args: argparse.Namespace) -> int:
    entries = _client(args).history(args.id)
    if args.json:
        print(json.dumps(entries))
        return OK
    for e in entries:
        note = (f"  rejected: {e['error']}" if e.get("rejected") else f"  error: {e['error']}" if e.get("error")
                else f"  cancelled: {e['cancelled']}" if e.get("cancelled") else "")
        print(f"{e['step']:>5}  {e['time']}  {e['from'] or '(start)'} --{e['event'] or '-'}--> "
              f"{e['to'] or '-'}  {e['duration'] * 1000:.2f}ms retries={e['retries']}{note}")
    return OK


def cmd_cancel(args: argparse.Namespace) -> int:
    _client(args).cancel(args.id, args.reason)
    return OK


def cmd_retry(args: argparse.Namespace) -> int:
    client = _client(args)
    client.retry(args.id)
    return _settled(client, args.id)


def _app(args: argparse.Namespace):
    from .app.wiring import App

    stores = args.store.split(",") if getattr(args, "store", None) else None
    return App.load(definitions=_definitions(args), settings_file=getattr(args, "settings", None), store=stores)


def cmd_worker(args: argparse.Namespace) -> int:
    from .app.worker import run_worker

    application = _app(args)
    if not args.source and not application.wiring.embedded and application.wiring.routes.timers is None:
        raise UsageError("nothing to do: give --source ARN, or configure a timer table (`retry:`)")
    counts = run_worker(application, args.source, idle_exit=args.idle_exit)
    print(f"worker: {counts['records']} records ({counts['failed']} failed), {counts['timers']} timers released")
    return OK


def cmd_resume(args: argparse.Namespace) -> int:
    from .app.resume import resume

    outcome = resume(_app(args), args.id)
    print(f"{args.id}: {outcome}")
    return OK


def cmd_create_resources(args: argparse.Namespace) -> int:
    from .app.resources import create_resources

    application = _app(args)
    for line in create_resources(application.settings):
        print(line)
    return OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fsm", description="lambda-fsm: durable state machines")
    sub = parser.add_subparsers(dest="command")

    def command(name: str, func: Callable, help: str, file: bool = False, client: bool = True):
        p = sub.add_parser(name, help=help, description=help)
        if file:
            p.add_argument("file", help="the machines' YAML file")
        elif client:
            p.add_argument("--config", help="machines' YAML (default: $FSM_CONFIG, then ./fsm.yaml)")
        if client:
            p.add_argument("--settings", help="settings YAML (default: $FSM_SETTINGS)")
            p.add_argument("--store", help="store URL(s), comma-separated (default: $FSM_STORE, then "
                                           "sqlite:///.fsm/fsm.sqlite3)")
        p.set_defaults(func=func)
        return p

    command("validate", cmd_validate, "check a machines file; print one line per machine", True, False)
    p = command("graph", cmd_graph, "print machines as a diagram", True, False)
    p.add_argument("--machine")
    p.add_argument("--format", choices=("dot", "mermaid"), default="dot")
    p = command("run", cmd_run, "run an instance on the embedded runtime until it settles", True)
    p.add_argument("--machine", required=True)
    p.add_argument("--context", help="initial context, a JSON object")
    p.add_argument("--correlation-id")
    p.add_argument("--json", action="store_true", help="print the final status as JSON")
    p = command("start", cmd_start, "start an instance; prints its correlation id")
    p.add_argument("--machine", required=True)
    p.add_argument("--context", help="initial context, a JSON object")
    p.add_argument("--correlation-id")
    p = command("send", cmd_send, "send an external event to an instance")
    p.add_argument("id")
    p.add_argument("event")
    p.add_argument("--data", help="event data, a JSON object merged into the context")
    p.add_argument("--event-id", help="deduplicates retries of the same send")
    p = command("status", cmd_status, "show where an instance is")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p = command("history", cmd_history, "show an instance's transitions")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p = command("cancel", cmd_cancel, "cancel an instance")
    p.add_argument("id")
    p.add_argument("--reason", default="cancelled by user")
    p = command("retry", cmd_retry, "resume a failed instance from the message it failed on")
    p.add_argument("id")
    p = command("resume", cmd_resume, "re-dispatch the message at an instance's last Kinesis checkpoint")
    p.add_argument("id")
    p = command("worker", cmd_worker, "poll SQS, Kinesis and DynamoDB streams and release due timers")
    p.add_argument("--source", action="append", default=[], help="queue, stream or table ARN (repeatable)")
    p.add_argument("--idle-exit", type=float, help="exit after this many seconds with nothing to do")
    command("create-resources", cmd_create_resources,
            "create the queues, streams, topics and tables the settings name (safe to run twice)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
