"""The C splicer against the reference (decode, walk, re-encode): the same documents, the same refusals."""

from __future__ import annotations

import json
from random import Random
from typing import Any

import msgspec
import orjson
import pytest

from fastproxy.masking.body import InvalidJson, Splicer, mask_document, splice_document
from fastproxy.masking.paths import compile_paths, compile_walker, parse_path

pytestmark = pytest.mark.timeout(120)

SCALARS = [0, -1, 2**70, 1.5, -0.0, 1e300, "s", "", "caf\u00e9", '\n\t"\\', "\x00\x1f", "😀", None, True]
KEYS = ["a", "b", "ssn", "é", 'k"q', "\\", "\u2028", "😀"]


def random_value(rnd: Random, depth: int) -> Any:
    roll = rnd.random()
    if depth > 4 or roll < 0.3:
        return rnd.choice(SCALARS)
    if roll < 0.65:
        return {rnd.choice(KEYS): random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}
    return [random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]


def random_paths(rnd: Random) -> list[str]:
    def segment() -> str:
        if rnd.random() < 0.3:
            return "[*]"
        return "[" + json.dumps(rnd.choice(KEYS), ensure_ascii=False) + "]"

    return ["".join(segment() for _ in range(rnd.randint(1, 4))) for _ in range(rnd.randint(1, 3))]


def spellings(rnd: Random, document: Any) -> list[bytes]:
    """The same document as several upstreams would write it: compact, spaced, ASCII-escaped."""
    return [
        msgspec.json.encode(document),
        json.dumps(document).encode(),  # ASCII escapes, ", " and ": "
        json.dumps(document, indent=rnd.choice([1, 2]), ensure_ascii=False).encode(),
    ]


def both(paths: list[str], replacement: Any, body: bytes) -> tuple[Any, Any]:
    tree = compile_paths([parse_path(p) for p in paths])
    walk = compile_walker(tree)
    splice = Splicer(tree, orjson.dumps(replacement))
    results = []
    for run in (lambda: splice_document(splice, body), lambda: mask_document(walk, replacement, body)):
        try:
            results.append(run())
        except InvalidJson:
            results.append(InvalidJson)
    return results[0], results[1]


def test_random_documents_mask_alike() -> None:
    rnd = Random(11)
    for _ in range(2000):
        document = random_value(rnd, 0)
        paths = random_paths(rnd)
        replacement = rnd.choice(["***", None, 0, {"hidden": True}, ["x"]])
        for body in spellings(rnd, document):
            spliced, reference = both(paths, replacement, body)
            assert spliced is not InvalidJson and reference is not InvalidJson, body
            (out, count), (ref_out, ref_count) = spliced, reference
            assert count == ref_count, (paths, body)
            # Equal as documents (the reference re-encodes; the splicer keeps the upstream's text).
            assert msgspec.json.decode(out) == msgspec.json.decode(ref_out), (paths, body)
            if not count:
                assert out is body


def test_mutated_documents_are_refused_alike() -> None:
    """Byte flips, cuts and insertions: whatever the reference refuses, the splicer refuses."""
    rnd = Random(12)
    alphabet = b'{}[]",:\\ \n\t0123456789.eE+-tfnrulsabu\x00\x7f\xc3\xa9\xed\xa0\x80\xf0\x9f\x98\x80'
    paths = ["a", "[*]", "b.a", "ssn[*].a"]
    refused = 0
    for _ in range(20000):
        body = bytearray(msgspec.json.encode(random_value(rnd, 0)))
        for _ in range(rnd.randint(1, 3)):
            at = rnd.randrange(len(body) + 1)
            action = rnd.random()
            if action < 0.4 and at < len(body):
                body[at] = rnd.choice(alphabet)
            elif action < 0.7:
                body[at:at] = bytes([rnd.choice(alphabet)])
            else:
                del body[at : at + rnd.randint(1, 3)]
        spliced, reference = both(paths, "***", bytes(body))
        assert (spliced is InvalidJson) == (reference is InvalidJson), bytes(body)
        refused += reference is InvalidJson
        if reference is not InvalidJson:
            assert spliced[1] >= reference[1]  # duplicates: the splicer replaces every copy
    assert refused > 5000  # the mutations did make invalid documents


