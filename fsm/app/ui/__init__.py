"""``fsm ui``: a dashboard in the browser for the instances the settings' stores hold.

It lists instances (filtered by machine, status and state), draws one instance's machine
with its current state highlighted, shows its context and history, sends it events, and
follows it live (Server-Sent Events). The page is plain HTML, JavaScript and CSS served
from this package (``static/``): no build step, nothing fetched from elsewhere. The
server is :mod:`fsm.app.ui.server`; everything the page does goes through the HTTP API
(:mod:`fsm.app.http`).

On the embedded runtime (no ``stream:``) an event sent from the page runs the instance in
this process, as ``fsm send`` would.
"""

from __future__ import annotations

import argparse
import math
import signal
from collections.abc import Callable
from typing import Any

DEFAULT_PORT = 8080


def cmd_ui(args: argparse.Namespace) -> int:
    from ...cli import OK, UsageError, _app, _given
    from .server import Dashboard, is_loopback

    host = _given(args.host, "--host") or "127.0.0.1"
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} must be from 1 to 65535 (0: any free port)")
    if not (math.isfinite(args.interval) and args.interval > 0):
        raise UsageError(f"--interval {args.interval!r} must be a number of seconds above 0")
    if args.token is not None and not args.token.strip():
        raise UsageError("--token is empty; give a token, or leave the flag out on 127.0.0.1")
    application = _app(args)
    token = _token_source(application, args.token, is_loopback(host))
    if token is None and not is_loopback(host):
        raise UsageError(f"binding {host} serves the dashboard to other machines, so it needs a token: give "
                         "--token TOKEN or set api.token_secret, or bind 127.0.0.1 (the default)")
    if token is not None:
        token()   # a secret that cannot be read is an error now, not on the first request
    try:
        server = Dashboard(application, host, args.port, token=token, poll_interval=args.interval)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{args.port}: {exc.strerror or exc}") from None
    print(f"fsm ui: dashboard on {server.url} ({'token required' if token else 'no token on loopback'}); "
          "Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)   # a service manager's stop is a Ctrl-C
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        application.wiring.close()
    return OK


def _token_source(application: Any, given: str | None, loopback: bool) -> Callable[[], str] | None:
    """The token requests must carry: ``--token``; else, off loopback, the Secrets
    Manager secret ``api.token_secret`` (read through a cache, so a rotation is seen)."""
    if given is not None:
        token = given.strip()
        return lambda: token
    arn = (application.settings.api or {}).get("token_secret")
    if loopback or not arn:
        return None
    from sources.secrets import shared_cache

    settings = application.settings
    return lambda: shared_cache().secret_string(arn, endpoint_url=settings.endpoints.get(arn),
                                                aws=settings.aws or None)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def register(command: Callable[..., Any]) -> None:
    p = command("ui", cmd_ui, "serve a dashboard of instances in the browser (127.0.0.1 by default)")
    p.add_argument("--port", metavar="PORT", type=int, default=DEFAULT_PORT,
                   help=f"the port to listen on (default: {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--host", metavar="ADDRESS", default="127.0.0.1",
                   help="the address to bind (default: 127.0.0.1; any other one needs a token)")
    p.add_argument("--token", metavar="TOKEN",
                   help="require this bearer token on every API request (default off loopback: the "
                        "secret api.token_secret names)")
    p.add_argument("--interval", metavar="SECONDS", type=float, default=0.5,
                   help="how often live updates read the store (default: 0.5)")

