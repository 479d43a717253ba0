"""Audit records as the worker encodes them (sans-I/O: the clock is injected).

A record leaves the worker as one compact JSON object, without ``prev`` and ``hash``: only the
writer knows the order of records across workers, so only it can chain them
(:mod:`fastproxy.audit.chain`). Three kinds share the stream of one (boot, worker):

request
    ``{"v":1,"ts":…,"boot":…,"worker":…,"seq":…,"request_id":…,"client_ip":…,"method":…,"path":…,
    "route":…,"principal":…,"auth":…,"decision":…,"reason":…,"mode":…,"status":…,"upstream":…,
    "latency_ms":…,"bytes_in":…,"bytes_out":…,"masked":…[,"would_deny":…]}``; absent values are
    ``null`` (``route`` when no route matched, ``principal``/``auth`` before authentication,
    ``upstream`` when none was called); ``would_deny`` appears only on shadow-mode denials.
gap
    ``{"v":1,"ts":…,"boot":…,"worker":…,"seq":S,"gap":N,"reason":…}`` stands for the N records
    numbered S … S+N-1 that were lost (``reason``: ``queue_full``, ``lost_with_worker``,
    ``missing``). It has no ``request_id``.
worker start
    ``{"v":1,"ts":…,"boot":…,"worker":…,"seq":1,"event":"worker_start","pid":…}``: every stream
    begins with it, so a stream that does not start at seq 1 lost its beginning.

The writer adds markers of its own, outside every stream (no ``worker``/``seq``):
``{"v":1,"ts":…,"boot":…,"event":"writer_start"|"rotate"|"reopen","pid":…,…}``.

Only what the caller passes is recorded. Callers must never pass a credential (a token, an API
key, an Authorization value): ``principal`` is the authenticated subject, ``auth`` the method
(``jwt:corp``, ``api_key:ci-bot``), ``reason`` a short code.

``ts`` is UTC with microseconds, ``2026-11-28T03:00:00.123456Z``; ``latency_ms`` is rounded to
microseconds. A record is at most :data:`RECORD_MAX` bytes: a longer one (a huge path) is encoded
again with ``path`` and ``principal`` cut to 1024 characters and ``"truncated":true``.

:meth:`RecordEncoder.request` encodes with ``_encode.request_record`` (C, built with the package),
which writes exactly what :meth:`RecordEncoder.request_reference` (msgspec) writes for the same
clock reading, and leaves to it what it cannot vouch for: a lone surrogate, a record to cut, an
unusual type (see the theory of operation in ``_encode.c``; tests/audit/test_encode_native.py
holds the two equal).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import orjson

__all__ = [
    "RECORD_MAX",
    "VERSION",
    "RecordEncoder",
    "RequestRecord",
]

VERSION = 1
RECORD_MAX = 60 * 1024  # bytes; keeps every message to the writer well under a socket buffer
_CUT = 1024


class RequestRecord(msgspec.Struct, gc=False, omit_defaults=True):
    """The record of one answered request; fields in the order they are written."""

    v: int
    ts: str
    boot: str
    worker: int
    seq: int
    request_id: str
    client_ip: str
    method: str
    path: str
    route: str | None
    principal: str | None
    auth: str | None
    decision: str
    reason: str
    mode: str
    status: int
    upstream: str | None
    latency_ms: float
    bytes_in: int
    bytes_out: int
    masked: int
    would_deny: str | None = None  # written only on shadow-mode denials
    mask_skipped: str | None = None  # why a masked route's response went out unmasked
    truncated: bool = False


class RecordEncoder:
    """Encodes the records of one (boot, worker) stream; ``clock`` returns nanoseconds since the epoch."""

    __slots__ = ("_base", "_encode", "_first", "_next", "_prefix", "boot", "clock", "worker")

    def __init__(self, boot: str, worker: int, clock: Callable[[], int] = time.time_ns) -> None:
        self.boot = boot
        self.worker = worker
        self.clock = clock
        self._encode = msgspec.json.Encoder().encode
        # The current second, in microseconds: [_first, _next), and its formatted prefix.
        self._first = self._next = self._base = 0
        self._prefix = ""

    def timestamp(self) -> str:
        """Now as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; the part up to the second is formatted once a second."""
        return self._timestamp(self.clock())

    def _timestamp(self, ns: int) -> str:
        us = ns // 1000
        if not self._first <= us < self._next:
            second = us // 1_000_000
            self._first = second * 1_000_000
            self._next = self._first + 1_000_000
            self._base = self._first - 1_000_000
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        # us - _base is 1ffffff: seven digits whose last six are the microseconds, zero-padded
        # (cheaper than a format specification, measured).
        return self._prefix + str(us - self._base)[1:] + "Z"

    def request(
        self,
        seq: int,
        request_id: str | bytes,
        client_ip: str,
        method: str,
        path: str,
        route: str | None,
        principal: str | None,
        auth: str | None,
        decision: str,
        reason: str,
        mode: str,
        would_deny: str | None,
        status: int,
        upstream: str | None,
        latency_ms: float,
        bytes_in: int,
        bytes_out: int,
        masked: int,
        mask_skipped: str | None = None,
    ) -> bytes:
        now = self.clock()
        if _request_record is not None:
            data = _request_record(
                now, self.boot, self.worker, seq, request_id, client_ip, method, path, route, principal,
                auth, decision, reason, mode, would_deny, status, upstream, latency_ms, bytes_in, bytes_out,
                masked, mask_skipped,
            )  # fmt: skip
            if data is not None:
                return data
        return self.request_reference(
            now, seq, request_id, client_ip, method, path, route, principal, auth, decision, reason, mode,
            would_deny, status, upstream, latency_ms, bytes_in, bytes_out, masked, mask_skipped,
        )  # fmt: skip

    def request_reference(
        self,
        now: int,
        seq: int,
        request_id: str | bytes,
        client_ip: str,
        method: str,
        path: str,
        route: str | None,
        principal: str | None,
        auth: str | None,
        decision: str,
        reason: str,
        mode: str,
        would_deny: str | None,
        status: int,
        upstream: str | None,
        latency_ms: float,
        bytes_in: int,
        bytes_out: int,
        masked: int,
        mask_skipped: str | None = None,
    ) -> bytes:
        """The record of one answered request at clock reading ``now``: the reference of the C path."""
        if type(request_id) is bytes:
            # Request ids are checked ASCII (or made by the worker); msgspec would base64 bytes.
            request_id = request_id.decode("ascii", "replace")
        record = RequestRecord(
            VERSION,
            self._timestamp(now),
            self.boot,
            self.worker,
            seq,
            request_id,  # type: ignore[arg-type]  # narrowed above; mypy cannot see through type()
            client_ip,
            method,
            path,
            route,
            principal,
            auth,
            decision,
            reason,
            mode,
            status,
            upstream,
            int(latency_ms * 1000.0 + 0.5) / 1000.0,  # to the microsecond; round() costs twice as much
            bytes_in,
            bytes_out,
            masked,
            would_deny,
            mask_skipped,
        )
        try:
            data = self._encode(record)
        except UnicodeEncodeError:
            # A lone surrogate cannot be UTF-8; keep the evidence as escapes instead of dropping it.
            record = msgspec.structs.replace(
                record,
                **{f: _printable(getattr(record, f)) for f in (*_TEXT_FIELDS, "upstream", "would_deny")},
            )
            data = self._encode(record)
        if len(data) > RECORD_MAX:
            data = self._encode(_cut(record))
        return data

    def gap(self, seq: int, count: int, reason: str) -> bytes:
        """The record standing for ``count`` lost records numbered ``seq`` … ``seq + count - 1``."""
        return gap_record(self.timestamp(), self.boot, self.worker, seq, count, reason)

    def worker_start(self, seq: int, pid: int) -> bytes:
        return orjson.dumps(
            {
                "v": VERSION,
                "ts": self.timestamp(),
                "boot": self.boot,
                "worker": self.worker,
                "seq": seq,
                "event": "worker_start",
                "pid": pid,
            }
        )


try:
    from fastproxy.audit._encode import request_record as _request_record
except ImportError:  # pragma: no cover - only without a compiler
    _request_record = None  # type: ignore[assignment]


def gap_record(ts: str, boot: str, worker: int, seq: int, count: int, reason: str) -> bytes:
    return orjson.dumps(
        {"v": VERSION, "ts": ts, "boot": boot, "worker": worker, "seq": seq, "gap": count, "reason": reason}
    )


def writer_marker(ts: str, boot: str, event: str, pid: int, **extra: str | int) -> bytes:
    """A record of the writer's own (start, rotate, reopen): it belongs to no (boot, worker) stream."""
    return orjson.dumps({"v": VERSION, "ts": ts, "boot": boot, "event": event, "pid": pid, **extra})


def format_timestamp(ns: int) -> str:
    second = ns // 1_000_000_000
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))}.{ns // 1000 % 1_000_000:06d}Z"


_TEXT_FIELDS = (
    "request_id", "client_ip", "method", "path", "route", "principal", "auth", "decision", "reason", "mode",
)  # fmt: skip


def _printable(value: str | None) -> str | None:
    if value is None:
        return None
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _cut(record: RequestRecord) -> RequestRecord:
    def cut(value: str | None) -> str | None:
        return value if value is None or len(value) <= _CUT else value[:_CUT]

    fields = {f: cut(getattr(record, f)) for f in (*_TEXT_FIELDS, "upstream", "would_deny")}
    return msgspec.structs.replace(record, truncated=True, **fields)
