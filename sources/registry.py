"""The one place that knows which services exist: URL schemes and ARN services map to
adapter classes per role, Lambda record sources (``eventSource``) to the module that reads
their records, ARN services to the poller ``fsm worker`` reads them with. Everything is
imported lazily, so a configuration loads only the SDKs it uses.

``memory://``, ``sqlite:///path``, ``redis://host:port/db``, ``rediss://...``,
``memcached://host:port``, ``arn:aws:dynamodb:region:account:table/NAME``,
``arn:aws:sqs:...``, ``arn:aws:kinesis:...``, ``arn:aws:sns:...``,
``arn:aws:events:...:event-bus/NAME``.

A service module that reads Lambda records provides ``EVENT_SOURCE``, ``item_id(record)``,
``ordered(record)`` and ``read_record(record) -> Delivery | None``; optionally
``ASYNCHRONOUS = True`` (the invocation is retried, not the record) and
``retry_later(records, endpoint_url=, aws=)`` (a failed record comes back soon).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from fsm.errors import MissingDependency, UnknownBackend

# role -> {scheme or ARN service -> "module:Class"}
ADAPTERS: dict[str, dict[str, str]] = {
    "store": {
        "memory": "sources.memory:MemoryStore",
        "sqlite": "sources.sqlite:SqliteStore",
        "redis": "sources.redis:RedisStore",
        "rediss": "sources.redis:RedisStore",
        "memcached": "sources.memcache:MemcacheStore",
        "dynamodb": "sources.dynamodb:DynamoStore",
    },
    "timers": {
        "memory": "sources.memory:MemoryTimers",
        "sqlite": "sources.sqlite:SqliteStore",
        "redis": "sources.redis:RedisTimers",
        "rediss": "sources.redis:RedisTimers",
        "dynamodb": "sources.dynamodb_timers:DynamoTimers",
    },
    "bus": {
        "memory": "sources.memory:MemoryBus",
        "sqs": "sources.sqs:SqsBus",
        "kinesis": "sources.kinesis:KinesisBus",
        "sns": "sources.sns:SnsBus",
        "dynamodb": "sources.dynamodb_stream:DynamoStreamBus",
        "events": "sources.eventbridge:EventBridgeBus",
    },
    "payloads": {
        "memory": "sources.memory:MemoryPayloads",
        "s3": "sources.s3:S3Payloads",
    },
    "poller": {
        "sqs": "sources.sqs:SqsPoller",
        "kinesis": "sources.kinesis:KinesisPoller",
        "dynamodb": "sources.dynamodb_stream:DynamoStreamPoller",
    },
}
# The largest payload each service takes, in bytes (its documented limit): a DynamoDB item
# (a record, or a DynamoDB-stream bus message), an SQS, SNS or EventBridge message, a
# Kinesis record, a memcached item (the server's default `-I`). redis, sqlite and the
# in-process backends have no limit a context reaches first.
SIZE_LIMITS: dict[str, int] = {
    "dynamodb": 400 * 1024,
    "memcached": 1024 * 1024,
    "sqs": 256 * 1024,
    "sns": 256 * 1024,
    "events": 256 * 1024,
    "kinesis": 1024 * 1024,
}
# Lambda record ``eventSource`` (SNS says ``EventSource``) -> the module reading its records.
RECORD_SOURCES: dict[str, str] = {
    "aws:sqs": "sources.sqs",
    "aws:sns": "sources.sns",
    "aws:kinesis": "sources.kinesis",
    "aws:dynamodb": "sources.dynamodb_stream",
}
# Events that arrive whole, not as Records: EventBridge (messages a rule delivers).
EVENT_READERS = {"eventbridge": "sources.eventbridge", "ecs": "sources.ecs"}
EXTRAS = {"redis": "redis", "pymemcache": "memcache", "boto3": "aws", "botocore": "aws"}


def scheme_of(name: str) -> str:
    """``redis://h`` -> ``redis``; ``arn:aws:sqs:...`` -> ``sqs``."""
    if name.startswith("arn:"):
        parts = name.split(":")
        return parts[2] if len(parts) > 5 else ""
    return name.split("://", 1)[0] if "://" in name else ""


def adapter_class(role: str, name: str) -> type:
    table = ADAPTERS[role]
    scheme = scheme_of(name)
    if scheme not in table:
        known = ", ".join(sorted(table))
        close = difflib.get_close_matches(scheme or name.partition(":")[0], list(table), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UnknownBackend(f"no {role} adapter for {name!r}{hint}; known: {known} "
                             "(URL schemes like redis://, or ARNs like arn:aws:sqs:...)")
    module_name, class_name = table[scheme].split(":")
    return getattr(_import(module_name, name), class_name)


def size_limit(names: list[str] | tuple[str, ...]) -> int:
    """The largest payload every one of ``names`` takes (0: no limit)."""
    limits = [SIZE_LIMITS[scheme_of(n)] for n in names if scheme_of(n) in SIZE_LIMITS]
    return min(limits) if limits else 0


def has_adapter(role: str, name: str) -> bool:
    return scheme_of(name) in ADAPTERS[role]


def record_reader(event_source: str) -> Any | None:
    """The module reading Lambda records from ``event_source``; ``None`` if unknown."""
    module_name = RECORD_SOURCES.get(event_source)
    return _import(module_name, event_source) if module_name else None


def event_reader(name: str) -> Any:
    return _import(EVENT_READERS[name], name)


def _import(module_name: str, wanted_by: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in EXTRAS:
            raise MissingDependency(f"{wanted_by} needs the {missing!r} package: "
                                    f"pip install 'lambda-fsm[{EXTRAS[missing]}]'") from exc
        raise


def open_adapter(role: str, name: str, **options: Any) -> Any:
    return adapter_class(role, name)(name, **options)
