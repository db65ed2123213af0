"""Shared fixtures: real servers on free ports, and one store/timer store per backend.

Servers come from ``FSM_TEST_REDIS_URL`` / ``FSM_TEST_MEMCACHED_URL`` / ``FSM_TEST_MOTO_URL``
when set (``.ci/run`` starts them), otherwise they are started here from the installed
binaries, on ports picked at run time so parallel jobs never collide, and stopped at the
end of the session. A server that cannot be had skips its tests locally, and fails them
when ``FSM_REQUIRE_SERVERS=1`` (CI), so a green CI run has really exercised every backend.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests must never reach real AWS, whatever the developer's shell holds.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_name, None)
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                  AWS_DEFAULT_REGION="us-east-1", AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled")

ROOT = Path(__file__).resolve().parent.parent
STORE_KINDS = ["memory", "sqlite", "redis", "fakeredis", "memcached", "dynamodb"]
TIMER_KINDS = ["memory", "sqlite", "redis", "dynamodb"]
ACCOUNT = "123456789012"


SERVER_FIXTURES = frozenset({"redis_url", "memcached_url", "moto_url", "fresh_moto_url", "private_redis",
                             "private_moto"})
MOTO_FIXTURES = frozenset({"moto_url", "fresh_moto_url"})   # the shared moto_server, or a module's own
SERVER_KINDS = frozenset({"redis", "memcached"})    # parameters of the store and timer fixtures
# Also slow, though in-process: DynamoDB on moto (seconds per contract case; memory,
# sqlite and fakeredis give the fast tier the same contract) and the tests that drive the
# CLI in a subprocess per command through whole workflows.
SLOW_KINDS = SERVER_KINDS | {"dynamodb", "eventbridge"}
SLOW_FILES = ("test_examples_cli.py", "test_migrate.py", "test_cli_cost.py", "test_watch.py", "test_local_recovery.py")
SLOW_NAMES = ("dynamodb", "eventbridge")  # in a test's id: moto in-process, seconds per case


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real servers (redis-server, memcached, moto_server)")
    config.addinivalue_line("markers", "soak: long-running load or chaos test, not part of the quick suite")
    config.addinivalue_line("markers", "slow: needs a real server or takes seconds; "
                                       "the fast tier is `python -m pytest -m 'not slow'`")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast tier (``-m "not slow"``) needs no server: everything that uses one,
    whether by fixture or by a store/timer parameter, is ``slow`` too."""
    integration, soak = ROOT / "tests" / "integration", ROOT / "tests" / "soak"
    # Longest first: run in parallel, the soak (minutes on its own) starts at once on one
    # worker instead of last, while the others share everything else.
    items.sort(key=lambda item: soak not in item.path.parents)
    for item in items:
        if integration in item.path.parents:
            item.add_marker(pytest.mark.integration)
        params = getattr(getattr(item, "callspec", None), "params", {})
        fixtures = set(getattr(item, "fixturenames", ()))
        if (integration in item.path.parents or soak in item.path.parents or SERVER_FIXTURES & fixtures
                or SLOW_KINDS & {v for v in params.values() if isinstance(v, str)} or item.path.name in SLOW_FILES
                or any(name in item.name.lower() for name in SLOW_NAMES)):
            item.add_marker(pytest.mark.slow)
        if MOTO_FIXTURES & fixtures or integration in item.path.parents:
            # Run in parallel (pytest -n 3 --dist loadgroup), a file's server tests stay on
            # one worker (its module-scoped servers start once) and the files spread over
            # the workers. Tests that reset moto_server reset one of their module's own
            # (``fresh_moto_url``), never the shared one the other workers are using.
            item.add_marker(pytest.mark.xdist_group(f"servers:{item.path.name}"))


# ---- servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def servers_required() -> bool:
    return os.environ.get("FSM_REQUIRE_SERVERS") == "1"


def unavailable(name: str, why: str) -> None:
    """Skip locally; fail where servers are required."""
    if servers_required():
        pytest.fail(f"{name} is required (FSM_REQUIRE_SERVERS=1) but {why}", pytrace=False)
    pytest.skip(f"{name} not available: {why}")


def answers(port: int, probe: bytes, expected: tuple[bytes, ...]) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(probe)
            return sock.recv(64).startswith(expected)
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as reply:
            return reply.status == 200
    except OSError:
        return False


