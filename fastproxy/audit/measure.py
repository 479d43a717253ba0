"""Figures for the bench: the audit's cost in a worker and the writer's throughput.

``python -m fastproxy.audit.measure [DIRECTORY]`` prints them; bench/ may call the functions.

Worker-side figures are CPU time of the measuring process (``time.process_time``), best of a few
rounds, so a busy box does not inflate them with other processes' time slices.

- :func:`encode_cost`: microseconds to number and encode one request record (``RecordEncoder``).
- :func:`submit_cost`: microseconds per ``AuditClient.submit`` on a uvloop loop with a writer taking
  the batches (batching, sends and acknowledgements included) — the audit's cost per request in a
  worker.
- :func:`writer_throughput`: records per second a real writer process commits, fed by ``feeders``
  processes that send pre-encoded batches as fast as the sockets take them (the encoding is not
  counted: it happens in the workers). With ``fsync`` each commit is fdatasync'ed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator

from fastproxy.audit.client import AuditClient
from fastproxy.audit.protocol import encode_batch, encode_hello
from fastproxy.audit.record import RecordEncoder
from fastproxy.audit.shared import AuditShared
from fastproxy.audit.writer import WriterEndpoint, run_writer
from fastproxy.config.schema import AuditSettings

__all__ = [
    "encode_cost",
    "running_writer",
    "submit_cost",
    "welcomed_client",
    "writer_throughput",
]

_FIELDS = (
    "203.0.113.7", "GET", "/api/orders/7", "orders-read", "alice", "jwt:corp", "allow", "ok", "enforce",
)  # fmt: skip


def encode_cost(count: int = 50_000, rounds: int = 5) -> float:
    """The best of ``rounds`` runs (a busy box adds noise, never speed)."""
    encoder = RecordEncoder("0123456789abcdef", 1)
    request = encoder.request
    ip, method, path, route, principal, auth, decision, reason, mode = _FIELDS
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for seq in range(count):
            request(
                seq, b"4f1c2a9e0b7d-1a2b", ip, method, path, route, principal, auth, decision, reason,
                mode, None, 200, "api", 1.92, 0, 734, 2,
            )  # fmt: skip
        best = min(best, time.process_time() - start)
    return best / count * 1e6


def submit_cost(directory: str, count: int = 50_000, rounds: int = 5) -> float:
    """Microseconds per submit with a writer (fsync off) taking the batches, as in a worker:
    the loop runs between bursts of 64 submits, so sends and acknowledgements are counted too."""
    import uvloop

    best = float("inf")

    async def main(endpoint: WriterEndpoint, shared: AuditShared) -> None:
        nonlocal best
        slot, _ = shared.claim()
        # A burst may outrun the writer: room for it all.
        client = await welcomed_client(endpoint, shared, slot, queue_max=count + 10)
        submit = client.submit
        ip, method, path, route, principal, auth, decision, reason, mode = _FIELDS
        for _ in range(rounds):
            start = time.process_time()
            for n in range(count):
                submit(
                    b"4f1c2a9e0b7d-1a2b", ip, method, path, route, principal, auth, decision, reason, mode,
                    200, "api", 1.92, 0, 734, 2,
                )  # fmt: skip
                if not n & 63:
                    await asyncio.sleep(0)
            best = min(best, time.process_time() - start)
            await client.drain(10)
        client.close()

    with (
        running_writer(os.path.join(directory, "submit.jsonl")) as (endpoint, shared),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        runner.run(main(endpoint, shared))
    return best / count * 1e6


@contextlib.contextmanager
def running_writer(path: str, slots: int = 1) -> Iterator[tuple[WriterEndpoint, AuditShared]]:
    """A writer process (fsync off) forked to append to ``path`` and serving already, for the
    length of the block: (endpoint, table). It is stopped and both are closed at the end."""
    shared = AuditShared.create(slots=slots)
    endpoint = WriterEndpoint.create()
    settings = AuditSettings(path=path, fsync=False, rotate_bytes=1 << 40)
    try:
        pid = _fork_writer(settings, endpoint, shared)
        try:
            yield endpoint, shared
        finally:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
    finally:
        endpoint.close()
        shared.close()


async def welcomed_client(
    endpoint: WriterEndpoint, shared: AuditShared, slot: int, queue_max: int
) -> AuditClient:
    """An AuditClient of ``slot`` on the running loop, started, once the writer has welcomed it."""
    client = AuditClient(
        asyncio.get_running_loop(), endpoint.address, shared, slot, batch_max=512, flush_interval=0.05,
        queue_max=queue_max, queue_bytes_max=1 << 40,
    )  # fmt: skip
    client.start()
    while not client.available:
        await asyncio.sleep(0.01)
    return client


def _fork_writer(settings: AuditSettings, endpoint: WriterEndpoint, shared: AuditShared) -> int:
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = run_writer(settings, endpoint, shared)
        finally:
            os._exit(status)
    while shared.writer_pid != pid:
        time.sleep(0.01)
    return pid


def writer_throughput(
    directory: str, records: int = 400_000, fsync: bool = True, feeders: int = 4
) -> tuple[float, float]:
    """(records per second committed, writer CPU microseconds per record), from a writer process
    fed as the module's docstring says; CPU time is what a busy box cannot inflate."""
    # Not running_writer: the writer is reaped with wait4, for its CPU time.
    shared = AuditShared.create(slots=feeders)
    endpoint = WriterEndpoint.create()
    settings = AuditSettings(path=os.path.join(directory, "audit.jsonl"), fsync=fsync, rotate_bytes=1 << 40)
    writer = _fork_writer(settings, endpoint, shared)
    per_feeder = records // feeders
    go_r, go_w = os.pipe()
    pids = []
    for _ in range(feeders):
        slot, worker = shared.claim()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(go_w)
                _feed(endpoint.address, shared.boot, slot, worker, per_feeder, go_r)
                status = 0
            finally:
                os._exit(status)
        pids.append(pid)
    os.close(go_r)
    base = shared.stats().written
    time.sleep(0.5)  # the feeders encode their batches before the start
    start = time.perf_counter()
    os.close(go_w)  # go
    total = base + feeders * per_feeder
    while shared.stats().written < total:
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    for pid in pids:
        os.waitpid(pid, 0)
    os.kill(writer, signal.SIGTERM)
    _, _, usage = os.wait4(writer, 0)
    endpoint.close()
    shared.close()
    count = feeders * per_feeder
    return count / elapsed, (usage.ru_utime + usage.ru_stime) / count * 1e6


