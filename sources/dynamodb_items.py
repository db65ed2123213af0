"""The DynamoDB store's items: which attribute holds what, how a record field is
written and read back (JSON text, numbers, packed bytes), and what an item weighs as
DynamoDB bills a write (see :mod:`sources.dynamodb` for the layout and the protocol)."""

from __future__ import annotations

import base64
import functools
import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fsm.errors import BackendError
from fsm.ports import RECORD_FIELDS, Record

from .base import INBOX, INBOX_END, dumps
from .dynamodb_tables import (
    LIST_AT,
    LIST_BY_STATE,
    LIST_INDEXES,
    OWED_AT,
    OWED_SHARD,
    PENDING,
    PENDING_SHARD,
    TTL,
)

RECORD_SK = "record"
HISTORY_LEN = "history_len"
HISTORY_TAIL = "history_tail"   # List of S: the latest history entries, carried in the record
HISTORY_SK = "h#"               # + "%012d-%012d" % the numbers of a history page's first and last entries
INBOX_IDS = "inbox_ids"     # String Set: the ids waiting in the inbox (see the module docstring)
INBOX_TAIL = "inbox_tail"   # how many entries at the inbox's end were appended without their pos
OWES_NOTHING = "owes_nothing"   # BOOL true: ``pending`` is 0, stored as no ``pending`` (see the store's docstring)
RESERVED = frozenset({"pk", "sk", HISTORY_LEN, HISTORY_TAIL, TTL, PENDING_SHARD, OWED_SHARD, OWED_AT, LIST_AT,
                      LIST_BY_STATE, INBOX_IDS, INBOX_TAIL, OWES_NOTHING, *LIST_INDEXES})
WRITE_UNIT = 1024
NULL_REMOVED = frozenset({PENDING, INBOX, INBOX_END})   # fields whose null is stored as no attribute
# JSON fields stored as B, raw deflate with a preset dictionary behind a version byte,
# when that is smaller than their JSON text: the ones the framework writes at every commit
# in a shape it knows (the outbox's lean step message, ``consumed``, a Kinesis
# ``checkpoint``: an outbox of one step message is ~310 bytes of text, ~90 packed), and
# the user's data (``context``, ``output``), which typical JSON halves at 1 KB (a write
# unit less per commit) and shrinks 3-5 times from a few KB. Never edit a dictionary that
# has been used: a new one gets the next version byte, and decode keeps the old.
PACKED = frozenset({"outbox", "consumed", "checkpoint", "context", "output", "chart"})
PACK_FAST_BYTES = 64 * 1024     # larger texts are packed at level 6, not 9 (a few ms per 100 KB less)
PACK_DICTIONARIES = {1: (
    b'{"arn":"arn:aws:kinesis:us-east-1:123456789012:stream/","shard":"shardId-000000000000",'
    b'"sequence":"49590000000000000000000000000000000000000000000000000000"}{"kind":"event","event_id":"'
    b'[{"message":{"machine":"","correlation_id":"","kind":"timer","step":0,"retries":0,"event":null,"data":{},'
    b'"fence":1,"state":null,"event_id":null,"store":0,"copy":false,"busy":0,"reason":null,"version":"",'
    b'"sent_at":17,"parent":null,"v":1,"context":{},"chart":null},"delay":0.0}]{"kind":"step","step":1,"retries":0}'
    b'[{"message":{"machine":"","correlation_id":"","kind":"step","step":1,"retries":0,"event":"next","data":{},'
    b'"fence":1,"state":"","event_id":null,"store":0,"copy":false,"busy":0,"reason":null,"version":"",'
    b'"sent_at":17,"parent":null,"v":1},"delay":0.0}]')}
PACK_VERSION = 1
# History entries (each carried entry, and a page's array): ~114 bytes of text, ~48 packed.
PACK_DICTIONARIES[2] = (
    b'{"step":2,"from":"","event":"","to":"","time":"2026-01-01T00:00:00.000Z","duration":0.0,'
    b'"retries":0,"rejected":true,"error":"","cancelled":"","pos":1,"value":{},"event_id":"",'
    b'"status":"running","parent":"","children":[]},{"step":1,"from":null,"event":null,"to":"","time":"2026-')
