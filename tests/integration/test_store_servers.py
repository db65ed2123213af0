"""Stores against real servers and real faults: closed ports, dead servers, silent peers,
missing tables, passwords and TLS. Failover depends on these faults arriving as
``RecoverableError`` quickly, and on everything else arriving as a plain ``BackendError``.
"""

from __future__ import annotations

import base64
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fsm.errors import BackendError, RecoverableError
from sources.registry import open_adapter

FAST = {"connect_timeout": 0.5, "read_timeout": 1.0, "max_attempts": 1}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def recoverable_within(seconds: float, work: Callable[[], Any], *named: str) -> RecoverableError:
    started = time.monotonic()
    with pytest.raises(RecoverableError) as caught:
        work()
    assert time.monotonic() - started < seconds, f"took {time.monotonic() - started:.1f}s"
    for text in named:
        assert text in str(caught.value)
    return caught.value


def table_url(name: str | None = None) -> str:
    return f"arn:aws:dynamodb:us-east-1:123456789012:table/{name or 'fsm-' + uuid.uuid4().hex[:8]}"


# ---- redis ------------------------------------------------------------------------------


def test_redis_closed_port_is_recoverable_and_fast() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    store = open_adapter("store", url, connect_timeout=0.5)
    recoverable_within(3, lambda: store.swap("a", None, {"step": 0}), url)
    recoverable_within(3, lambda: store.get("a"), url)


def test_redis_silent_server_times_out_recoverably(silent_port: int) -> None:
    from sources.redis import RedisStore
    store = RedisStore(f"redis://127.0.0.1:{silent_port}/0", socket_timeout=0.3, connect_timeout=0.3)
    recoverable_within(5, lambda: store.get("a"), str(silent_port))


def test_redis_server_killed_mid_run(private_redis: Callable[..., Any]) -> None:
    from sources.redis import RedisStore
    url, server = private_redis()
    store = RedisStore(url, connect_timeout=0.5, socket_timeout=1.0)
    assert store.swap("a", None, {"step": 0}, history=[{"n": 1}]).ok
    server.process.kill()
    server.process.wait(5)
    recoverable_within(5, lambda: store.swap("a", {"step": 0}, {"step": 1}), url)
    recoverable_within(5, lambda: store.history("a"), url)


def test_redis_password_url(private_redis: Callable[..., Any]) -> None:
    from sources.redis import RedisStore
    url, _ = private_redis("--requirepass", "s3cret pw")
    port = url.rsplit(":", 1)[1].split("/")[0]
    good = RedisStore(f"redis://:s3cret%20pw@127.0.0.1:{port}/0")
    assert good.swap("a", None, {"step": 0}).ok and good.get("a") == {"step": 0}
    wrong = RedisStore(f"redis://:wrong@127.0.0.1:{port}/0")
    with pytest.raises(BackendError) as caught:
        wrong.get("a")
    assert not isinstance(caught.value, RecoverableError)   # a bad password is not a fault to wait out
    assert "wrong" not in str(caught.value) and ":***@" in str(caught.value)


def test_redis_database_number_is_honoured(redis_url: str) -> None:
    from sources.redis import RedisStore
    base = redis_url.rsplit("/", 1)[0]
    prefix = f"fsmtest:{uuid.uuid4().hex[:8]}:"
    one, two = RedisStore(f"{base}/1", prefix=prefix), RedisStore(f"{base}/2", prefix=prefix)
    try:
        assert one.swap("a", None, {"db": 1}).ok
        assert two.get("a") is None
    finally:
        one.client.delete(*one._keys("a"))


def test_rediss_url_speaks_tls(private_redis: Callable[..., Any]) -> None:
    from sources.redis import RedisStore
    url, _ = private_redis("--requirepass", "pw", tls=True)
    assert url.startswith("rediss://")
    store = open_adapter("store", url.replace("rediss://", "rediss://:pw@") + "?ssl_cert_reqs=none")
    assert isinstance(store, RedisStore)
    assert store.swap("a", None, {"tls": True}, history=[{"n": 1}]).ok
    assert store.get("a") == {"tls": True} and store.history("a") == [{"n": 1}]


def test_redis_record_expires_with_expires_at(redis_url: str) -> None:
    from sources.redis import RedisStore
    store = RedisStore(redis_url, prefix=f"fsmtest:{uuid.uuid4().hex[:8]}:")
    assert store.swap("a", None, {"expires_at": int(time.time()) + 100}, history=[{"n": 1}]).ok
    record_key, history_key = store._keys("a")
    assert 0 < store.client.ttl(record_key) <= 100 and 0 < store.client.ttl(history_key) <= 100
    assert store.swap("a", {}, {"expires_at": 0}).ok
    assert store.client.ttl(record_key) == -1 and store.client.ttl(history_key) == -1
    store.client.delete(record_key, history_key)


# ---- memcached --------------------------------------------------------------------------


def test_memcached_closed_port_is_recoverable_and_fast() -> None:
    url = f"memcached://127.0.0.1:{closed_port()}"
    store = open_adapter("store", url, connect_timeout=0.5, timeout=0.5)
    recoverable_within(3, lambda: store.swap("a", None, {"step": 0}), url)
    recoverable_within(3, lambda: store.swap("a", {"step": 0}, {"step": 1}), url)


