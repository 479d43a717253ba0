"""Helpers for the integration tests: raw HTTP/1.1 over sockets, processes, a recording upstream.

Everything here is bounded: sockets carry timeouts and every wait has a deadline, so a hung proxy
fails a test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

SOCKET_TIMEOUT = 10.0
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago.

    All are held bound until the last is chosen: two free_port() calls in a row can get the same
    port back, once released (a proxy told to listen and to serve its admin port on one port).
    """
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def is_audit_writer(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "fastproxy-audit"
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    """Live child pids of ``pid`` (zombies not yet reaped are left out)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return sorted(p for p in map(int, text.split()) if pid_alive(p))


# -- raw HTTP ---------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "length", "chunked", "close" or "none"

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def closes(self) -> bool:
        return any(t.strip().lower() == "close" for t in ",".join(self.header_all("connection")).split(","))


def build_request(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    host: str | None = "test.local",
    version: str = "1.1",
) -> bytes:
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    names = {n.lower() for n, _ in headers}
    lines.extend(f"{n}: {v}" for n, v in headers)
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Client:
    """One client connection with a buffered reader: keep-alive, pipelining, precise bytes."""

    def __init__(self, port: int, timeout: float = SOCKET_TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    @property
    def local_port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        host: str | None = "test.local",
        version: str = "1.1",
    ) -> Response:
        self.send(build_request(method, target, headers, body, host, version))
        return self.read_response(method)

    def read_response(self, method: str = "GET") -> Response:
        rfile = self.rfile
        line = rfile.readline(65537)
        if not line:
            raise ConnectionError("connection closed before a response")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        status = int(code)
        headers = []
        while True:
            line = rfile.readline(65537)
            if not line:
                raise ConnectionError("connection closed inside a response head")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        response = Response(status, reason, version, headers, b"", "none")
        if method == "HEAD" or status in (204, 304) or status < 200:
            return response
        te = response.header("transfer-encoding")
        length = response.header("content-length")
        if te is not None:
            assert te.lower() == "chunked", f"unexpected Transfer-Encoding {te!r}"
            response.framing = "chunked"
            response.body = self._read_chunked()
        elif length is not None:
            response.framing = "length"
            response.body = self._read_exactly(int(length))
        else:
            response.framing = "close"
            response.body = rfile.read()
        return response

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) != size:
            raise ConnectionError(f"body cut short: {len(data)} of {size} bytes")
        return data

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            line = self.rfile.readline(1026)
            if not line.endswith(b"\n"):
                raise ConnectionError("connection closed inside a chunk size line")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            parts.append(self._read_exactly(size))
            if self._read_exactly(2) != b"\r\n":
                raise ConnectionError("chunk not followed by CRLF")
        while True:  # trailers, up to the empty line
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("connection closed inside the trailers")
            if line in (b"\r\n", b"\n"):
                return b"".join(parts)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """Wait for the proxy to close: True on EOF or reset, False when data or a timeout comes."""
        self.sock.settimeout(timeout)
        try:
            data = self.rfile.read1(1)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return data == b""


def request(
    port: int,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    host: str | None = "test.local",
) -> Response:
    """One request on a fresh connection."""
    with Client(port) as client:
        return client.request(method, target, headers, body, host)


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    """A proxy-made error: the status, a JSON body of exactly error + request_id, no traceback."""
    assert response.status == status, (response.status, response.body[:200])
    assert b"Traceback" not in response.body
    assert response.header("content-type") == "application/json"
    document = response.json()
    assert set(document) == {"error", "request_id"}, document
    assert document["error"] == code
    assert document["request_id"]
    assert document["request_id"] == response.header("x-request-id")
    return dict(document)


# -- processes --------------------------------------------------------------------------------


def _python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NOTIFY_SOCKET", None)  # a test run under systemd must not speak for the service
    env.update(extra or {})
    return env


def _terminate(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal a process this test started, wait, then KILL it if it is still there."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def _connectable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


class DevServer:
    """``python -m fastproxy.devserver`` on a free port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fastproxy.devserver", "--listen", f"127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=_python_env(),
                cwd=ROOT,
            )
        try:
            wait_for(lambda: self._up(), READY_TIMEOUT, "the devserver to listen")
        except BaseException:
            self.stop()
            raise

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"devserver exited: {self.log_path.read_text()}")
        return _connectable(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _terminate(self.proc)


class Proxy:
    """One ``fastproxy run`` master started by a test; see :class:`ProxyLauncher`."""

    def __init__(
        self,
        argv: list[str],
        port: int,
        admin_port: int,
        log_path: Path,
        config_path: Path | None,
        workers: int,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = argv
        self.port = port
        self.admin_port = admin_port
        self.log_path = log_path
        self.config_path = config_path
        self.workers = workers
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=_python_env(env),
                cwd=ROOT,
            )
        self.pid = self.proc.pid

    # -- observing ------------------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The master's live children but the audit writer (named fastproxy-audit): its workers."""
        return [pid for pid in children_of(self.pid) if not is_audit_writer(pid)]

    def audit_writer_pid(self) -> int | None:
        return next((pid for pid in children_of(self.pid) if is_audit_writer(pid)), None)

    def readyz(self) -> tuple[int, dict[str, Any]] | None:
        try:
            response = request(self.admin_port, "GET", "/readyz", host="127.0.0.1")
        except OSError:
            return None
        return response.status, response.json()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until /readyz is 200 with every worker ready and the master has exactly N children."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"proxy exited with {self.proc.returncode} before it was ready:\n{self.log()}"
                )
            answer = self.readyz()
            return (
                answer is not None
                and answer[0] == 200
                and answer[1].get("workers_ready") == self.workers
                and len(self.worker_pids()) == self.workers
            )

        wait_for(ready, timeout, "the proxy to be ready")

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"proxy did not exit within {timeout}s") from None

    def assert_clean_log(self) -> None:
        text = self.log()
        assert "Traceback" not in text, text

    # -- acting -----------------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        assert self.proc.poll() is None, "the master is not running"
        os.kill(self.pid, sig)

    def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        host: str | None = "test.local",
    ) -> Response:
        return request(self.port, method, target, headers, body, host)

    def client(self, timeout: float = SOCKET_TIMEOUT) -> Client:
        return Client(self.port, timeout)

    def stop(self) -> None:
        """TERM the master and wait; KILL it and the workers it forked if it will not go."""
        workers = self.worker_pids()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                workers = sorted({*workers, *self.worker_pids()})
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        for pid in workers:
            # Only the master's own children; reparented, they would outlive the test.
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class ProxyLauncher:
    """Starts proxies whose files (config, log) live in ``directory``; stops them all at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Proxy] = []

    def start(
        self,
        upstream: str | None = None,
        *,
        config: str | None = None,
        args: Iterable[str] = (),
        workers: int = 1,
        wait: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Proxy:
        """``fastproxy run`` with ``--upstream`` or a TOML ``config`` (written to a file).

        The listen and admin addresses are flags, so they hold across a HUP reload of the file;
        ``args`` come last and override the defaults given here.
        """
        index = len(self.started)
        port, admin_port = free_ports(2)
        argv = [sys.executable, "-m", "fastproxy", "run"]
        config_path = None
        if config is not None:
            config_path = self.directory / f"proxy{index}.toml"
            config_path.write_text(config)
            argv += ["--config", str(config_path)]
        if upstream is not None:
            argv += ["--upstream", upstream]
        argv += [
            "--listen",
            f"127.0.0.1:{port}",
            "--admin-listen",
            f"127.0.0.1:{admin_port}",
            "--workers",
            str(workers),
            "--graceful-timeout",
            "5",
            *args,
        ]
        proxy = Proxy(argv, port, admin_port, self.directory / f"proxy{index}.log", config_path, workers, env)
        self.started.append(proxy)
        if wait:
            proxy.wait_ready()
        return proxy

    def stop_all(self) -> None:
        for proxy in reversed(self.started):
            proxy.stop()


def config_toml(upstream_url: str, routes: Iterable[dict[str, Any]], extra: str = "") -> str:
    """A config file with one upstream ``api`` and the given public ``[[routes]]``."""
    lines = [extra, "[upstreams.api]", f'url = "{upstream_url}"', ""]
    for route in routes:
        lines.append("[[routes]]")
        for key, value in {"upstream": "api", "public": True, **route}.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


class BlackholeUpstream:
    """A listener whose accept queue is full and never drained: a connect to it hangs.

    On Linux a SYN to a listener with a full accept queue is dropped, so the proxy's upstream
    connect stays pending until its ``--upstream-connect-timeout``.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port: int = self._listener.getsockname()[1]
        self._fill: list[socket.socket] = []
        for _ in range(16):
            probe = socket.socket()
            probe.settimeout(0.3)
            try:
                probe.connect(("127.0.0.1", self.port))
            except TimeoutError:
                probe.close()
                return
            self._fill.append(probe)
        self.close()
        raise AssertionError("could not fill the accept queue of a listener")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        for sock in self._fill:
            sock.close()
        self._listener.close()


