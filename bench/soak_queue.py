"""An SQS-shaped queue kept in redis, for soaking a redis store without moto.

``redisq://HOST:PORT/DB/NAME``: what the soak needs of SQS standard queues, and no more.

- ``send`` holds a message for its delay (up to 15 minutes, ``DelaySeconds``);
- ``receive`` hands out up to ten visible messages and hides each for the visibility
  timeout (30 s, SQS's default): a worker killed with messages in hand does not lose
  them, they come back when the timeout runs out;
- a message is gone only once deleted (``done``); a failed one comes back after a
  short backoff (``retry_later``, as the SQS reader does with ChangeMessageVisibility);
- ``delete_queue`` removes the queue with the messages in it: sends and receives then
  fail as on a deleted SQS queue (a recoverable error, so the failover bus moves on).

Every operation is one Lua script, so any number of worker processes share a queue.
:func:`register` adds the scheme to the registry of this process (bus, poller and
record reader) so settings name it like any stream: ``stream: [redisq://..., ...]``.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.exceptions as rx

from fsm.errors import BackendError, RecoverableError
from fsm.ports import Delivery, Envelope

SCHEME = "redisq"
EVENT_SOURCE = "soak:redisq"
VISIBILITY = 30.0       # seconds a received message stays hidden (SQS's default)
MAX_DELAY = 900.0       # 15 minutes, as SQS
GONE = "NOQUEUE"
RETRY_BASE, RETRY_CAP = 0.5, 5.0   # a failed record's backoff: uniform(0, min(cap, base * 2**receives))

# KEYS: ready (zset id -> visible at, ms), bodies (hash), receives (hash), exists
_SEND = """
if redis.call('EXISTS', KEYS[4]) == 0 then return redis.error_reply('NOQUEUE') end
for i = 1, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], ARGV[i + 2], ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return #ARGV / 3
"""
# ARGV: now (ms), visibility (ms), limit
_RECEIVE = """
if redis.call('EXISTS', KEYS[4]) == 0 then return redis.error_reply('NOQUEUE') end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
  local n = redis.call('HINCRBY', KEYS[3], id, 1)
  local body = redis.call('HGET', KEYS[2], id)
  if body then
    table.insert(out, id); table.insert(out, body); table.insert(out, n)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""
_DELETE = """
if redis.call('EXISTS', KEYS[4]) == 0 then return redis.error_reply('NOQUEUE') end
for _, id in ipairs(ARGV) do
  redis.call('ZREM', KEYS[1], id); redis.call('HDEL', KEYS[2], id); redis.call('HDEL', KEYS[3], id)
end
return #ARGV
"""
# ARGV: pairs of id, visible at (ms); only messages still on the queue
_VISIBILITY = """
if redis.call('EXISTS', KEYS[4]) == 0 then return redis.error_reply('NOQUEUE') end
for i = 1, #ARGV, 2 do redis.call('ZADD', KEYS[1], 'XX', ARGV[i + 1], ARGV[i]) end
return 1
"""


def parse(url: str) -> tuple[str, str]:
    """``redisq://HOST:PORT/DB/NAME`` -> (the redis URL, the queue name)."""
    parts = urlsplit(url)
    path = parts.path.strip("/").split("/")
    if parts.scheme != SCHEME or len(path) != 2 or not path[0].isdigit() or not path[1]:
        raise BackendError(f"{url!r}: a redis queue is {SCHEME}://HOST:PORT/DB/NAME")
    return f"redis://{parts.netloc}/{path[0]}", path[1]


