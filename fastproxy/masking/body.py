"""Masking one JSON body: replace what the paths name.

Theory of operation
-------------------
Two implementations, held to the same answers by the tests. The one the proxy uses is
:class:`Splicer` (C, ``fastproxy.masking._splice``): one pass over the body's bytes that checks it
is JSON exactly as strictly as the decoder below and writes the replacement in place of each value
the paths name, leaving every other byte as the upstream sent it -- digits, escapes and spacing
included, so nothing the mask does not name can change, not even a float's last digit. A member
that appears more than once in an object is replaced every time. Decoding 1 KB into Python
objects is most of what the reference costs (about 3 of 5 µs); the scan allocates nothing.

The reference, :func:`mask_document` (used when the extension is not built): the body is
decoded into plain Python values, the walker compiled from the mask's paths
(:mod:`.paths`) replaces the values they name in place, and the document is encoded again -- only
when something was replaced.
When nothing matched, the caller gets the very bytes it passed in, so a response that holds no
masked field costs one parse and no encoding, and passes byte for byte.

Decoding uses msgspec and encoding orjson, on purpose. Both are about equally fast on decoding
(measured: bench/micro_masking.py), but orjson turns an integer beyond 64 bits into a float, so a
document carrying a 20-digit identifier would come out with that number silently rounded; msgspec
keeps it an exact int. orjson is the faster encoder (by a third on large documents) and refuses
such integers, so those rare documents are encoded by msgspec instead. Both decoders accept exactly
RFC 8259 JSON in UTF-8 (no byte-order mark, no NaN, no lone surrogate) and keep the last of
duplicate members, and only that one is written out; but when the copies differ in shape
(``{"user": {"ssn": 1}, "user": {}}``) the one kept may hold nothing to mask while a client that
reads the first copy would see it. The proxy therefore always masks with the splicer; the
reference is the tests' oracle (CompiledMask refuses the paths the splicer cannot take).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import orjson

from fastproxy.masking.paths import Walker

__all__ = ["InvalidJson", "Splicer", "mask_document", "splice_document"]

try:
    from fastproxy.masking._splice import Splicer
except ImportError:  # pragma: no cover - only without a compiler
    Splicer = None  # type: ignore[assignment,misc]

_decode: Final = msgspec.json.Decoder().decode
_encode_wide: Final = msgspec.json.Encoder().encode
_dumps: Final = orjson.dumps


class InvalidJson(ValueError):
    """The body is not one well-formed JSON document (UTF-8, no trailing data)."""


def mask_document(walk: Walker, replacement: Any, body: bytes) -> tuple[bytes, int]:
    """``(body', replaced)``: ``body`` itself when nothing matched; raises :class:`InvalidJson`.

    An empty body is not JSON, but there is nothing in it to hide: it comes back as it is, with 0.
    """
    if not body:
        return body, 0
    try:
        document = _decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # the latter: a string not in UTF-8
        raise InvalidJson(str(exc)) from None
    except RecursionError:
        # Valid JSON nested deeper than the interpreter's recursion limit (about 1000 levels):
        # refused like malformed JSON, as most clients' parsers would refuse it too.
        raise InvalidJson("nested too deeply") from None
    replaced = walk(document, replacement)
    if not replaced:
        return body, 0
    try:
        return _dumps(document), replaced
    except orjson.JSONEncodeError:
        # An integer beyond 64 bits (see the theory of operation), or nesting deeper than orjson's
        # 254 levels; msgspec writes both.
        return _encode_wide(document), replaced


def splice_document(splice: Splicer, body: bytes) -> tuple[bytes, int]:
    """:func:`mask_document`'s answer from a :class:`Splicer`.

    The same refusals, except nesting deeper than Python's recursion limit (the splicer masks
    it); the same counts, except that each copy of a duplicated member counts. ``body'`` keeps
    every byte the mask does not replace; see the theory of operation.
    """
    if not body:
        return body, 0
    try:
        return splice(body)
    except ValueError as exc:
        raise InvalidJson(str(exc)) from None