HISTORY_PACK_VERSION = 2


# ---- attribute values -------------------------------------------------------------------


def encode(name: str, value: Any) -> dict[str, Any]:
    """One record field as a DynamoDB attribute value, by its kind in ``RECORD_FIELDS``."""
    if value is None:
        return {"NULL": True}
    kind = RECORD_FIELDS.get(name, "json")
    if name == INBOX and isinstance(value, list):    # a List, so that append can add to it
        return {"L": [{"S": dumps(entry)} for entry in value]}
    if kind == "json":
        text = dumps(value)
        return pack(text) if name in PACKED else {"S": text}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise BackendError(f"record field {name!r} holds {value}, which DynamoDB cannot store")
        return {"N": repr(value) if isinstance(value, float) else str(value)}
    raise BackendError(f"record field {name!r} is a {kind} field but holds a {type(value).__name__}")


def pack(text: str, version: int = PACK_VERSION) -> dict[str, Any]:
    """JSON text as S, or as B packed with that dictionary when that is smaller."""
    raw = text.encode()
    if len(raw) < 64:
        return {"S": text}      # nothing to gain
    level = 9 if len(raw) <= PACK_FAST_BYTES else 6
    packer = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, PACK_DICTIONARIES[version])
    packed = bytes([version]) + packer.compress(raw) + packer.flush()
    return {"B": packed} if len(packed) < len(raw) else {"S": text}


def unpack(data: bytes) -> str:
    dictionary = PACK_DICTIONARIES.get(data[0]) if data else None
    if dictionary is None:
        raise BackendError(f"a packed attribute starts with version {data[:1]!r}, which this version cannot read")
    unpacker = zlib.decompressobj(-15, dictionary)
    return (unpacker.decompress(data[1:]) + unpacker.flush()).decode()


def decode(name: str, attr: Mapping[str, Any]) -> Any:
    kind = RECORD_FIELDS.get(name, "json")
    if "NULL" in attr:
        return None
    if "B" in attr and kind == "json":
        return json.loads(unpack(bytes(attr["B"])))
    if "S" in attr:
        return json.loads(attr["S"]) if kind == "json" else attr["S"]
    if "N" in attr:
        number = Decimal(attr["N"])
        if kind == "float" or number != number.to_integral_value():
            return float(number)
        return int(number)
    return _plain(attr)   # written by someone else: best effort


def _plain(attr: Mapping[str, Any]) -> Any:
    """A DynamoDB attribute value as JSON data (numbers as int or float, sets as lists,
    binary as base64 text), without boto3's deserializer (importing boto3 costs a cold
    start some 100 ms)."""
    (kind, value), = attr.items()
    if kind == "N":
        number = Decimal(value)
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "NS":
        return [_plain({"N": n}) for n in value]
    if kind in ("B", "BS"):
        texts = [base64.b64encode(bytes(raw)).decode() for raw in ([value] if kind == "B" else value)]
        return texts[0] if kind == "B" else texts
    if kind == "M":
        return {k: _plain(v) for k, v in value.items()}
    if kind == "L":
        return [_plain(v) for v in value]
    if kind == "NULL":
        return None
    return list(value) if kind == "SS" else value   # S, BOOL


def decode_record(item: Mapping[str, Any] | None) -> Record | None:
    if not item:
        return None
    record = {name: decode_inbox(item) if name == INBOX else decode(name, attr)
              for name, attr in item.items() if name not in RESERVED}
    if OWES_NOTHING in item and PENDING not in item:
        record[PENDING] = 0.0
    return record


def decode_inbox(item: Mapping[str, Any]) -> Any:
    """The inbox of a record item: the entries' texts, the last ``inbox_tail`` of them
    given their positions, counted back from ``inbox_end`` (see the module docstring)."""
    attr = item[INBOX]
    if "L" not in attr:
        return decode(INBOX, attr)
    entries = [json.loads(element["S"]) if "S" in element else decode(INBOX, element) for element in attr["L"]]
    tail = min(len(entries), count_of(item, INBOX_TAIL))
    end = count_of(item, INBOX_END)
    for back in range(tail):
        entries[len(entries) - 1 - back]["pos"] = end - back
    return entries


