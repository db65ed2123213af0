#!/usr/bin/env python
"""Backend round trips per message (not a timed test: it prints figures).

    python bench/roundtrips.py [--quick] [--long] [--steps N]

Every call the framework makes to a backend while it handles one message is counted:

- redis: each ``execute_command`` (EVALSHA, HGETALL, ...) and each pipeline ``execute``;
- memcached: each pymemcache client call (get, gets, cas, add, set, set_many, ...) and each
  meta-protocol ``meta_set`` (``ms``);
- AWS: each botocore API call (a ``before-call.*.*`` hook on every client the adapters
  build through ``sources.aws.make_client``), retries inside botocore not included;
- sqlite and memory: each store call (swap, append, get, history) and timer-store call (add, due,
  remove, next_due), which is one local transaction;
- the bus: each send (the store table uses a counting in-memory bus, like a standard SQS
  queue: it holds delays up to 900 s).

DynamoDB write units are reckoned for every write (``WriteUnits``: the items before and
after each call, read from moto with a client of its own, priced as DynamoDB on-demand
bills them: per started KB of the larger image, twice in a transaction; index entries
apart) and shown next to the calls as ``table + index``. A ``PutItem[history page]`` is the
store paging out the history entries its records carry (``sources/dynamodb.py``): the
amortised extra write of a commit, one every few commits.

Excluded, and listed under the tables when they happen: redis's one-time ``SCRIPT LOAD``
(and the EVALSHA answered NOSCRIPT before it), SQS ``GetQueueUrl`` (asked once per bus,
then cached), and everything outside the handler: creating tables, queues and streams,
and what Lambda's event source mapping does (receiving, deleting, reading shards), which
the benchmark does with ``fsm.app.worker.default_poller`` to get real Lambda record shapes.

Part 1, per store (redis, memcached, DynamoDB on moto in-process, sqlite, memory),
scenarios driven through ``Dispatcher.handle``: start, happy path, duplicate delivery,
a stale duplicate, a failed attempt and its retry, lease contention (the same message
delivered to a second worker while the first holds the lease), and an external event on
a waiting instance (the client's ``send_event`` and its dispatch).

Part 2, bus x store pairs through ``fsm.handler.handle_event`` with real Lambda records:
SQS + redis, Kinesis + DynamoDB with ``checkpoint:``, DynamoDB stream + DynamoDB,
SNS + memcached (AWS parts on moto in-process).

``--long``: one instance making 5,000 transitions on DynamoDB (moto in-process): round
trips, write units and payload bytes per transition at the start and at the end (means
over 100 messages, so that the history pages each window holds do not decide it).

Budget (happy path, the send included): <= 3 with redis, DynamoDB, sqlite (and memory);
<= 4 with memcached (3, and 4 when a history page goes out).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import json
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if __name__ == "__main__":
    # The YAML names actions as ``roundtrips.Probe``: resolve that to this very module.
    sys.modules.setdefault("roundtrips", sys.modules[__name__])

# The benchmark never talks to real AWS: dummy credentials, and in-process moto only.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                  AWS_DEFAULT_REGION="us-east-1", AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled")

from servers import Servers

from config.loader import load_text
from config.settings import Settings
from fsm import Action
from fsm.app.wiring import Wiring, build
from fsm.client import Client
from fsm.dispatcher import Dispatcher, Outcome
from fsm.message import Message, decode
from fsm.model import Context, Machine
from fsm.ports import Envelope

ACCOUNT = "123456789012"
REGION = "us-east-1"
STORE_TABLE, BUS_TABLE = "fsm-store", "fsm-bus"
BUDGET = {"redis": 3, "memcached": 4, "dynamodb": 3, "sqlite": 3, "memory": 3}
STORES = ("redis", "memcached", "dynamodb", "sqlite", "memory")
RUN = uuid.uuid4().hex[:8]   # every correlation id of this process starts with rt-RUN-


def arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


# ---- machines and actions ----------------------------------------------------------------

# (correlation id, state) -> how many more times the state's do action raises
FAILURES: dict[tuple[str, str], int] = {}
# (correlation id, state) -> called once from inside the state's do action (lease held)
HOOKS: dict[tuple[str, str], Callable[[], None]] = {}


class Probe(Action):
    """Returns ``next``; raises or calls a hook when the benchmark asked it to."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        key = (context.correlation_id, context.current_state.name if context.current_state else "")
        if FAILURES.get(key, 0) > 0:
            FAILURES[key] -= 1
            raise RuntimeError("injected failure (bench)")
        hook = HOOKS.pop(key, None)
        if hook is not None:
            hook()
        return self.params.get("event", "next")


class Loop(Action):
    """Goes round ``times`` times, then leaves."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context["n"] = context.get("n", 0) + 1
        return "again" if context["n"] < self.params["times"] else "enough"


def linear_yaml(states: int = 10) -> str:
    out = ["machines:\n  - name: linear\n    max_retries: 3\n    retry_base_delay: 1\n    states:\n"]
    for i in range(states):
        if i == states - 1:
            out.append(f"      - {{name: s{i}, final: true}}\n")
        else:
            initial = ", initial: true" if i == 0 else ""
            out.append(f"      - {{name: s{i}{initial}, do_action: roundtrips.Probe, "
                       f"transitions: [{{event: next, target: s{i + 1}}}]}}\n")
    return "".join(out)


# s1 waits for `go`; s2 then runs and sends the next message, so the event's transition
# has a send like any other.
WAITER_YAML = """
machines:
  - name: waiter
    states:
      - {name: s0, initial: true, do_action: roundtrips.Probe, transitions: [{event: next, target: s1}]}
      - {name: s1, transitions: [{event: go, target: s2}]}
      - {name: s2, do_action: roundtrips.Probe, transitions: [{event: next, target: s3}]}
      - {name: s3, final: true}
"""


def looper_yaml(times: int) -> str:
    return f"""
