"""YAML that remembers where each value came from, so errors can say FILE:LINE.

It also refuses, before building anything, the YAML that would take the process down:
aliases that multiply a few hundred bytes into billions of values (a "billion laughs"
bomb), nesting deep enough to exhaust Python's recursion limit, integers too long to
print. Each is a located :class:`Refused` error in milliseconds, raised while reading a
machines file or a settings file alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

# Machines files nest about ten levels (machines, states, transitions, action params);
# a hundred leaves room for deep params and keeps the recursive builders far below
# Python's recursion limit.
MAX_DEPTH = 100
# What `*alias` may add to a document beyond the values written in it. A merge key
# (`<<: *defaults`) in every one of a thousand states adds a few thousand; a bomb adds
# billions, and is refused before it expands.
MAX_ALIAS_GROWTH = 100_000
# Longer integers cannot be printed (Python refuses str() beyond 4300 digits) and cost
# quadratic time to convert; no setting or parameter needs one.
MAX_INT_DIGITS = 1000


class Refused(yaml.constructor.ConstructorError):
    """A problem this module found, not PyYAML. Its message names limits and keys, never
    a value from the file, so it may be shown for any file."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(None, None, problem, mark)


class Located(dict):
    """A mapping that knows its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(str(key), self.line)


class LocatedList(list):
    """A sequence that knows its own line and the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]

    def line_at(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class _Loader(yaml.SafeLoader):
    """SafeLoader with a depth limit while composing and a size check before building."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # PyYAML composes recursively: 5,000 nested `[` would end in a RecursionError.
        if self._depth >= MAX_DEPTH:
            raise Refused(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, token_class: type) -> None:
        # Stopped in the scanner, not only in the composer: each open `[` or `{` keeps a
        # possible key pending, and rescanning those made 5,000 of them cost seconds.
        if self.flow_level >= MAX_DEPTH:
            raise Refused(f"nested more than {MAX_DEPTH} levels deep", self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def construct_document(self, node: yaml.Node) -> Any:
        check_expansion(node)
        return super().construct_document(node)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_DIGITS:
            raise Refused(f"an integer longer than {MAX_INT_DIGITS} characters", node.start_mark)
        value = super().construct_yaml_int(node)
        if abs(value).bit_length() > MAX_INT_DIGITS * 3.33:  # a hex or base-60 one: ~10**MAX_INT_DIGITS
            raise Refused(f"an integer of more than {MAX_INT_DIGITS} digits", node.start_mark)
        return value


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


def check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases make it too big or too deep once expanded.

    An alias is the anchored node itself, shared, so the composed graph stays small; but
    everything downstream (merge keys, ``plain``, an error message's ``repr``) walks it as
    a tree. Sizes and depths are computed once per node (a bomb has a few dozen nodes),
    iteratively, since a chain of aliases can be deeper than the written nesting.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    todo: list[tuple[yaml.Node, bool]] = [(root, False)]
    while todo:
        node, children_done = todo.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            kids = list(_children(node))
            size[key] = 1 + sum(size[id(kid)] for kid in kids)
            depth[key] = 1 + max((depth[id(kid)] for kid in kids), default=0)
            if depth[key] > MAX_DEPTH:
                raise Refused(f"aliases nest this value more than {MAX_DEPTH} levels deep", node.start_mark)
            # Written out, this value could hold at most the nodes seen so far (its own are
            # among them): all beyond is what aliases added, checked here at the innermost
            # value that crosses the limit, so the message points at the line that multiplies.
            if size[key] - len(size) > MAX_ALIAS_GROWTH:
                raise Refused(f"aliases expand this value to more than {MAX_ALIAS_GROWTH:,} values beyond "
                              "those written (an alias bomb?); anchor fewer levels", node.start_mark)
        elif key in on_path:
            raise Refused("an alias refers to a value that contains it", node.start_mark)
        elif key not in size:
            on_path.add(key)
            todo.append((node, True))
            todo.extend((kid, False) for kid in _children(node))


def _clipped(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mapping(loader: _Loader, node: yaml.MappingNode) -> Located:
    own = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # `<<: *anchor` merge keys, as SafeLoader does
    merged = len(node.value) - own  # flatten_mapping puts merged pairs first
    result = Located()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    own_keys: set[Any] = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in own_keys
        except TypeError:
            raise Refused("found an unhashable key (a list or mapping used as a key)", key_node.start_mark) from None
        if duplicate:
            # PyYAML silently keeps the last one; a validator must not hide the first.
            raise Refused(f"duplicate key {_clipped(repr(key))} (first at line {result.line_of(key)})",
                          key_node.start_mark)
        if index >= merged:  # a key written here may override a merged one, but not itself
            own_keys.add(key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[str(key)] = key_node.start_mark.line + 1
    return result


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def load(text: str) -> Any:
    """Parse YAML; raises ``yaml.YAMLError`` (with a mark) on bad syntax, and
    :class:`Refused` on input built to exhaust memory, time or the stack."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def plain(value: Any) -> Any:
    """The same data as ordinary dicts and lists, for code outside the loader."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