def _feed(address: str | bytes, boot: str, slot: int, worker: int, count: int, go: int) -> None:
    encoder = RecordEncoder(boot, worker)
    ip, method, path, route, principal, auth, decision, reason, mode = _FIELDS
    batches = []
    for first in range(1, count + 1, 256):
        last = min(count, first + 255)
        batch = [
            encoder.request(
                seq, f"req-{seq}", ip, method, path, route, principal, auth, decision, reason, mode,
                None, 200, "api", 1.92, 0, 734, 2,
            )
            for seq in range(first, last + 1)
        ]  # fmt: skip
        batches.append(encode_batch(first, last, batch))
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect(address)
        sock.send(encode_hello(slot, worker, os.getpid(), boot))
        sock.recv(64)  # welcome
        os.read(go, 1)  # returns at EOF: the parent closed its end
        for message in batches:
            sock.send(message)


def main(argv: list[str]) -> int:
    directory = argv[1] if len(argv) > 1 else None
    print(f"encode: {encode_cost():.2f} us/record")
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        print(f"submit: {submit_cost(tmp):.2f} us/record (worker side: batching, sending, acks)")
        for fsync in (True, False):
            rate, cpu = writer_throughput(tmp, fsync=fsync)
            print(
                f"writer: {rate:,.0f} records/s with fsync={'on' if fsync else 'off'} "
                f"({cpu:.2f} us of writer CPU per record, start and recovery included)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