# -- an upstream that records what reaches it --------------------------------------------------


@dataclass
class Recorded:
    connection: int  # 0, 1, ... in accept order
    index: int  # the request's position on its connection
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    complete: bool = False


# (request) -> the response bytes (a list: written piece by piece, 0.1 s apart), or None to close
# the connection without answering.
Responder = Callable[[Recorded], bytes | list[bytes] | None]


def json_response(document: Any, status: int = 200) -> bytes:
    body = json.dumps(document).encode()
    return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


def _default_responder(request: Recorded) -> bytes:
    return json_response({"connection": request.connection, "index": request.index, "target": request.target})


@dataclass
class RecordingUpstream:
    """A small threaded HTTP/1.1 origin that records every request head it parses.

    It parses strictly enough for the tests (Content-Length or chunked bodies) and records a head
    as soon as it is complete, so a request the proxy should never have sent shows up even if the
    proxy then drops the connection.
    """

    responder: Responder = _default_responder
    close_after_reply: bool = False  # close each connection after its first reply
    reply_before_body: bool = False  # answer as soon as a head is in, then read the body
    requests: list[Recorded] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._ended: set[int] = set()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ended(self) -> set[int]:
        """The connections that have ended (the proxy closed them, or they failed)."""
        with self._lock:
            return set(self._ended)

    def snapshot(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5.0)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                number = self.connections
                self.connections += 1
                self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    @staticmethod
    def _reply(sock: socket.socket, answer: bytes | list[bytes]) -> None:
        if isinstance(answer, bytes):
            sock.sendall(answer)
            return
        for i, piece in enumerate(answer):
            if i:
                time.sleep(0.1)
            sock.sendall(piece)

    def _serve(self, sock: socket.socket, number: int) -> None:
        sock.settimeout(0.2)
        buffer = b""
        index = 0

        def more() -> bool:
            nonlocal buffer
            while not self._stopping.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return False
                if not data:
                    return False
                buffer += data
                return True
            return False

        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    if not more():
                        return
                raw_head, _, buffer = buffer.partition(b"\r\n\r\n")
                request_line, *lines = raw_head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = [(n.strip(), v.strip()) for n, _, v in (x.partition(":") for x in lines)]
                recorded = Recorded(number, index, method, target, headers)
                index += 1
                with self._lock:
                    self.requests.append(recorded)
                names = {n.lower(): v for n, v in headers}
                early = self.responder(recorded) if self.reply_before_body else None
                if early is not None:
                    self._reply(sock, early)
                if names.get("transfer-encoding", "").lower() == "chunked":
                    body = []
                    while True:
                        while b"\r\n" not in buffer:
                            if not more():
                                return
                        size_line, _, buffer = buffer.partition(b"\r\n")
                        size = int(size_line.split(b";")[0], 16)
                        while len(buffer) < size + 2:
                            if not more():
                                return
                        body.append(buffer[:size])
                        buffer = buffer[size + 2 :]
                        if size == 0:
                            break
                    recorded.body = b"".join(body)
                else:
                    length = int(names.get("content-length", "0"))
                    while len(buffer) < length:
                        if not more():
                            return
                    recorded.body, buffer = buffer[:length], buffer[length:]
                recorded.complete = True
                answer = early if self.reply_before_body else self.responder(recorded)
                if answer is None:
                    return
                if not self.reply_before_body:
                    self._reply(sock, answer)
                if self.close_after_reply:
                    return
        except (OSError, ValueError):
            return
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._ended.add(number)
