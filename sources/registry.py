"""One alias table from URL scheme / ARN service to adapter, imported lazily.

``memory://``, ``sqlite:///path``, ``redis://host:port/db``, ``rediss://...``,
``memcached://host:port``, ``arn:aws:dynamodb:region:account:table/NAME``,
``arn:aws:sqs:...``, ``arn:aws:kinesis:...``, ``arn:aws:sns:...``.
"""

from __future__ import annotations

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
        "dynamodb": "sources.dynamodb:DynamoTimers",
    },
    "bus": {
        "memory": "sources.memory:MemoryBus",
        "sqs": "sources.sqs:SqsBus",
        "kinesis": "sources.kinesis:KinesisBus",
        "sns": "sources.sns:SnsBus",
        "dynamodb": "sources.dynamodb_stream:DynamoStreamBus",
    },
}
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
        raise UnknownBackend(f"no {role} adapter for {name!r}; known: {known} "
                             "(URL schemes like redis://, or ARNs like arn:aws:sqs:...)")
    module_name, class_name = table[scheme].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in EXTRAS:
            raise MissingDependency(f"{name} needs the {missing!r} package: "
                                    f"pip install 'lambda-fsm[{EXTRAS[missing]}]'") from exc
        raise
    return getattr(module, class_name)


def open_adapter(role: str, name: str, **options: Any) -> Any:
    return adapter_class(role, name)(name, **options)
