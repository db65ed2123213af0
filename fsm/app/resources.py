"""``fsm create-resources``: every queue, stream, topic, event bus and table the settings
name, each made by its service's adapter (``create()``); safe to run twice."""

from __future__ import annotations

from collections.abc import Iterator

from config.settings import Settings

from ..errors import InvalidDefinition


def create_resources(settings: Settings) -> Iterator[str]:
    from sources.registry import adapter_class, scheme_of

    def opened(role: str, name: str):
        return adapter_class(role, name)(name, endpoint_url=settings.endpoints.get(name), aws=settings.aws or None)

    tables = [n for n in settings.store + settings.checkpoint + settings.retry if scheme_of(n) == "dynamodb"]
    both = sorted(set(tables) & set(settings.stream))
    if both:
        # The stream's table is keyed by message alone and streams new items; a store
        # table is keyed by instance and item kind. One table cannot be both.
        raise InvalidDefinition(f"settings: {', '.join(both)} is named as a `stream:` and as a table of "
                                "`store:`, `checkpoint:` or `retry:`; give the stream a table of its own")
    for name in dict.fromkeys(tables):
        opened("timers", name).create()   # one table holds records, timers and checkpoints
        yield f"table   {name}"
    buses = settings.stream + settings.retry + settings.dead_letter + settings.notify
    for name in dict.fromkeys(n for n in buses if n.startswith("arn:") and n not in tables):
        bus = opened("bus", name)
        bus.create()
        note = f" (rule {bus.rule}: point it at your function or a queue)" if hasattr(bus, "rule") else ""
        yield f"{scheme_of(name):<7} {name}{note}"
    offload = settings.offload.get("store", "")
    if offload.startswith("s3://"):
        adapter_class("payloads", offload)(offload, endpoint_url=settings.endpoints.get(offload),
                                           aws=settings.aws or None).create(settings.history_retention_days)
        kept = f"objects expire after {settings.history_retention_days:g} days" \
            if settings.history_retention_days else "objects kept (no history_retention_days)"
        yield f"s3      {offload} ({kept})"
    for name in settings.store:
        if not name.startswith("arn:"):
            yield f"store   {name} (nothing to create)"
