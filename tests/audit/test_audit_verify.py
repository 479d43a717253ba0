"""`verify` finds edited, inserted, removed and reordered lines, holes, repeats and truncated tails."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from audit_support import BOOT, Clock, chained_lines, request, stream_lines

from fastproxy.audit.record import RecordEncoder, writer_marker
from fastproxy.audit.verify import VerifyError, verify_files


def write(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"".join(lines))
    return str(path)


def fails(paths: list[str], line: int, match: str, head: str | None = None) -> VerifyError:
    with pytest.raises(VerifyError, match=match) as info:
        verify_files(paths, head=head)
    assert info.value.line == line, str(info.value)
    return info.value


def test_a_good_file_passes_with_a_summary(tmp_path: Path) -> None:
    lines = stream_lines(9)
    summary = verify_files([write(tmp_path / "a", lines)])
    assert summary.records == 10 and summary.requests == 9 and summary.markers == 1
    assert summary.from_genesis and summary.head == orjson.loads(lines[-1])["hash"]
    assert "ok: 10 records in 1 files" in str(summary)


def test_an_edited_line_is_found(tmp_path: Path) -> None:
    lines = stream_lines(9)
    lines[4] = lines[4].replace(b'"status":200', b'"status":201')
    error = fails([write(tmp_path / "a", lines)], 5, "hash mismatch")
    assert str(error).startswith(f"{tmp_path / 'a'}:5: ")


def test_an_inserted_line_is_found(tmp_path: Path) -> None:
    lines = stream_lines(9)
    fails([write(tmp_path / "a", [*lines[:3], lines[1], *lines[3:]])], 4, "inserted, removed or reordered")


def test_a_removed_line_is_found(tmp_path: Path) -> None:
    lines = stream_lines(9)
    fails([write(tmp_path / "a", lines[:3] + lines[4:])], 4, "inserted, removed or reordered")


def test_reordered_lines_are_found(tmp_path: Path) -> None:
    lines = stream_lines(9)
    lines[3], lines[4] = lines[4], lines[3]
    fails([write(tmp_path / "a", lines)], 4, "inserted, removed or reordered")


def test_a_truncated_tail_is_found(tmp_path: Path) -> None:
    lines = stream_lines(9)
    fails([write(tmp_path / "a", [*lines[:-1], lines[-1][:40]])], 10, "truncated")
    fails([write(tmp_path / "b", [*lines[:-1], lines[-1][:-1]])], 10, "truncated")


def test_a_rewritten_chain_with_a_hole_in_seqs_is_found(tmp_path: Path) -> None:
    # Someone who recomputes every hash still cannot hide a removed record: its seq is missing.
    encoder = RecordEncoder(BOOT, 1, Clock())
    records = [encoder.worker_start(1, 1), request(encoder, 2), request(encoder, 4)]
    fails([write(tmp_path / "a", chained_lines(records))], 3, "jumps from 2 to 4: 1 records missing")
    repeat = [encoder.worker_start(1, 1), request(encoder, 2), request(encoder, 2)]
    fails([write(tmp_path / "b", chained_lines(repeat))], 3, "seq 2 of worker 1 .* repeats")
    late = [request(encoder, 5)]
    fails([write(tmp_path / "c", chained_lines(late))], 1, "starts at seq 5, not 1")


def test_gap_records_account_for_their_seqs(tmp_path: Path) -> None:
    encoder = RecordEncoder(BOOT, 1, Clock())
    other = RecordEncoder(BOOT, 2, Clock())
    records = [
        encoder.worker_start(1, 1),
        other.worker_start(1, 2),
        encoder.gap(2, 5, "queue_full"),  # 2..6
        other.gap(2, 1, "lost_with_worker"),
        request(encoder, 7),
        writer_marker("2026-11-28T03:00:00.000000Z", BOOT, "reopen", 9),
        request(other, 3),
    ]
    summary = verify_files([write(tmp_path / "a", chained_lines(records))])
    assert (summary.gaps, summary.lost, summary.requests, summary.markers) == (2, 6, 2, 3)
    assert summary.streams == {(BOOT, 1): 7, (BOOT, 2): 3}
    overlap = [*records[:3], request(encoder, 6)]
    fails([write(tmp_path / "b", chained_lines(overlap))], 4, "seq 6 .* repeats")
    bad_gap = [encoder.worker_start(1, 1), encoder.gap(2, 0, "x")]
    fails([write(tmp_path / "c", chained_lines(bad_gap))], 2, "gap count of at least 1")


def test_rotated_files_chain_in_order(tmp_path: Path) -> None:
    lines = stream_lines(30)
    first = write(tmp_path / "audit.jsonl.1", lines[:12])
    second = write(tmp_path / "audit.jsonl", lines[12:])
    assert verify_files([first, second]).files == 2
    assert fails([second, first], 1, "a new chain starts here").path == first
    middle = write(tmp_path / "audit.jsonl.2", lines[5:12])
    assert fails([second, middle], 1, "inserted, removed or reordered").path == middle
    # The current file alone continues a chain whose start was not given: accepted, and said.
    alone = verify_files([second])
    assert not alone.from_genesis and "continuing an earlier chain" in str(alone)


def test_records_removed_at_the_end_are_found_against_a_kept_head(tmp_path: Path) -> None:
    lines = stream_lines(9)
    head = orjson.loads(lines[-1])["hash"]
    path = write(tmp_path / "a", lines[:-2])
    assert verify_files([path]).records == 8
    fails([path], 8, "records missing at the end", head=head)


def test_a_second_chain_and_unknown_kinds_are_refused(tmp_path: Path) -> None:
    lines = stream_lines(3) + stream_lines(3, worker=2)
    fails([write(tmp_path / "a", lines)], 5, "a new chain starts here")
    odd = chained_lines([b'{"v":1,"what":"?"}'])
    fails([write(tmp_path / "b", odd)], 1, "not a known kind")
    v2 = chained_lines([b'{"v":2,"event":"x"}'])
    fails([write(tmp_path / "c", v2)], 1, "unknown record version")
