"""``redis://[:password@]HOST:PORT/DB`` and ``rediss://`` (TLS): records, history, timers.

A record is a hash whose values are JSON texts, one per field, plus a marker field so
that an empty record still exists. The Lua script that implements ``swap`` only
compares and copies opaque strings; it never decodes JSON, because Lua's cjson rounds
floats to 14 digits and cannot tell ``{}`` from ``[]``. History is a list next to the
record, appended by the same script, so ``swap`` is one EVALSHA round trip, history and
expiry included.

Keys are ``PREFIX{cid}:r`` and ``PREFIX{cid}:h``: the hash tag keeps both keys of an
instance together. The pending index (records whose ``pending`` is > 0, scored by it) is
one sorted set, ``PREFIX{pending}``, updated by the same script whenever a swap names
``pending``: the index can never disagree with the records, at no extra round trip. A
script then touches keys of two hash slots, so this store needs a single Redis (with
replicas if wanted), not a Redis Cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis
import redis.exceptions as rx

from fsm.errors import BackendError, RecoverableError
from fsm.ports import Record, Scalar, SwapResult

from .base import dumps

MARKER = "@"    # not a JSON-able identifier, so it never collides with a record field
T = TypeVar("T")

# KEYS: record, history, pending index.  ARGV: mode ("new" | "cas"), n_expect, then n_expect triples
# (field, kind "n" numeric | "s" JSON text, value), n_fields, pairs (field, JSON text),
# then the history entries. Returns {1, fields...} on success, {0, fields...} on failure.
SWAP_LUA = """
local exists = redis.call('EXISTS', KEYS[1]) == 1
local function current(flag)
  if not exists then return {flag} end
  local out = redis.call('HGETALL', KEYS[1])
  table.insert(out, 1, flag)
  return out
end
if ARGV[1] == 'new' then
  if exists then return current(0) end
elseif not exists then
  return {0}
end
local n = tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  local stored = redis.call('HGET', KEYS[1], ARGV[i]) or 'null'
  local equal
  if ARGV[i + 1] == 'n' then
    equal = tonumber(stored) ~= nil and tonumber(stored) == tonumber(ARGV[i + 2])
  else
    equal = stored == ARGV[i + 2]
  end
  if not equal then return current(0) end
  i = i + 3
end
local updates = {'@', '1'}
local pending = nil
local nf = tonumber(ARGV[i])
i = i + 1
for _ = 1, nf do
  table.insert(updates, ARGV[i])
  table.insert(updates, ARGV[i + 1])
  if ARGV[i] == 'pending' then pending = ARGV[i + 1] end
  i = i + 2
end
local unpack = table.unpack or unpack
redis.call('HSET', KEYS[1], unpack(updates))
while i <= #ARGV do      -- in chunks: unpack() is limited by Lua's C stack
  local last = math.min(i + 999, #ARGV)
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, last))
  i = last + 1
end
if pending ~= nil then  -- the score is the JSON text itself: Lua would round it to 14 digits
  if (tonumber(pending) or 0) > 0 then
    redis.call('ZADD', KEYS[3], pending, KEYS[1])
  else
    redis.call('ZREM', KEYS[3], KEYS[1])
  end
end
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '0') or 0
for k = 1, 2 do         -- the record's own keys; the index is shared and never expires
  if expires > 0 then redis.call('EXPIREAT', KEYS[k], math.floor(expires)) else redis.call('PERSIST', KEYS[k]) end
end
exists = true
return current(1)
"""

# KEYS: pending index. ARGV: before (exclusive, as "(N"), limit. Returns one HGETALL
# reply per indexed record, oldest first. A member whose record is gone (it expired with
# ``expires_at``) is dropped from the index here, since nothing else would notice it.
PENDING_LUA = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '(0', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, key in ipairs(keys) do
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then redis.call('ZREM', KEYS[1], key) else table.insert(out, flat) end
end
return out
"""

# KEYS: due zset, bodies hash. ARGV: now, limit. Returns {id, body, id, body, ...}.
DUE_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  table.insert(out, id)
  table.insert(out, redis.call('HGET', KEYS[2], id) or '')
end
return out
"""


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def connect(url: str, client: Any, socket_timeout: float, connect_timeout: float, **options: Any) -> Any:
    if client is not None:
        return client
    return redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                socket_connect_timeout=connect_timeout, **options)


def call(where: str, work: Callable[[], T]) -> T:
    """Run ``work``, turning redis-py errors into the framework's two kinds."""
    try:
        return work()
    except (rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError) as exc:
        raise BackendError(f"{where}: {type(exc).__name__}: {exc}") from exc
    except (rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError, rx.ReadOnlyError,
            rx.ClusterDownError, rx.TryAgainError, rx.MasterDownError, OSError) as exc:
        raise RecoverableError(f"{where}: {type(exc).__name__}: {exc}") from exc
    except rx.RedisError as exc:
        raise BackendError(f"{where}: {type(exc).__name__}: {exc}") from exc


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def record_of(flat: Sequence[bytes | str]) -> Record | None:
    """A record from HGETALL's flat [field, value, ...] reply; None when empty."""
    if not flat:
        return None
    pairs = zip(flat[0::2], flat[1::2])
    return {text(name): json.loads(text(value)) for name, value in pairs if text(name) != MARKER}


