"""The dashboard's web server: its page, the HTTP API under ``/api``, live updates.

A standard-library ``ThreadingHTTPServer``: the dashboard is a local operator tool and
needs no web framework. It serves three things:

- ``/`` and ``/static/NAME``: the page, its script and its style, files of this package;
- ``/api/...``: :func:`fsm.app.http.route`, the HTTP API the Lambda entry point serves,
  after this server's own access check (the Lambda one expects IAM or Secrets Manager);
- ``/api/stream``: Server-Sent Events. ``?instance=ID`` sends the instance's status each
  time it changes, ``?machine=NAME`` (or nothing, for every machine) the instances that
  changed. Both poll the store, as ``fsm watch`` does, and send a comment line as a
  heartbeat, so proxies keep the connection and a closed tab is noticed.

Access: bound to a loopback address it takes no credentials, but answers only requests
whose ``Host`` is a loopback name (a web page cannot reach it by pointing a DNS name of
its own at 127.0.0.1) and refuses a cross-site write (a page on another origin posting a
form here). Bound to any other address, every API request must carry the token, as
``Authorization: Bearer TOKEN`` or, for ``EventSource``, which cannot set headers,
``?token=TOKEN``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ...errors import RecoverableError
from ...logs import log
from ...message import ID_PATTERN
from ..http import MAX_BODY_BYTES, HttpRequest, HttpResponse, failure, route
from ..listing import ListingUnsupported
from ..watch import FleetWatch, current_view, fingerprint, lister_for
from ..wiring import App

STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# The page loads nothing from elsewhere and runs no inline script or style.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Dashboard(ThreadingHTTPServer):
    """The server and what its handlers share: the application, the access rule, the
    polling pace, and the event that ends every live stream at shutdown."""

    daemon_threads = True

    def __init__(self, application: App, host: str, port: int, *, token: Callable[[], str] | None = None,
                 poll_interval: float = 0.5, heartbeat: float = 15.0):
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), DashboardHandler)
        self.application = application
        self.loopback = is_loopback(host)
        self.token = token
        self.poll_interval, self.heartbeat = poll_interval, heartbeat
        self.stopping = threading.Event()
        self.streams: set[threading.Thread] = set()
        # On the embedded runtime a request runs instances in this process, on one
        # in-process bus: one request at a time drives it.
        self.runtime_lock = threading.Lock() if application.wiring.embedded else None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def stop(self) -> None:
        """End every live stream (each sees ``stopping`` within a poll), then close."""
        self.stopping.set()
        for thread in list(self.streams):
            thread.join(timeout=2.0)
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection http.server itself could not handle: a line in the log, not a
        traceback on the operator's terminal."""
        log(logging.ERROR, "dashboard connection failed", error=repr(sys.exc_info()[1]))

    def answer(self, request: HttpRequest) -> HttpResponse:
        if self.runtime_lock is None:
            return route(self.application, request)
        with self.runtime_lock:
            return route(self.application, request)


