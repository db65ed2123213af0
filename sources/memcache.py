"""``memcached://HOST:PORT``: instance records on memcached's CAS tokens.

memcached has no server-side conditions, so ``swap`` checks ``expect`` in Python against
a record it knows together with the record's CAS token, and writes only if the token is
still the item's: the write is the condition. It knows the record in one of two ways:

- it read it with ``gets`` (one round trip), or
- it wrote it itself. memcached 1.6's meta ``ms`` command answers a successful write
  with the item's new token (``HD c<token>``), which the classic ``cas`` does not; the
  store remembers, per record, the value and token of its own last write. A swap whose
  ``expect`` holds on that remembered record writes directly with the remembered token,
  no read. If anyone wrote since, the token has moved on, the write is refused (``EX``,
  or ``NF`` once the item is gone) and the swap falls back to ``gets`` + write: a stale
  memory costs one round trip, never a wrong write.

So the dispatcher's acquire costs ``gets`` + ``ms`` (or just ``ms`` when this store wrote
the previous commit) and its commit one ``ms``, history included (below). A create is
``ms ... ME`` (add). When the write loses a race the record is read again and the
condition re-checked, so a swap only fails when its condition is false on the record it
would have replaced.

Tokens count up from 1 again when memcached restarts, so after a restart a remembered
token could equal a new item's token by chance. A remembered token is therefore only used
on a pooled connection that was already open when the token was issued (or the one it
was issued on): a connection that still answers proves the server has not restarted since.
Behind a proxy that keeps client connections open across server restarts (mcrouter,
twemproxy), that proof does not hold: pass ``remember_writes=False`` there.

A server without meta commands (before 1.6) is detected on the first write, after which
the store uses ``gets`` + ``cas``, and ``add`` to create.

History is carried in the stored value and paged out. Next to the record the value holds
``history_len`` (entries ever written) and ``history_tail``, the latest entries, numbered
``history_len - len + 1`` to ``history_len``: a swap's entries go into the same write as
the record, atomically, with no round trip of their own. Older entries are under their
own keys ``h<n>``, one per entry, which is also where every entry went before the value
carried any (such values, without ``history_tail``, read as having paged out all).
When a swap's value would carry more than ``PAGE_ENTRIES`` (32) entries or
``PAGE_BYTES`` (4 KB) of them, it first writes the carried entries under their keys with
one ``set_many`` and then writes the value carrying its own entries alone: one more
round trip every 32 commits with the dispatcher's ~120-byte entries (each write sends the
whole value, so the bound keeps what the carried entries add to every acquire and commit
to a few KB, far below memcached's default 1 MB value limit; one swap's own entries are
always carried in full, so they must fit in a value).
``history`` reads the value, then ``h1`` .. ``h<history_len - len(history_tail)>`` with
``get_many``, then the carried entries: each number once, so a crash between the
``set_many`` and the write (entries both under their keys and still carried) duplicates
nothing, and a key written again holds the same entry. memcached being a cache, eviction
may lose any key (``history`` skips missing numbers): use it where that is acceptable.

``append`` (the inbox) is ``gets`` + a write with its token, read again when another
writer won: appends to one instance come from many senders, so a remembered write would
rarely be the latest.

memcached cannot list keys, so there is no pending index: ``pending()`` raises
``BackendError``. Instances whose message vanished after their commit are healed only by
the redelivery of the message they consumed.

Every write waits for its answer: ``noreply=False`` on the classic commands (with
pymemcache's default a failed ``add``/``cas`` would report success), and ``ms`` is sent
without the quiet flag.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from pymemcache.client.base import PooledClient
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownCommandError,
    MemcacheUnknownError,
)

from fsm.errors import BackendError, RecoverableError
from fsm.ports import Record, Scalar, SwapResult

from .base import appended, checked_entry, dumps, expect_holds, merged

CAS_ATTEMPTS = 16
PAGE_ENTRIES = 32      # the most history entries a value carries before they are paged out ...
PAGE_BYTES = 4096      # ... or the most bytes of them (see the module docstring)
APPEND_ATTEMPTS = 64   # appends to one instance race each other (a burst of events), swaps rarely
REMEMBERED = 1024   # records whose last write a store remembers: each holds a whole value
RECOVERABLE = (OSError, MemcacheUnexpectedCloseError, MemcacheServerError, MemcacheUnknownError)


def address_of(url: str) -> tuple[str, int]:
    parts = urlparse(url)
    if parts.scheme != "memcached" or not parts.hostname:
        raise BackendError(f"{url!r}: expected memcached://HOST:PORT")
    return parts.hostname, parts.port or 11211


@dataclass(frozen=True)
class MetaReply:
    """The answer to ``ms``: ``status`` is ``HD`` (stored), ``NS`` (not stored: an add
    found the key), ``EX`` (the token has moved on), ``NF`` (no such item) or ``moved``
    (nothing sent: no connection the ``valid`` token may be used on was free).
    ``origin`` is what :meth:`MetaClient.meta_set` needs to use ``token`` again."""

    status: str
    token: int = 0
    origin: tuple[int, int] = (0, 0)


class MetaClient(PooledClient):
    """A pymemcache ``PooledClient`` plus ``meta_set``: memcached's ``ms``, which answers
    a successful write with the item's new CAS token.

    It numbers the pooled connections in the order it first sees them, so that a token
    can be tied to the connections that were open when it was issued (see the module
    docstring on restarts). The numbering lives here because only the code holding a
    pooled connection can check it before sending on it.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._serials: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._latest = 0
        self._serial_lock = threading.Lock()

    def meta_set(self, key: str, value: bytes, *, expire: int = 0, cas: int | None = None,
                 add: bool = False, valid: tuple[int, int] | None = None) -> MetaReply:
        """Store ``value`` (``add``: only if absent; ``cas``: only if the item's token is
        still ``cas``) and return the new token. ``valid`` is the ``origin`` of the reply
        that gave ``cas``: the token is only sent on a connection it may be used on."""
        with self.client_pool.get_and_release(destroy_on_fail=True) as client:
            if valid is not None and not self._may_use(client.sock, valid):
                return MetaReply("moved")
            with self._serial_lock:
                before = self._latest       # every connection numbered so far is older than the token
            flags = [f"ms {self.check_key(key).decode()} {len(value)}", "c"]
            if cas is not None:
                flags.append(f"C{cas}")
            if add:
                flags.append("ME")
            if expire:
                flags.append(f"T{expire}")
            line = client.raw_command(" ".join(flags).encode() + b"\r\n" + value)
            parts = line.split()
            if not parts or parts[0] not in (b"HD", b"NS", b"EX", b"NF"):
                client.close()              # an answer we cannot place: never reuse the stream
                raise MemcacheUnknownError(f"unexpected answer to ms: {line[:80]!r}")
            token = next((int(p[1:]) for p in parts[1:] if p.startswith(b"c") and p[1:].isdigit()), 0)
            return MetaReply(parts[0].decode(), token, (self._serial(client.sock), before))

    def _serial(self, sock: Any) -> int:
        with self._serial_lock:
            serial = self._serials.get(sock)
            if serial is None:
                self._latest += 1
                serial = self._serials[sock] = self._latest
            return serial

    def _may_use(self, sock: Any, valid: tuple[int, int]) -> bool:
        """The connection carried the token, or was open (numbered) before it was issued."""
        if sock is None:
            return False            # it would connect now: perhaps to a restarted server
        with self._serial_lock:
            serial = self._serials.get(sock)
        own, before = valid
        return serial is not None and (serial == own or serial <= before)


