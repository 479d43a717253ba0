"""Messages between a worker's :class:`~fastproxy.audit.client.AuditClient` and the writer (sans-I/O).

The transport is a Unix SOCK_SEQPACKET connection, so every message arrives whole and alone. The
first byte says what it is; integers are little-endian.

worker → writer
    ``H`` slot:u32 worker:u64 pid:u64 boot:ascii — hello, first message of every connection.
    ``B`` first:u64 last:u64 records — a batch: encoded records (compact JSON objects, which never
    contain a raw newline) joined by ``\\n``, covering seqs ``first`` … ``last`` of the stream in
    order (a gap record covers several).
writer → worker
    ``W`` written:u64 — welcome: the last seq of this stream already in the file (0: none). The
    worker forgets the batches that covers and sends the rest, in order, then new ones.
    ``A`` seq:u64 — acknowledged: every record up to ``seq`` is written (and fdatasync'ed when
    ``fsync = true``).
    ``F`` — flush: the writer is stopping; send what you hold now without waiting for the timer.
"""

from __future__ import annotations

import struct

__all__ = [
    "ACK",
    "BATCH",
    "FLUSH",
    "HELLO",
    "MSG_CAP",
    "MSG_TARGET",
    "WELCOME",
    "ProtocolError",
    "count_records",
    "count_records_reference",
    "decode_batch",
    "decode_batch_payload",
    "decode_hello",
    "decode_seq",
    "encode_batch",
    "encode_hello",
    "encode_seq",
]

HELLO, BATCH, WELCOME, ACK, FLUSH = b"H", b"B", b"W", b"A", b"F"

# A batch is closed once its records reach MSG_TARGET bytes, so with records of at most
# record.RECORD_MAX bytes no message exceeds ~190 KiB: under the default Unix socket send buffer
# (SOCK_SEQPACKET refuses a message larger than it) and under MSG_CAP, what the writer reads at once.
MSG_TARGET = 128 * 1024
MSG_CAP = 256 * 1024

_HELLO = struct.Struct("<IQQ")
_BATCH = struct.Struct("<QQ")
_SEQ = struct.Struct("<Q")


class ProtocolError(ValueError):
    pass


def encode_hello(slot: int, worker: int, pid: int, boot: str) -> bytes:
    return HELLO + _HELLO.pack(slot, worker, pid) + boot.encode("ascii")


def decode_hello(message: bytes) -> tuple[int, int, int, str]:
    if message[:1] != HELLO or len(message) <= 1 + _HELLO.size:
        raise ProtocolError("expected a hello")
    slot, worker, pid = _HELLO.unpack_from(message, 1)
    try:
        boot = message[1 + _HELLO.size :].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("boot id is not ASCII") from None
    return slot, worker, pid, boot


def encode_batch(first: int, last: int, records: list[bytes]) -> bytes:
    header = BATCH + _BATCH.pack(first, last)
    if not records:
        return header
    # The header goes in front of the first record, so the batch (~128 KiB) is copied once, by
    # the join, not once by the join and again to put the header in front.
    parts = records.copy()
    parts[0] = header + parts[0]
    return b"\n".join(parts)


def decode_batch(message: bytes) -> tuple[int, int, list[bytes]]:
    """(first seq, last seq, records); ProtocolError when it is not a well-formed batch."""
    first, last, _, payload = decode_batch_payload(message)
    return first, last, bytes(payload).split(b"\n")


def decode_batch_payload(message: bytes | memoryview) -> tuple[int, int, int, memoryview]:
    """(first seq, last seq, record count, the records as sent: separated by ``\\n``).

    The writer chains the payload as it is (:func:`fastproxy.audit.chain.seal_batch`), without
    splitting it into a list and without copying it out of the message (a view of the view of
    its receive buffer: a batch is up to MSG_CAP bytes); ProtocolError when it is not a
    well-formed batch.
    """
    if message[:1] != BATCH or len(message) <= 1 + _BATCH.size:
        raise ProtocolError("expected a batch")
    first, last = _BATCH.unpack_from(message, 1)
    payload = memoryview(message)[1 + _BATCH.size :]
    try:
        count = count_records(payload)
    except ValueError as exc:
        raise ProtocolError(f"batch holds something that is not a JSON object ({exc})") from None
    if not 0 < first <= last or last - first + 1 < count:
        raise ProtocolError("batch seqs do not cover its records")
    return first, last, count, payload


def count_records_reference(payload: bytes | memoryview) -> int:
    """How many records a payload holds; ValueError unless every one looks like a non-empty object.

    The chain appends members before each record's closing brace, hence the check. Made over the
    whole payload at once (a loop costs 0.5 us a record); ``fastproxy.audit._seal.count`` is the
    C twin the writer uses.
    """
    payload = bytes(payload)
    count = payload.count(b"\n") + 1
    if (
        payload[:2] != b'{"'
        or payload[-1:] != b"}"
        or payload.count(b'}\n{"') != count - 1
        or b"\n\n" in payload
        or len(payload) < 3
    ):
        raise ValueError("a record of the batch is not a JSON object")
    return count


try:
    from fastproxy.audit._seal import count as count_records
except ImportError:  # pragma: no cover - only without a compiler or OpenSSL's headers
    count_records = count_records_reference


def encode_seq(kind: bytes, seq: int) -> bytes:
    return kind + _SEQ.pack(seq)


def decode_seq(message: bytes) -> int:
    if len(message) != 1 + _SEQ.size:
        raise ProtocolError("bad acknowledgement")
    value: int = _SEQ.unpack_from(message, 1)[0]
    return value