class DashboardHandler(BaseHTTPRequestHandler):
    server: Dashboard
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "fsm-ui"

    # -- dispatch -------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self.answered = False
        try:
            self._handle()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True   # the browser went away
        except Exception as exc:  # noqa: BLE001 - the browser gets a status, the log the details
            log(logging.ERROR, "dashboard request failed", method=self.command, path=urlsplit(self.path).path,
                error=f"{type(exc).__name__}: {exc}")
            self.close_connection = True
            if not self.answered:
                self._send_json(failure(500, "internal_error", "the request failed; the error is logged"))

    def send_response(self, code: int, message: str | None = None) -> None:
        self.answered = True
        super().send_response(code, message)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))
        refusal = self._refusal(path, query.pop("token", ""))
        if refusal is not None:
            self.close_connection = True   # its body, if any, stays unread
            self._send_json(refusal)
        elif path == "/api/stream":
            self._stream(query) if self.command == "GET" else self._send_json(
                failure(405, "method_not_allowed", "/api/stream takes GET", {"allow": "GET"}))
        elif path == "/api" or path.startswith("/api/"):
            self._api(path[len("/api"):] or "/", query)
        elif self.command in ("GET", "HEAD"):
            self._static(path)
        else:
            self._send_json(failure(405, "method_not_allowed", f"{path} takes GET", {"allow": "GET"}))

    # -- access ---------------------------------------------------------------------------

    def _refusal(self, path: str, query_token: str) -> HttpResponse | None:
        """Why this request is refused, or ``None``; see the module docstring."""
        if self.server.loopback and not is_loopback(_host_name(self.headers.get("Host", ""))):
            return failure(403, "forbidden", "this dashboard answers requests for 127.0.0.1 or localhost only")
        if self.command != "GET" and self._cross_site():
            return failure(403, "forbidden", "a page of another site may not write through this dashboard")
        if self.server.token is None or not (path == "/api" or path.startswith("/api/")):
            return None   # the page and its assets hold no data: they load without the token
        scheme, _, given = self.headers.get("Authorization", "").strip().partition(" ")
        given = given.strip() if scheme.lower() == "bearer" else query_token
        if not given:
            return failure(401, "unauthorized", "this dashboard takes `Authorization: Bearer TOKEN` or ?token=TOKEN",
                           {"www-authenticate": "Bearer"})
        if not hmac.compare_digest(given.encode("utf-8"), self.server.token().encode("utf-8")):
            return failure(403, "forbidden", "the token is not this dashboard's token")
        return None

    def _cross_site(self) -> bool:
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return True
        origin = self.headers.get("Origin")
        return origin is not None and origin != f"http://{self.headers.get('Host', '')}"

    # -- the API --------------------------------------------------------------------------

    def _api(self, path: str, query: dict[str, str]) -> None:
        given = self.headers.get("Content-Length") or "0"
        if not given.isdigit():
            self.close_connection = True
            self._send_json(failure(400, "invalid_request", "Content-Length must be a number of bytes"))
            return
        length = int(given)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(failure(413, "payload_too_large", f"the body has {length} bytes; at most "
                                                              f"{MAX_BODY_BYTES} are taken"))
            return
        body = self.rfile.read(length) if length > 0 else b""
        headers = {name.lower(): value for name, value in self.headers.items() if name.lower() != "authorization"}
        self._send_json(self.server.answer(HttpRequest(self.command, path, query, headers, body)))

    def _send_json(self, response: HttpResponse) -> None:
        payload = json.dumps(response.body).encode("utf-8")
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() == "location" and value.startswith("/"):
                value = "/api" + value
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    # -- files ----------------------------------------------------------------------------

    def _static(self, path: str) -> None:
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        # Only the package's own files, by exact name: no path reaches outside the folder.
        found = files.get(name) if path == "/" or path == "/index.html" or path.startswith("/static/") else None
        if found is None:
            self._send_json(failure(404, "not_found", f"no page {path}"))
            return
        content = found.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES.get(found.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(content)))
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def _common_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)

    # -- live updates ---------------------------------------------------------------------

    def _stream(self, query: dict[str, str]) -> None:
        cid, machine = query.get("instance") or None, query.get("machine") or None
        wiring = self.server.application.wiring
        if cid is not None and not ID_PATTERN.fullmatch(cid):
            self._send_json(failure(400, "invalid_request", f"query parameter 'instance' is not an id: {cid[:40]!r}"))
            return
        if cid is None:
            try:
                lister = lister_for(wiring)
            except ListingUnsupported:
                self._send_json(failure(501, "not_implemented", "no configured store can list instances"))
                return
            changes = _fleet_changes(FleetWatch(lister, machine))
        else:
            changes = _instance_changes(lambda: current_view(wiring, cid))
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Connection", "close")
        self.send_header("X-Accel-Buffering", "no")
        self._common_headers()
        self.end_headers()
        self.close_connection = True
        self.server.streams.add(threading.current_thread())
        try:
            self._pump(changes)
        finally:
            self.server.streams.discard(threading.current_thread())

    def _pump(self, changes: Callable[[], list[tuple[str, Any]]]) -> None:
        """Send what changed each poll, a heartbeat when nothing has for a while."""
        server = self.server
        self.wfile.write(b"retry: 2000\n\n")
        quiet_since = time.monotonic()
        while not server.stopping.is_set():
            try:
                sent = changes()
            except RecoverableError as exc:   # the store is down for now: say so, try again
                sent = [("unavailable", {"message": f"{type(exc).__name__}: the store cannot be read"})]
            for name, data in sent:
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            if sent:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= server.heartbeat:
                self.wfile.write(b": heartbeat\n\n")
                quiet_since = time.monotonic()
            self.wfile.flush()
            server.stopping.wait(server.poll_interval)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a request line may hold ``?token=``, and the terminal is the operator's."""


def _host_name(host: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8080`` -> ``::1``)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _instance_changes(read: Callable[[], dict[str, Any] | None]) -> Callable[[], list[tuple[str, Any]]]:
    """``status`` with the view each time the instance changes (the first poll included);
    ``missing`` once while it does not exist (yet: with a stream, until a worker runs it)."""
    last: list[Any] = [object()]

    def changes() -> list[tuple[str, Any]]:
        view = read()
        mark = fingerprint(view) if view else None
        if mark == last[0]:
            return []
        last[0] = mark
        return [("status", view)] if view else [("missing", {})]

    return changes


def _fleet_changes(fleet: FleetWatch) -> Callable[[], list[tuple[str, Any]]]:
    def changes() -> list[tuple[str, Any]]:
        changed = fleet.poll()
        return [("instances", changed)] if changed else []

    return changes
