"""mask_body and CompiledMask: compiling a [masks.*] table, masking bytes, and the response decisions."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import orjson
import pytest

from fastproxy.config.schema import Mask
from fastproxy.masking import (
    EMPTY,
    ENCODED,
    INVALID_JSON,
    MASK,
    NOT_JSON,
    PASS,
    REFUSE,
    TOO_LARGE,
    CompiledMask,
    InvalidJson,
    MaskConfigError,
    Verdict,
    compile_mask,
    is_identity_encoding,
    is_json_media_type,
    mask_body,
)
from fastproxy.masking.body import mask_document

PII = CompiledMask("pii", ["ssn", "owner.email", "items[*].card.number"])


def _mask(body: bytes, mask: CompiledMask = PII) -> tuple[Any, int]:
    out, count = mask_body(mask, body)
    return json.loads(out), count


# -- compiling --------------------------------------------------------------------------------------


def test_compile_from_the_schema() -> None:
    settings = msgspec.convert(
        {"fields": ["ssn"], "replacement": {"hidden": True}, "exempt_roles": ["auditor"]}, Mask
    )
    assert (settings.max_bytes, settings.on_unmaskable) == (1 << 20, "pass")
    mask = compile_mask("pii", settings)
    assert (mask.name, mask.fields, mask.replacement) == ("pii", ("ssn",), {"hidden": True})
    assert mask.exempt_roles == frozenset({"auditor"})
    assert (mask.max_bytes, mask.refuse) == (1 << 20, False)
    refusing = compile_mask(
        "x", msgspec.convert({"fields": ["a"], "on_unmaskable": "refuse", "max_bytes": 10}, Mask)
    )
    assert (refusing.max_bytes, refusing.refuse) == (10, True)


@pytest.mark.parametrize(
    "raw",
    [
        {"fields": ["a"], "on_unmaskable": "drop"},
        {"fields": ["a"], "max_bytes": -1},
        {"fields": ["a"], "x": 1},
    ],
)
def test_the_schema_refuses(raw: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(raw, Mask)


@pytest.mark.parametrize("max_bytes", [True, -1, "10", 1.5])
def test_a_bad_max_bytes_is_a_config_error(max_bytes: object) -> None:
    # Also when the class is compiled (setup.py): not taken as 1, not a TypeError.
    with pytest.raises(MaskConfigError) as caught:
        CompiledMask("pii", ["ok"], max_bytes=max_bytes)
    assert [key for key, _ in caught.value.errors] == ["max_bytes"]


def test_every_bad_path_is_named_by_its_index() -> None:
    with pytest.raises(MaskConfigError) as caught:
        CompiledMask("pii", ["ok", "a..b", "fine.too", "x[1]"])
    assert caught.value.errors == [
        ("fields[1]", "mask path 'a..b': empty key (at character 3)"),
        (
            "fields[3]",
            "mask path 'x[1]': array index [1]: only [*] (every element) is supported (at character 2)",
        ),
    ]
    assert str(caught.value).startswith("fields[1]: mask path 'a..b'")
    assert isinstance(caught.value, ValueError)


def test_a_mask_needs_fields() -> None:
    with pytest.raises(MaskConfigError) as caught:
        CompiledMask("pii", [])
    assert caught.value.errors == [("fields", "at least one field path")]


@pytest.mark.parametrize(
    ("replacement", "problem"),
    [
        (float("inf"), "not a finite number"),
        ([1, float("nan")], "not a finite number"),
        (2**64, "beyond 64 bits"),
        ({"a": {1: 2}}, "key that is not a string"),
        (__import__("datetime").date(2026, 1, 1), "not date"),
        (
            {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
            "nested too deeply",
        ),
    ],
)
def test_the_replacement_must_be_json(replacement: Any, problem: str) -> None:
    with pytest.raises(MaskConfigError) as caught:
        CompiledMask("pii", ["a"], replacement)
    [(key, message)] = caught.value.errors
    assert key == "replacement"
    assert problem in message


@pytest.mark.parametrize(
    "replacement", ["***", "", 0, -(2**63), 2**64 - 1, 1.5, True, None, [1, "x"], {"a": [None]}]
)
def test_any_json_value_replaces(replacement: Any) -> None:
    mask = CompiledMask("m", ["a", "b[*]"], replacement)
    body, count = mask_body(mask, b'{"a":"secret","b":[1,2],"c":3}')
    assert json.loads(body) == {"a": replacement, "b": [replacement, replacement], "c": 3}
    assert count == 3


def test_exempt_roles() -> None:
    mask = CompiledMask("pii", ["ssn"], exempt_roles=["auditor", "admin"])
    assert mask.applies_to(())
    assert mask.applies_to(["reader"])
    assert not mask.applies_to(["reader", "auditor"])
    assert not mask.applies_to(("admin",))
    assert PII.applies_to(["auditor"])


# -- masking bytes ----------------------------------------------------------------------------------


def test_masks_and_counts() -> None:
    body = orjson.dumps(
        {
            "ssn": "123-45-6789",
            "owner": {"email": "a@example.com", "name": "Ann"},
            "items": [{"card": {"number": "4111"}, "sku": 1}, {"card": {"number": "5500"}}, {"card": None}],
        }
    )
    assert _mask(body) == (
        {
            "ssn": "***",
            "owner": {"email": "***", "name": "Ann"},
            "items": [{"card": {"number": "***"}, "sku": 1}, {"card": {"number": "***"}}, {"card": None}],
        },
        4,
    )


def test_nothing_matched_returns_the_same_bytes() -> None:
    body = b'{ "name" : "x",\n  "owner": {"name": 1}, "items": [{"card": 7}] }'
    out, count = mask_body(PII, body)
    assert out is body
    assert count == 0
    for root in (b"[1,2]", b'"ssn"', b"7", b"null", b"true", b"[]", b"{}", b'[{"ssn": 1}]'):
        out, count = mask_body(PII, root)
        assert (out, count) == (root, 0)
        assert out is root


def test_the_masked_body_keeps_every_byte_it_does_not_replace() -> None:
    body = b'{\n  "ssn": "1",\n  "note": "caf\\u00e9 \xe2\x9c\x93",\n  "n": 1.0E2,\n  "z": -0\n}'
    out, count = mask_body(PII, body)
    assert count == 1
    assert out == body.replace(b'"1"', b'"***"')


def test_the_reference_re_encodes_compactly() -> None:
    body = b'{\n  "ssn": "1",\n  "note": "caf\\u00e9 \xe2\x9c\x93",\n  "n": 1.0E2,\n  "z": -0\n}'
    out, count = mask_document(PII._walk, PII.replacement, body)
    assert count == 1
    assert out == '{"ssn":"***","note":"café ✓","n":100.0,"z":0}'.encode()


def test_an_escaped_key_is_still_the_key() -> None:
    assert _mask(b'{"s\\u0073n": "1"}') == ({"ssn": "***"}, 1)


def test_duplicate_members_are_all_masked() -> None:
    out, count = mask_body(PII, b'{"ssn": "first", "a": 1, "ssn": "second"}')
    assert (out, count) == (b'{"ssn": "***", "a": 1, "ssn": "***"}', 2)
    # The reference keeps the last member, as a decoder does, and writes only that one.
    out, count = mask_document(PII._walk, PII.replacement, b'{"ssn": "first", "a": 1, "ssn": "second"}')
    assert (out, count) == (b'{"ssn":"***","a":1}', 1)


def test_integers_beyond_64_bits_survive_exactly() -> None:
    body = b'{"ssn": "1", "id": 123456789012345678901234567890, "neg": -18446744073709551617}'
    out, count = mask_body(PII, body)
    assert (out, count) == (body.replace(b'"1"', b'"***"'), 1)
    out, count = mask_document(PII._walk, PII.replacement, body)
    assert out == b'{"ssn":"***","id":123456789012345678901234567890,"neg":-18446744073709551617}'


def test_nesting_beyond_orjsons_limit_still_encodes() -> None:
    deep = b"[" * 300 + b"]" * 300
    body = b'{"ssn": 1, "deep": ' + deep + b"}"
    assert mask_body(PII, body) == (b'{"ssn": "***", "deep": ' + deep + b"}", 1)
    out, count = mask_document(PII._walk, PII.replacement, body)
    assert (out, count) == (b'{"ssn":"***","deep":' + deep + b"}", 1)


def test_any_depth_is_masked_by_the_splicer_and_refused_by_the_reference() -> None:
    # Deeper than Python's recursion limit: the reference cannot decode it (a leak if its mask
    # passes what it cannot mask); the splicer's scan needs no stack for what it skips.
    deep = b"[" * 100_000 + b"]" * 100_000
    body = b'{"deep": ' + deep + b', "ssn": 1}'
    assert mask_body(PII, body) == (b'{"deep": ' + deep + b', "ssn": "***"}', 1)
    with pytest.raises(InvalidJson):
        mask_document(PII._walk, PII.replacement, body)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"ssn": 1} trailing',
        b'{"ssn": 1}{"ssn": 2}',
        b"{'ssn': 1}",
        b'{"ssn": NaN}',
        b'{"ssn": 1e400}',
        b"\xef\xbb\xbf{}",  # a byte-order mark
        b'{"ssn": "\xff"}',  # not UTF-8
        b'{"ssn": "\\ud800"}',  # a lone surrogate
        '{"ssn": 1}'.encode("utf-16"),
        b" ",
    ],
)
def test_invalid_json(body: bytes) -> None:
    with pytest.raises(InvalidJson):
        mask_body(PII, body)
    verdict, out, count = PII.apply(body)
    assert (verdict, count) == (Verdict(PASS, INVALID_JSON), 0)
    assert out is body


def test_an_empty_body_has_nothing_to_mask() -> None:
    assert mask_body(PII, b"") == (b"", 0)
    assert PII.apply(b"") == (Verdict(MASK, None), b"", 0)


def test_apply() -> None:
    verdict, out, count = PII.apply(b'{"ssn": 1}')
    assert (verdict, out, count) == (Verdict(MASK, None), b'{"ssn": "***"}', 1)
    body = b'{"other": 1}'
    verdict, out, count = PII.apply(body)
    assert (verdict, count) == (Verdict(MASK, None), 0)
    assert out is body


def test_apply_checks_the_size_of_a_buffered_body() -> None:
    small = CompiledMask("m", ["ssn"], max_bytes=10)
    assert small.apply(b'{"ssn":1}')[0] == Verdict(MASK, None)  # 9 bytes
    assert small.apply(b'{"ssn": 1}')[0] == Verdict(MASK, None)  # 10 bytes: the limit is inclusive
    body = b'{"ssn":  1}'
    assert small.apply(body) == (Verdict(PASS, TOO_LARGE), body, 0)
    refusing = CompiledMask("m", ["ssn"], max_bytes=10, refuse=True)
    assert refusing.apply(body) == (Verdict(REFUSE, TOO_LARGE), body, 0)
    assert refusing.apply(b"{") == (Verdict(REFUSE, INVALID_JSON), b"{", 0)


# -- the response head ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"application/json",
        b"Application/JSON",
        b"application/json; charset=utf-8",
        b"application/json;charset=UTF-8",
        b"  application/json  ",
        b"application/problem+json",
        b"application/vnd.api+json; ext=bulk",
        b"APPLICATION/LD+JSON",
        b"text/vnd.x+json",
        "application/json",
    ],
)
def test_json_media_types(value: bytes | str) -> None:
    assert is_json_media_type(value)
    assert PII.plan(value, 10) == Verdict(MASK, None)


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"text/plain",
        b"text/json",
        b"application/x-json",
        b"application/jsonp",
        b"application/json-seq",
        b"application/+json",
        b"application/json+xml",
        b"json",
        b"application /json",
        b"application/json, text/html",
        b"text/html; profile=application/json",
        b"multipart/form-data",
    ],
)
def test_not_json_media_types(value: bytes | None) -> None:
    assert not is_json_media_type(value)
    assert PII.plan(value, 10) == Verdict(PASS, NOT_JSON)
    assert CompiledMask("m", ["a"], refuse=True).plan(value, 10) == Verdict(REFUSE, NOT_JSON)


def test_the_media_type_cache_stays_small() -> None:
    for i in range(1000):
        assert is_json_media_type(b"application/x%d+json" % i)
    from fastproxy.masking import mask as module

    assert len(module._MEDIA_CACHE) <= module._MEDIA_CACHE_MAX


@pytest.mark.parametrize(
    ("encoding", "identity"),
    [
        (None, True),
        (b"", True),
        (b"identity", True),
        (b" Identity ", True),
        ("identity", True),
        (b"gzip", False),
        (b"br", False),
        (b"gzip, identity", False),
        ("deflate", False),
    ],
)
def test_content_encoding(encoding: bytes | str | None, identity: bool) -> None:
    assert is_identity_encoding(encoding) is identity
    expected = Verdict(MASK, None) if identity else Verdict(PASS, ENCODED)
    assert PII.plan(b"application/json", 10, encoding) == expected


def test_sizes() -> None:
    mask = CompiledMask("m", ["a"], max_bytes=100)
    refusing = CompiledMask("m", ["a"], max_bytes=100, refuse=True)
    assert mask.plan(b"application/json", 100) == Verdict(MASK, None)
    assert mask.plan(b"application/json", 101) == Verdict(PASS, TOO_LARGE)
    assert refusing.plan(b"application/json", 101) == Verdict(REFUSE, TOO_LARGE)
    # Unknown length (chunked, or until close): buffer, and ask again past max_bytes.
    assert mask.plan(b"application/json", None) == Verdict(MASK, None)
    assert mask.unmaskable(TOO_LARGE) == Verdict(PASS, TOO_LARGE)
    assert refusing.unmaskable(TOO_LARGE) == Verdict(REFUSE, TOO_LARGE)
    assert PII.plan(b"application/json", 1 << 20) == Verdict(MASK, None)
    assert PII.plan(b"application/json", (1 << 20) + 1) == Verdict(PASS, TOO_LARGE)


def test_an_empty_body_is_never_refused() -> None:
    refusing = CompiledMask("m", ["a"], refuse=True)
    for content_type in (b"application/json", b"image/png", None):
        assert refusing.plan(content_type, 0) == Verdict(PASS, EMPTY)


def test_the_order_of_the_checks() -> None:
    # Not JSON is the first thing said of a response, then its encoding, then its size.
    mask = CompiledMask("m", ["a"], max_bytes=1)
    assert mask.plan(b"text/plain", 5, b"gzip") == Verdict(PASS, NOT_JSON)
    assert mask.plan(b"application/json", 5, b"gzip") == Verdict(PASS, ENCODED)
