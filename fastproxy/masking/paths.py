"""Mask field paths: their syntax, and the tree they compile into.

Syntax
------
A path names values inside a JSON document, starting at its root:

* ``ssn`` -- member ``ssn`` of the root object;
* ``owner.email`` -- member ``email`` of the object in member ``owner``;
* ``items[*].card.number`` -- in every element of the array ``items``, ``card.number``;
* ``[*].ssn`` -- ``ssn`` in every element of a root array; ``tags[*]`` -- every element of ``tags``;
* ``matrix[*][*]`` -- every element of every array in ``matrix``;
* ``["a.b"].c`` -- a key that holds ``.``, ``[``, ``]``, ``"``, ``*`` or surrounding spaces is written
  as a JSON string in brackets.

A bare key is any run of characters other than ``.``, ``[``, ``]`` and ``"``; it may not be ``*``
(``[*]`` is the only wildcard: objects have none) nor begin or end with whitespace (a typo far more
often than a key). Array indices (``[0]``) are refused: masking element 0 of an array and leaking
element 1 is never what is meant.

Matching
--------
Paths are exact: ``ssn`` matches the root's member, not a member of a root array's elements (write
``[*].ssn`` for that) nor one deeper down. A path whose intermediate value is missing or of the
wrong type (``owner.email`` where ``owner`` is a string, ``items[*]`` where ``items`` is an object)
matches nothing. A matched value is replaced whatever its type (string, number, object, array,
``null``), and each replaced value counts once: ``items[*]`` over a 3-element array counts 3, and
``owner`` replaces the whole object in one.

Theory of operation
-------------------
All of a mask's paths compile into one tree, walked once per document: a node holds the member
names that end a path there (``leaves``: replaced), the members a path continues through
(``inner``: walked) and what ``[*]`` leads to (``each``). When one path is a prefix of another
(``owner`` and ``owner.email``) the shorter wins, as replacing the whole value hides everything in
it; the longer path is dropped at compile time, so the walk never descends into a replaced value.
The walk visits only what the paths name -- its cost follows the paths and the arrays they cross,
not the size of the document -- and its depth is that of the longest path, never the document's.

The tree is then turned into Python source, one nested ``if``/``for`` block per node, and compiled
(:func:`compile_walker`): a walk over a typical mask then costs a third of the generic recursive
walk (:func:`replace_matches`: a call and two loops per node visited). The source holds member
names only as ``repr()`` literals, which Python reads back as exactly that string whatever it
holds, so a path cannot inject code. A tree too deep for the compiler's block nesting limit (20
``for`` loops) falls back to the generic walk, which is also the reference the tests hold the
generated code to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson

__all__ = [
    "EACH",
    "PathNode",
    "Segment",
    "Walker",
    "compile_paths",
    "compile_walker",
    "parse_path",
    "replace_matches",
]

# A parsed path is a tuple of segments: a member name, or EACH for ``[*]``.
EACH: Final = None
Segment = str | None

_SPECIAL = frozenset('.[]"')


def _error(text: str, position: int, problem: str) -> ValueError:
    return ValueError(f"mask path {text!r}: {problem} (at character {position + 1})")


def parse_path(text: str) -> tuple[Segment, ...]:
    """The segments of ``text``; ValueError naming the path, the problem and where it is."""
    if not isinstance(text, str):
        raise ValueError(f"mask path {text!r}: not a string")
    if not text:
        raise ValueError("mask path '': empty")
    segments: list[Segment] = []
    i = 0
    n = len(text)
    expect_key = True  # at the start or after ".": a member (bare or bracketed) must follow
    while i < n:
        char = text[i]
        if char == "[":
            if text.startswith("[*]", i):
                if expect_key and segments:
                    raise _error(text, i - 1, "'.' must be followed by a key: write a[*], not a.[*]")
                segments.append(EACH)
                i += 3
            elif text.startswith('["', i):
                key, i = _quoted(text, i)
                segments.append(key)
            else:
                close = text.find("]", i)
                inside = text[i + 1 : close] if close != -1 else text[i + 1 :]
                if inside.strip().lstrip("-").isdigit():
                    raise _error(text, i, f"array index [{inside}]: only [*] (every element) is supported")
                raise _error(text, i, 'expected [*] or ["key"]')
            expect_key = False
        elif char == ".":
            if expect_key:
                raise _error(text, i, "empty key")
            i += 1
            expect_key = True
            if i == n:
                raise _error(text, i - 1, "empty key after the last '.'")
        elif char in _SPECIAL:
            raise _error(text, i, f"unexpected {char!r}")
        else:
            if not expect_key:
                raise _error(text, i, "expected '.', '[*]' or '[\"key\"]' after ']'")
            start = i
            while i < n and text[i] not in _SPECIAL:
                i += 1
            key = text[start:i]
            if key == "*":
                raise _error(text, start, "'*' is not a wildcard for members: use [*] for array elements")
            if key != key.strip():
                raise _error(text, start, f'key {key!r} begins or ends with whitespace (write ["..."])')
            segments.append(key)
            expect_key = False
    return tuple(segments)


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The key in ``["..."]`` at ``start`` (a JSON string) and the index after the ``]``."""
    i = start + 2
    n = len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            break
        i += 1
    else:
        raise _error(text, start, 'unterminated ["key"]')
    if not text.startswith("]", i + 1):
        raise _error(text, i + 1, 'expected ] after ["key"]')
    try:
        key = orjson.loads(text[start + 1 : i + 1])
    except orjson.JSONDecodeError:
        raise _error(text, start, 'the key in ["..."] is not a valid JSON string') from None
    return str(key), i + 2


