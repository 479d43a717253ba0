"""Back-pressure: a client that stops reading stops the proxy reading from the upstream.

The proxy's memory is the witness. A 64 MiB response to a client that reads nothing for a while
must not be buffered in the worker: the client's transport passes its high-water mark, the
upstream connection is paused, and the bytes wait in the upstream's socket and process instead.
Then the client reads everything, byte-exact.
"""

from __future__ import annotations

import socket
import time

from fastproxy.devserver import pattern

from .helpers import DevServer, ProxyLauncher

SIZE = 64 * 1024 * 1024


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_slow_reader_does_not_make_the_worker_buffer(launcher: ProxyLauncher, devserver: DevServer) -> None:
    proxy = launcher.start(devserver.url, workers=1)
    (worker,) = proxy.worker_pids()
    before = rss_kib(worker)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % SIZE)
        time.sleep(2.0)  # not reading: the proxy must stop reading the upstream
        stalled = rss_kib(worker)
        received = bytearray()
        while True:
            chunk = sock.recv(1 << 20)
            received += chunk
            head_end = received.find(b"\r\n\r\n")
            if not chunk or (head_end != -1 and len(received) - head_end - 4 >= SIZE):
                break
    assert stalled - before < 16 * 1024, f"worker grew by {stalled - before} KiB while the client stalled"
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: %d" % SIZE in head
    assert body == pattern(SIZE)
    proxy.assert_clean_log()
