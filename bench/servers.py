"""Real servers for the benchmarks: redis-server, memcached and moto_server on loopback.

Each server comes from its environment variable when that is set (``FSM_TEST_REDIS_URL``,
``FSM_TEST_MEMCACHED_URL``, ``FSM_TEST_MOTO_URL``, as in CI), else it is started here
from the installed binary on a free port, and stopped (that process only) on ``close``.
A server that cannot be had is reported as ``None`` with the reason in ``missing``, so a
benchmark can print "skipped" for it instead of failing.

    with Servers() as servers:
        url = servers.redis()          # "redis://127.0.0.1:PORT/0" or None

    with running_servers("moto", "redis") as urls:    # all required: raises if one is missing
        urls["moto"]                   # "http://127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

ENV = {"redis": "FSM_TEST_REDIS_URL", "memcached": "FSM_TEST_MEMCACHED_URL", "moto": "FSM_TEST_MOTO_URL"}
START_TIMEOUT = 20.0


def free_port() -> int:
    """A port nobody listens on right now (it may be taken before we bind: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def replies(port: int, request: bytes, prefixes: tuple[bytes, ...]) -> bool:
    """Whether a server on ``port`` answers ``request`` with one of ``prefixes``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(request)
            return sock.recv(128).startswith(prefixes)
    except OSError:
        return False


def http_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


class Process:
    """One server process started here; ``stop`` ends exactly this process."""

    def __init__(self, name: str, argv: list[str], ready: Callable[[], bool], log: Path):
        self.name, self.argv, self.log = name, argv, log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-400:]
                raise RuntimeError(f"{name} did not start ({' '.join(argv)}): {tail.strip()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


def _redis(port: int, log_dir: Path) -> tuple[str, Process]:
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = Process("redis-server", argv, lambda: replies(port, b"PING\r\n", (b"+PONG", b"-NOAUTH")),
                      log_dir / f"redis-{port}.log")
    return f"redis://127.0.0.1:{port}/0", process


def _memcached(port: int, log_dir: Path) -> tuple[str, Process]:
    argv = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv += ["-u", "root"]     # memcached refuses to run as root without it
    process = Process("memcached", argv, lambda: replies(port, b"version\r\n", (b"VERSION",)),
                      log_dir / f"memcached-{port}.log")
    return f"memcached://127.0.0.1:{port}", process


def _moto_argv() -> list[str] | None:
    if shutil.which("moto_server"):
        return ["moto_server"]
    with contextlib.suppress(ImportError):
        import flask  # noqa: F401
        import moto.server  # noqa: F401
        return [sys.executable, "-m", "moto.server"]
    return None


def _moto(port: int, log_dir: Path) -> tuple[str, Process]:
    argv = _moto_argv()
    if argv is None:
        raise RuntimeError("moto_server is not installed (pip install 'moto[server]')")
    url = f"http://127.0.0.1:{port}"
    process = Process("moto_server", [*argv, "-H", "127.0.0.1", "-p", str(port)],
                      lambda: http_200(f"{url}/moto-api/"), log_dir / f"moto-{port}.log")
    return url, process


BINARIES = {"redis": "redis-server", "memcached": "memcached"}
STARTERS: dict[str, Callable[[int, Path], tuple[str, Process]]] = {
    "redis": _redis, "memcached": _memcached, "moto": _moto}


class Servers:
    """The servers one benchmark run uses; each is started on first request."""

    def __init__(self, log_dir: str | Path | None = None):
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="fsm-bench-servers-"))
        self.urls: dict[str, str | None] = {}
        self.missing: dict[str, str] = {}
        self.started: list[Process] = []

    def url(self, kind: str) -> str | None:
        """The URL of server ``kind`` (redis, memcached, moto), or None when unavailable."""
        if kind in self.urls:
            return self.urls[kind]
        given = os.environ.get(ENV[kind])
        if given:
            self.urls[kind] = given.rstrip("/") if kind == "moto" else given
            return self.urls[kind]
        binary = BINARIES.get(kind)
        if binary and not shutil.which(binary):
            self._missing(kind, f"{binary} is not installed and {ENV[kind]} is not set")
            return None
        error = ""
        for _ in range(3):       # the free port may be taken between the probe and the bind
            try:
                url, process = STARTERS[kind](free_port(), self.log_dir)
            except RuntimeError as exc:
                error = str(exc)
                continue
            self.started.append(process)
            self.urls[kind] = url
            return url
        self._missing(kind, error)
        return None

    def shared(self, kind: str) -> bool:
        """Whether the server came from the environment (so others may use it too)."""
        return bool(os.environ.get(ENV[kind]))

    def redis(self) -> str | None:
        return self.url("redis")

    def memcached(self) -> str | None:
        return self.url("memcached")

    def moto(self) -> str | None:
        return self.url("moto")

    def close(self) -> None:
        while self.started:
            self.started.pop().stop()

    def _missing(self, kind: str, why: str) -> None:
        self.urls[kind] = None
        self.missing[kind] = why

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@contextlib.contextmanager
def running_servers(*kinds: str, log_dir: str | Path | None = None) -> Iterator[dict[str, str]]:
    """``{kind: url}`` for every server named (redis, memcached, moto), all required:
    one that cannot be had raises RuntimeError saying why. Started ones stop on exit."""
    unknown = sorted(set(kinds) - set(ENV))
    if unknown:
        raise ValueError(f"unknown servers {unknown}; known: {', '.join(ENV)}")
    with Servers(log_dir) as servers:
        urls: dict[str, str] = {}
        for kind in kinds:
            url = servers.url(kind)
            if url is None:
                raise RuntimeError(f"{kind} is needed: {servers.missing.get(kind, 'unavailable')}")
            urls[kind] = url
        yield urls