@pytest.mark.parametrize(
    "body",
    [
        b"1e400", b"-1e400", b"1.8e308", b"1" + b"0" * 400 + b".0", b"[1e999]",  # floats out of range
        b'"\\ud800"', b'"\\udc00"', b'"\\ud800\\u0041"', b'"\\ud800\\"', b'"\\u12"', b'"\\uZZZZ"',
        b'"\xed\xa0\x80"', b'"\xc0\x80"', b'"\xe0\x80\x80"', b'"\xf4\x90\x80\x80"', b'"\xf8\x88\x80\x80\x80"',
        b'"\xc3"', b'"\x7f\x00"', b"01", b"-", b"1.", b".5", b"+1", b"1e", b"1e+", b"tru", b"nulll", b"[,1]",
        b"[1,,2]", b'{"a":1,}', b'{"a"}', b'{"a":}', b"{a:1}", b'{"a":1 "b":2}', b"\x0c{}", b"[1]\x00",
    ],
)  # fmt: skip
def test_edge_cases_are_refused_alike(body: bytes) -> None:
    spliced, reference = both(["a"], "***", body)
    assert spliced is InvalidJson and reference is InvalidJson


@pytest.mark.parametrize(
    "body",
    [
        b"1e-400",
        b"1.7976931348623157e308",
        b"-0",
        b"1" * 400,
        b'"\\ud83d\\ude00"',
        b'"\x7f"',
        b" [ ] ",
        b'""',
    ],
)
def test_edge_cases_are_accepted_alike(body: bytes) -> None:
    spliced, reference = both(["a"], "***", body)
    assert spliced == reference == (body, 0)


def test_keys_are_compared_decoded_and_long_keys_work() -> None:
    long = "k" * 1000
    paths = ["[" + json.dumps(long) + "].x", "é"]
    body = ('{"' + long + '": {"x": 1}, "\\u00e9": 2, "e\\u0301": 3}').encode()
    spliced, reference = both(paths, "***", body)
    assert spliced == (('{"' + long + '": {"x": "***"}, "\\u00e9": "***", "e\\u0301": 3}').encode(), 2)
    assert reference[1] == 2
    # A long key spelled with escapes is decoded too (past the scanner's short-key buffer).
    escaped = ('{"' + "\\u006b" * 1000 + '": {"x": 1}, "\\u00e9": 2}').encode()
    spliced, reference = both(paths, "***", escaped)
    assert spliced[1] == reference[1] == 2


@pytest.mark.parametrize("sign", [b"", b"-"])
def test_integers_the_reference_cannot_read_are_refused_alike(sign: bytes) -> None:
    for digits in (640, 641, 4299 - len(sign), 4300 - len(sign), 4301 - len(sign), 10_000):
        body = b'{"a": ' + sign + b"1" * digits + b"}"
        spliced, reference = both(["a"], "***", body)
        assert (spliced is InvalidJson) == (reference is InvalidJson), digits


def test_paths_of_any_allowed_length_compile_to_a_splicer() -> None:
    from fastproxy.masking import CompiledMask, MaskConfigError
    from fastproxy.masking.mask import MAX_SEGMENTS

    longest = CompiledMask("m", [".".join(["a"] * MAX_SEGMENTS), "b" + "[*]" * (MAX_SEGMENTS - 1)])
    assert longest._splice is not None
    deep = b'{"a":' * MAX_SEGMENTS + b"1" + b"}" * MAX_SEGMENTS
    assert longest.apply(deep)[1:] == (b'{"a":' * (MAX_SEGMENTS - 1) + b'{"a":"***"' + b"}" * MAX_SEGMENTS, 1)
    with pytest.raises(MaskConfigError, match="segments"):
        CompiledMask("m", [".".join(["a"] * (MAX_SEGMENTS + 1))])