def expect_args(expect: Mapping[str, Scalar]) -> list[Any]:
    args: list[Any] = [len(expect)]
    for name, value in expect.items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        args += [name, "n" if numeric else "s", repr(value) if numeric else dumps(value)]
    return args


class RedisStore:
    """An :class:`fsm.ports.InstanceStore` on Redis (see the module docstring)."""

    def __init__(self, url: str, *, client: Any = None, prefix: str = "fsm:",
                 socket_timeout: float = 5.0, connect_timeout: float = 2.0,
                 page_size: int = 1000, **options: Any):
        self.url = url
        self.where = redacted(url)
        self.prefix = prefix
        self.page_size = page_size
        self._owns_client = client is None
        self.client = connect(url, client, socket_timeout, connect_timeout, **options)
        self._swap = self.client.register_script(SWAP_LUA)
        self._pending = self.client.register_script(PENDING_LUA)

    def swap(self, cid: str, expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any],
             history: Sequence[Mapping[str, Any]] = ()) -> SwapResult:
        if MARKER in fields:
            raise BackendError(f"{self.where}: record field {MARKER!r} is reserved by the Redis store")
        args: list[Any] = ["new", 0] if expect is None else ["cas", *expect_args(expect)]
        args.append(len(fields))
        for name, value in fields.items():
            args += [name, dumps(value)]
        args += [dumps(entry) for entry in history]
        reply = call(self.where, lambda: self._swap(keys=[*self._keys(cid), self._index], args=args))
        return SwapResult(int(reply[0]) == 1, record_of(reply[1:]))

    def get(self, cid: str) -> Record | None:
        return record_of(self._flat(call(self.where, lambda: self.client.hgetall(self._keys(cid)[0]))))

    def history(self, cid: str) -> list[dict[str, Any]]:
        key, entries, start = self._keys(cid)[1], [], 0
        while True:   # in pages, so a long history is not one huge reply
            page = call(self.where, lambda first=start: self.client.lrange(key, first, first + self.page_size - 1))
            entries += [json.loads(text(raw)) for raw in page]
            if len(page) < self.page_size:
                return entries
            start += self.page_size

    def pending(self, before: float, limit: int = 100) -> list[Record]:
        """Records whose ``0 < pending < before``, oldest first, in one script call.

        The index holds record keys, so the script reads the records without a second
        round trip. A record the index names but that expired is left out (and unindexed).
        """
        if limit <= 0:
            return []
        args = [f"({float(before)!r}", int(limit)]
        replies = call(self.where, lambda: self._pending(keys=[self._index], args=args))
        return [record for flat in replies if (record := record_of(flat)) is not None]

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    @property
    def _index(self) -> str:
        return f"{self.prefix}{{pending}}"

    def _keys(self, cid: str) -> list[str]:
        return [f"{self.prefix}{{{cid}}}:r", f"{self.prefix}{{{cid}}}:h"]

    @staticmethod
    def _flat(mapping: Mapping[Any, Any]) -> list[Any]:
        return [part for pair in mapping.items() for part in pair]


class RedisTimers:
    """An :class:`fsm.ports.TimerStore` on a sorted set (score = due) plus a hash of bodies.

    ``add`` is one MULTI/EXEC (ZADD NX + HSETNX, so it is idempotent), ``due`` one script.
    """

    def __init__(self, url: str, *, client: Any = None, prefix: str = "fsm:",
                 socket_timeout: float = 5.0, connect_timeout: float = 2.0, **options: Any):
        self.url = url
        self.where = redacted(url)
        self._owns_client = client is None
        self.client = connect(url, client, socket_timeout, connect_timeout, **options)
        self._zset, self._bodies = f"{prefix}{{timers}}:due", f"{prefix}{{timers}}:body"
        self._due = self.client.register_script(DUE_LUA)

    def add(self, timer_id: str, due: float, body: str) -> None:
        def work() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.zadd(self._zset, {timer_id: float(due)}, nx=True)
            pipe.hsetnx(self._bodies, timer_id, body)
            pipe.execute()
        call(self.where, work)

    def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        flat = call(self.where, lambda: self._due(keys=[self._zset, self._bodies], args=[repr(float(now)), limit]))
        return [(text(tid), text(body)) for tid, body in zip(flat[0::2], flat[1::2])]

    def remove(self, timer_id: str) -> None:
        def work() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(self._zset, timer_id)
            pipe.hdel(self._bodies, timer_id)
            pipe.execute()
        call(self.where, work)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
