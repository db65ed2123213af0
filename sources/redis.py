"""``redis://[:password@]HOST:PORT/DB`` and ``rediss://`` (TLS): records, history, timers.

A record is a hash whose values are JSON texts, one per field, plus a marker field so
that an empty record still exists. The Lua script that implements ``swap`` only
compares and copies opaque strings; it never decodes JSON, because Lua's cjson rounds
floats to 14 digits and cannot tell ``{}`` from ``[]``. History is a list next to the
record, appended by the same script, so ``swap`` is one EVALSHA round trip, history and
expiry included. ``append`` (the inbox) is one EVALSHA of a script of its own. In a batch
handled by several threads (:mod:`fsm.gather`), the swaps and appends the threads make
at the same moment go as one pipeline of EVALSHAs: one round trip for all of them.

Keys are ``PREFIX{cid}:r`` and ``PREFIX{cid}:h``: the hash tag keeps both keys of an
instance together. The pending index (records whose ``pending`` is > 0, scored by it) is
one sorted set, ``PREFIX{pending}``, updated by the same script whenever a swap names
``pending`` (and by the append script when an append sets it): the index can never
disagree with the records, at no extra round trip. A
script then touches keys of two hash slots, so this store needs a single Redis (with
replicas if wanted), not a Redis Cluster.

Listing (``list_instances``) reads ``PREFIX{list}``, a sorted set whose scores are all 0,
so that it is ordered by member text and ``ZREVRANGEBYLEX`` reads ranges of it. Each
instance has three members, one per filter shape, each ending in its ``updated_at`` as
:func:`~sources.memory.time_key` and its id::

    s|STATUS|TIME|ID              no filter (one range per status), or a status
    m|MACHINE|STATUS|TIME|ID      a machine, with or without a status
    x|MACHINE|STATE|STATUS|TIME|ID   a machine and a state, with or without a status

(MACHINE, STATE and STATUS are the JSON texts the hash holds, which no other value's
text can start with, so a prefix selects exactly one filter's members.) The swap script
replaces them whenever a swap names ``machine``, ``status``, ``state``, ``updated_at`` or
``expires_at``: a commit pays for six sorted-set updates inside the script it already
runs, and taking a lease, which names none of them, pays nothing. A page is one script
call: one range per status read ``limit + 1`` deep, merged, and the page's records read.

Records that expire (``expires_at``) take their hash keys with them but not their
members: the script also keeps ``PREFIX{list}:expiring``, the same instances scored by
``expires_at`` (member: the values the three members are made of), and each swap that
re-indexes a record with an expiry removes the members of up to two instances whose time
has passed (without a retention, swaps pay nothing for it). A member whose record is
gone, or no longer has the values the member was made of, is never listed, and a listing
that meets one removes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis
import redis.exceptions as rx

from fsm import codec, gather
from fsm.errors import BackendError, RecoverableError
from fsm.ports import Record, Scalar, SwapResult

from .base import checked_entry, dumps
from .listing import ListQuery, encode_cursor, list_query

MARKER = "@"    # not a JSON-able identifier, so it never collides with a record field
T = TypeVar("T")

# What the listing index is made of (the swap and list scripts share it). An entry is
# {machine, status, state, updated_at, id}: hash values as the JSON texts they are.
LIST_LUA_COMMON = """
local unpack = table.unpack or unpack
local function stamp(text)  -- sources.memory.time_key: fixed width, so text order is time order
  local t = tonumber(text or '') or 0
  if t < 0 or t ~= t then t = 0 end
  return string.format('%020.6f', t)
end
local function members(e)
  local tail = '|' .. stamp(e[4]) .. '|' .. e[5]
  return {'s|' .. e[2] .. tail, 'm|' .. e[1] .. '|' .. e[2] .. tail,
          'x|' .. e[1] .. '|' .. e[3] .. '|' .. e[2] .. tail}
end
local function entry_of(v, id)
  return {v.machine or 'null', v.status or 'null', v.state or 'null', v.updated_at or '0', id}
end
local function listed_values(key)
  local v = redis.call('HMGET', key, 'machine', 'status', 'state', 'updated_at', 'expires_at')
  return {machine = v[1], status = v[2], state = v[3], updated_at = v[4], expires_at = v[5]}