@dataclass(frozen=True)
class _Written:
    """The store's own last write of a record: the exact stored text and its token."""

    text: bytes
    token: int
    origin: tuple[int, int]


class _Writes:
    """memcached key -> our last write of it, the least recently written dropped first.

    Bounded because each entry holds a whole record (a Lambda container may see many
    instances); a dropped entry only costs a ``gets``. Locked: several threads may share
    the store.
    """

    def __init__(self, size: int = REMEMBERED):
        self.size = size
        self._entries: dict[str, _Written] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> _Written | None:
        return self._entries.get(key)

    def put(self, key: str, written: _Written) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = written
            if len(self._entries) > self.size:
                del self._entries[next(iter(self._entries))]

    def forget(self, key: str | None = None) -> None:
        with self._lock:
            if key is None:
                self._entries.clear()
            else:
                self._entries.pop(key, None)


class MemcacheStore:
    """An :class:`fsm.ports.InstanceStore` on memcached (see the module docstring).

    A stored value is ``{"record": {...}, "history_len": n, "history_tail": [...]}`` as JSON
    text.
    """

    def __init__(self, url: str, *, client: Any = None, prefix: str = "fsm:",
                 timeout: float = 5.0, connect_timeout: float = 2.0, max_pool_size: int = 16,
                 page_size: int = 500, remember_writes: bool = True):
        self.url = url
        self.prefix = prefix
        self.page_size = page_size
        self._owns_client = client is None
        # A pool: a plain Client is one socket and not safe to share between threads.
        self.client = client or MetaClient(address_of(url), connect_timeout=connect_timeout,
                                           timeout=timeout, no_delay=True, max_pool_size=max_pool_size,
                                           default_noreply=False)
        # A given client without meta_set (a plain PooledClient) works with gets + cas.
        self._meta = callable(getattr(self.client, "meta_set", None))
        self._remember = remember_writes and self._meta
        self._written = _Writes()

    def swap(self, cid: str, expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any],
             history: Sequence[Mapping[str, Any]] = ()) -> SwapResult:
        key = self._key(cid, "r")
        if expect is None:
            return self._create(cid, key, fields, history)
        known = self._written.get(key)
        if known is not None:
            envelope = _decode(known.text)
            if expect_holds(envelope["record"], expect):
                stored = self._write(cid, envelope, fields, history, known.token, known.origin)
                if stored is not None:
                    return SwapResult(True, stored["record"])
        for _ in range(CAS_ATTEMPTS):
            value, token = self._call(lambda: self.client.gets(key))
            if known is not None and (value is None or int(token) != known.token):
                self._written.forget(key)   # someone else wrote since: forget ours
                known = None
            if value is None:
                return SwapResult(False, None)
            envelope = _decode(value)
            if not expect_holds(envelope["record"], expect):
                return SwapResult(False, envelope["record"])
            stored = self._write(cid, envelope, fields, history, int(token))
            if stored is not None:
                return SwapResult(True, stored["record"])
        raise RecoverableError(f"{self.url}: {cid!r} changed under {CAS_ATTEMPTS} attempts to swap it")

    def append(self, cid: str, entry: Mapping[str, Any]) -> SwapResult:
        """See :meth:`fsm.ports.InstanceStore.append`: ``gets`` + a write with its token,
        again while another writer wins the token. Always read first: an append cannot
        trust a remembered write, since event senders are many and rarely the writer.
        Losers back off a little, at random, so a burst of appends to one instance does
        not keep colliding."""
        entry = checked_entry(entry)
        key = self._key(cid, "r")
        for attempt in range(APPEND_ATTEMPTS):
            value, token = self._call(lambda: self.client.gets(key))
            known = self._written.get(key)
            if known is not None and (value is None or int(token) != known.token):
                self._written.forget(key)   # someone else wrote since: forget ours
            if value is None:
                return SwapResult(False, None)
            envelope = _decode(value)
            fields = appended(envelope["record"], entry)
            if fields is None:
                return SwapResult(False, envelope["record"])
            stored = self._write(cid, envelope, fields, (), int(token))
            if stored is not None:
                return SwapResult(True, stored["record"])
            time.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** attempt)))
        raise RecoverableError(f"{self.url}: {cid!r} changed under {APPEND_ATTEMPTS} attempts to append to it")

    def get(self, cid: str) -> Record | None:
        value = self._call(lambda: self.client.get(self._key(cid, "r")))
        return None if value is None else _decode(value)["record"]

    def history(self, cid: str, start: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries ``start`` to ``start + limit`` (0-based; ``limit`` None: to the end):
        the paged-out ones among them (``h<n>``, numbered from 1) in order, then the
        carried ones (see the module docstring). Only the keys of the range are read."""
        value = self._call(lambda: self.client.get(self._key(cid, "r")))
        if value is None:
            return []
        envelope = _decode(value)
        tail = envelope.get("history_tail") or []
        total = envelope.get("history_len", 0)
        paged = total - len(tail)
        first = max(0, start) + 1                                          # entry numbers, from 1
        last = total if limit is None else min(total, first + max(0, limit) - 1)
        entries: list[dict[str, Any]] = []
        for low in range(first, min(last, paged) + 1, self.page_size):
            keys = [self._key(cid, f"h{n}") for n in range(low, min(low + self.page_size, last + 1, paged + 1))]
            found = self._call(lambda keys=keys: self.client.get_many(keys))
            entries += [json.loads(found[k]) for k in keys if k in found]
        return entries + tail[max(0, first - paged - 1):max(0, last - paged)]

    def history_len(self, cid: str) -> int:
        """Entries ever written (the stored value's ``history_len``); 0 for no instance."""
        value = self._call(lambda: self.client.get(self._key(cid, "r")))
        return 0 if value is None else int(_decode(value).get("history_len", 0))

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- helpers ---------------------------------------------------------------------------

    def _create(self, cid: str, key: str, fields: Mapping[str, Any],
                history: Sequence[Mapping[str, Any]]) -> SwapResult:
        for _ in range(CAS_ATTEMPTS):
            stored = self._write(cid, {}, fields, history, token=None)
            if stored is not None:
                return SwapResult(True, stored["record"])
            current = self._call(lambda: self.client.get(key))
            if current is not None:
                return SwapResult(False, _decode(current)["record"])
            # deleted or expired between our add and get: add again
        raise RecoverableError(f"{self.url}: {cid!r} changed under {CAS_ATTEMPTS} attempts to create it")

    def _write(self, cid: str, envelope: dict[str, Any], fields: Mapping[str, Any],
               history: Sequence[Mapping[str, Any]], token: int | None,
               origin: tuple[int, int] | None = None) -> dict[str, Any] | None:
        """Add (``token`` None) or compare-and-set the new envelope; None when another
        writer won. ``origin`` marks a remembered token (see ``MetaClient.meta_set``).
        The swap's history entries are carried in the value, after the carried entries
        have been paged out if there would be too many (see the module docstring)."""
        key = self._key(cid, "r")
        record = merged(envelope.get("record"), fields)
        length = envelope.get("history_len", 0)
        tail = list(envelope.get("history_tail") or ())
        if history and tail and _overflows(tail, history):
            self._page_out(cid, length - len(tail) + 1, tail, _expire(record))
            tail = []
        new: dict[str, Any] = {"record": record, "history_len": length + len(history)}
        if tail or history:
            new["history_tail"] = tail + [dict(entry) for entry in history]
        text, expire = dumps(new).encode(), _expire(record)  # UTF-8 bytes: values must be binary-safe
        if self._meta:
            reply = self._meta_set(key, text, expire, token, origin)
            if reply is not None:
                if reply.status != "HD":
                    if origin is not None:
                        self._written.forget(key)
                    return None
                if self._remember:
                    self._written.put(key, _Written(text, reply.token, reply.origin))
                return _decode(text)
            if origin is not None:
                return None     # meta went away with a remembered token: read the record instead
        if token is None:
            ok = self._call(lambda: self.client.add(key, text, expire=expire, noreply=False))
        else:
            ok = self._call(lambda: self.client.cas(key, text, token, expire=expire, noreply=False))
        return _decode(text) if ok else None

    def _meta_set(self, key: str, text: bytes, expire: int, token: int | None,
                  origin: tuple[int, int] | None) -> MetaReply | None:
        """``ms``; None when the server does not know meta commands (then never again)."""
        try:
            return self._call(lambda: self.client.meta_set(key, text, expire=expire, cas=token,
                                                           add=token is None, valid=origin))
        except BackendError as exc:
            if not isinstance(exc.__cause__, (MemcacheUnknownCommandError, MemcacheClientError)):
                raise
            self._meta = self._remember = False
            self._written.forget()
            return None

    def _page_out(self, cid: str, first: int, entries: Sequence[Mapping[str, Any]], expire: int) -> None:
        """Write carried entries under their own keys (``h<first>`` ..), before the write
        that stops carrying them: writing them again writes the same entries."""
        keyed = {self._key(cid, f"h{first + i}"): dumps(entry).encode() for i, entry in enumerate(entries)}
        failed = self._call(lambda: self.client.set_many(keyed, expire=expire, noreply=False))
        if failed:
            raise RecoverableError(f"{self.url}: {len(failed)} history entries of {cid!r} were not stored; "
                                   "the record still carries them")

    def _key(self, cid: str, suffix: str) -> str:
        """memcached keys are at most 250 bytes without spaces or control characters."""
        key = f"{self.prefix}{cid}:{suffix}"
        if len(key) > 200 or any(ch <= " " or ch == "\x7f" for ch in key) or not key.isascii():
            key = f"{self.prefix}#{hashlib.sha256(cid.encode()).hexdigest()}:{suffix}"
        return key

    def _call(self, work: Any) -> Any:
        try:
            return work()
        except RECOVERABLE as exc:
            raise RecoverableError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        except MemcacheError as exc:
            raise BackendError(f"{self.url}: {type(exc).__name__}: {exc}") from exc


def _overflows(tail: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether carrying ``history`` after ``tail`` would exceed the bound."""
    if len(tail) + len(history) > PAGE_ENTRIES:
        return True
    return sum(len(dumps(entry)) for entry in (*tail, *history)) > PAGE_BYTES


def _decode(value: bytes | str) -> dict[str, Any]:
    return json.loads(value)


def _expire(record: Mapping[str, Any]) -> int:
    """memcached reads values above 30 days as absolute epoch seconds, which ours are."""
    expires = record.get("expires_at") or 0
    return int(expires) if isinstance(expires, (int, float)) and expires > 0 else 0
