"""A real writer process with simulated workers: delivery, gaps, restarts, signals, errors.

Each test forks its own writer (and, for kill -9, its own worker) and signals only those pids.
The simulated workers are AuditClients on a uvloop loop in the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvloop
from audit_support import (
    BOOT,
    Clock,
    WriterProcess,
    audit_files,
    chained_lines,
    read_records,
    request,
    stream_lines,
    submit,
    wait_for,
)

from fastproxy.audit import (
    EXIT_BAD_TAIL,
    EXIT_IO_ERROR,
    AuditClient,
    AuditShared,
    WriterEndpoint,
    verify_files,
)
from fastproxy.audit.protocol import ACK, WELCOME, encode_batch, encode_hello, encode_seq
from fastproxy.audit.record import RecordEncoder
from fastproxy.audit.shared import FREE, STATE, WRITTEN
from fastproxy.audit.writer import COMMIT_SPACING, AuditFile, next_commit_at
from fastproxy.config.schema import AuditSettings

SECRET = "tok-3f9a-NEVER-IN-A-LOG"


@pytest.fixture
def shared() -> Iterator[AuditShared]:
    table = AuditShared.create(BOOT, slots=16)
    yield table
    table.close()


@pytest.fixture
def endpoint() -> Iterator[WriterEndpoint]:
    ep = WriterEndpoint.create()
    yield ep
    ep.close()


@pytest.fixture
def writers(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint
) -> Iterator[Callable[..., WriterProcess]]:
    made: list[WriterProcess] = []

    def make(settings: AuditSettings, **kwargs: Any) -> WriterProcess:
        writer = WriterProcess(tmp_path, settings, shared, endpoint, **kwargs)
        made.append(writer)
        return writer

    yield make
    for writer in made:
        if writer.pid:
            writer.kill()


def settings_for(tmp_path: Path, **overrides: Any) -> AuditSettings:
    values: dict[str, Any] = {
        "path": str(tmp_path / "audit.jsonl"),
        "batch_max": 16,
        "flush_interval": 0.01,
        "fsync": True,
        "rotate_bytes": 100 * 1024 * 1024,
    }
    values.update(overrides)
    return AuditSettings(**values)


def run(main: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def until(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def client(
    shared: AuditShared, endpoint: WriterEndpoint, settings: AuditSettings, **kwargs: Any
) -> AuditClient:
    slot, _ = shared.claim()
    return AuditClient(
        asyncio.get_running_loop(),
        endpoint.address,
        shared,
        slot,
        batch_max=settings.batch_max,
        flush_interval=settings.flush_interval,
        **kwargs,
    )


@contextlib.contextmanager
def raw_worker(
    endpoint: WriterEndpoint, slot: int, worker: int, written: int = 0, sndbuf: int = 0
) -> Iterator[socket.socket]:
    """A simulated worker's own connection: hello sent, the welcome (saying ``written``) read."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(10)
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.connect(endpoint.address)
        sock.send(encode_hello(slot, worker, os.getpid(), BOOT))
        assert sock.recv(64) == encode_seq(WELCOME, written)
        yield sock


def request_ids(path: Path) -> list[str]:
    return [str(r["request_id"]) for r in read_records(*audit_files(path)) if "request_id" in r]