end
"""

# KEYS: record, history, pending index, listing index, listing expiry.  ARGV: mode ("new" |
# "cas"), id, n_expect, then n_expect triples (field, kind "n" numeric | "s" JSON text, value),
# n_fields, pairs (field, JSON text), then the history entries. Returns {1, fields...} on
# success, {0, fields...} on failure.
SWAP_LUA = LIST_LUA_COMMON + """
local LISTED = {machine = true, status = true, state = true, updated_at = true, expires_at = true}
local function reindex(before, after)   -- listed values (nil before: a new record)
  local new = entry_of(after, ARGV[2])
  local m = members(new)
  local expiring = {before and tonumber(before.expires_at or '0') or 0, tonumber(after.expires_at or '0') or 0}
  if before then
    local old = entry_of(before, ARGV[2])
    redis.call('ZREM', KEYS[4], unpack(members(old)))
    if expiring[1] > 0 then redis.call('ZREM', KEYS[5], cjson.encode(old)) end
  end
  redis.call('ZADD', KEYS[4], 0, m[1], 0, m[2], 0, m[3])
  if expiring[2] > 0 then redis.call('ZADD', KEYS[5], expiring[2], cjson.encode(new)) end
  if expiring[1] + expiring[2] == 0 then return end
  -- with expiry: forget at most two instances whose time has passed (each expires once, after a swap)
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', redis.call('TIME')[1], 'LIMIT', 0, 2)) do
    redis.call('ZREM', KEYS[4], unpack(members(cjson.decode(gone))))
    redis.call('ZREM', KEYS[5], gone)
  end
end
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
local ABSENT = {inbox_end = '0'}   -- numeric fields a condition reads as this value when missing
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  local stored = redis.call('HGET', KEYS[1], ARGV[i])
  if not stored then stored = ARGV[i + 1] == 'n' and ABSENT[ARGV[i]] or 'null' end
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
local wrote_context = false   -- the caller has the context it wrote: the reply leaves it out
local listed = nil      -- the listed values this swap sets, if any (all of them for a new record)
if not exists then listed = {} end
local nf = tonumber(ARGV[i])
i = i + 1
for _ = 1, nf do
  table.insert(updates, ARGV[i])
  table.insert(updates, ARGV[i + 1])
  if ARGV[i] == 'pending' then pending = ARGV[i + 1] end
  if ARGV[i] == 'context' then wrote_context = true end
  if LISTED[ARGV[i]] then
    listed = listed or {}
    listed[ARGV[i]] = ARGV[i + 1]
  end
  i = i + 2
end
if listed then
  local before = exists and listed_values(KEYS[1]) or nil
  local after = {}
  for name in pairs(LISTED) do after[name] = listed[name] or (before and before[name]) end
  reindex(before, after)
end
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
if not wrote_context then return current(1) end
local out, all = {1}, redis.call('HGETALL', KEYS[1])
for k = 1, #all, 2 do
  if all[k] ~= 'context' then table.insert(out, all[k]); table.insert(out, all[k + 1]) end
end
return out
"""

# KEYS: record, pending index. ARGV: event id, the entry as JSON text without "pos", its "at"
# as JSON text. Returns like SWAP_LUA: {1, fields...} appended, {0, fields...} a duplicate,
# {0} no record. Like swap it decodes no value it writes: the entry's text gets its position
# spliced in before its closing brace and the inbox's text the entry before its closing
# bracket. Finding the id decodes (never re-encodes) ``event_ids`` and ``inbox``, and only
# when the id's quoted text occurs in them at all.
APPEND_LUA = """
local unpack = table.unpack or unpack
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local function current(flag)
  local out = redis.call('HGETALL', KEYS[1])
  table.insert(out, 1, flag)
  return out
end
local id = ARGV[1]
local function holds(field, key)  -- the JSON list in hash field ``field`` has id (as item[key])
  local text = redis.call('HGET', KEYS[1], field)
  if not text or not string.find(text, '"' .. id .. '"', 1, true) then return false end
  local list = cjson.decode(text)
  if type(list) ~= 'table' then return false end
  for _, item in ipairs(list) do
    if key then item = type(item) == 'table' and item[key] or nil end
    if item == id then return true end
  end
  return false
end
if holds('event_ids', nil) or holds('inbox', 'id') then return current(0) end
local pos = string.format('%d', (tonumber(redis.call('HGET', KEYS[1], 'inbox_end') or '0') or 0) + 1)
local entry = string.sub(ARGV[2], 1, -2) .. ',"pos":' .. pos .. '}'
local inbox = redis.call('HGET', KEYS[1], 'inbox')
if not inbox or inbox == 'null' or inbox == '[]' then
  inbox = '[' .. entry .. ']'
