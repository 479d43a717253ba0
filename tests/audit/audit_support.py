"""Helpers of the audit tests: a forked writer process, records made with plain values, polling."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from fastproxy.audit import AuditShared, WriterEndpoint, run_writer
from fastproxy.audit.chain import Chain
from fastproxy.audit.record import RecordEncoder
from fastproxy.audit.writer import Opener
from fastproxy.config.schema import AuditSettings

BOOT = "b00700000000beef"
T0 = 1_795_834_800_123_456_000  # 2026-11-28T03:00:00.123456Z in ns


class Clock:
    """A nanosecond clock that moves only when told to."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def request(encoder: RecordEncoder, seq: int, n: int = 0, **fields: object) -> bytes:
    values: dict[str, object] = {
        "request_id": f"req-{n}",
        "client_ip": "203.0.113.7",
        "method": "GET",
        "path": f"/api/orders/{n}",
        "route": "orders-read",
        "principal": "alice",
        "auth": "jwt:corp",
        "decision": "allow",
        "reason": "ok",
        "mode": "enforce",
        "would_deny": None,
        "status": 200,
        "upstream": "api",
        "latency_ms": 1.92,
        "bytes_in": 0,
        "bytes_out": 734,
        "masked": 2,
    }
    values.update(fields)
    return encoder.request(seq, **values)  # type: ignore[arg-type]


def submit(client: object, n: int, **fields: object) -> bool:
    values: dict[str, object] = {
        "request_id": f"req-{n}",
        "client_ip": "203.0.113.7",
        "method": "GET",
        "path": f"/api/orders/{n}",
        "route": "orders-read",
        "principal": "alice",
        "auth": "jwt:corp",
        "decision": "allow",
        "reason": "ok",
        "mode": "enforce",
        "status": 200,
        "upstream": "api",
        "latency_ms": 0.5,
        "bytes_in": 0,
        "bytes_out": 10,
        "masked": 0,
    }
    values.update(fields)
    return client.submit(**values)  # type: ignore[attr-defined,no-any-return]


def chained_lines(records: list[bytes], head: bytes | None = None) -> list[bytes]:
    """Lines as the writer would write them."""
    chain = Chain() if head is None else Chain(head)
    out: list[bytes] = []
    chain.extend(records, out)
    return out


def stream_lines(count: int, worker: int = 1, boot: str = BOOT) -> list[bytes]:
    """A valid file's worth of lines: one worker's start marker then ``count`` request records."""
    encoder = RecordEncoder(boot, worker, Clock())
    records = [encoder.worker_start(1, 4242)]
    records += [request(encoder, seq, seq) for seq in range(2, count + 2)]
    return chained_lines(records)


def read_records(*paths: Path) -> list[dict[str, object]]:
    out = []
    for path in paths:
        for line in path.read_bytes().splitlines():
            out.append(orjson.loads(line))
    return out


def audit_files(path: Path) -> list[Path]:
    """The rotated files in order, then the current one."""
    rotated = sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name + "."))
    return [*rotated, *([path] if path.exists() else [])]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class WriterProcess:
    """A real writer, forked by the test; only this test's processes are ever signalled."""

    def __init__(
        self,
        tmp_path: Path,
        settings: AuditSettings,
        shared: AuditShared,
        endpoint: WriterEndpoint,
        opener: Opener | None = None,
        drain_timeout: float = 5.0,
    ) -> None:
        self.log_path = tmp_path / "writer.log"
        self.settings = settings
        self.shared = shared
        self.endpoint = endpoint
        self.opener = opener
        self.drain_timeout = drain_timeout
        self.pid = 0

    def start(self, wait: bool = True) -> int:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            status = 1
            try:
                # Like the master's child, keep only what the writer needs: a copy of a simulated
                # worker's socket here would hide that worker's end from the writer.
                keep = self.endpoint.sock.fileno() if self.endpoint.sock is not None else -1
                os.closerange(3, keep)
                os.closerange(keep + 1, 65536)
                fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                root = logging.getLogger()
                for handler in list(root.handlers):
                    root.removeHandler(handler)
                handler = logging.StreamHandler(open(fd, "w", buffering=1))  # noqa: SIM115
                handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
                root.addHandler(handler)
                root.setLevel(logging.DEBUG)
                kwargs = {"opener": self.opener} if self.opener else {}
                status = run_writer(
                    self.settings, self.endpoint, self.shared, drain_timeout=self.drain_timeout, **kwargs
                )
            finally:
                with contextlib.suppress(Exception):
                    logging.shutdown()
                os._exit(status)
        self.pid = pid
        if wait:
            wait_for(self.serving_or_gone, what="the writer to serve")
        return pid

    def serving_or_gone(self) -> bool:
        if self.shared.writer_pid == self.pid:
            return True
        done, _ = os.waitpid(self.pid, os.WNOHANG)
        if done:
            raise AssertionError(f"writer exited early:\n{self.log}")
        return False

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = 0
                self.shared.writer_exited()
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                self.pid = 0
                raise AssertionError("the writer did not exit")
            time.sleep(0.005)

    def stop(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@contextlib.contextmanager
def writer_running(
    tmp_path: Path, settings: AuditSettings, shared: AuditShared, endpoint: WriterEndpoint
) -> Iterator[WriterProcess]:
    writer = WriterProcess(tmp_path, settings, shared, endpoint)
    writer.start()
    try:
        yield writer
    finally:
        if writer.pid:
            writer.kill()
