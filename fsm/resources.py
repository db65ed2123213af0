"""``fsm create-resources``: every queue, stream, topic and table the settings name."""

from __future__ import annotations

from collections.abc import Iterator

from config.settings import Settings
from fsm.errors import InvalidDefinition


def create_resources(settings: Settings) -> Iterator[str]:
    from sources.dynamodb import create_tables
    from sources.registry import adapter_class

    tables = [n for n in settings.store + settings.checkpoint + settings.retry if n.startswith("arn:aws:dynamodb:")]
    both = sorted(set(tables) & set(settings.stream))
    if both:
        # The stream's table is keyed by message alone and streams new items; a store
        # table is keyed by instance and item kind. One table cannot be both.
        raise InvalidDefinition(f"settings: {', '.join(both)} is named as a `stream:` and as a table of "
                                "`store:`, `checkpoint:` or `retry:`; give the stream a table of its own")
    for name in dict.fromkeys(tables):
        create_tables(name, endpoint_url=settings.endpoints.get(name), aws=settings.aws or None)
        yield f"table   {name}"
    buses = settings.stream + settings.retry + settings.dead_letter + settings.notify
    for name in dict.fromkeys(n for n in buses if n.startswith("arn:") and n not in tables):
        bus = adapter_class("bus", name)(name, endpoint_url=settings.endpoints.get(name), aws=settings.aws or None)
        bus.create()
        yield f"{bus.__class__.__name__.replace('Bus', '').lower():<7} {name}"
    for name in settings.store:
        if not name.startswith("arn:"):
            yield f"store   {name} (nothing to create)"