elseif string.sub(inbox, 1, 1) == '[' and string.sub(inbox, -1) == ']' then
  inbox = string.sub(inbox, 1, -2) .. ',' .. entry .. ']'
else
  return redis.error_reply('the inbox of ' .. KEYS[1] .. ' is not a JSON list')
end
local updates = {'inbox', inbox, 'inbox_end', pos}
local pending = redis.call('HGET', KEYS[1], 'pending')
if not pending or pending == 'null' or tonumber(pending) == 0 then   -- nothing owed yet: as swap sets it
  table.insert(updates, 'pending')
  table.insert(updates, ARGV[3])
  if (tonumber(ARGV[3]) or 0) > 0 then
    redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
  else
    redis.call('ZREM', KEYS[2], KEYS[1])
  end
end
redis.call('HSET', KEYS[1], unpack(updates))
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

# KEYS: listing index. ARGV: record key prefix, limit, then per range (one per status): the
# length of its members' prefix, max and min (ZREVRANGEBYLEX bounds). Returns {cursor,
# record, record...}: the page's records, newest first, each one JSON object put together
# from the JSON texts its hash holds (so a page is a hundred texts to parse, not thousands,
# and Lua decodes nothing), and the "TIME|ID" key of its last member when more follow ('').
LIST_LUA = LIST_LUA_COMMON + """
local limit = tonumber(ARGV[2])
local found = {}
for r = 3, #ARGV, 3 do
  local skip = tonumber(ARGV[r])
  for _, member in ipairs(redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[r + 1], ARGV[r + 2], 'LIMIT', 0, limit + 1)) do
    table.insert(found, {member:sub(skip + 1), member})
  end
end
table.sort(found, function(a, b) return a[1] > b[1] end)
local out = {''}
for k = 1, math.min(limit, #found) do
  local key, member = found[k][1], found[k][2]
  local id = key:sub(22)
  local record = ARGV[1] .. '{' .. id .. '}:r'
  local live = false
  for _, m in ipairs(members(entry_of(listed_values(record), id))) do live = live or m == member end
  if live then
    local flat, fields = redis.call('HGETALL', record), {}
    for j = 1, #flat, 2 do
      if flat[j] ~= '@' then table.insert(fields, cjson.encode(flat[j]) .. ':' .. flat[j + 1]) end
    end
    table.insert(out, '{' .. table.concat(fields, ',') .. '}')
  else
    redis.call('ZREM', KEYS[1], member)
  end
  if k == limit and #found > limit then out[1] = key end
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


def _raise(exc: Exception) -> Any:
    raise exc


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def record_of(flat: Sequence[bytes | str]) -> Record | None:
    """A record from HGETALL's flat [field, value, ...] reply; None when empty."""
    if not flat:
        return None
    pairs = zip(flat[0::2], flat[1::2])
    return {text(name): codec.loads_exact(value) for name, value in pairs if text(name) != MARKER}


def expect_args(expect: Mapping[str, Scalar]) -> list[Any]:
    args: list[Any] = [len(expect)]
    for name, value in expect.items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        args += [name, "n" if numeric else "s", repr(value) if numeric else dumps(value)]
    return args


