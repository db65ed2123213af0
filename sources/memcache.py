"""``memcached://HOST:PORT``: instance records on memcached's gets/cas.

memcached has no server-side conditions, so ``swap`` reads the record with ``gets``,
checks ``expect`` in Python and writes with ``cas`` (``add`` when creating): two round
trips, one for a create. When the ``cas`` loses a race the record is read again and the
condition re-checked, so a swap only fails when its condition is false on the record it
would have replaced.

History is not atomic here. The record carries its history length (inside the stored
value, next to the record), so the ``cas`` itself reserves the entry numbers; the entries
are then written under their own keys with one ``set_many``: one more round trip. A crash
between the two loses those entries (``history`` skips missing numbers), and, memcached
being a cache, eviction may lose any key: use it where that is acceptable.

Every write passes ``noreply=False``: with pymemcache's default a failed ``add``/``cas``
would report success.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from pymemcache.client.base import PooledClient
from pymemcache.exceptions import (
    MemcacheError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownError,
)

from fsm.errors import BackendError, RecoverableError
from fsm.ports import Record, Scalar, SwapResult

from .base import dumps, matches, merged

CAS_ATTEMPTS = 16
RECOVERABLE = (OSError, MemcacheUnexpectedCloseError, MemcacheServerError, MemcacheUnknownError)


def address_of(url: str) -> tuple[str, int]:
    parts = urlparse(url)
    if parts.scheme != "memcached" or not parts.hostname:
        raise BackendError(f"{url!r}: expected memcached://HOST:PORT")
    return parts.hostname, parts.port or 11211


class MemcacheStore:
    """An :class:`fsm.ports.InstanceStore` on memcached (see the module docstring).

    A stored value is ``{"record": {...}, "history_len": n}`` as JSON text.
    """

    def __init__(self, url: str, *, client: Any = None, prefix: str = "fsm:",
                 timeout: float = 5.0, connect_timeout: float = 2.0, max_pool_size: int = 16,
                 page_size: int = 500):
        self.url = url
        self.prefix = prefix
        self.page_size = page_size
        self._owns_client = client is None
        # PooledClient: a plain Client is one socket and not safe to share between threads.
        self.client = client or PooledClient(address_of(url), connect_timeout=connect_timeout,
                                             timeout=timeout, no_delay=True, max_pool_size=max_pool_size,
                                             default_noreply=False)

    def swap(self, cid: str, expect: Mapping[str, Scalar] | None, fields: Mapping[str, Any],
             history: Sequence[Mapping[str, Any]] = ()) -> SwapResult:
        key = self._key(cid, "r")
        for _ in range(CAS_ATTEMPTS):
            if expect is None:
                stored = self._write(key, {}, fields, history, token=None)
                if stored is not None:
                    return self._finish(cid, stored, history)
                current = self._call(lambda: self.client.get(key))
                if current is None:
                    continue      # deleted or expired between our add and get
                return SwapResult(False, _decode(current)["record"])
            value, token = self._call(lambda: self.client.gets(key))
            if value is None:
                return SwapResult(False, None)
            envelope = _decode(value)
            if not matches(envelope["record"], expect):
                return SwapResult(False, envelope["record"])
            stored = self._write(key, envelope, fields, history, token=token)
            if stored is not None:
                return self._finish(cid, stored, history)
        raise RecoverableError(f"{self.url}: {cid!r} changed under {CAS_ATTEMPTS} attempts to swap it")

    def get(self, cid: str) -> Record | None:
        value = self._call(lambda: self.client.get(self._key(cid, "r")))
        return None if value is None else _decode(value)["record"]

    def history(self, cid: str) -> list[dict[str, Any]]:
        value = self._call(lambda: self.client.get(self._key(cid, "r")))
        length = 0 if value is None else _decode(value)["history_len"]
        entries: list[dict[str, Any]] = []
        for start in range(1, length + 1, self.page_size):
            keys = [self._key(cid, f"h{n}") for n in range(start, min(start + self.page_size, length + 1))]
            found = self._call(lambda keys=keys: self.client.get_many(keys))
            entries += [json.loads(found[k]) for k in keys if k in found]
        return entries

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- helpers ---------------------------------------------------------------------------

    def _write(self, key: str, envelope: dict[str, Any], fields: Mapping[str, Any],
               history: Sequence[Mapping[str, Any]], token: bytes | None) -> dict[str, Any] | None:
        """``add`` (token None) or ``cas`` the new envelope; None when another writer won."""
        record = merged(envelope.get("record"), fields)
        new = {"record": record, "history_len": envelope.get("history_len", 0) + len(history)}
        text, expire = dumps(new).encode(), _expire(record)  # UTF-8 bytes: values must be binary-safe
        if token is None:
            ok = self._call(lambda: self.client.add(key, text, expire=expire, noreply=False))
        else:
            ok = self._call(lambda: self.client.cas(key, text, token, expire=expire, noreply=False))
        return _decode(text) if ok else None

    def _finish(self, cid: str, stored: dict[str, Any], history: Sequence[Mapping[str, Any]]) -> SwapResult:
        if history:
            first = stored["history_len"] - len(history) + 1
            entries = {self._key(cid, f"h{first + i}"): dumps(entry).encode() for i, entry in enumerate(history)}
            failed = self._call(lambda: self.client.set_many(entries, expire=_expire(stored["record"]),
                                                             noreply=False))
            if failed:
                raise RecoverableError(f"{self.url}: record of {cid!r} committed but {len(failed)} "
                                       "history entries were not stored")
        return SwapResult(True, stored["record"])

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


def _decode(value: bytes | str) -> dict[str, Any]:
    return json.loads(value)


def _expire(record: Mapping[str, Any]) -> int:
    """memcached reads values above 30 days as absolute epoch seconds, which ours are."""
    expires = record.get("expires_at") or 0
    return int(expires) if isinstance(expires, (int, float)) and expires > 0 else 0
