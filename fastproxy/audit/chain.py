"""The hash chain over audit lines (sans-I/O).

Canonical form
--------------
Every line of an audit file is one JSON object, compact (no whitespace outside strings, as orjson
and msgspec write it), UTF-8, ending in ``\\n``, whose last two members are ``prev`` and then
``hash``::

    {"v":1,…,"masked":2,"prev":"<64 hex>","hash":"<64 hex>"}

The canonical form of a record — the bytes its ``hash`` covers — is its line without the newline
and without the final ``,"hash":"<64 hex>"`` member; that is, the compact JSON object that ends
``"prev":"<64 hex>"}``. In Python::

    canonical = line.rstrip(b"\\n")[:-75] + b"}"      # 75 = len(',"hash":"') + 64 + len('"}')
    hash = hashlib.sha256(canonical).hexdigest()     # lowercase hex

Members keep the order they are written in (the record's fields, then ``prev``); the hash covers
those exact bytes, so any edit of a line — a value, a space, the order of members — changes it.
For every record fastproxy writes, ``orjson.dumps`` of the parsed object without ``hash``
reproduces the canonical form byte for byte (tested), so a verifier may also re-serialize.

``prev`` is the ``hash`` of the line before (across rotated files); the very first record of a
chain has ``prev`` = 64 zeros (:data:`GENESIS`). Inserting, removing or reordering lines breaks a
``prev``; editing a line breaks its ``hash``.
"""

from __future__ import annotations

import hashlib
import re
from binascii import hexlify
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "GENESIS",
    "Chain",
    "LineError",
    "Stream",
    "TailState",
    "canonical",
    "check_line",
    "scan_tail",
    "seal",
    "seal_batch",
    "seal_batch_reference",
    "span_of",
]

GENESIS = b"0" * 64
_SUFFIX = 75  # len(',"hash":"') + 64 + len('"}')
_SUFFIX_RE = re.compile(rb',"hash":"[0-9a-f]{64}"\}\Z')
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")

# (boot, worker): the stream a record's seq counts in.
Stream = tuple[str, int]


class LineError(ValueError):
    """A line that is not a well-formed, correctly hashed audit record; the text says why."""


def seal(record: bytes, prev: bytes) -> tuple[bytes, bytes]:
    """Chain ``record`` (compact JSON without prev/hash) after ``prev``: returns (line, its hash).

    ``record`` must be a JSON object with at least one member; the line ends with ``\\n``.
    """
    body = b'%s,"prev":"%s"}' % (record[:-1], prev)
    digest = hexlify(hashlib.sha256(body).digest())
    return b'%s,"hash":"%s"}\n' % (body[:-1], digest), digest


def seal_batch_reference(payload: bytes | memoryview, prev: bytes) -> tuple[bytes, bytes, int]:
    """Chain the records of ``payload`` (JSON objects separated by ``\\n``) after ``prev``.

    Returns the lines (each ending with ``\\n``), the new head and the number of records;
    ValueError for a record that is not a non-empty object. The pure-Python twin of
    ``fastproxy.audit._seal.seal``, which the writer uses (same bytes, same errors).
    """
    if not _HEX64.match(prev.decode("ascii", "replace")):
        raise ValueError("prev is not 64 lowercase hex digits")
    if not payload:
        raise ValueError("empty batch")
    records = bytes(payload).split(b"\n")
    for index, record in enumerate(records, 1):
        if len(record) < 3 or record[:2] != b'{"' or record[-1:] != b"}":
            raise ValueError(f"record {index} of the batch is not a JSON object")
    out: list[bytes] = []
    chain = Chain(prev)
    chain.extend(records, out)
    return b"".join(out), chain.head, len(records)


try:
    from fastproxy.audit._seal import seal as seal_batch
except ImportError:  # pragma: no cover - only without a compiler or OpenSSL's headers
    seal_batch = seal_batch_reference


class Chain:
    """The running head of the chain; :meth:`extend` and :meth:`seal` add records in order."""

    __slots__ = ("head",)

    def __init__(self, head: bytes = GENESIS) -> None:
        self.head = head

    def extend(self, records: Iterable[bytes], out: list[bytes]) -> None:
        prev = self.head
        sha256 = hashlib.sha256
        append = out.append
        for record in records:
            body = b'%s,"prev":"%s"}' % (record[:-1], prev)
            prev = hexlify(sha256(body).digest())  # lowercase hex, as bytes: cheaper than hexdigest()
            append(b'%s,"hash":"%s"}\n' % (body[:-1], prev))
        self.head = prev

    def seal(self, payload: bytes | memoryview) -> tuple[bytes, int]:
        """Chain a batch (records separated by ``\\n``): its lines and how many records it held."""
        lines, self.head, count = seal_batch(payload, self.head)
        return lines, count


def canonical(line: bytes) -> bytes:
    """The bytes a line's hash covers (``line`` without its newline); LineError if it has no hash member."""
    if not _SUFFIX_RE.search(line):
        raise LineError('does not end with a "hash" member of 64 lowercase hex digits')
    return line[:-_SUFFIX] + b"}"


def check_line(line: bytes) -> dict[str, Any]:
    """Parse one line (without its newline) and check its own hash; returns the object.

    The check is local to the line: that ``prev`` matches the line before is the caller's part.
    """
    body = canonical(line)
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise LineError("not a JSON object")
    keys = list(obj)
    if keys[-2:] != ["prev", "hash"]:
        raise LineError('"prev" and "hash" are not its last two members')
    prev = obj["prev"]
    if not isinstance(prev, str) or not _HEX64.match(prev):
        raise LineError('"prev" is not 64 lowercase hex digits')
    if hashlib.sha256(body).hexdigest() != obj["hash"]:
        raise LineError("hash mismatch: the line was edited")
    return obj


def span_of(obj: dict[str, Any]) -> tuple[Stream, int, int] | None:
    """The (stream, first seq, last seq) a record covers; None for records outside every stream.

    A gap record ``{"seq": S, "gap": N}`` covers S … S+N-1; any other record its one ``seq``.
    """
    worker = obj.get("worker")
    seq = obj.get("seq")
    boot = obj.get("boot")
    if not isinstance(worker, int) or not isinstance(seq, int) or not isinstance(boot, str):
        return None
    gap = obj.get("gap")
    count = gap if isinstance(gap, int) and not isinstance(gap, bool) else 1
    return (boot, worker), seq, seq + count - 1


@dataclass
class TailState:
    """What the end of an audit file says: the chain head and the last seq of each stream seen."""

    head: bytes = GENESIS
    records: int = 0
    last_seq: dict[Stream, int] = field(default_factory=dict)


def scan_tail(data: bytes, from_start: bool) -> TailState:
    """Read the complete lines of ``data``, the end of a file (ending with ``\\n``).

    ``from_start`` says whether ``data`` begins at the start of the file; if not, its first line
    may be cut and is skipped. The last line must be a valid record (its hash becomes the head):
    LineError otherwise. Earlier lines only feed ``last_seq``; ones that do not parse are skipped.
    """
    if not data.endswith(b"\n"):
        raise LineError("the data does not end with a complete line")
    lines = data.split(b"\n")
    lines.pop()  # the empty string after the last newline
    if not from_start and lines:
        lines.pop(0)
    state = TailState()
    if not lines:
        return state
    last = check_line(lines[-1])
    state.head = last["hash"].encode()
    for line in lines:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        span = span_of(obj)
        if span is not None:
            stream, _, end = span
            if end > state.last_seq.get(stream, 0):
                state.last_seq[stream] = end
        state.records += 1
    return state