class RedisStore:
    """An :class:`fsm.ports.InstanceStore` on Redis (see the module docstring)."""

    gathers = True      # the swaps and appends of a batch's threads go as one pipeline

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
        self._append = self.client.register_script(APPEND_LUA)
        self._pending = self.client.register_script(PENDING_LUA)
        self._list = self.client.register_script(LIST_LUA)

    def swap(self, cid: str, expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any],
             history: Sequence[Mapping[str, Any]] = ()) -> SwapResult:
        if MARKER in fields:
            raise BackendError(f"{self.where}: record field {MARKER!r} is reserved by the Redis store")
        args: list[Any] = ["new", cid, 0] if expect is None else ["cas", cid, *expect_args(expect)]
        args.append(len(fields))
        for name, value in fields.items():
            args += [name, dumps(value)]
        args += [dumps(entry) for entry in history]
        keys = [*self._keys(cid), self._index, *self._listing]
        reply = self._run(self._swap, keys, args)
        record = record_of(reply[1:])
        if int(reply[0]) == 1 and record is not None and "context" in fields:
            # A large context is not sent back to the writer, which has it.
            record["context"] = fields["context"]
        return SwapResult(int(reply[0]) == 1, record)

    def append(self, cid: str, entry: Mapping[str, Any]) -> SwapResult:
        """See :meth:`fsm.ports.InstanceStore.append`: one EVALSHA of ``APPEND_LUA``,
        which also puts the record in the pending index when it sets ``pending``."""
        entry = checked_entry(entry)
        text = dumps({name: value for name, value in entry.items() if name != "pos"})
        args = [entry["id"], text, dumps(entry["at"])]
        reply = self._run(self._append, [self._keys(cid)[0], self._index], args)
        return SwapResult(int(reply[0]) == 1, record_of(reply[1:]))

    def _run(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        """One script call: sent at once, or with the batch's other calls (see the module
        docstring)."""
        together = gather.current()
        if together is None:
            return call(self.where, lambda: script(keys=keys, args=args))
        return together.call(self._pipelined, (script, keys, args))

    def _pipelined(self, calls: Sequence[tuple[Any, list[Any], list[Any]]]) -> list[Any]:
        """Script calls as one pipeline of EVALSHAs; each answer, or the error its call
        raised. A script the server does not have yet (NOSCRIPT) is sent again alone,
        which loads it."""
        def send() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return pipe.execute(raise_on_error=False)

        def alone(n: int) -> Any:
            script, keys, args = calls[n]
            return script(keys=keys, args=args)

        answers: list[Any] = call(self.where, send)
        for n, answer in enumerate(answers):
            if isinstance(answer, Exception):
                try:    # NOSCRIPT: sent alone, which loads it; another error: named as call() names it
                    answers[n] = call(self.where, lambda n=n, answer=answer: alone(n)
                                      if isinstance(answer, rx.NoScriptError) else _raise(answer))
                except BackendError as exc:
                    answers[n] = exc
        return answers

    def get(self, cid: str) -> Record | None:
        return record_of(self._flat(call(self.where, lambda: self.client.hgetall(self._keys(cid)[0]))))

    def history(self, cid: str, start: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries ``start`` to ``start + limit`` (0-based; ``limit`` None: to the end):
        ``LRANGE`` of just those, at most ``page_size`` a call, so a long history is not
        one huge reply."""
        key, entries, first = self._keys(cid)[1], [], max(0, start)
        end = None if limit is None else first + max(0, limit)     # exclusive
        while end is None or first < end:
            last = first + self.page_size - 1 if end is None else min(first + self.page_size, end) - 1
            page = call(self.where, lambda first=first, last=last: self.client.lrange(key, first, last))
            entries += [json.loads(text(raw)) for raw in page]
            if len(page) < last - first + 1:
                break
            first = last + 1
        return entries

    def history_len(self, cid: str) -> int:
        return int(call(self.where, lambda: self.client.llen(self._keys(cid)[1])))

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

    def list_instances(self, *, machine: str | None = None, status: str | None = None,
                       state: str | None = None, since: float | None = None, limit: int = 50,
                       cursor: str | None = None) -> tuple[list[Record], str | None]:
        """One page, most recently updated first, in one script call: a range of the
        listing index per status, read ``limit + 1`` deep (see the module docstring)."""
        query = list_query(machine=machine, status=status, state=state, since=since, limit=limit, cursor=cursor)
        args: list[Any] = [self.prefix, query.limit]
        for each in query.statuses:
            args += self._range(query, each)
        reply = call(self.where, lambda: self._list(keys=[self._listing[0]], args=args))
        records = [codec.loads(text) for text in reply[1:]]
        after = text(reply[0])
        return records, encode_cursor(after[:20], after[21:]) if after else None

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    @staticmethod
    def _range(query: ListQuery, status: str) -> list[Any]:
        """The member prefix's length and the ZREVRANGEBYLEX bounds of one status."""
        if query.state is not None:
            shape, values = "x", [query.machine, query.state, status]
        elif query.machine is not None:
            shape, values = "m", [query.machine, status]
        else:
            shape, values = "s", [status]
        prefix = "|".join([shape, *map(dumps, values)]) + "|"
        high = f"({prefix}{query.after[0]}|{query.after[1]}" if query.after else f"({prefix}~"
        low = f"[{prefix}{query.since_key or ''}"
        return [len(prefix.encode()), high, low]

    @property
    def _index(self) -> str:
        return f"{self.prefix}{{pending}}"

    @property
    def _listing(self) -> list[str]:
        """The listing index and its expiry schedule."""
        return [f"{self.prefix}{{list}}", f"{self.prefix}{{list}}:expiring"]

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