def test_memcached_silent_server_times_out_recoverably(silent_port: int) -> None:
    from sources.memcache import MemcacheStore
    store = MemcacheStore(f"memcached://127.0.0.1:{silent_port}", connect_timeout=0.3, timeout=0.3)
    recoverable_within(5, lambda: store.get("a"), str(silent_port))


def test_memcached_odd_ids_get_valid_keys(memcached_url: str) -> None:
    from sources.memcache import MemcacheStore
    store = MemcacheStore(memcached_url, prefix=f"fsmtest:{uuid.uuid4().hex[:8]}:")
    for cid in ("with space", "x" * 300, "ünïcode", "new\nline"):
        assert store.swap(cid, None, {"cid": cid}, history=[{"n": 1}]).ok
        assert store.get(cid) == {"cid": cid} and store.history(cid) == [{"n": 1}]


# ---- DynamoDB through moto_server -------------------------------------------------------


@pytest.fixture
def dynamo(fresh_moto_url: str) -> Iterator[tuple[str, str]]:
    """A table on moto_server, created through the adapter (twice: it must be idempotent)."""
    from sources.dynamodb_tables import create_tables
    url = table_url()
    create_tables(url, endpoint_url=fresh_moto_url)
    create_tables(url, endpoint_url=fresh_moto_url)
    yield url, fresh_moto_url


def test_dynamodb_on_moto_server(dynamo: tuple[str, str]) -> None:
    url, endpoint = dynamo
    store = open_adapter("store", url, endpoint_url=endpoint, aws=FAST)
    assert store.swap("a", None, {"step": 0, "context": {"x": 0.5}}, history=[{"n": 1}]).ok
    assert store.swap("a", {"step": 0}, {"step": 1}, history=[{"n": 2}, {"n": 3}]).ok
    assert not store.swap("a", {"step": 0}, {"step": 9}).ok
    assert store.get("a") == {"step": 1, "context": {"x": 0.5}}
    assert store.history("a") == [{"n": 1}, {"n": 2}, {"n": 3}]
    ttl = store.client.describe_time_to_live(TableName=store.table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == "ttl"


def test_dynamodb_expires_at_sets_the_ttl_attribute(dynamo: tuple[str, str]) -> None:
    from sources.dynamodb import DynamoStore
    url, endpoint = dynamo
    store = DynamoStore(url, endpoint_url=endpoint, aws=FAST)
    key = {"pk": {"S": "a"}, "sk": {"S": "record"}}
    store.swap("a", None, {"expires_at": 1999999999})
    assert store.client.get_item(TableName=store.table, Key=key)["Item"]["ttl"] == {"N": "1999999999"}
    store.swap("a", {}, {"expires_at": 0})
    assert "ttl" not in store.client.get_item(TableName=store.table, Key=key)["Item"]
    assert store.get("a") == {"expires_at": 0}


def test_dynamodb_honours_aws_endpoint_url(dynamo: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, endpoint = dynamo
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    store = open_adapter("store", url, aws=FAST)
    assert store.swap("a", None, {"step": 0}).ok


def test_dynamodb_timers_on_moto_server(dynamo: tuple[str, str]) -> None:
    url, endpoint = dynamo
    timers = open_adapter("timers", url, endpoint_url=endpoint, aws=FAST)
    timers.add("t1", 100.0, "one")
    timers.add("t1", 1.0, "again")
    timers.add("t2", 50.0, "two")
    assert timers.due(1000.0) == [("t2", "two"), ("t1", "one")]
    timers.remove("t2")
    assert timers.due(1000.0) == [("t1", "one")]


def test_dynamodb_missing_table_is_recoverable(fresh_moto_url: str) -> None:
    url = table_url("no-such-table")
    store = open_adapter("store", url, endpoint_url=fresh_moto_url, aws=FAST)
    recoverable_within(10, lambda: store.swap("a", None, {"step": 0}), url, "ResourceNotFound")
    recoverable_within(10, lambda: store.swap("a", None, {"step": 0}, history=[{"n": 1}]), url)
    recoverable_within(10, lambda: store.get("a"), url)
    recoverable_within(10, lambda: store.history("a"), url)
    timers = open_adapter("timers", url, endpoint_url=fresh_moto_url, aws=FAST)
    recoverable_within(10, lambda: timers.due(1.0), url)


def test_dynamodb_closed_endpoint_is_recoverable_and_fast() -> None:
    url = table_url()
    store = open_adapter("store", url, endpoint_url=f"http://127.0.0.1:{closed_port()}", aws=FAST)
    recoverable_within(5, lambda: store.swap("a", None, {"step": 0}), url)
    recoverable_within(5, lambda: store.swap("a", {}, {"step": 0}, history=[{"n": 1}]), url)


def test_dynamodb_silent_endpoint_times_out_recoverably(silent_port: int) -> None:
    url = table_url()
    store = open_adapter("store", url, endpoint_url=f"http://127.0.0.1:{silent_port}", aws=FAST)
    recoverable_within(5, lambda: store.get("a"), url)


def test_dynamodb_invalid_request_is_not_recoverable(dynamo: tuple[str, str]) -> None:
    url, endpoint = dynamo
    store = open_adapter("store", url, endpoint_url=endpoint, aws=FAST)
    with pytest.raises(BackendError) as caught:
        # over 400 KB, packed or not: ValidationException
        store.swap("a", None, {"context": base64.b64encode(os.urandom(450_000)).decode()})
    assert not isinstance(caught.value, RecoverableError) and url in str(caught.value)
