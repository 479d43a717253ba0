"""``fastproxy audit verify PATH...``: check audit files (rotated ones first, in order).

Per line, in order across the files given:

- the line is complete (ends with a newline: a file whose last line does not has a truncated tail),
  is a JSON object, ends with ``"prev"`` and ``"hash"``, and its hash is the SHA-256 of its
  canonical form (:mod:`fastproxy.audit.chain`) — an edited line fails here;
- its ``prev`` is the hash of the line before — an inserted, removed or reordered line fails here;
  the first line may start the chain (64 zeros) or continue one whose start was not given;
- within each (boot, worker) stream, seqs follow each other with no hole and no repeat, a gap
  record ``{"seq": S, "gap": N}`` standing for S … S+N-1; when the files start the chain, every
  stream starts at seq 1;
- the record is of a known kind: a request (``request_id``), a gap, or an ``event`` marker.

A chain checks itself up to its last line; that whole lines were removed from the very end can only
be seen against a head kept elsewhere: ``--head HASH`` (the summary prints the head to keep).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fastproxy.audit.chain import GENESIS, LineError, Stream, check_line, span_of

__all__ = ["Summary", "Verifier", "VerifyError", "verify_files"]

_GENESIS = GENESIS.decode()


class VerifyError(Exception):
    """The first problem found: where, and what."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(path, line, message)
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Summary:
    files: int = 0
    records: int = 0
    requests: int = 0
    gaps: int = 0
    lost: int = 0
    markers: int = 0
    head: str = _GENESIS
    from_genesis: bool = False
    streams: dict[Stream, int] = field(default_factory=dict)

    def __str__(self) -> str:
        start = "from its start" if self.from_genesis else "continuing an earlier chain"
        return (
            f"ok: {self.records} records in {self.files} files ({start}): {self.requests} requests, "
            f"{self.gaps} gap records accounting for {self.lost} lost, {self.markers} markers, "
            f"{len(self.streams)} worker streams; head {self.head}"
        )


class Verifier:
    """Checks lines one at a time (sans-I/O); :meth:`line` returns a problem or None."""

    def __init__(self) -> None:
        self.summary = Summary()
        self.started = False

    def line(self, raw: bytes) -> str | None:
        if not raw.endswith(b"\n"):
            return "truncated: the last line has no newline (a record cut short)"
        try:
            obj = check_line(raw[:-1])
        except LineError as exc:
            return str(exc)
        summary = self.summary
        if obj.get("v") != 1:
            return f"unknown record version {obj.get('v')!r}"
        prev = obj["prev"]
        if not self.started:
            self.started = True
            summary.from_genesis = prev == _GENESIS
        elif prev != summary.head:
            if prev == _GENESIS:
                return "a new chain starts here (prev is 64 zeros): verify the files before and after apart"
            return "prev is not the hash of the line before: a line was inserted, removed or reordered here"
        problem = self._kind(obj) or self._sequence(obj)
        if problem:
            return problem
        summary.head = obj["hash"]
        summary.records += 1
        return None

    def _kind(self, obj: dict[str, Any]) -> str | None:
        summary = self.summary
        has_stream = span_of(obj) is not None
        if "request_id" in obj:
            if "gap" in obj or "event" in obj or not has_stream:
                return "a request record must have boot, worker and seq, and neither gap nor event"
            if not isinstance(obj["request_id"], str):
                return "request_id is not a string"
            summary.requests += 1
        elif "gap" in obj:
            gap = obj["gap"]
            if not has_stream or isinstance(gap, bool) or not isinstance(gap, int) or gap < 1:
                return "a gap record must have boot, worker, seq and a gap count of at least 1"
            summary.gaps += 1
            summary.lost += gap
        elif isinstance(obj.get("event"), str):
            summary.markers += 1
        else:
            return "not a known kind of record (request_id, gap or event)"
        return None

    def _sequence(self, obj: dict[str, Any]) -> str | None:
        span = span_of(obj)
        if span is None:
            return None
        stream, first, last = span
        streams = self.summary.streams
        seen = streams.get(stream)
        name = f"worker {stream[1]} of boot {stream[0]}"
        if seen is None:
            if self.summary.from_genesis and first != 1:
                return f"{name} starts at seq {first}, not 1: its first records are missing"
        elif first <= seen:
            return f"seq {first} of {name} repeats (it is already at {seen})"
        elif first != seen + 1:
            missing = first - seen - 1
            return f"seq of {name} jumps from {seen} to {first}: {missing} records missing with no gap record"
        streams[stream] = last
        return None


def verify_files(paths: Iterable[str], head: str | None = None) -> Summary:
    """Verify the files in order; VerifyError at the first problem, OSError if one cannot be read."""
    verifier = Verifier()
    last_path = ""
    last_line = 0
    for path in paths:
        last_path = path
        last_line = 0
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                last_line = number
                problem = verifier.line(raw)
                if problem:
                    raise VerifyError(path, number, problem)
        verifier.summary.files += 1
    summary = verifier.summary
    if head is not None and summary.head != head:
        raise VerifyError(
            last_path,
            last_line,
            f"the chain ends at {summary.head}, not at the expected head {head}: records missing at the end",
        )
    return summary