def count_of(item: Mapping[str, Any], name: str) -> int:
    """A numeric attribute of an item as an int; 0 when absent."""
    attr = item.get(name)
    return int(Decimal(attr["N"])) if attr and "N" in attr else 0


def owes(item: Mapping[str, Any]) -> bool:
    """Whether the record item owes a message (``pending`` set and not 0)."""
    attr = item.get(PENDING)
    return bool(attr) and "N" in attr and Decimal(attr["N"]) != 0


class Expression:
    """Placeholders for one request, so field names never clash with reserved words."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, name: str) -> str:
        key = f"#n{len(self.names)}"
        self.names[key] = name
        return key

    def value(self, attr: dict[str, Any]) -> str:
        key = f":v{len(self.values)}"
        self.values[key] = attr
        return key


def number_attr(n: int) -> dict[str, str]:
    return {"N": str(n)}


# ---- item sizes (what DynamoDB bills a write by) ------------------------------------------


def attr_size(attr: Mapping[str, Any]) -> int:
    """DynamoDB's size of one attribute value in wire format (its name not included)."""
    (kind, data), = attr.items()
    if kind == "S":
        return len(data.encode())
    if kind == "B":
        return len(data)
    if kind == "N":
        digits = data.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind in ("SS", "NS", "BS"):
        return sum(attr_size({kind[0]: part}) for part in data)
    if kind == "L":
        return 3 + sum(1 + attr_size(part) for part in data)
    if kind == "M":
        return 3 + sum(len(key.encode()) + 1 + attr_size(part) for key, part in data.items())
    return 1    # NULL, BOOL


def item_size(item: Mapping[str, Any] | None) -> int:
    """DynamoDB's size of an item: its attributes' names and values."""
    return sum(len(name.encode()) + attr_size(value) for name, value in (item or {}).items())


def units(size: int) -> int:
    return max(1, math.ceil(size / WRITE_UNIT))


def text_of(attr: Mapping[str, Any]) -> str | None:
    """The JSON text an S or packed B attribute holds (None: neither)."""
    if "S" in attr:
        return attr["S"]
    if "B" in attr:
        return unpack(bytes(attr["B"]))
    return None


def entry_attr(text: str) -> dict[str, Any]:
    """A history entry's text as stored: in the record's ``history_tail`` or as a page's
    ``entries`` (a JSON array of entries)."""
    return pack(text, HISTORY_PACK_VERSION)


def texts_size(texts: Sequence[str]) -> int:
    """The share of history entries in an item's size, as ``entry_attr`` stores them in a
    List (the list's own 3 bytes apart)."""
    return sum(_entry_size(text) for text in texts)


@functools.lru_cache(maxsize=4096)
def _entry_size(text: str) -> int:
    """One stored entry's share: carried entries are sized again at every commit that
    decides a page-out, and packing them each time would cost the commit ~15 us each."""
    return 1 + attr_size(entry_attr(text))


def tail_of(item: Mapping[str, Any]) -> list[str]:
    """The texts of the history entries a record item carries, oldest first."""
    attr = item.get(HISTORY_TAIL) or {}
    return [text for text in map(text_of, attr.get("L", ())) if text is not None]


def page_entries(item: Mapping[str, Any]) -> list[Any] | None:
    """The entries a history page holds (None: not a page this version can read)."""
    text = text_of(item.get("entries") or {})
    return None if text is None else json.loads(text)


@dataclass
class Seen:
    """What a store last saw of a record item: enough to decide a page-out without a read."""

    history_len: int
    tail: list[str]             # the carried entries' texts, oldest first
    sizes: dict[str, int]       # attribute -> its share of the item's size (the tail apart)
    ttl: int                    # the item's ttl, 0 for none


@dataclass(frozen=True)
class Page:
    """Carried entries going out into a history item of their own, before the swap that
    drops them from the record."""

    first: int                  # the number of the first entry
    texts: list[str]
    known: int                  # the record's history_len they were seen with