class Server:
    """A server process this session started; ``stop`` kills exactly that process."""

    def __init__(self, name: str, command: list[str], ready: Callable[[], bool], log: Path):
        self.name, self.log = name, log
        self.process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-500:]
                raise RuntimeError(f"{name} did not start ({' '.join(command)}): {tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def redis_command(port: int, *extra: str) -> list[str]:
    return ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            *extra]


def tls_answers(port: int) -> bool:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw, context.wrap_socket(raw) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def self_signed(directory: Path) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=127.0.0.1", "-days", "1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def start_redis(log_dir: Path, *extra: str, tls: bool = False) -> tuple[str, Server]:
    """A redis-server on a free port; with ``tls`` it speaks only TLS (``rediss://``)."""
    port = free_port()
    if not tls:
        server = Server("redis-server", redis_command(port, *extra),
                        lambda: answers(port, b"PING\r\n", (b"+PONG", b"-NOAUTH")),
                        log_dir / f"redis-{port}.log")
        return f"redis://127.0.0.1:{port}/0", server
    cert, key = self_signed(Path(tempfile.mkdtemp(dir=log_dir)))
    command = [*redis_command(0, *extra), "--tls-port", str(port), "--tls-cert-file", str(cert),
               "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    server = Server("redis-server (TLS)", command, lambda: tls_answers(port), log_dir / f"redis-tls-{port}.log")
    return f"rediss://127.0.0.1:{port}/0", server


def start_memcached(log_dir: Path) -> tuple[str, Server]:
    port = free_port()
    command = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64", "-u", "root"]
    server = Server("memcached", command, lambda: answers(port, b"version\r\n", (b"VERSION",)),
                    log_dir / f"memcached-{port}.log")
    return f"memcached://127.0.0.1:{port}", server


def moto_command() -> list[str] | None:
    if shutil.which("moto_server"):
        return ["moto_server"]
    if importlib.util.find_spec("moto.server") and importlib.util.find_spec("flask"):
        return [sys.executable, "-m", "moto.server"]
    return None


def start_moto(log_dir: Path, command: list[str]) -> tuple[str, Server]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server("moto_server", [*command, "-H", "127.0.0.1", "-p", str(port)],
                    lambda: http_ok(f"{url}/moto-api/"), log_dir / f"moto-{port}.log")
    return url, server


def session_server(name: str, env_var: str, available: bool, start: Callable[[], tuple[str, Server]],
                   stack: contextlib.ExitStack) -> str:
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    if not available:
        unavailable(name, f"it is not installed and {env_var} is not set")
    error = ""
    for _ in range(3):          # a free port can be taken between our probe and the bind
        try:
            url, server = start()
        except RuntimeError as exc:
            error = str(exc)
            continue
        stack.callback(server.stop)
        return url
    unavailable(name, error)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def redis_url(server_logs: Path) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        yield session_server("redis-server", "FSM_TEST_REDIS_URL", bool(shutil.which("redis-server")),
                             lambda: start_redis(server_logs), stack)


@pytest.fixture(scope="session")
def memcached_url(server_logs: Path) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        yield session_server("memcached", "FSM_TEST_MEMCACHED_URL", bool(shutil.which("memcached")),
                             lambda: start_memcached(server_logs), stack)


@pytest.fixture(scope="session")
def moto_url(server_logs: Path) -> Iterator[str]:
    command = moto_command()
    with contextlib.ExitStack() as stack:
        yield session_server("moto_server", "FSM_TEST_MOTO_URL", command is not None,
                             lambda: start_moto(server_logs, command or []), stack).rstrip("/")


@pytest.fixture(scope="module")
def module_moto(server_logs: Path) -> Iterator[str]:
    """A moto_server of the test module's own, which its tests may reset."""
    command = moto_command()
    if command is None:
        unavailable("moto_server", "it is not installed")
    with contextlib.ExitStack() as stack:
        yield session_server("moto_server", "", True, lambda: start_moto(server_logs, command or []), stack)


@pytest.fixture
def fresh_moto_url(module_moto: str) -> str:
    """A moto_server after ``POST /moto-api/reset``: no tables, queues or streams left
    over. The module's own, so that a reset wipes nothing another test is using."""
    request = urllib.request.Request(f"{module_moto}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10):
        pass
    return module_moto


@pytest.fixture
def private_moto(server_logs: Path) -> Iterator[str]:
    """A moto_server of this test's own: a long test (the soak) that other tests'
    ``/moto-api/reset`` must not wipe, when the suite runs in parallel."""
    command = moto_command()
    if command is None:
        unavailable("moto_server", "it is not installed")
    with contextlib.ExitStack() as stack:
        yield session_server("moto_server", "", True, lambda: start_moto(server_logs, command or []), stack)


@pytest.fixture
def private_redis(server_logs: Path) -> Iterator[Callable[..., tuple[str, Server]]]:
    """Start a redis-server of this test's own (``private_redis("--requirepass", "pw")``,
    ``private_redis(tls=True)``), which the test may kill; all are stopped after the test."""
    if not shutil.which("redis-server"):
        unavailable("redis-server", "the binary is not installed")
    started: list[Server] = []

    def start(*extra: str, tls: bool = False) -> tuple[str, Server]:
        url, server = start_redis(server_logs, *extra, tls=tls)
        started.append(server)
        return url, server

    yield start
    for server in started:
        server.stop()


# ---- stores -----------------------------------------------------------------------------


def table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{name}"


class Serialised:
    """A client whose calls run one at a time.

    moto's backend is not thread-safe (racing conditional writes can all succeed there),
    while DynamoDB serialises writes to an item; the lock restores that for race tests.
    """

    def __init__(self, client: Any):
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or isinstance(attr, type):
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)
        return locked


class _TransactionSnapshots:
    """Makes moto's TransactWriteItems cost what the transaction touches.

    moto (5.x) snapshots every table a transaction names with ``copy.deepcopy``, once per
    item of the transaction, to roll back on failure: quadratic in the table's size, so a
    long history made each swap slower than the last (1,500 swaps took a minute). This
    stands in for ``copy`` inside ``moto.dynamodb.models``: a table snapshot copies the
    containers and deep-copies only the items the transaction names, which is all a
    rollback needs. Installed once, and only if moto's internals look as expected.
    """

    def __init__(self, table_type: type, key_type: type):
        self.table_type, self.key_type = table_type, key_type
        self.local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(__import__("copy"), name)

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        keys = getattr(self.local, "keys", None)
        if keys is None or not isinstance(value, self.table_type):
            return __import__("copy").deepcopy(value, memo)
        clone = __import__("copy").copy(value)
        clone.items = type(value.items)(dict)
        for hash_key, stored in value.items.items():
            clone.items[hash_key] = dict(stored) if value.has_range_key else stored
        for table_name, hash_key, range_key in keys:
            if table_name != value.name or hash_key not in clone.items:
                continue
            if not value.has_range_key:
                clone.items[hash_key] = __import__("copy").deepcopy(clone.items[hash_key])
            elif range_key in clone.items[hash_key]:
                clone.items[hash_key][range_key] = __import__("copy").deepcopy(clone.items[hash_key][range_key])
        return clone

    def wrap(self, transact: Callable[..., Any]) -> Callable[..., Any]:
        def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> Any:
            self.local.keys = list(self.touched(backend, transact_items))
            try:
                return transact(backend, transact_items)
            finally:
                self.local.keys = None
        return transact_write_items

    def touched(self, backend: Any, transact_items: list[dict[str, Any]]) -> Iterator[tuple[str, Any, Any]]:
        for entry in transact_items:
            op = next(iter(entry.values()))
            table = backend.tables.get(op.get("TableName"))
            if table is None:
                continue
            key = op.get("Key") or op.get("Item") or {}
            if table.hash_key_attr in key:
                range_attr = table.range_key_attr
                yield (table.name, self.key_type(key[table.hash_key_attr]),
                       self.key_type(key[range_attr]) if range_attr and range_attr in key else None)

    @classmethod
    def install(cls) -> None:
        from moto.dynamodb import models
        if isinstance(getattr(models, "copy", None), cls):
            return
        from moto.dynamodb.models.dynamo_type import DynamoType
        from moto.dynamodb.models.table import Table
        expected = all(hasattr(Table, name) for name in ("has_range_key", "get_item", "put_item"))
        if not expected or getattr(models, "copy", None) is not __import__("copy"):
            return      # another moto: leave it alone, the tests are only slower
        shim = cls(Table, DynamoType)
        models.DynamoDBBackend.transact_write_items = shim.wrap(models.DynamoDBBackend.transact_write_items)
        models.copy = shim


@contextlib.contextmanager
def in_process_dynamodb() -> Iterator[Any]:
    """A table in moto's in-process mock: a tenth of moto_server's cost per call."""
    moto = pytest.importorskip("moto")
    import boto3

    from sources.dynamodb_tables import create_tables

    _TransactionSnapshots.install()
    with moto.mock_aws():
        client = Serialised(boto3.client("dynamodb", region_name="us-east-1"))
        url = table_arn(f"fsm-{uuid.uuid4().hex[:8]}")
        create_tables(url, client=client)
        yield url, client


def _backend(kind: str, request: pytest.FixtureRequest, stack: contextlib.ExitStack,
             tmp_path: Path) -> Callable[[str], Any]:
    """For ``kind``, a function role -> a new handle on this test's own namespace."""
    prefix = f"fsmtest:{uuid.uuid4().hex[:12]}:"
    if kind == "memory":
        from sources.memory import MemoryStore, MemoryTimers
        shared = {"store": MemoryStore(), "timers": MemoryTimers()}
        return lambda role: shared[role]
    if kind == "sqlite":
        from sources.sqlite import SqliteStore
        url = f"sqlite:///{tmp_path / 'fsm.db'}"
        return lambda role: SqliteStore(url)
    if kind == "redis":
        from sources.redis import RedisStore, RedisTimers
        url = request.getfixturevalue("redis_url")
        stack.callback(_drop_redis_keys, url, prefix)
        return lambda role: (RedisStore if role == "store" else RedisTimers)(url, prefix=prefix)
    if kind == "fakeredis":
        fakeredis = pytest.importorskip("fakeredis")
        pytest.importorskip("lupa")     # fakeredis runs Lua scripts only with lupa
        from sources.redis import RedisStore, RedisTimers
        server = fakeredis.FakeServer()
        return lambda role: (RedisStore if role == "store" else RedisTimers)(
            "redis://fakeredis/0", client=fakeredis.FakeRedis(server=server), prefix=prefix)
    if kind == "memcached":
        from sources.memcache import MemcacheStore
        url = request.getfixturevalue("memcached_url")
        return lambda role: MemcacheStore(url, prefix=prefix)
    if kind == "dynamodb":
        from sources.dynamodb import DynamoStore
        from sources.dynamodb_timers import DynamoTimers
        url, client = stack.enter_context(in_process_dynamodb())
        # A small page size, so a long history really is read across pages.
        return lambda role: (DynamoStore(url, client=client, page_size=4) if role == "store"
                             else DynamoTimers(url, client=client, shards=2))
    raise AssertionError(kind)


def _drop_redis_keys(url: str, prefix: str) -> None:
    """Servers given by FSM_TEST_REDIS_URL may be shared: leave nothing behind."""
    import redis
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=STORE_KINDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """A function returning a new handle on this test's own empty store.

    Each call is another client on the same namespace (as another process would be), so
    tests can race several handles; every handle is closed after the test.
    """
    with contextlib.ExitStack() as stack:
        open_handle = _backend(request.param, request, stack, tmp_path)
        handles: list[Any] = []

        def make() -> Any:
            handle = open_handle("store")
            handles.append(handle)
            return handle

        yield make
        for handle in handles:
            handle.close()


@pytest.fixture
def store(store_factory: Callable[[], Any]) -> Any:
    return store_factory()


@pytest.fixture(params=TIMER_KINDS)
def timers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh, empty timer store of each kind."""
    with contextlib.ExitStack() as stack:
        handle = _backend(request.param, request, stack, tmp_path)("timers")
        yield handle
        if hasattr(handle, "close"):
            handle.close()


@pytest.fixture(autouse=True)
def _fsm_logger_propagates() -> Iterator[None]:
    """``fsm.logs.configure`` (run by the CLI and the Lambda handler) gives the ``fsm``
    logger a handler of its own and stops propagation; undo it after each test, so one
    test calling ``main()`` does not hide the logs another reads with ``caplog``."""
    import logging

    logger = logging.getLogger("fsm")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:], logger.propagate = handlers, propagate
    logger.setLevel(level)