machines:
  - name: looper
    states:
      - name: loop
        initial: true
        do_action: {{class: roundtrips.Loop, params: {{times: {times}}}}}
        transitions: [{{event: again, target: loop}}, {{event: enough, target: end}}]
      - {{name: end, final: true}}
"""


def machines() -> dict[str, Machine]:
    return {**load_text(linear_yaml(), "bench/roundtrips.py:linear").machines,
            **load_text(WAITER_YAML, "bench/roundtrips.py:waiter").machines}


# ---- counting ----------------------------------------------------------------------------


class Tally(collections.Counter):  # type: ignore[type-arg]
    """operation label -> calls, for one counting window; ``units``: the DynamoDB write
    units those calls consumed (``table``, ``index``; see :class:`WriteUnits`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.units: collections.Counter[str] = collections.Counter()
        super().__init__(*args, **kwargs)

    def update(self, *args: Any, **kwargs: Any) -> None:   # type: ignore[override]
        super().update(*args, **kwargs)
        for other in args:
            if isinstance(other, Tally):
                self.units.update(other.units)

    @property
    def total(self) -> int:
        return sum(self.values())

    def describe(self) -> str:
        if not self:
            return "nothing"
        return " + ".join(f"{n} {op}" for op, n in sorted(self.items(), key=lambda kv: (-kv[1], kv[0])))


class Meter:
    """Counts backend calls made inside ``window()``; exclusions are kept apart."""

    def __init__(self) -> None:
        self.active: Tally | None = None
        self.excluded: collections.Counter[tuple[str, str]] = collections.Counter()
        self.bytes_sent = 0       # payload bytes of the counted calls
        self.shape_sent = 0       # the same, every run of digits counted as one byte

    def hit(self, label: str, payload: bytes = b"") -> None:
        if self.active is not None:
            self.active[label] += 1
            self.bytes_sent += len(payload)
            self.shape_sent += shape(payload)

    def spend(self, kind: str, units: int) -> None:
        if self.active is not None:
            self.active.units[kind] += units

    def exclude(self, label: str, why: str) -> None:
        if self.active is not None:
            self.excluded[(label, why)] += 1

    @contextlib.contextmanager
    def window(self) -> Iterator[Tally]:
        tally, outer = Tally(), self.active
        self.active = tally
        try:
            yield tally
        finally:
            self.active = outer
            if outer is not None:
                outer.update(tally)


class WriteUnits:
    """DynamoDB write units of every write the adapters make (moto in-process), from the
    items before and after each call, read with a client of its own (not counted):
    ceil(max(size before, size after) / 1 KB) per item written, twice in a transaction,
    and the same for a write refused by its condition (``table``); each index entry put,
    changed or removed costs ceil(entry size / 1 KB), two when its key moves (``index``).
    Sizes as DynamoDB reckons them (``sources.dynamodb_items.item_size``)."""

    WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})

    def __init__(self, meter: Meter):
        self.meter = meter
        self._reader: Any = None
        self._schemas: dict[str, tuple[tuple[str, ...], list[tuple[tuple[str, ...], tuple[str, ...] | None]]]] = {}

    def watch(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.dynamodb.*", self._before)
        client.meta.events.register("after-call.dynamodb.*", self._after)

    def _client(self) -> Any:
        if self._reader is None:
            import boto3
            self._reader = boto3.client("dynamodb", region_name=REGION)
        return self._reader

    def _read(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return self._client().get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")

    def _schema(self, table: str) -> tuple[tuple[str, ...], list[tuple[tuple[str, ...], tuple[str, ...] | None]]]:
        if table not in self._schemas:
            described = self._client().describe_table(TableName=table)["Table"]
            keys = tuple(k["AttributeName"] for k in described["KeySchema"])
            indexes = []
            for index in described.get("GlobalSecondaryIndexes", []):
                own = tuple(k["AttributeName"] for k in index["KeySchema"])
                projection = index.get("Projection", {})
                projected = None if projection.get("ProjectionType", "ALL") == "ALL" else \
                    keys + own + tuple(projection.get("NonKeyAttributes", ()))
                indexes.append((own, projected))
            self._schemas[table] = (keys, indexes)
        return self._schemas[table]

    def _targets(self, operation: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any], int]]:
        """(table, key, multiplier) of every item the write touches."""
        if operation == "TransactWriteItems":
            found = []
            for entry in params.get("TransactItems", []):
                (_, body), = entry.items()
                found.append((body["TableName"], self._key(body["TableName"], body), 2))
            return found
        if operation == "BatchWriteItem":
            return [(table, self._key(table, request.get("PutRequest") or request["DeleteRequest"]), 1)
                    for table, requests in params.get("RequestItems", {}).items() for request in requests]
        return [(params["TableName"], self._key(params["TableName"], params), 1)]

    def _key(self, table: str, body: dict[str, Any]) -> dict[str, Any]:
        if "Key" in body:
            return dict(body["Key"])
        keys, _ = self._schema(table)
        return {k: body["Item"][k] for k in keys}

    def _before(self, params: Any = None, model: Any = None, context: Any = None, **_: Any) -> None:
        if context is None or model is None or model.name not in self.WRITES or self.meter.active is None:
            return
        targets = self._targets(model.name, dict(params or {}))
        context["bench_items"] = [(table, key, times, self._read(table, key)) for table, key, times in targets]

    def _after(self, context: Any = None, **_: Any) -> None:
        from sources.dynamodb_items import item_size
        for table, key, times, before in (context or {}).pop("bench_items", ()):
            after = self._read(table, key)
            self.meter.spend("table", times * units_of(max(item_size(before), item_size(after))))
            self.meter.spend("index", self._index_units(table, before, after))

    def _index_units(self, table: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> int:
        from sources.dynamodb_items import item_size
        spent = 0
        for keys, projected in self._schema(table)[1]:
            before, after = _index_entry(old, keys, projected), _index_entry(new, keys, projected)
            if before is None and after is None:
                continue
            if before is None or after is None:
                spent += units_of(item_size(before or after))
            elif any(old[k] != new[k] for k in keys):      # type: ignore[index]
                spent += units_of(item_size(before)) + units_of(item_size(after))
            elif before != after:
                spent += units_of(item_size(after))
        return spent


def _index_entry(item: dict[str, Any] | None, keys: tuple[str, ...],
                 projected: tuple[str, ...] | None) -> dict[str, Any] | None:
    """An item's entry in an index (``projected`` None: all of it), None when not in it."""
    if item is None or any(k not in item for k in keys):
        return None
    return dict(item) if projected is None else {k: item[k] for k in projected if k in item}


def units_of(size: int) -> int:
    return max(1, -(-size // 1024))


METER = Meter()
UNITS = WriteUnits(METER)


DIGITS = re.compile(rb"[0-9]+")


def shape(payload: bytes) -> int:
    """The size of ``payload`` with each run of digits counted as one byte: what stays
    when counters (step, fence, history length) and timestamps gain digits."""
    return len(DIGITS.sub(b"0", payload))


def _name(command: Any) -> str:
    return command.decode() if isinstance(command, bytes) else str(command)


def count_redis(client: Any, meter: Meter = METER) -> None:
    """Count every command and pipeline of a redis-py client (instance-level patches)."""
    import redis.exceptions as rx

    execute = client.execute_command
    make_pipeline = client.pipeline

    def execute_command(*args: Any, **options: Any) -> Any:
        name = _name(args[0]).upper()
        if name == "SCRIPT LOAD" or (name == "SCRIPT" and len(args) > 1 and _name(args[1]).upper() == "LOAD"):
            meter.exclude("redis.SCRIPT LOAD", "one-time: loads the Lua script into a server that lacks it")
            return execute(*args, **options)
        try:
            result = execute(*args, **options)
        except rx.NoScriptError:
            meter.exclude("redis.EVALSHA (NOSCRIPT)", "one-time: the first EVALSHA on a server without the "
                                                      "script, answered NOSCRIPT before SCRIPT LOAD")
            raise
        meter.hit(f"redis.{name}")
        return result

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        run = pipe.execute

        def execute_pipeline(*a: Any, **k: Any) -> Any:
            commands = "+".join(_name(c[0][0]).upper() for c in pipe.command_stack)
            meter.hit(f"redis.pipeline({commands})")
            return run(*a, **k)

        pipe.execute = execute_pipeline
        return pipe

    client.execute_command = execute_command
    client.pipeline = pipeline


MEMCACHE_CALLS = frozenset({"meta_set", "get", "gets", "get_many", "gets_many", "get_multi", "set", "set_many", "set_multi",
                            "add", "cas", "replace", "append", "prepend", "delete", "delete_many",
                            "delete_multi", "incr", "decr", "touch"})


class CountingMemcache:
    """A pymemcache client whose every call counts as one round trip."""

    def __init__(self, inner: Any, meter: Meter = METER):
        self._inner, self._meter = inner, meter

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in MEMCACHE_CALLS:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._meter.hit(f"memcached.{name}")
            return attr(*args, **kwargs)
        return counted


def count_methods(obj: Any, prefix: str, names: Sequence[str], meter: Meter = METER) -> None:
    """Count calls of ``obj``'s methods ``names`` (sqlite and memory: one local transaction each)."""
    for name in names:
        method = getattr(obj, name, None)
        if method is None or getattr(method, "_bench_counted", False):
            continue

        def counted(*args: Any, _method: Callable[..., Any] = method, _name: str = name, **kwargs: Any) -> Any:
            meter.hit(f"{prefix}.{_name}")
            return _method(*args, **kwargs)

        counted._bench_counted = True  # type: ignore[attr-defined]
        setattr(obj, name, counted)


STORE_METHODS = ("swap", "append", "get", "history")
TIMER_METHODS = ("add", "due", "remove", "next_due")


def count_store(store: Any, meter: Meter = METER) -> None:
    kind = type(store).__name__
    if kind == "RedisStore":
        count_redis(store.client, meter)
    elif kind == "MemcacheStore":
        store.client = CountingMemcache(store.client, meter)
    elif kind == "SqliteStore":
        count_methods(store, "sqlite", STORE_METHODS + TIMER_METHODS, meter)
    elif kind == "MemoryStore":
        count_methods(store, "memory", STORE_METHODS, meter)
    # DynamoStore: its boto3 client is counted by count_aws_clients()


# -- AWS: a botocore hook on every client the adapters build -------------------------------


def _label_call(model: Any = None, params: Any = None, context: Any = None, **_: Any) -> None:
    """before-parameter-build: name the call by its role (bus/store table, checkpoint)."""
    if context is None or model is None:
        return
    suffix = ""
    table = params.get("TableName") if isinstance(params, dict) else None
    if table:
        item = params.get("Item") or {}
        if str(item.get("pk", {}).get("S", "")).startswith("ckpt#"):
            suffix = "[checkpoint]"
        elif str(item.get("sk", {}).get("S", "")).startswith("h#"):
            suffix = "[history page]"
        elif table == BUS_TABLE:
            suffix = "[bus]"
    context["bench_suffix"] = suffix


def _body(body: Any) -> bytes:
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, dict):
        return urlencode(body, doseq=True).encode()
    return b""


def instrument_aws_client(client: Any, meter: Meter = METER) -> Any:
    if getattr(client, "_bench_counted", False) or not hasattr(client, "meta"):
        return client
    service = client.meta.service_model.service_name

    def before_call(model: Any = None, params: Any = None, context: Any = None, **_: Any) -> None:
        operation = getattr(model, "name", "?")
        label = f"{service}.{operation}{(context or {}).get('bench_suffix', '')}"
        if service == "sqs" and operation == "GetQueueUrl":
            meter.exclude(label, "once per bus: the queue URL is cached")
            return
        meter.hit(label, _body((params or {}).get("body")))

    client.meta.events.register("before-parameter-build.*.*", _label_call)
    client.meta.events.register("before-call.*.*", before_call)
    if service == "dynamodb" and meter is METER:
        UNITS.watch(client)
    client._bench_counted = True
    return client


@contextlib.contextmanager
def count_aws_clients(meter: Meter = METER) -> Iterator[None]:
    """Patch ``make_client`` wherever ``sources`` modules hold it, so every client the
    adapters build (now or lazily later) carries the counting hook."""
    import importlib
    import pkgutil

    import sources
    from sources import aws as awslib

    for info in pkgutil.iter_modules(sources.__path__):
        with contextlib.suppress(ImportError):
            importlib.import_module(f"sources.{info.name}")
    original = awslib.make_client

    def make_client(*args: Any, **kwargs: Any) -> Any:
        return instrument_aws_client(original(*args, **kwargs), meter)

    patched = [module for name, module in sys.modules.items()
               if (name == "sources" or name.startswith("sources.")) and getattr(module, "make_client", None) is original]
    for module in patched:
        module.make_client = make_client  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module in patched:
            module.make_client = original  # type: ignore[attr-defined]


@contextlib.contextmanager
def moto_in_process() -> Iterator[None]:
    from moto import mock_aws

    install_scoped_transactions()
    with mock_aws():
        yield


def install_scoped_transactions() -> None:
    """Make moto's TransactWriteItems cost what it touches (a harness speed-up only).

    moto 5 deep-copies every table a transaction names, to roll back on failure: with one
    history item per transition, the copy grows with the instance's age and a 5,000-step
    run would take hours. Here the transaction runs against a view of each table holding
    only the items it names; afterwards those items (as written, or as rolled back) go
    back into the real table. Round trips and what is sent are unchanged.
    """
    from collections import defaultdict

    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType

    original = DynamoDBBackend.transact_write_items
    if getattr(original, "_bench_scoped", False):
        return

    def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> Any:
        touched: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
        for entry in transact_items:
            op = next(iter(entry.values()))
            table = backend.tables.get(op.get("TableName"))
            key = op.get("Key") or op.get("Item") or {}
            if table is None or table.hash_key_attr not in key:
                return original(backend, transact_items)     # let moto report it
            hash_key = DynamoType(key[table.hash_key_attr])
            range_key = (DynamoType(key[table.range_key_attr])
                         if table.has_range_key and table.range_key_attr in key else None)
            touched[table.name].append((hash_key, range_key))
        real = {}
        for name, keys in touched.items():
            full = backend.tables[name]
            view = copy.copy(full)
            view.items = defaultdict(dict)
            for hash_key, range_key in keys:
                if full.has_range_key:
                    if range_key in full.items.get(hash_key, {}):
                        view.items[hash_key][range_key] = full.items[hash_key][range_key]
                elif hash_key in full.items:
                    view.items[hash_key] = full.items[hash_key]
            real[name] = full
            backend.tables[name] = view
        try:
            return original(backend, transact_items)
        finally:
            for name, full in real.items():
                after = backend.tables[name]      # the view, or moto's rolled-back copy of it
                for hash_key, range_key in touched[name]:
                    if full.has_range_key:
                        written = after.items.get(hash_key, {}).get(range_key)
                        if written is not None:
                            full.items[hash_key][range_key] = written
                        elif hash_key in full.items:
                            full.items[hash_key].pop(range_key, None)
                    else:
                        written = after.items.get(hash_key)
                        if written is not None:
                            full.items[hash_key] = written
                        else:
                            full.items.pop(hash_key, None)
                backend.tables[name] = full

    transact_write_items._bench_scoped = True  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


# ---- the counting bus ------------------------------------------------------------------


class CountingBus:
    """An in-memory bus counted as one round trip per send; it holds delays up to 900 s
    (as a standard SQS queue does), so a retry's backoff is one delayed send."""

    max_delay = 900.0

    def __init__(self, meter: Meter = METER):
        self.url = "bench://counting-bus"
        self.meter = meter
        self.queue: list[Envelope] = []

    def send(self, envelope: Envelope) -> None:
        self.meter.hit("bus.send", envelope.body.encode())
        self.queue.append(envelope)

    def send_batch(self, envelopes: Sequence[Envelope]) -> None:
        self.meter.hit("bus.send_batch", b"".join(e.body.encode() for e in envelopes))
        self.queue.extend(envelopes)

    def take(self) -> Message | None:
        return decode(self.queue.pop(0).body) if self.queue else None

    def clear(self) -> None:
        self.queue.clear()


# ---- part 1: scenarios per store ---------------------------------------------------------


@dataclass
class Scenario:
    name: str
    tally: Tally
    note: str = ""


@dataclass
class StoreRun:
    store: str
    url: str
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    skipped: str = ""
    error: str = ""

    def add(self, name: str, tally: Tally, note: str = "") -> None:
        self.scenarios[name] = Scenario(name, tally, note)


SCENARIOS = (
    ("start", "start (first message, creates the record)"),
    ("happy", "happy path (transition of a running instance)"),
    ("duplicate", "duplicate delivery (of the last consumed message)"),
    ("stale", "stale duplicate (an older step)"),
    ("failed", "failed attempt (action raises; retry sent)"),
    ("retry", "retry after the action error"),
    ("busy", "lease contention: 2nd worker finds the lease held"),
    ("contention_extra", "lease contention: extra calls until quiet"),
    ("event_client", "external event: client send_event"),
    ("event", "external event: dispatch on the waiting instance"),
)


class Harness:
    def __init__(self, wiring: Wiring, bus: CountingBus):
        self.wiring, self.bus = wiring, bus
        self.d: Dispatcher = wiring.dispatcher
        self.store = wiring.stores[0]

    def deliver(self, msg: Message) -> tuple[Tally, Outcome]:
        with METER.window() as tally:
            outcome = self.d.handle(msg)
        return tally, outcome

    def start(self, machine: str, cid: str) -> Message:
        msg = Message(machine=machine, correlation_id=cid, context={}, sent_at=time.time())
        self.bus.queue.append(Envelope(msg.encode(), cid, msg.dedup_id))
        taken = self.bus.take()
        assert taken is not None
        return taken

    def next_for(self, cid: str) -> Message:
        """The next queued message of ``cid`` (others are left in order)."""
        for index, envelope in enumerate(self.bus.queue):
            if envelope.key == cid:
                self.bus.queue.pop(index)
                return decode(envelope.body)
        raise AssertionError(f"no message queued for {cid}")

    def run_quietly(self, cid: str, upto_step: int) -> Message:
        """Handle ``cid``'s messages, uncounted, until the one for ``upto_step`` is next."""
        msg = self.start("linear", cid)
        while msg.step < upto_step:
            self.d.handle(msg)
            msg = self.next_for(cid)
        return msg

    def drain_counted(self, cid: str, limit: int = 1000) -> tuple[Tally, list[str]]:
        """Handle every queued message of ``cid`` (and those they send) until none is left."""
        total, results = Tally(), []
        for _ in range(limit):
            if not any(e.key == cid for e in self.bus.queue):
                return total, results
            tally, outcome = self.deliver(self.next_for(cid))
            total.update(tally)
            results.append(outcome.result)
        raise AssertionError(f"{cid} did not quiesce")


def store_scenarios(run: StoreRun, wiring: Wiring, bus: CountingBus, samples: int) -> None:
    h = Harness(wiring, bus)
    tag = f"rt-{RUN}-{run.store}"

    # start, then the happy path (several steps: the figure must not depend on the step)
    cid = f"{tag}-happy"
    tally, outcome = h.deliver(h.start("linear", cid))
    run.add("start", tally)
    happy: list[Tally] = []
    last = None
    for _ in range(samples):
        last = h.next_for(cid)
        tally, outcome = h.deliver(last)
        assert outcome.result == "committed", outcome
        happy.append(tally)
    totals = sorted({t.total for t in happy})
    run.add("happy", happy[-1], "" if len(totals) == 1 else f"varies {totals[0]}-{totals[-1]} over {samples} steps")

    # duplicates: the very message consumed last (re-sends the outbox), and an older one
    assert last is not None
    tally, outcome = h.deliver(last)
    assert outcome.result == "duplicate", outcome
    run.add("duplicate", tally)
    tally, outcome = h.deliver(last.evolve(step=last.step - 1))
    assert outcome.result == "duplicate", outcome
    run.add("stale", tally)
    bus.clear()

    # a failed attempt (the do action of s3 raises once), then its retry
    cid = f"{tag}-retry"
    FAILURES[(cid, "s3")] = 1
    msg = h.run_quietly(cid, 3)      # step 3's message enters s3
    tally, outcome = h.deliver(msg)
    assert outcome.result == "retrying", outcome
    run.add("failed", tally)
    tally, outcome = h.deliver(h.next_for(cid))
    assert outcome.result == "committed", outcome
    run.add("retry", tally)
    bus.clear()

    # lease contention: while worker A runs s3's action (lease held), worker B gets the
    # same message (an at-least-once redelivery); then everything runs until quiet,
    # against a clean instance run the same way.
    clean_cid, busy_cid = f"{tag}-clean", f"{tag}-busy"
    msg = h.run_quietly(clean_cid, 3)
    with METER.window() as clean:
        h.d.handle(msg)
    clean.update(h.drain_counted(clean_cid)[0])
    msg = h.run_quietly(busy_cid, 3)
    seen: dict[str, Any] = {}

    def second_worker(msg: Message = msg) -> None:
        seen["tally"], seen["outcome"] = h.deliver(msg)

    HOOKS[(busy_cid, "s3")] = second_worker
    with METER.window() as contended:       # worker A's message, B's attempt nested in it
        h.d.handle(msg)
    assert seen["outcome"].result == "busy", seen["outcome"]
    run.add("busy", seen["tally"])
    rest, results = h.drain_counted(busy_cid)
    contended.update(rest)
    extra = Tally({op: n for op, n in (contended - clean).items() if n > 0})
    run.add("contention_extra", extra,
            "B's attempt included; then: " + ", ".join(results[:6]) + (" ..." if len(results) > 6 else ""))
    bus.clear()

    # an external event on a waiting instance: the client's part, then the dispatch
    cid = f"{tag}-event"
    msg = h.start("waiter", cid)
    h.d.handle(msg)
    h.d.handle(h.next_for(cid))
    assert h.store.get(cid)["status"] == "waiting"
    client = Client(wiring=wiring)
    with METER.window() as tally:
        client.send_event(cid, "go")
    run.add("event_client", tally)
    tally, outcome = h.deliver(h.next_for(cid))
    assert outcome.result == "committed", outcome
    run.add("event", tally)
    bus.clear()


def open_store_wiring(url: str, defs: dict[str, Machine]) -> tuple[Wiring, CountingBus]:
    bus = CountingBus()
    wiring = build(defs, Settings(store=[url]), bus=bus)
    for store in wiring.stores:
        count_store(store)
    return wiring, bus


def run_stores(servers: Servers, tmp: Path, samples: int, only: Sequence[str]) -> list[StoreRun]:
    defs = machines()
    runs: list[StoreRun] = []
    for kind in only:
        run = StoreRun(kind, "")
        runs.append(run)
        with contextlib.ExitStack() as stack:
            if kind in ("redis", "memcached"):
                url = servers.url(kind)
                if url is None:
                    run.skipped = servers.missing.get(kind, "unavailable")
                    continue
            elif kind == "dynamodb":
                stack.enter_context(moto_in_process())
                url = arn("dynamodb", f"table/{STORE_TABLE}")
                from sources.dynamodb_tables import create_tables
                create_tables(url)
            elif kind == "sqlite":
                url = f"sqlite:///{tmp}/roundtrips.sqlite3"
            else:
                url = "memory://"
            run.url = url
            wiring, bus = open_store_wiring(url, defs)
            stack.callback(wiring.close)
            try:
                store_scenarios(run, wiring, bus, samples)
            except Exception as exc:  # noqa: BLE001 - report it in the table, go on with the others
                run.error = f"{type(exc).__name__}: {exc}"
    return runs


# ---- part 2: bus x store pairs through the Lambda handler --------------------------------


@dataclass
class PairRun:
    name: str
    budget: int
    messages: int = 0
    transitions: int = 0
    total: Tally = field(default_factory=Tally)
    per_message: list[Tally] = field(default_factory=list)
    skipped: str = ""
    error: str = ""


class SnsViaQueue:
    """Lambda subscribed to an SNS topic: the benchmark reads what the topic published
    through an SQS queue subscribed to it, and rebuilds the Lambda SNS record from it."""

    def __init__(self, topic_arn: str):
        import boto3

        self.topic_arn = topic_arn
        self.sqs = boto3.client("sqs", region_name=REGION)
        sns = boto3.client("sns", region_name=REGION)
        name = f"bench-sns-tap-{uuid.uuid4().hex[:6]}"
        self.queue_url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = arn("sqs", name)
        self.subscription = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn,
                                          ReturnSubscriptionArn=True)["SubscriptionArn"]

    def poll(self) -> list[dict[str, Any]]:
        reply = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        records = []
        for m in reply.get("Messages", []):
            note = json.loads(m["Body"])
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
            records.append({
                "EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": self.subscription,
                "Sns": {"Type": note.get("Type", "Notification"), "MessageId": note["MessageId"],
                        "TopicArn": note.get("TopicArn", self.topic_arn), "Subject": note.get("Subject"),
                        "Message": note["Message"], "Timestamp": note.get("Timestamp"),
                        "SignatureVersion": note.get("SignatureVersion", "1"),
                        "Signature": note.get("Signature", ""), "SigningCertUrl": note.get("SigningCertURL", ""),
                        "UnsubscribeUrl": note.get("UnsubscribeURL", ""), "MessageAttributes": {}}})
        return records

    def done(self, records: list[dict[str, Any]], failed: set[str]) -> None:
        pass


def run_pair(pair: PairRun, settings: Settings, poller_for: Callable[[Wiring], Any]) -> None:
    from config.loader import Definitions
    from fsm.app import App
    from fsm.app.intake import handle_event

    definitions = Definitions(machines=load_text(linear_yaml(), "bench/roundtrips.py:linear").machines)
    wiring = build(definitions.machines, settings)
    for store in wiring.stores:
        count_store(store)
    app = App(definitions, settings, wiring)
    try:
        poller = poller_for(wiring)
        cid = f"rt-{RUN}-pair-{uuid.uuid4().hex[:6]}"
        Client(wiring=wiring).start("linear", correlation_id=cid)
        for _ in range(200):
            record = wiring.stores[0].get(cid)
            if record and record["status"] in ("done", "failed", "cancelled"):
                break
            records = poller.poll()
            if not records:
                time.sleep(0.05)
                continue
            for one in records:           # one record per invocation: a figure per message
                with METER.window() as tally:
                    response = handle_event(app, {"Records": [one]})
                failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
                poller.done([one], failed)
                if failed:
                    raise RuntimeError(f"the handler reported {failed} failed")
                pair.per_message.append(tally)
                pair.total.update(tally)
                pair.messages += 1
        record = wiring.stores[0].get(cid)
        if not record or record["status"] != "done":
            raise RuntimeError(f"instance ended {record and record['status']!r}, not done")
        pair.transitions = record["step"]
    finally:
        wiring.close()


def run_pairs(servers: Servers) -> list[PairRun]:
    from fsm.app.worker import default_poller as open_poller

    store_arn = arn("dynamodb", f"table/{STORE_TABLE}")
    pairs: list[PairRun] = []

    def aws(pair: PairRun, build_settings: Callable[[], Settings], poller_for: Callable[[Wiring], Any]) -> None:
        pairs.append(pair)
        try:
            with moto_in_process():
                run_pair(pair, build_settings(), poller_for)
        except Exception as exc:  # noqa: BLE001
            pair.error = f"{type(exc).__name__}: {exc}"

    # SQS + redis
    pair = PairRun("SQS + redis", BUDGET["redis"])
    redis_url = servers.url("redis")
    if redis_url is None:
        pair.skipped = servers.missing.get("redis", "unavailable")
        pairs.append(pair)
    else:
        queue = arn("sqs", "fsm-bench-queue")

        def sqs_settings() -> Settings:
            from sources.sqs import SqsBus
            SqsBus(queue).create()
            return Settings(store=[redis_url], stream=[queue])

        aws(pair, sqs_settings, lambda w: open_poller(queue))

    # Kinesis + DynamoDB, with checkpoint
    stream = arn("kinesis", "stream/fsm-bench-stream")

    def kinesis_settings() -> Settings:
        from sources.dynamodb_tables import create_tables
        from sources.kinesis import KinesisBus
        create_tables(store_arn)
        KinesisBus(stream).create()
        return Settings(store=[store_arn], stream=[stream], checkpoint=[store_arn])

    aws(PairRun("Kinesis + DynamoDB (checkpoint)", BUDGET["dynamodb"]), kinesis_settings,
        lambda w: open_poller(stream, positions={}))

    def kinesis_without_checkpoint() -> Settings:
        settings = kinesis_settings()
        settings.checkpoint = []        # the record's commit still holds the sequence number
        return settings

    aws(PairRun("Kinesis + DynamoDB (no checkpoint:)", BUDGET["dynamodb"]), kinesis_without_checkpoint,
        lambda w: open_poller(stream, positions={}))

    # DynamoDB stream + DynamoDB
    bus_arn = arn("dynamodb", f"table/{BUS_TABLE}")

    def stream_settings() -> Settings:
        from sources.dynamodb_stream import DynamoStreamBus
        from sources.dynamodb_tables import create_tables
        create_tables(store_arn)
        DynamoStreamBus(bus_arn).create()
        return Settings(store=[store_arn], stream=[bus_arn])

    aws(PairRun("DynamoDB stream + DynamoDB", BUDGET["dynamodb"]), stream_settings,
        lambda w: open_poller(bus_arn, positions={}))

    # SNS + memcached
    pair = PairRun("SNS + memcached", BUDGET["memcached"])
    memcached_url = servers.url("memcached")
    if memcached_url is None:
        pair.skipped = servers.missing.get("memcached", "unavailable")
        pairs.append(pair)
    else:
        topic = arn("sns", "fsm-bench-topic")

        def sns_settings() -> Settings:
            from sources.sns import SnsBus
            SnsBus(topic).create()
            return Settings(store=[memcached_url], stream=[topic])

        aws(pair, sns_settings, lambda w: SnsViaQueue(topic))
    return pairs


# ---- --long: one instance, 5,000 transitions on DynamoDB ---------------------------------


@dataclass
class Sample:
    """One message of the long run."""

    tally: Tally
    store_bytes: int       # request payloads sent to the store
    store_shape: int       # the same with each run of digits counted as one byte
    bus_bytes: int         # the message it sent
    bus_shape: int
    seconds: float


@dataclass
class LongRun:
    steps: int
    seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    error: str = ""


def run_long(steps: int) -> LongRun:
    result = LongRun(steps)
    defs = load_text(looper_yaml(steps), "bench/roundtrips.py:looper").machines
    try:
        with moto_in_process():
            from sources.dynamodb_tables import create_tables
            url = arn("dynamodb", "table/fsm-long")
            create_tables(url)
            wiring, bus = open_store_wiring(url, defs)
            h = Harness(wiring, bus)
            cid = f"rt-{RUN}-long"
            msg: Message | None = h.start("looper", cid)
            began = time.perf_counter()
            while msg is not None:
                sent, shaped, clock = METER.bytes_sent, METER.shape_sent, time.perf_counter()
                with METER.window() as tally:
                    outcome = h.d.handle(msg)
                elapsed = time.perf_counter() - clock
                if outcome.result != "committed":
                    raise RuntimeError(f"step {msg.step}: {outcome.result} {outcome.error or ''}")
                bodies = [e.body.encode() for e in bus.queue]
                bus_bytes, bus_shape = sum(map(len, bodies)), sum(map(shape, bodies))
                result.samples.append(Sample(tally, METER.bytes_sent - sent - bus_bytes,
                                             METER.shape_sent - shaped - bus_shape, bus_bytes, bus_shape, elapsed))
                msg = bus.take()
            result.seconds = time.perf_counter() - began
            record = wiring.stores[0].get(cid)
            wiring.close()
            if not record or record["status"] != "done" or record["step"] != steps + 1:
                raise RuntimeError(f"the instance ended {record and record['status']} at step "
                                   f"{record and record['step']}, not done at {steps + 1}")
    except Exception as exc:  # noqa: BLE001
        result.error = f"{type(exc).__name__}: {exc}"
    return result


# ---- output ------------------------------------------------------------------------------


def print_store_table(runs: list[StoreRun]) -> None:
    width = max(len(title) for _, title in SCENARIOS)
    names = [r.store for r in runs]
    print(f"{'scenario':<{width}}  " + "  ".join(f"{n:>9}" for n in names))
    for key, title in SCENARIOS:
        cells = []
        for r in runs:
            scenario = r.scenarios.get(key)
            cells.append(f"{'-' if r.skipped or r.error or scenario is None else scenario.tally.total:>9}")
        print(f"{title:<{width}}  " + "  ".join(cells))
    print(f"{'budget (happy path)':<{width}}  " + "  ".join(f"{'<= ' + str(BUDGET[n]):>9}" for n in names))
    print(f"{'verdict':<{width}}  " + "  ".join(f"{verdict(r):>9}" for r in runs))
    for r in runs:
        if r.skipped:
            print(f"  {r.store}: skipped ({r.skipped})")
        if r.error:
            print(f"  {r.store}: ERROR {r.error}")
    print()
    print("breakdown (round trips = operations):")
    for key, title in SCENARIOS:
        print(f"  {title}")
        for r in runs:
            scenario = r.scenarios.get(key)
            if scenario is None:
                continue
            note = f"   [{scenario.note}]" if scenario.note else ""
            print(f"    {r.store:<10} {scenario.tally.total:>2} = {scenario.tally.describe()}{note}"
                  f"{describe_units(scenario.tally)}")


def describe_units(tally: Tally) -> str:
    """The DynamoDB write units of a window, if it wrote any."""
    if not tally.units:
        return ""
    return f"   (write units: {tally.units['table']} table + {tally.units['index']} index)"


def verdict(run: StoreRun) -> str:
    happy = run.scenarios.get("happy")
    if run.skipped:
        return "skipped"
    if happy is None:
        return "error"
    over = happy.tally.total - BUDGET[run.store]
    return "OK" if over <= 0 else f"OVER +{over}"


def print_pairs(pairs: list[PairRun]) -> None:
    width = max(len(p.name) for p in pairs)
    print(f"{'bus + store':<{width}}  {'messages':>8} {'transitions':>11} {'round trips':>11} "
          f"{'per transition':>14} {'steady message':>14} {'budget':>6}  verdict")
    for p in pairs:
        if p.skipped or p.error:
            print(f"{p.name:<{width}}  {'-':>8} {'-':>11} {'-':>11} {'-':>14} {'-':>14} {'<= ' + str(p.budget):>6}  "
                  + (f"skipped ({p.skipped})" if p.skipped else f"ERROR {p.error}"))
            continue
        steady = steady_message(p)
        over = steady.total - p.budget
        print(f"{p.name:<{width}}  {p.messages:>8} {p.transitions:>11} {p.total.total:>11} "
              f"{p.total.total / max(p.transitions, 1):>14.2f} {steady.total:>14} {'<= ' + str(p.budget):>6}  "
              f"{'OK' if over <= 0 else f'OVER +{over}'}")
    print()
    print("breakdown of a steady message (a mid-instance transition, send included):")
    for p in pairs:
        if p.per_message:
            print(f"  {p.name:<{width}}  {steady_message(p).total} = {steady_message(p).describe()}"
                  f"{describe_units(steady_message(p))}")
    print("per transition over the whole instance (the last transition sends nothing):")
    for p in pairs:
        if p.per_message:
            per = ", ".join(f"{op} {n / max(p.transitions, 1):.2f}" for op, n in sorted(p.total.items()))
            if p.total.units:
                per += (f"; DynamoDB write units {p.total.units['table'] / max(p.transitions, 1):.2f} table + "
                        f"{p.total.units['index'] / max(p.transitions, 1):.2f} index")
            print(f"  {p.name:<{width}}  {per}")


def steady_message(pair: PairRun) -> Tally:
    middle = pair.per_message[len(pair.per_message) // 2] if pair.per_message else Tally()
    return middle


def print_long(result: LongRun) -> None:
    if result.error:
        print(f"ERROR {result.error}")
        return
    samples = result.samples
    n = len(samples)
    # Windows of 100 messages when there are enough: history pages go out every few
    # commits (an amortised PutItem), so a short window's mean depends on where it falls.
    size = 100 if n > 400 else 10 if n > 40 else max(1, n // 4)
    # message 1 starts the instance and message n enters the final state (no send): the
    # windows are steady transitions near each end.
    windows = [("start", 10 if n > 40 else 1), ("end", n - 1 - size)]
    print(f"{'window':<24} {'round trips':>11} {'store bytes':>11} {'(shape)':>8} {'bus bytes':>9} "
          f"{'(shape)':>8} {'ms':>6} {'WCU table+index':>15}  breakdown per message")
    figures = []
    for label, first in windows:
        window = samples[first:first + size]
        mean = lambda values: sum(values) / len(values)
        merged = Tally()
        for sample in window:
            merged.update(sample.tally)
        row = (mean([w.tally.total for w in window]), mean([w.store_bytes for w in window]),
               mean([w.store_shape for w in window]), mean([w.bus_bytes for w in window]),
               mean([w.bus_shape for w in window]))
        figures.append(row)
        describe = " + ".join(f"{v / len(window):g} {op}" for op, v in sorted(merged.items()))
        where = f"{label} (msgs {first + 1}-{first + size})"
        wcu = f"{merged.units['table'] / len(window):.2f}+{merged.units['index'] / len(window):.2f}"
        print(f"{where:<24} {row[0]:>11.2f} {row[1]:>11.0f} {row[2]:>8.0f} {row[3]:>9.0f} {row[4]:>8.0f} "
              f"{1000 * mean([w.seconds for w in window]):>6.1f} {wcu:>15}  {describe}")
    (calls0, bytes0, shape0, bus0, bshape0), (calls1, bytes1, shape1, bus1, bshape1) = figures
    # A window may hold one history page more or less than another: that much is no growth.
    calls_grew = calls1 > calls0 + 1 / size
    shape_grew = (shape1 - shape0) + (bshape1 - bshape0) > 8 + 1024 / size  # and a float's notation varies
    print(f"{n} messages = {result.steps + 1} transitions in {result.seconds:.1f} s (ms per message: "
          "mostly moto's in-process DynamoDB)")
    print(f"round trips per transition grew: {'YES' if calls_grew else 'no'} ({calls0:g} -> {calls1:g}); "
          f"payload shape grew: {'YES' if shape_grew else 'no'} (store {shape0:.0f} -> {shape1:.0f}, "
          f"bus {bshape0:.0f} -> {bshape1:.0f}); raw bytes {bytes0 + bus0:.0f} -> {bytes1 + bus1:.0f} "
          f"(counters and timestamps gain digits)")
    print(f"verdict: {'OK' if not calls_grew and not shape_grew else 'GROWS'}")


def print_exclusions() -> None:
    if not METER.excluded:
        print("excluded: none happened")
        return
    print("excluded (not counted above):")
    for (label, why), n in sorted(METER.excluded.items()):
        print(f"  {label} x{n}: {why}")
    print("  also not counted: creating tables/queues/streams/topics, and the event source mapping's "
          "own calls (receive, delete, shard reads), done here with fsm.app.worker.default_poller")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples: proves the script works")
    parser.add_argument("--long", action="store_true", help="also one instance for --steps transitions on DynamoDB")
    parser.add_argument("--steps", type=int, default=5000, help="transitions of the --long instance")
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated subset of " + ",".join(STORES))
    parser.add_argument("--no-pairs", action="store_true", help="skip the bus x store pairs")
    parser.add_argument("--verbose", action="store_true", help="show the framework's warnings (injected "
                        "failures and contention log them)")
    args = parser.parse_args(argv)
    if not args.verbose:
        logging.getLogger("fsm").setLevel(logging.ERROR)
    only = [s for s in args.stores.split(",") if s]
    unknown = sorted(set(only) - set(STORES))
    if unknown:
        parser.error(f"unknown stores {unknown}; known: {', '.join(STORES)}")
    samples = 3 if args.quick else 6

    print(f"lambda-fsm round trips per message{' (--quick)' if args.quick else ''}: every backend call "
          "made while handling one message")
    print()
    with Servers() as servers, count_aws_clients(), tempfile.TemporaryDirectory(prefix="fsm-rt-") as tmp:
        runs = run_stores(servers, Path(tmp), samples, only)
        print("== part 1: round trips per message, scenario x store (Dispatcher.handle; counting bus, "
              "send = 1) ==")
        print_store_table(runs)
        print()
        if not args.no_pairs:
            pairs = run_pairs(servers)
            print("== part 2: bus x store through fsm.handler.handle_event, real Lambda records, "
                  "one record per invocation ==")
            print_pairs(pairs)
            print()
        if args.long:
            print(f"== --long: one instance, {args.steps} transitions, DynamoDB (moto in-process), "
                  "counting bus ==")
            print_long(run_long(args.steps))
            print()
        print_exclusions()
        cleanup_redis(servers)
    return 0


def cleanup_redis(servers: Servers) -> None:
    """A shared redis (FSM_TEST_REDIS_URL) keeps nothing of ours: our keys start with fsm:{rt-RUN-."""
    url = servers.urls.get("redis")
    if not url or not servers.shared("redis"):
        return
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"fsm:{{rt-{RUN}-*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
