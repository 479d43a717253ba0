"""Mutated requests through the running proxy: no crash, no traceback, only well-formed answers.

Each case is a valid request with a few random byte-level mutations (control bytes, separators,
deleted bytes, duplicated lines, altered framing), sent on its own connection and followed by a
half-close. The worker must survive every one of them, every answer must be an HTTP/1.1 response
(or nothing), nothing may leak a traceback, and what reaches the upstream must be framed by the
proxy: exactly one of Content-Length or Transfer-Encoding for a request with a body.
"""

from __future__ import annotations

import random
import socket

from .helpers import ProxyLauncher, RecordingUpstream

SEEDS = [
    b"GET /fuzz/a?x=1 HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
    b"POST /fuzz/b HTTP/1.1\r\nHost: a\r\nContent-Length: 38\r\n\r\n"
    b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /fuzz/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"26\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n\r\n0\r\n\r\n",
    b"GET /fuzz/d HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n"
    b"GET /fuzz/e HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PUT /fuzz/f HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
]
INSERTS = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b",", b"0", b"-", b"\x7f", b"\xff", b"%2e%2e/"]
FRAMING = [
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    b"Host: b\r\n",
    b" folded\r\n",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        position = rng.randrange(len(buf) + 1)
        if choice < 0.4:
            buf[position:position] = rng.choice(INSERTS)
        elif choice < 0.6 and buf:
            del buf[min(position, len(buf) - 1)]
        elif choice < 0.8:
            line_end = buf.find(b"\r\n", position)
            if line_end != -1:
                buf[line_end + 2 : line_end + 2] = rng.choice(FRAMING)
        else:
            start = buf.rfind(b"\r\n", 0, position)
            end = buf.find(b"\r\n", position)
            if start != -1 and end != -1:
                buf[end + 2 : end + 2] = buf[start + 2 : end + 2]
    return bytes(buf)


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
    return received


def test_mutated_requests_never_crash_or_leak(launcher: ProxyLauncher, recorder: RecordingUpstream) -> None:
    proxy = launcher.start(
        recorder.url,
        workers=1,
        args=["--header-timeout", "2", "--body-timeout", "2", "--max-body-bytes", "100"],
    )
    workers = proxy.worker_pids()
    rng = random.Random(20261128)
    for case in range(250):
        data = mutate(rng, rng.choice(SEEDS))
        answer = exchange(proxy.port, data)
        assert b"Traceback" not in answer, (case, data)
        if answer:
            assert answer.startswith(b"HTTP/1.1 "), (case, data, answer[:200])
    assert proxy.worker_pids() == workers, "a worker died"
    assert proxy.request("GET", "/fuzz/after").status == 200
    for request in recorder.snapshot():
        names = [name.lower() for name, _ in request.headers]
        assert names.count("host") <= 1, request
        framing = names.count("content-length") + names.count("transfer-encoding")
        assert framing <= 1, request
    proxy.assert_clean_log()