class Queue:
    """The queue's scripts over one redis connection pool."""

    def __init__(self, url: str, client: Any = None, socket_timeout: float = 2.0):
        self.url = url
        server, self.name = parse(url)
        self.client = client or redis.Redis.from_url(server, socket_timeout=socket_timeout,
                                                     socket_connect_timeout=socket_timeout)
        base = f"soakq:{{{self.name}}}"
        self.keys = [f"{base}:ready", f"{base}:body", f"{base}:receives", f"{base}:exists"]
        self._send = self.client.register_script(_SEND)
        self._receive = self.client.register_script(_RECEIVE)
        self._delete = self.client.register_script(_DELETE)
        self._visibility = self.client.register_script(_VISIBILITY)

    def call(self, work: Any) -> Any:
        try:
            return work()
        except rx.ResponseError as exc:
            if GONE in str(exc):
                raise RecoverableError(f"{self.url}: the queue does not exist (deleted)") from exc
            raise BackendError(f"{self.url}: {exc}") from exc
        except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
            raise RecoverableError(f"{self.url}: {type(exc).__name__}: {exc}") from exc

    def create(self) -> None:
        self.call(lambda: self.client.set(self.keys[3], "1"))

    def delete_queue(self) -> int:
        """Delete the queue and every message in it; returns how many were lost."""
        def work() -> int:
            pipe = self.client.pipeline(transaction=True)
            pipe.zcard(self.keys[0])
            pipe.delete(*self.keys)
            return int(pipe.execute()[0])
        return int(self.call(work))

    def depth(self) -> int:
        return int(self.call(lambda: self.client.zcard(self.keys[0])))

    def put(self, envelopes: Sequence[Envelope]) -> None:
        now = time.time() * 1000
        args: list[Any] = []
        for envelope in envelopes:
            if envelope.delay > MAX_DELAY:
                raise BackendError(f"{self.url} holds a delay of at most {MAX_DELAY:.0f} s, "
                                   f"not {envelope.delay:.0f} s")
            args += [uuid.uuid4().hex, envelope.body, int(now + max(0.0, envelope.delay) * 1000)]
        if args:
            self.call(lambda: self._send(keys=self.keys, args=args))

    def receive(self, limit: int = 10, visibility: float = VISIBILITY) -> list[tuple[str, str, int]]:
        now = int(time.time() * 1000)
        flat = self.call(lambda: self._receive(keys=self.keys, args=[now, int(visibility * 1000), limit]))
        return [(_text(flat[i]), _text(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self.call(lambda: self._delete(keys=self.keys, args=list(ids)))

    def show_after(self, pairs: Sequence[tuple[str, float]]) -> None:
        """Make each message visible again ``seconds`` from now."""
        now = time.time() * 1000
        args: list[Any] = []
        for message_id, seconds in pairs:
            args += [message_id, int(now + seconds * 1000)]
        if args:
            self.call(lambda: self._visibility(keys=self.keys, args=args))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_queues: dict[str, Queue] = {}


def queue(url: str) -> Queue:
    """One ``Queue`` (and connection pool) per URL in this process."""
    if url not in _queues:
        _queues[url] = Queue(url)
    return _queues[url]


class RedisQueueBus:
    """The bus port over a :class:`Queue`."""

    max_delay = MAX_DELAY

    def __init__(self, url: str, **_options: Any):
        self.url = url
        self.queue = queue(url)

    def send(self, envelope: Envelope) -> None:
        self.queue.put([envelope])

    def send_batch(self, envelopes: Sequence[Envelope]) -> None:
        for start in range(0, len(envelopes), 10):   # as SendMessageBatch: ten at a time
            self.queue.put(envelopes[start:start + 10])

    def create(self) -> str:
        self.queue.create()
        return self.url

    def close(self) -> None:
        pass


class RedisQueuePoller:
    """Reads the queue as the SQS poller does, records in the shape of Lambda's SQS records."""

    long_polls = True
    ordered = False

    def __init__(self, url: str, *, batch: int = 10, **_options: Any):
        self.url, self.batch = url, batch
        self.queue = queue(url)
        self.queue.depth()          # a queue that is gone fails here, as get_queue_url does

    def poll(self, wait: bool = True) -> list[dict[str, Any]]:
        deadline = time.monotonic() + (1.0 if wait else 0.0)
        while True:
            got = self.queue.receive(self.batch)
            if got or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return [{"messageId": message_id, "receiptHandle": message_id, "body": body,
                 "attributes": {"ApproximateReceiveCount": str(receives)}, "eventSource": EVENT_SOURCE,
                 "eventSourceARN": self.url} for message_id, body, receives in got]

    def done(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        self.queue.delete([r["messageId"] for r in records if r["messageId"] not in failed])


# -- the record reader (``sources.registry.RECORD_SOURCES``) -----------------------------


def item_id(record: Mapping[str, Any]) -> str:
    return str(record.get("messageId", ""))


def ordered(record: Mapping[str, Any]) -> bool:
    return False


def read_record(record: Mapping[str, Any]) -> Delivery:
    return Delivery(record.get("body", ""), {"arn": record.get("eventSourceARN", ""), "id": record.get("messageId")})


def retry_later(records: Sequence[Mapping[str, Any]], *, rng: random.Random | None = None,
                **_options: Any) -> None:
    """A failed record comes back after a short jittered backoff, as the SQS reader makes
    it with ChangeMessageVisibility (here in fractions of a second, up to ``RETRY_CAP``)."""
    from fsm.backoff import full_jitter

    by_queue: dict[str, list[tuple[str, float]]] = {}
    for record in records:
        receives = int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1)
        delay = max(0.1, full_jitter(receives, RETRY_BASE, RETRY_CAP, rng))
        by_queue.setdefault(str(record["eventSourceARN"]), []).append((str(record["messageId"]), delay))
    for url, pairs in by_queue.items():
        queue(url).show_after(pairs)


def register() -> None:
    """Make ``redisq://`` a stream this process's settings can name (bus, poller, reader)."""
    from sources import registry

    registry.ADAPTERS["bus"][SCHEME] = f"{__name__}:RedisQueueBus"
    registry.ADAPTERS["poller"][SCHEME] = f"{__name__}:RedisQueuePoller"
    registry.RECORD_SOURCES[EVENT_SOURCE] = __name__
