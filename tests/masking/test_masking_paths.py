"""Mask field paths: the syntax accepted and refused, and what a compiled tree replaces."""

from __future__ import annotations

import copy
import json
from random import Random
from typing import Any

import pytest

from fastproxy.masking.paths import EACH, compile_paths, compile_walker, parse_path, replace_matches


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("ssn", ("ssn",)),
        ("owner.email", ("owner", "email")),
        ("items[*].card.number", ("items", EACH, "card", "number")),
        ("[*].ssn", (EACH, "ssn")),
        ("[*]", (EACH,)),
        ("tags[*]", ("tags", EACH)),
        ("matrix[*][*]", ("matrix", EACH, EACH)),
        ('["a.b"].c', ("a.b", "c")),
        ('a["b[*]"]', ("a", "b[*]")),
        ('a.["*"]', ("a", "*")),
        ('["  padded "]', ("  padded ",)),
        ('["quo\\"te"]', ('quo"te',)),
        ('["\\u00e9t\\u00e9"]', ("été",)),
        ("first name", ("first name",)),
        ("données.clé", ("données", "clé")),
        ("a-b_c:d", ("a-b_c:d",)),
    ],
)
def test_valid_paths(text: str, segments: tuple[str | None, ...]) -> None:
    assert parse_path(text) == segments


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "mask path '': empty"),
        ("a..b", "mask path 'a..b': empty key (at character 3)"),
        (".a", "mask path '.a': empty key (at character 1)"),
        ("a.", "mask path 'a.': empty key after the last '.' (at character 2)"),
        ("a[0]", "mask path 'a[0]': array index [0]: only [*] (every element) is supported (at character 2)"),
        ("a[-1]", "only [*] (every element) is supported"),
        ("a[]", "mask path 'a[]': expected [*] or [\"key\"] (at character 2)"),
        ("a[*", 'expected [*] or ["key"]'),
        ("a[*]b", "mask path 'a[*]b': expected '.', '[*]' or '[\"key\"]' after ']' (at character 5)"),
        ("a.[*]", "'.' must be followed by a key: write a[*], not a.[*]"),
        ("*", "'*' is not a wildcard for members: use [*] for array elements (at character 1)"),
        ("a.*.b", "'*' is not a wildcard for members"),
        (" a", "key ' a' begins or ends with whitespace"),
        ("a. b", "key ' b' begins or ends with whitespace"),
        ("a]", "mask path 'a]': unexpected ']' (at character 2)"),
        ('a"b', "unexpected '\"'"),
        ('a["b', 'unterminated ["key"]'),
        ('a["b"', 'expected ] after ["key"]'),
        ('a["b\\x"]', 'the key in ["..."] is not a valid JSON string'),
    ],
)
def test_invalid_paths_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_path(text)
    assert message in str(caught.value)
    assert repr(text) in str(caught.value)


def test_a_path_that_is_not_a_string() -> None:
    with pytest.raises(ValueError, match="not a string"):
        parse_path(7)  # type: ignore[arg-type]


def _replace(paths: list[str], document: Any) -> tuple[Any, int]:
    """Both walkers -- the generated one and the generic one -- must agree on every document."""
    tree = compile_paths([parse_path(p) for p in paths])
    generic = copy.deepcopy(document)
    generic_count = replace_matches(tree, generic, "X")
    count = compile_walker(tree)(document, "X")
    assert (document, count) == (generic, generic_count)
    return document, count


def test_nested_objects() -> None:
    doc = {"ssn": "1", "owner": {"email": "e", "name": "n"}, "other": {"email": "keep"}}
    assert _replace(["ssn", "owner.email"], doc) == (
        {"ssn": "X", "owner": {"email": "X", "name": "n"}, "other": {"email": "keep"}},
        2,
    )


def test_each_array_element_counts() -> None:
    doc = {"items": [{"card": {"number": 1}}, {"card": {"number": 2}}, {"card": {}}, "text", None]}
    assert _replace(["items[*].card.number"], doc) == (
        {"items": [{"card": {"number": "X"}}, {"card": {"number": "X"}}, {"card": {}}, "text", None]},
        2,
    )
    assert _replace(["tags[*]"], {"tags": [1, "two", None, [3]]}) == ({"tags": ["X", "X", "X", "X"]}, 4)
    assert _replace(["tags[*]"], {"tags": []}) == ({"tags": []}, 0)


def test_nested_arrays() -> None:
    doc = {"m": [[1, 2], [3], "no", [[4]]]}
    assert _replace(["m[*][*]"], doc) == ({"m": [["X", "X"], ["X"], "no", ["X"]]}, 4)
    doc = {"m": [[{"s": 1}, {"t": 2}], [{"s": 3}]]}
    assert _replace(["m[*][*].s"], doc) == ({"m": [[{"s": "X"}, {"t": 2}], [{"s": "X"}]]}, 2)


def test_missing_paths_and_wrong_types_match_nothing() -> None:
    for doc in (
        {},
        {"owner": None},
        {"owner": "a string"},
        {"owner": ["email"]},
        {"owner": [{"email": "in an array: not owner.email"}]},
        {"owner": {"mail": "x"}},
        {"items": {"card": {"number": 1}}},
        {"items": "x"},
        {"items": [1, "2", None, [{"card": {"number": 3}}]]},
    ):
        before = repr(doc)
        assert _replace(["owner.email", "items[*].card.number"], doc) == (doc, 0)
        assert repr(doc) == before


@pytest.mark.parametrize("root", [[{"ssn": 1}], "ssn", 7, 1.5, True, None, []])
def test_non_object_roots(root: Any) -> None:
    assert _replace(["ssn", "a.b"], root)[1] == 0