class PathNode:
    """One point of the compiled tree; see the module's theory of operation."""

    __slots__ = ("each", "each_leaf", "inner", "leaves")

    def __init__(self) -> None:
        self.leaves: tuple[str, ...] = ()  # members replaced here
        self.inner: tuple[tuple[str, PathNode], ...] = ()  # members walked into
        self.each: PathNode | None = None  # where [*] leads, when it does not end a path
        self.each_leaf = False  # a path ends in [*] here: every element is replaced


class _Builder:
    __slots__ = ("each", "each_leaf", "inner", "leaves")

    def __init__(self) -> None:
        self.leaves: set[str] = set()
        self.inner: dict[str, _Builder] = {}
        self.each: _Builder | None = None
        self.each_leaf = False

    def add(self, segments: Sequence[Segment]) -> None:
        node = self
        last = len(segments) - 1
        for depth, segment in enumerate(segments):
            if segment is EACH:
                if node.each_leaf:
                    return  # a shorter path already replaces every element
                if depth == last:
                    node.each_leaf = True
                    node.each = None
                    return
                if node.each is None:
                    node.each = _Builder()
                node = node.each
            else:
                if segment in node.leaves:
                    return  # a shorter path already replaces this member
                if depth == last:
                    node.leaves.add(segment)
                    node.inner.pop(segment, None)
                    return
                node = node.inner.setdefault(segment, _Builder())

    def freeze(self) -> PathNode:
        node = PathNode()
        node.leaves = tuple(sorted(self.leaves))
        node.inner = tuple((key, child.freeze()) for key, child in sorted(self.inner.items()))
        node.each = self.each.freeze() if self.each is not None else None
        node.each_leaf = self.each_leaf
        return node


def compile_paths(paths: Sequence[tuple[Segment, ...]]) -> PathNode:
    """One tree for all of ``paths`` (parsed by :func:`parse_path`)."""
    root = _Builder()
    for segments in paths:
        root.add(segments)
    return root.freeze()


def replace_matches(node: PathNode, value: Any, replacement: Any) -> int:
    """Replaces, in place, every value of ``value`` the tree names; how many it replaced."""
    count = 0
    kind = type(value)
    if kind is dict:
        for key in node.leaves:
            if key in value:
                value[key] = replacement
                count += 1
        for key, child in node.inner:
            inner = value.get(key)
            if inner is not None:
                count += replace_matches(child, inner, replacement)
    elif kind is list:
        if node.each_leaf:
            size = len(value)
            value[:] = [replacement] * size
            count += size
        else:
            each = node.each
            if each is not None:
                for item in value:
                    count += replace_matches(each, item, replacement)
    return count


# walker(document, replacement) -> values replaced, in place.
Walker = Callable[[Any, Any], int]


def compile_walker(node: PathNode) -> Walker:
    """A function doing what :func:`replace_matches` does with ``node``, generated and compiled."""
    lines = ["def walk(v0, R):", "    n = 0"]
    _emit(node, 0, "    ", lines)
    lines.append("    return n")
    namespace: dict[str, Any] = {"__builtins__": {}, "type": type, "dict": dict, "list": list, "len": len}
    try:
        exec(compile("\n".join(lines), "<mask paths>", "exec"), namespace)
    except (SyntaxError, RecursionError, MemoryError):
        # Nested beyond what the compiler takes (too many nested blocks or indentation levels).
        return lambda document, replacement: replace_matches(node, document, replacement)
    walk: Walker = namespace["walk"]
    return walk


def _emit(node: PathNode, depth: int, indent: str, lines: list[str]) -> None:
    """Source that applies ``node`` to the value in variable ``v<depth>``."""
    var = f"v{depth}"
    inner_var = f"v{depth + 1}"
    body = indent + "    "
    keyword = "if"
    if node.leaves or node.inner:
        lines.append(f"{indent}if type({var}) is dict:")
        for key in node.leaves:
            lines += [f"{body}if {key!r} in {var}:", f"{body}    {var}[{key!r}] = R", f"{body}    n += 1"]
        for key, child in node.inner:
            lines.append(f"{body}{inner_var} = {var}.get({key!r})")
            _emit(child, depth + 1, body, lines)
        keyword = "elif"  # a value is an object or an array, never both
    if node.each_leaf:
        lines += [
            f"{indent}{keyword} type({var}) is list:",
            f"{body}{var}[:] = [R] * len({var})",
            f"{body}n += len({var})",
        ]
    elif node.each is not None:
        lines += [f"{indent}{keyword} type({var}) is list:", f"{body}for {inner_var} in {var}:"]
        _emit(node.each, depth + 1, body + "    ", lines)
