"""Masking one JSON body: parse, replace what the paths name, re-serialize.

Theory of operation
-------------------
The body is decoded into plain Python values, the walker compiled from the mask's paths
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
duplicate members -- the one a client's parser sees too, and the one that is masked: the output
carries only that one, so no duplicate can smuggle an unmasked copy past the proxy.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from fastproxy.masking.paths import Walker

__all__ = ["InvalidJson", "mask_document"]

_decode = msgspec.json.Decoder().decode
_encode_wide = msgspec.json.Encoder().encode
_dumps = orjson.dumps


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
