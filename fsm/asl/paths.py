"""JSONPath as Amazon States Language uses it. Pure: no I/O.

A path starts at ``$`` (the state's data) or ``$$`` (the context object). Steps:
``.name`` and ``['name']`` (several names: ``['a','b']``), ``[0]`` (negative counts from
the end), ``[*]`` and ``.*``, slices ``[1:3]``, ``[::2]``, recursive descent ``..name``,
``..*``, ``..[0]``, and filters ``[?(@.price < 10 && @.kind == 'book')]`` (``==``, ``!=``,
``<``, ``<=``, ``>``, ``>=``, ``&&``, ``||``, ``!``, parentheses, and a bare ``@.x`` for
"present and not false/null").

As in the Jayway implementation Step Functions runs: a *definite* path (names and
indices only) selects one value, and a step that finds nothing is an error; any other
path selects a list of every match, which may be empty. A *reference path* (``ResultPath``)
is a definite path into ``$``; :func:`put` writes through one, creating the objects it
is missing.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from typing import Any


class PathError(ValueError):
    """A path that does not parse (``at`` is the character where it went wrong)."""

    def __init__(self, path: str, reason: str, at: int = -1):
        self.path, self.reason, self.at = path, reason, at
        where = f" at character {at + 1}" if at >= 0 else ""
        super().__init__(f"invalid JSONPath {path!r}{where}: {reason}")


class NotFound(LookupError):
    """A definite path whose step found nothing (or a non-container on the way)."""

    def __init__(self, path: str, detail: str):
        self.path = path
        super().__init__(f"the JSONPath {path!r} could not be found in the input: {detail}")


# A step: ("name", key) ("index", int) ("names", [keys]) ("indices", [ints]) ("all",)
# ("slice", start, stop, step) ("filter", expr) ("deep", step): descent, then the step.
Step = tuple


@dataclass(frozen=True)
class Path:
    text: str
    context: bool              # starts at $$ (the context object)
    steps: tuple[Step, ...]

    @property
    def definite(self) -> bool:
        return all(s[0] in ("name", "index") for s in self.steps)

    def get(self, data: Any, context_object: Any = None) -> Any:
        """The value a definite path selects (:class:`NotFound` when absent), or the list
        of every match of an indefinite one."""
        root = context_object if self.context else data
        if self.definite:
            node = root
            for step in self.steps:
                node = _definite(self, node, step)
            return node
        nodes = [root]
        for step in self.steps:
            nodes = [found for node in nodes for found in _select(node, step, root)]
        return nodes

    def exists(self, data: Any, context_object: Any = None) -> bool:
        try:
            found = self.get(data, context_object)
        except NotFound:
            return False
        return self.definite or bool(found)


_NAME = re.compile(r"[^.\[\]()'\"\s,]+")
_INT = re.compile(r"-?\d+")


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Path:
    """Parse ``$...`` or ``$$...``; :class:`PathError` says what is wrong and where."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise PathError(str(text), "a path starts with '$'", 0)
    context = text.startswith("$$")
    parser = _Parser(text, 2 if context else 1)
    steps = parser.steps()
    return Path(text, context, tuple(steps))


def reference(text: str) -> Path:
    """Parse a reference path (``ResultPath``): ``$`` and names and indices only."""
    path = parse(text)
    if path.context:
        raise PathError(text, "a reference path starts at '$', not at the context object '$$'", 0)
    if not path.definite:
        raise PathError(text, "a reference path holds only names and indices (no '*', '..', slices "
                              "or filters)")
    return path


def checked(text: str, where: str, problems: list[str], reference_only: bool = False) -> Path | None:
    """``parse(text)`` (``reference(text)``), or None with the reason added to
    ``problems`` after ``where`` (the file, line and field)."""
    try:
        return reference(text) if reference_only else parse(text)
    except PathError as exc:
        problems.append(f"{where}: {exc}")
        return None