def test_root_arrays_need_an_explicit_wildcard() -> None:
    doc = [{"ssn": 1}, {"ssn": 2, "x": 0}, "s", 3]
    assert _replace(["[*].ssn"], doc) == ([{"ssn": "X"}, {"ssn": "X", "x": 0}, "s", 3], 2)
    assert _replace(["[*]"], [1, 2, 3]) == (["X", "X", "X"], 3)


def test_values_of_every_type_are_replaced() -> None:
    doc = {"a": 1, "b": 2.5, "c": True, "d": None, "e": {"deep": 1}, "f": [1, 2], "g": "s"}
    masked, count = _replace(list("abcdefg"), doc)
    assert masked == dict.fromkeys("abcdefg", "X")
    assert count == 7


def test_a_shorter_path_wins_over_a_longer_one() -> None:
    doc = {"owner": {"email": "e", "name": "n"}, "tags": [{"x": 1}, {"x": 2}]}
    # Either order: the whole value is replaced once, never walked into.
    for paths in (
        ["owner", "owner.email", "tags[*]", "tags[*].x"],
        ["tags[*].x", "owner.email", "tags[*]", "owner"],
    ):
        masked, count = _replace(paths, {"owner": dict(doc["owner"]), "tags": list(doc["tags"])})  # type: ignore[call-overload]
        assert masked == {"owner": "X", "tags": ["X", "X"]}
        assert count == 3


def test_duplicate_paths_count_once() -> None:
    assert _replace(["ssn", "ssn", "a.b", "a.b"], {"ssn": 1, "a": {"b": 2}}) == (
        {"ssn": "X", "a": {"b": "X"}},
        2,
    )


def test_a_key_and_a_wildcard_below_one_node() -> None:
    # "a.b" and "a[*]": a is either an object or an array, and the matching one applies.
    assert _replace(["a.b", "a[*]"], {"a": {"b": 1}}) == ({"a": {"b": "X"}}, 1)
    assert _replace(["a.b", "a[*]"], {"a": [1, 2]}) == ({"a": ["X", "X"]}, 2)


def test_keys_are_matched_exactly() -> None:
    doc = {"SSN": 1, "ssn ": 2, "a.b": 3, "a": {"b": 4}}
    assert _replace(["ssn", '["a.b"]'], doc) == ({"SSN": 1, "ssn ": 2, "a.b": "X", "a": {"b": 4}}, 1)


def _locations(
    value: Any, segments: tuple[str | None, ...], at: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """Reference matcher: where a path matches in the original document."""
    if not segments:
        return [at]
    head, rest = segments[0], segments[1:]
    if head is EACH:
        if type(value) is not list:
            return []
        return [loc for i, item in enumerate(value) for loc in _locations(item, rest, (*at, i))]
    if type(value) is not dict or head not in value:
        return []
    return _locations(value[head], rest, (*at, head))


def _random_value(rnd: Random, depth: int) -> Any:
    roll = rnd.random()
    if depth > 3 or roll < 0.3:
        return rnd.choice([1, "s", None, True, 2.5])
    if roll < 0.65:
        return {rnd.choice("abc"): _random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}
    return [_random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]


def test_against_a_reference_on_random_documents() -> None:
    rnd = Random(6)
    for _ in range(3000):
        document = _random_value(rnd, 0)
        paths = [
            "".join(rnd.choice(["[*]", f".{rnd.choice('abc')}"]) for _ in range(rnd.randint(1, 4))).lstrip(
                "."
            )
            for _ in range(rnd.randint(1, 3))
        ]
        parsed = [parse_path(p) for p in paths]
        found = {loc for segments in parsed for loc in _locations(document, segments)}
        # A location inside another one is hidden by it, not replaced on its own.
        outer = {loc for loc in found if not any(loc[:k] in found for k in range(len(loc)))}
        expected = copy.deepcopy(document)
        for loc in outer:  # never the root: every path has a segment
            parent = expected
            for step in loc[:-1]:
                parent = parent[step]
            parent[loc[-1]] = "X"
        tree = compile_paths(parsed)
        generated = copy.deepcopy(document)
        assert replace_matches(tree, document, "X") == len(outer), paths
        assert document == expected, paths
        assert compile_walker(tree)(generated, "X") == len(outer), paths
        assert generated == expected, paths


def test_keys_cannot_inject_code() -> None:
    keys = ["'); raise SystemExit('", '"""', "\\", "\n", "a'b\"c", "{v0}", "\u2028", "\x00"]
    paths = [f"[{json.dumps(key)}]" for key in keys]
    parsed = [parse_path(p) for p in paths]
    assert [segments[0] for segments in parsed] == keys
    document = dict.fromkeys(keys, 1) | {"other": 2}
    assert compile_walker(compile_paths(parsed))(document, "X") == len(keys)
    assert document == dict.fromkeys(keys, "X") | {"other": 2}


def test_trees_too_deep_to_compile_fall_back_to_the_generic_walk() -> None:
    path = "a" + "[*]" * 40 + ".b"
    walk = compile_walker(compile_paths([parse_path(path)]))
    assert walk.__code__.co_filename != "<mask paths>"  # the generic walk, not generated code
    value: Any = {"b": 1}
    for _ in range(40):
        value = [value, {"c": 2}]
    document = {"a": value}
    assert walk(document, "X") == 1
    inner = document["a"]
    for _ in range(40):
        inner = inner[0]
    assert inner == {"b": "X"}
    shallow = compile_walker(compile_paths([parse_path("a" + "[*]" * 10 + ".b")]))
    assert shallow.__code__.co_filename == "<mask paths>"