def test_records_from_several_workers_arrive_complete_and_in_chain(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    settings = settings_for(tmp_path)
    writer = writers(settings)
    writer.start()
    sent: list[str] = []

    async def main() -> None:
        clients = [client(shared, endpoint, settings) for _ in range(3)]
        for c in clients:
            c.start()
        await until(lambda: all(c.available for c in clients), what="welcomes")
        for n in range(400):
            for i, c in enumerate(clients):
                assert submit(c, n, request_id=f"w{i}-{n}", principal=f"user-{SECRET}")
                sent.append(f"w{i}-{n}")
            if n % 40 == 0:
                await asyncio.sleep(0)
        for c in clients:
            assert await c.drain(10)
            assert c.stats()["dropped"] == 0 and c.stats()["acked"] == 401
            c.close()

    run(main)
    assert writer.stop() == 0
    path = tmp_path / "audit.jsonl"
    assert sorted(request_ids(path)) == sorted(sent)
    summary = verify_files([str(path)])
    assert summary.from_genesis and summary.gaps == 0
    assert summary.streams == {(BOOT, 1): 401, (BOOT, 2): 401, (BOOT, 3): 401}
    stats = shared.stats()
    assert stats.written == 1203 and stats.queued == 0 and stats.dropped == 0
    assert SECRET not in writer.log and "req-" not in writer.log and "w1-" not in writer.log


def test_a_full_queue_drops_into_an_explicit_gap_record(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    settings = settings_for(tmp_path)
    writer = writers(settings)

    async def main() -> None:
        c = client(shared, endpoint, settings, queue_max=8)
        c.start()  # no writer yet: its connection waits in the listen backlog
        kept = [submit(c, n) for n in range(20)]
        assert kept == [True] * 7 + [False] * 13  # the worker_start record holds the 8th place
        assert not c.available and not c.admits()
        assert c.stats()["dropped"] == 13
        writer.start()
        await until(lambda: c.available and c.batcher.queued == 0, what="delivery")
        assert c.admits()
        assert submit(c, 99)
        assert await c.drain(10)
        c.close()

    run(main)
    assert writer.stop() == 0
    records = read_records(tmp_path / "audit.jsonl")
    gap = next(r for r in records if "gap" in r)
    assert (gap["seq"], gap["gap"], gap["reason"], gap["worker"]) == (9, 13, "queue_full", 1)
    assert records[-1]["seq"] == 22 and records[-1]["request_id"] == "req-99"
    summary = verify_files([str(tmp_path / "audit.jsonl")])
    assert summary.lost == 13 and summary.requests == 8
    assert shared.stats().dropped == 13


def test_writer_killed_and_restarted_loses_nothing_silently(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    settings = settings_for(tmp_path, batch_max=8)
    first = writers(settings)
    first.start()
    second = writers(settings)
    kept: list[str] = []

    async def main() -> None:
        clients = [client(shared, endpoint, settings, queue_max=100_000) for _ in range(2)]
        for c in clients:
            c.start()
        await until(lambda: all(c.available for c in clients), what="welcomes")
        for n in range(1500):
            for i, c in enumerate(clients):
                if submit(c, n, request_id=f"w{i}-{n}", path=f"/p/{SECRET}"):
                    kept.append(f"w{i}-{n}")
            if n % 25 == 0:
                await asyncio.sleep(0.001)
            if n == 500:
                first.kill()  # mid-stream: batches in flight and unacknowledged
                await until(lambda: not any(c.available for c in clients), what="clients to notice")
            if n == 700:
                second.start(wait=False)
        for c in clients:
            assert await c.drain(15)
            assert c.connects >= 2
            c.close()

    run(main)
    assert second.stop() == 0
    path = tmp_path / "audit.jsonl"
    ids = request_ids(path)
    assert len(ids) == len(set(ids))  # nothing written twice
    summary = verify_files([str(path)])  # the chain continues across the restart
    assert summary.lost == 0 and sorted(ids) == sorted(kept) and len(kept) == 3000
    events = [r["event"] for r in read_records(path) if "event" in r and "worker" not in r]
    assert events == ["writer_start", "writer_start"]
    assert SECRET not in first.log + second.log


def test_term_drains_what_workers_hold_then_exits_zero(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    # A flush interval far longer than the test: records move only because the writer asks.
    settings = settings_for(tmp_path, batch_max=10_000, flush_interval=60.0)
    writer = writers(settings)
    writer.start()

    async def main() -> None:
        clients = [client(shared, endpoint, settings) for _ in range(2)]
        for c in clients:
            c.start()
        await until(lambda: all(c.available for c in clients), what="welcomes")
        for n in range(50):
            for c in clients:
                assert submit(c, n)
        assert all(len(c.batcher.pending) == 51 for c in clients)
        writer.signal(signal.SIGTERM)
        await until(lambda: all(c.batcher.idle for c in clients), what="the drain")
        for c in clients:
            c.close()

    run(main)
    assert writer.wait() == 0
    summary = verify_files([str(tmp_path / "audit.jsonl")])
    assert summary.requests == 100 and summary.streams == {(BOOT, 1): 51, (BOOT, 2): 51}


def test_usr1_reopens_the_file_after_an_external_move(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    settings = settings_for(tmp_path)
    writer = writers(settings)
    writer.start()
    path = tmp_path / "audit.jsonl"
    moved = tmp_path / "audit.jsonl.1"

    async def main() -> None:
        c = client(shared, endpoint, settings)
        c.start()
        for n in range(30):
            submit(c, n)
        assert await c.drain(10)
        os.rename(path, moved)
        for n in range(30, 40):
            submit(c, n)  # may land in either file: the chain runs on
        writer.signal(signal.SIGUSR1)
        await until(path.exists, what="the new file")
        for n in range(40, 60):
            submit(c, n)
        assert await c.drain(10)
        c.close()

    run(main)
    assert writer.stop() == 0
    first = read_records(path)[0]
    assert first["event"] == "reopen"
    summary = verify_files([str(moved), str(path)])
    assert summary.requests == 60 and summary.gaps == 0
    assert "reopened" in writer.log


def test_rotation_and_a_restart_continue_one_chain(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    settings = settings_for(tmp_path, rotate_bytes=8192)
    path = tmp_path / "audit.jsonl"

    def burst(start: int) -> None:
        async def main() -> None:
            c = client(shared, endpoint, settings)
            c.start()
            for n in range(start, start + 120):
                submit(c, n)
                if n % 10 == 0:
                    await asyncio.sleep(0.002)
            assert await c.drain(10)
            c.close()

        run(main)

    for start in (0, 1000):
        writer = writers(settings)
        writer.start()
        burst(start)
        assert writer.stop() == 0
    files = audit_files(path)
    assert len(files) > 4
    # Rotated once the commit that crossed rotate_bytes is written.
    assert all(p.stat().st_size >= 8192 for p in files[:-1])
    summary = verify_files([str(p) for p in files])
    assert summary.requests == 240 and summary.from_genesis
    rotated_markers = [r for r in read_records(*files) if r.get("event") == "rotate"]
    assert [m["previous"] for m in rotated_markers] == [p.name for p in files[:-1]]


def test_a_cut_short_tail_is_removed_and_the_chain_continues(
    tmp_path: Path, writers: Callable[..., WriterProcess]
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = stream_lines(5, boot="0ldb00t")
    path.write_bytes(b"".join(lines) + lines[0][:50])
    writer = writers(settings_for(tmp_path))
    writer.start()
    assert writer.stop() == 0
    summary = verify_files([str(path)])
    assert summary.records == 6 + 1
    assert "cut short" in writer.log and "removing them" in writer.log


def test_a_bad_last_record_stops_the_writer_with_its_own_status(
    tmp_path: Path, writers: Callable[..., WriterProcess]
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = stream_lines(3)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1].replace(b'"seq":4', b'"seq":5'))
    writer = writers(settings_for(tmp_path))
    writer.start(wait=False)
    assert writer.wait() == EXIT_BAD_TAIL
    assert "is not valid (hash mismatch" in writer.log and "move the file aside" in writer.log


def test_a_full_disk_exits_with_the_io_status_and_a_clear_line(
    tmp_path: Path, writers: Callable[..., WriterProcess]
) -> None:
    def dev_full(path: str, flags: int, mode: int) -> int:
        return os.open("/dev/full", os.O_RDWR | os.O_CLOEXEC)

    writer = writers(settings_for(tmp_path), opener=dev_full)
    writer.start(wait=False)
    assert writer.wait() == EXIT_IO_ERROR
    log = writer.log
    assert f"cannot write {tmp_path / 'audit.jsonl'}: No space left on device (ENOSPC)" in log
    assert f"exiting (status {EXIT_IO_ERROR})" in log


def test_a_vanished_directory_at_reopen_exits_with_the_io_status(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    settings = settings_for(tmp_path, path=str(directory / "audit.jsonl"))
    writer = writers(settings)
    writer.start()

    async def main() -> None:
        c = client(shared, endpoint, settings)
        c.start()
        await until(lambda: c.available, what="welcome")
        shutil.rmtree(directory)
        writer.signal(signal.SIGUSR1)
        await until(lambda: not c.available, what="the writer to go")
        assert not c.admits()  # a fail_closed route answers 503 now
        assert submit(c, 1)  # best_effort: queued for the next writer
        c.close()

    run(main)
    assert writer.wait() == EXIT_IO_ERROR
    assert "cannot open" in writer.log and "No such file or directory (ENOENT)" in writer.log


def test_kill_9_of_a_worker_is_accounted_by_a_gap_record(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    settings = settings_for(tmp_path, batch_max=1000, flush_interval=60.0)
    writer = writers(settings)
    writer.start()
    slot, worker = shared.claim()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the simulated worker

        async def worker_main() -> None:
            c = AuditClient(
                asyncio.get_running_loop(),
                endpoint.address,
                shared,
                slot,
                batch_max=1000,
                flush_interval=60.0,
            )
            c.start()
            for n in range(10):
                submit(c, n)
            await c.drain(10)  # seqs 1-11 written
            for n in range(10, 15):
                submit(c, n)  # seqs 12-16 only in this process
            os.write(ready_w, b"x")
            await asyncio.sleep(60)

        try:
            endpoint.close()
            run(worker_main)
        finally:
            os._exit(1)
    try:
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"x"
    finally:
        os.close(ready_r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    shared.worker_exited(slot)  # what the master does when it reaps a worker
    wait_for(lambda: shared.get(slot, STATE) == FREE, what="the writer's accounting")
    assert writer.stop() == 0
    records = read_records(tmp_path / "audit.jsonl")
    gap = records[-1]
    assert (gap["worker"], gap["seq"], gap["gap"], gap["reason"]) == (worker, 12, 5, "lost_with_worker")
    assert [r["seq"] for r in records if r.get("worker") == worker] == [*range(1, 12), 12]
    assert verify_files([str(tmp_path / "audit.jsonl")]).lost == 5
    assert "worker 1 exited holding 5 records (seq 12 to 16)" in writer.log
    assert shared.stats().lost == 5


def test_the_writer_is_named_for_ps(tmp_path: Path, writers: Callable[..., WriterProcess]) -> None:
    writer = writers(settings_for(tmp_path))
    writer.start()
    assert Path(f"/proc/{writer.pid}/comm").read_text() == "fastproxy-audit\n"
    assert writer.stop() == 0


def test_the_files_tests_produce_hold_no_credentials(tmp_path: Path) -> None:
    # Records carry only what the request path passes; a line is a fixed set of members.
    lines = stream_lines(3)
    keys = set(orjson.loads(lines[1]))
    assert not keys & {"authorization", "token", "api_key", "credential", "headers"}


def test_a_batch_written_but_never_acknowledged_is_not_written_twice(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    # The last writer died between its write and its acknowledgement: the file has seqs 1-6 of
    # worker 1, shared memory does not say so, and the worker sends them all again.
    slot, worker = shared.claim()
    encoder = RecordEncoder(BOOT, worker, Clock())
    records = [encoder.worker_start(1, 1)] + [request(encoder, seq, seq) for seq in range(2, 9)]
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(chained_lines(records[:6])))
    writer = writers(settings_for(tmp_path))
    writer.start()
    with raw_worker(endpoint, slot, worker, written=6) as sock:  # learnt from the file's tail
        sock.send(encode_batch(1, 8, records))
        assert sock.recv(64) == encode_seq(ACK, 8)
    assert writer.stop() == 0
    seqs = [r["seq"] for r in read_records(path) if r.get("worker") == worker]
    assert seqs == list(range(1, 9))
    assert verify_files([str(path)]).requests == 7


def test_batches_of_a_worker_that_closed_with_acks_unread_are_all_written(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    # Linux reports such a close to the reader as ECONNRESET before the data, and to the writer's
    # next acknowledgement as EPIPE: neither may cost the batches still queued in the socket.
    slot, worker = shared.claim()
    encoder = RecordEncoder(BOOT, worker, Clock())
    records = [encoder.worker_start(1, 1)] + [request(encoder, seq, seq) for seq in range(2, 31)]
    writer = writers(settings_for(tmp_path))
    writer.start()
    with raw_worker(endpoint, slot, worker) as sock:
        sock.send(encode_batch(1, 10, records[:10]))
        wait_for(lambda: shared.get(slot, WRITTEN) == 10, what="the first batch")  # its ack: unread
        sock.send(encode_batch(11, 20, records[10:20]))
        sock.send(encode_batch(21, 30, records[20:]))
    shared.worker_exited(slot)
    wait_for(lambda: shared.get(slot, STATE) == FREE, what="the writer's accounting")
    assert writer.stop() == 0
    seqs = [r["seq"] for r in read_records(tmp_path / "audit.jsonl") if r.get("worker") == worker]
    assert seqs == list(range(1, 31))


def test_a_rotate_size_smaller_than_a_record_rotates_every_commit_without_looping(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    settings = settings_for(tmp_path, rotate_bytes=1)
    writer = writers(settings)
    writer.start()

    async def main() -> None:
        c = client(shared, endpoint, settings)
        c.start()
        for n in range(3):
            submit(c, n)
            assert await c.drain(10)
        c.close()

    run(main)
    assert writer.stop() == 0
    files = audit_files(tmp_path / "audit.jsonl")
    assert verify_files([str(p) for p in files]).requests == 3
    assert all(read_records(p)[0]["event"] == "rotate" for p in files[1:])


_FAULTS_PROBE = """
import sys
from fastproxy.audit.writer import keep_buffers_in_heap
if sys.argv[1] == "kept":
    keep_buffers_in_heap()
def faults():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])
source = bytearray(300_000)
for _ in range(5):
    bytes(source)
before = faults()
for _ in range(200):
    a = bytes(source); b = bytes(source); del a, b  # a commit's buffers, freed
print(faults() - before)
"""


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not Path("/proc/self/stat").exists(), reason="glibc's malloc, /proc"
)
def test_batch_sized_buffers_are_reused_without_page_faults() -> None:
    import subprocess
    import sys

    def faults(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _FAULTS_PROBE, mode],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return int(done.stdout)

    # glibc's default maps each such buffer afresh: about 73 faults per 300 kB, 400 buffers.
    assert faults("default") > 5000
    assert faults("kept") < 100


def test_append_writes_every_chunk_in_order_after_a_short_writev(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = AuditFile(str(tmp_path / "audit.jsonl"))
    file.open()
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[bytes]) -> int:
        # What a full pipe or a signal can do: write part of the first buffer only.
        return real_writev(fd, [buffers[0][:3]])

    monkeypatch.setattr(os, "writev", short_writev)
    chunks = [b"first line\n", b"second\n", b"third\n"]
    file.append(chunks)
    monkeypatch.undo()
    file.append([b"fourth\n"])
    file.close()
    assert (tmp_path / "audit.jsonl").read_bytes() == b"".join(chunks) + b"fourth\n"
    assert file.size == len(b"".join(chunks) + b"fourth\n")


def test_under_a_stream_of_batches_commits_are_spaced(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    # One batch every millisecond for half a second: without spacing about one commit each.
    settings = settings_for(tmp_path, flush_interval=0.05)
    slot, worker = shared.claim()
    encoder = RecordEncoder(BOOT, worker, Clock())
    writer = writers(settings)
    writer.start()
    before = shared.stats().commits
    with raw_worker(endpoint, slot, worker) as sock:
        start = time.monotonic()
        seq = 0
        while time.monotonic() - start < 0.5:
            sock.send(
                encode_batch(
                    seq + 1, seq + 2, [request(encoder, seq + 1, seq), request(encoder, seq + 2, seq)]
                )
            )
            seq += 2
            time.sleep(0.001)
        wait_for(lambda: shared.get(slot, WRITTEN) == seq, what="every batch")
        elapsed = time.monotonic() - start
    commits = shared.stats().commits - before
    # A commit starts at most every COMMIT_SPACING; one more for the pass under way at the start.
    assert 1 <= commits <= elapsed / COMMIT_SPACING + 2
    assert writer.stop() == 0
    assert [r["seq"] for r in read_records(tmp_path / "audit.jsonl") if r.get("worker") == worker] == list(
        range(1, seq + 1)
    )


def test_a_pass_that_left_more_waiting_is_not_followed_by_a_wait() -> None:
    assert next_commit_at(100.0, COMMIT_SPACING, more_waiting=False) == 100.0 + COMMIT_SPACING
    assert next_commit_at(100.0, COMMIT_SPACING, more_waiting=True) == 0.0


def test_many_small_batches_are_not_held_to_a_read_cap_per_spacing(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    # One-record batches (batch_max = 1 is allowed): a pass reads _READS_PER_PASS of them from a
    # connection. Were each pass then spaced, 1,920 would take 30 passes x 20 ms at the least.
    settings = settings_for(tmp_path, batch_max=1, flush_interval=0.05, fsync=False)
    slot, worker = shared.claim()
    encoder = RecordEncoder(BOOT, worker, Clock())
    count = 64 * 30
    messages = [encode_batch(seq, seq, [request(encoder, seq, seq)]) for seq in range(1, count + 1)]
    writer = writers(settings)
    writer.start()
    with raw_worker(endpoint, slot, worker, sndbuf=4 << 20) as sock:
        start = time.monotonic()
        for message in messages:
            sock.send(message)
        wait_for(lambda: shared.get(slot, WRITTEN) == count, what="every batch")
        elapsed = time.monotonic() - start
    assert elapsed < 30 * COMMIT_SPACING * 0.75, elapsed
    assert writer.stop() == 0


def test_a_resent_batch_with_a_record_that_is_not_json_closes_only_that_connection(
    tmp_path: Path, shared: AuditShared, endpoint: WriterEndpoint, writers: Callable[..., WriterProcess]
) -> None:
    # A batch that overlaps what the file has is split by each record's seq: a record there that
    # is not JSON is the worker's protocol error, not the writer's crash.
    slot, worker = shared.claim()
    encoder = RecordEncoder(BOOT, worker, Clock())
    writer = writers(settings_for(tmp_path))
    writer.start()
    with raw_worker(endpoint, slot, worker) as sock:
        sock.send(encode_batch(1, 2, [request(encoder, 1, 1), request(encoder, 2, 2)]))
        assert sock.recv(64) == encode_seq(ACK, 2)
        sock.send(encode_batch(2, 3, [request(encoder, 2, 2), b'{"seq":3,"not json}']))
        assert sock.recv(64) == b""  # closed by the writer
    assert writer.pid and os.waitpid(writer.pid, os.WNOHANG) == (0, 0)  # still running
    assert writer.stop() == 0