class _Parser:
    def __init__(self, text: str, pos: int):
        self.text, self.pos = text, pos

    def fail(self, reason: str) -> PathError:
        return PathError(self.text, reason, self.pos)

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def steps(self) -> list[Step]:
        steps: list[Step] = []
        while self.pos < len(self.text):
            if self.peek(2) == "..":
                self.pos += 2
                if self.peek() == "[":
                    steps.append(("deep", self.bracket()))
                else:
                    steps.append(("deep", self.dotted()))
            elif self.peek() == ".":
                self.pos += 1
                steps.append(self.dotted())
            elif self.peek() == "[":
                steps.append(self.bracket())
            else:
                raise self.fail("expected '.', '..' or '['")
        return steps

    def dotted(self) -> Step:
        if self.peek() == "*":
            self.pos += 1
            return ("all",)
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a field name")
        self.pos = match.end()
        return ("name", match.group(0))

    def bracket(self) -> Step:
        self.pos += 1  # [
        self.space()
        if self.peek() == "*":
            self.pos += 1
            step: Step = ("all",)
        elif self.peek() == "?":
            self.pos += 1
            if self.peek() != "(":
                raise self.fail("a filter is written [?(...)]")
            self.pos += 1
            expr = self.expr()
            self.space()
            if self.peek() != ")":
                raise self.fail("expected ')' closing the filter")
            self.pos += 1
            step = ("filter", expr)
        elif self.peek() in ("'", '"'):
            names = [self.string()]
            while self.comma():
                names.append(self.string())
            step = ("name", names[0]) if len(names) == 1 else ("names", names)
        else:
            step = self.numbers()
        self.space()
        if self.peek() != "]":
            raise self.fail("expected ']'")
        self.pos += 1
        return step

    def numbers(self) -> Step:
        parts: list[int | None] = []
        current = self.integer(optional=True)
        if self.peek() == ":":
            parts.append(current)
            while self.peek() == ":":
                self.pos += 1
                parts.append(self.integer(optional=True))
            if len(parts) > 3:
                raise self.fail("a slice is [start:stop:step]")
            start, stop, step = (parts + [None, None])[:3]
            if step == 0:
                raise self.fail("a slice's step cannot be 0")
            return ("slice", start, stop, step)
        if current is None:
            raise self.fail("expected an index, a quoted name, '*', a slice or a filter")
        indices = [current]
        while self.comma():
            value = self.integer(optional=False)
            assert value is not None
            indices.append(value)
        return ("index", indices[0]) if len(indices) == 1 else ("indices", indices)

    def integer(self, optional: bool) -> int | None:
        self.space()
        match = _INT.match(self.text, self.pos)
        if not match:
            if optional:
                return None
            raise self.fail("expected an integer")
        self.pos = match.end()
        self.space()
        return int(match.group(0))

    def comma(self) -> bool:
        self.space()
        if self.peek() == ",":
            self.pos += 1
            self.space()
            return True
        return False

    def space(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def string(self) -> str:
        quote = self.peek()
        self.pos += 1
        out = []
        while self.pos < len(self.text) and self.peek() != quote:
            if self.peek() == "\\" and self.pos + 1 < len(self.text):
                self.pos += 1
            out.append(self.peek())
            self.pos += 1
        if self.peek() != quote:
            raise self.fail("unterminated quoted name")
        self.pos += 1
        return "".join(out)

    # -- filter expressions: or := and ('||' and)*; and := unary ('&&' unary)* ----------

    def expr(self) -> tuple:
        left = self.conj()
        while self.op("||"):
            left = ("or", left, self.conj())
        return left

    def conj(self) -> tuple:
        left = self.unary()
        while self.op("&&"):
            left = ("and", left, self.unary())
        return left

    def unary(self) -> tuple:
        self.space()
        if self.peek() == "!" and self.peek(2) != "!=":
            self.pos += 1
            return ("not", self.unary())
        if self.peek() == "(":
            self.pos += 1
            inner = self.expr()
            self.space()
            if self.peek() != ")":
                raise self.fail("expected ')'")
            self.pos += 1
            return inner
        left = self.operand()
        self.space()
        for op in ("==", "!=", "<=", ">=", "<", ">"):
            if self.op(op):
                return ("cmp", op, left, self.operand())
        if left[0] != "path":
            raise self.fail("a filter compares values or tests a path (@.x)")
        return ("truthy", left)

    def op(self, token: str) -> bool:
        self.space()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def operand(self) -> tuple:
        self.space()
        char = self.peek()
        if char in ("@", "$"):
            start = self.pos
            self.pos += 2 if self.peek(2) == "$$" else 1
            steps: list[Step] = []
            while self.peek() in (".", "["):
                if self.peek(2) == "..":
                    raise self.fail("no recursive descent inside a filter")
                if self.peek() == ".":
                    self.pos += 1
                    steps.append(self.dotted())
                else:
                    steps.append(self.bracket())
            return ("path", self.text[start], tuple(steps))
        if char in ("'", '"'):
            return ("value", self.string())
        match = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?").match(self.text, self.pos)
        if match:
            self.pos = match.end()
            text = match.group(0)
            return ("value", float(text) if any(c in text for c in ".eE") else int(text))
        for word, value in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return ("value", value)
        raise self.fail("expected @.path, a number, a quoted string, true, false or null")


# -- evaluation ---------------------------------------------------------------------


def _definite(path: Path, node: Any, step: Step) -> Any:
    kind, key = step[0], step[1]
    if kind == "name":
        if isinstance(node, dict) and key in node:
            return node[key]
        what = "no field" if isinstance(node, dict) else f"a {json_type(node)} has no field"
        raise NotFound(path.text, f"{what} {key!r}")
    if isinstance(node, list) and -len(node) <= key < len(node):
        return node[key]
    what = f"index {key} is out of range" if isinstance(node, list) else f"a {json_type(node)} has no index {key}"
    raise NotFound(path.text, what)


def _select(node: Any, step: Step, root: Any) -> list[Any]:
    kind = step[0]
    if kind == "name":
        return [node[step[1]]] if isinstance(node, dict) and step[1] in node else []
    if kind == "names":
        return [node[k] for k in step[1] if k in node] if isinstance(node, dict) else []
    if kind == "index":
        return [node[step[1]]] if isinstance(node, list) and -len(node) <= step[1] < len(node) else []
    if kind == "indices":
        return [node[i] for i in step[1] if -len(node) <= i < len(node)] if isinstance(node, list) else []
    if kind == "all":
        return list(node.values()) if isinstance(node, dict) else list(node) if isinstance(node, list) else []
    if kind == "slice":
        return node[slice(step[1], step[2], step[3])] if isinstance(node, list) else []
    if kind == "filter":
        items = node if isinstance(node, list) else list(node.values()) if isinstance(node, dict) else []
        return [item for item in items if _test(step[1], item, root)]
    # deep: the step applied to this node and to every node below it, in document order
    found: list[Any] = []
    for each in _walk(node):
        found += _select(each, step[1], root)
    return found


def _walk(node: Any) -> list[Any]:
    found = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        found += _walk(child)
    return found


_MISSING = object()


def _operand(expr: tuple, item: Any, root: Any) -> Any:
    if expr[0] == "value":
        return expr[1]
    node = item if expr[1] == "@" else root
    for step in expr[2]:
        found = _select(node, step, root)
        if not found:
            return _MISSING
        node = found[0]
    return node


def _test(expr: tuple, item: Any, root: Any) -> bool:
    kind = expr[0]
    if kind == "or":
        return _test(expr[1], item, root) or _test(expr[2], item, root)
    if kind == "and":
        return _test(expr[1], item, root) and _test(expr[2], item, root)
    if kind == "not":
        return not _test(expr[1], item, root)
    if kind == "truthy":
        value = _operand(expr[1], item, root)
        return value is not _MISSING and value is not None and value is not False
    op, left, right = expr[1], _operand(expr[2], item, root), _operand(expr[3], item, root)
    if left is _MISSING or right is _MISSING:
        return op == "!=" and (left is _MISSING) != (right is _MISSING)
    if op in ("==", "!="):
        same = left == right and (isinstance(left, bool) == isinstance(right, bool))
        return same if op == "==" else not same
    comparable = (is_number(left) and is_number(right)) or (isinstance(left, str) and isinstance(right, str))
    if not comparable:
        return False
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if is_number(value):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


# -- writing ------------------------------------------------------------------------


class NoPlace(ValueError):
    """A reference path that cannot be written in this document."""


def put(document: Any, path: Path, value: Any) -> Any:
    """``document`` with ``value`` at ``path`` (a reference path), the document itself
    left unchanged. Missing objects on the way are created; a step into something that
    is not an object (or an index outside an array) is :class:`NoPlace`."""
    if not path.steps:
        return value
    root = copy.copy(document)
    node = root
    for depth, step in enumerate(path.steps):
        last = depth == len(path.steps) - 1
        key = step[1]
        if step[0] == "name":
            if not isinstance(node, dict):
                raise NoPlace(f"{_prefix(path, depth)} is a {json_type(node)}, not an object, so it has no "
                              f"field {key!r} to set")
            if last:
                node[key] = value
                break
            child = node.get(key)
            child = {} if key not in node else copy.copy(child)
            node[key] = child
        else:
            if not isinstance(node, list) or not -len(node) <= key < len(node):
                raise NoPlace(f"{_prefix(path, depth)} has no index {key}")
            if last:
                node[key] = value
                break
            child = node[key] = copy.copy(node[key])
        node = child
    return root


def _prefix(path: Path, depth: int) -> str:
    text = "$"
    for step in path.steps[:depth]:
        text += f".{step[1]}" if step[0] == "name" else f"[{step[1]}]"
    return text
