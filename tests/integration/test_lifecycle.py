"""The process tree: workers replaced when they die or hang, reloads, stops, the pid file."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from .helpers import (
    BlackholeUpstream,
    Client,
    DevServer,
    Proxy,
    ProxyLauncher,
    config_toml,
    pid_alive,
    wait_for,
)


def all_succeed(proxy: Proxy, count: int = 10, path: str = "/status/200") -> None:
    for _ in range(count):
        assert proxy.request("GET", path).status == 200


def wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout, f"pids {pids} to exit")


# -- workers ----------------------------------------------------------------------------------------


def test_killed_worker_is_replaced(launcher: ProxyLauncher, devserver: DevServer) -> None:
    proxy = launcher.start(devserver.url, workers=2)
    before = proxy.worker_pids()
    assert len(before) == 2
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    wait_gone([victim])

    def replaced() -> bool:
        now = proxy.worker_pids()
        return len(now) == 2 and victim not in now and before[1] in now

    wait_for(replaced, 10.0, "a new worker")
    proxy.wait_ready()
    all_succeed(proxy, 20)
    assert f"worker {victim} died (signal SIGKILL)" in proxy.log()
    proxy.assert_clean_log()


def test_hung_worker_is_replaced(launcher: ProxyLauncher, devserver: DevServer) -> None:
    proxy = launcher.start(devserver.url, workers=1, args=["--worker-timeout", "1"])
    [victim] = proxy.worker_pids()
    os.kill(victim, signal.SIGSTOP)  # alive but silent: no heartbeat
    try:
        wait_gone([victim], 10.0)
    finally:
        if pid_alive(victim):
            os.kill(victim, signal.SIGKILL)
    wait_for(lambda: proxy.worker_pids() not in ([], [victim]), 10.0, "a new worker")
    proxy.wait_ready()
    all_succeed(proxy)
    assert f"worker {victim} sent no heartbeat" in proxy.log()
    proxy.assert_clean_log()


def test_workers_stop_when_the_master_is_killed(launcher: ProxyLauncher, devserver: DevServer) -> None:
    proxy = launcher.start(devserver.url, workers=2)
    workers = proxy.worker_pids()
    proxy.signal(signal.SIGKILL)
    proxy.wait_exit()
    wait_gone(workers, 10.0)
    with pytest.raises(OSError):
        proxy.request("GET", "/status/200")


# -- reload -------------------------------------------------------------------------------------------


class Traffic:
    """New connections, one request each, in a thread: every one must get an HTTP answer."""

    def __init__(self, proxy: Proxy, paths: tuple[str, ...]) -> None:
        self.proxy = proxy
        self.paths = paths
        self.results: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15.0)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            path = self.paths[i % len(self.paths)]
            i += 1
            try:
                self.results.append(self.proxy.request("GET", path).status)
            except OSError as exc:
                self.results.append(f"{path}: {exc!r}")
            time.sleep(0.01)


def test_reload_with_a_valid_config(launcher: ProxyLauncher, devserver: DevServer) -> None:
    def config(version: str) -> str:
        routes = [{"name": version, "path": f"/{version}/*"}, {"name": "d", "path": "/delay/*"}]
        return config_toml(devserver.url, routes)

    proxy = launcher.start(config=config("v1"), workers=2)
    assert proxy.config_path is not None
    assert proxy.request("GET", "/v1/x").status == 200
    assert proxy.request("GET", "/v2/x").status == 404
    old = proxy.worker_pids()

    proxy.config_path.write_text(config("v2"))
    with Traffic(proxy, ("/v1/x", "/v2/x")) as traffic, proxy.client() as in_flight:
        in_flight.send(b"GET /delay/1000 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.2)
        proxy.signal(signal.SIGHUP)
        wait_for(lambda: proxy.request("GET", "/v2/x").status == 200, 10.0, "the new route")
        # The old generation finishes what it had started.
        response = in_flight.read_response()
        assert (response.status, response.body) == (200, b'{"delayed":true}')
        wait_gone(old, 10.0)
        time.sleep(0.2)
    assert traffic.results
    assert all(r in (200, 404) for r in traffic.results), [r for r in traffic.results if r not in (200, 404)]
    assert proxy.request("GET", "/v1/x").status == 404
    assert proxy.request("GET", "/v2/x").status == 200
    new = proxy.worker_pids()
    assert len(new) == 2
    assert not set(new) & set(old)
    assert "reload complete" in proxy.log()
    proxy.assert_clean_log()


@pytest.mark.parametrize(
    "bad",
    [
        "this is [not toml",
        '[server]\nno_such_key = 1\n[upstreams.api]\nurl = "http://127.0.0.1:1"\n',
        '[upstreams.api]\nurl = "http://127.0.0.1:1"\n'
        '[[routes]]\nname = "r"\npath = "/*"\nupstream = "api"\n',  # neither public nor identity
    ],
    ids=["syntax", "unknown-key", "not-public"],
)
def test_reload_with_an_invalid_config_keeps_serving(
    launcher: ProxyLauncher, devserver: DevServer, bad: str
) -> None:
    proxy = launcher.start(config=config_toml(devserver.url, [{"name": "v1", "path": "/v1/*"}]))
    assert proxy.config_path is not None
    workers = proxy.worker_pids()
    proxy.config_path.write_text(bad)
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in proxy.log(), 10.0, "'reload refused' in the log")
    time.sleep(0.3)
    assert proxy.request("GET", "/v1/x").status == 200
    assert proxy.request("GET", "/other").status == 404
    assert proxy.worker_pids() == workers
    assert proxy.proc.poll() is None
    proxy.assert_clean_log()


# -- stopping -----------------------------------------------------------------------------------------


def outcome_of_a_new_connection(port: int) -> str:
    """What a client that connects after the stop began sees."""
    try:
        client = Client(port, timeout=8.0)
    except ConnectionRefusedError:
        return "refused"
    with client:
        try:
            client.send(b"GET /status/200 HTTP/1.1\r\nHost: a\r\n\r\n")
            response = client.read_response()
        except (ConnectionError, BrokenPipeError):
            return "closed"
        return "answered with close" if response.closes else f"answered {response.status}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_graceful_stop_finishes_the_request_in_flight(
    launcher: ProxyLauncher, devserver: DevServer, sig: signal.Signals
) -> None:
    proxy = launcher.start(devserver.url, workers=2)
    workers = proxy.worker_pids()
    with proxy.client() as in_flight, proxy.client() as idle:
        assert idle.request("GET", "/status/200").status == 200  # an idle keep-alive client
        in_flight.send(b"GET /delay/1500 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.3)
        signalled = time.monotonic()
        proxy.signal(sig)
        assert idle.closed_by_peer(timeout=3.0)
        assert outcome_of_a_new_connection(proxy.port) in (
            "refused",
            "closed",
            "answered with close",
        )
        response = in_flight.read_response()
        assert (response.status, response.body) == (200, b'{"delayed":true}')
        assert response.closes
        assert in_flight.closed_by_peer()
    assert proxy.wait_exit(10.0) == 0
    # Done when the last request is: not held for the whole --graceful-timeout (5 s).
    assert time.monotonic() - signalled < 4.0
    assert not any(pid_alive(p) for p in workers)
    with pytest.raises(ConnectionRefusedError):
        proxy.request("GET", "/status/200")
    proxy.assert_clean_log()


def test_graceful_stop_answers_a_request_still_connecting_upstream(
    launcher: ProxyLauncher,
) -> None:
    upstream = BlackholeUpstream()
    try:
        proxy = launcher.start(
            upstream.url,
            args=["--upstream-connect-timeout", "1", "--graceful-timeout", "2"],
        )
        with proxy.client(timeout=5.0) as client:
            client.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            time.sleep(0.3)  # the proxy is now waiting for the upstream to accept
            signalled = time.monotonic()
            proxy.signal(signal.SIGTERM)
            try:
                response = client.read_response()
            except ConnectionError as exc:
                pytest.fail(f"no answer: {exc!r} after {time.monotonic() - signalled:.1f}s")
            # The connect times out after 1 s: that answer, then the connection ends.
            assert response.status in (502, 504)
            assert time.monotonic() - signalled < 2.5
            assert response.closes
        assert proxy.wait_exit() == 0
    finally:
        upstream.close()


def test_graceful_stop_gives_up_after_the_graceful_timeout(
    launcher: ProxyLauncher, devserver: DevServer
) -> None:
    proxy = launcher.start(devserver.url, args=["--graceful-timeout", "1"])
    with proxy.client() as in_flight:
        in_flight.send(b"GET /delay/8000 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.3)
        signalled = time.monotonic()
        proxy.signal(signal.SIGTERM)
        assert proxy.wait_exit(10.0) == 0
        assert time.monotonic() - signalled < 4.0
        with pytest.raises(ConnectionError):
            in_flight.read_response()


def test_quit_is_immediate(launcher: ProxyLauncher, devserver: DevServer) -> None:
    proxy = launcher.start(devserver.url, workers=2, args=["--graceful-timeout", "30"])
    workers = proxy.worker_pids()
    with proxy.client() as in_flight:
        in_flight.send(b"GET /delay/5000 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.3)
        signalled = time.monotonic()
        proxy.signal(signal.SIGQUIT)
        proxy.wait_exit(10.0)
        assert time.monotonic() - signalled < 3.5
        with pytest.raises(ConnectionError):
            in_flight.read_response()
    assert not any(pid_alive(p) for p in workers)


def test_pid_file_is_written_and_removed(
    launcher: ProxyLauncher, devserver: DevServer, tmp_path: Path
) -> None:
    pid_file = tmp_path / "fastproxy.pid"
    proxy = launcher.start(devserver.url, args=["--pid-file", str(pid_file)])
    assert pid_file.read_text().strip() == str(proxy.pid)
    proxy.signal(signal.SIGTERM)
    assert proxy.wait_exit() == 0
    assert not pid_file.exists()


# -- refusing to start -----------------------------------------------------------------------------


def test_address_in_use_exits_1(launcher: ProxyLauncher, devserver: DevServer) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proxy = launcher.start(devserver.url, args=["--admin-listen", f"127.0.0.1:{port}"], wait=False)
        assert proxy.wait_exit() == 1
    assert "cannot listen" in proxy.log()
    proxy.assert_clean_log()


def test_invalid_config_exits_2(launcher: ProxyLauncher, devserver: DevServer) -> None:
    proxy = launcher.start(
        config=config_toml(devserver.url, [{"name": "a", "path": "/*"}], "[server]\nbogus = 1\n"),
        wait=False,
    )
    assert proxy.wait_exit() == 2
    assert "server.bogus" in proxy.log()
    proxy.assert_clean_log()
    with pytest.raises(ConnectionRefusedError):
        proxy.request("GET", "/")


def test_readyz_says_503_while_a_graceful_stop_finishes(
    launcher: ProxyLauncher, devserver: DevServer
) -> None:
    proxy = launcher.start(devserver.url, workers=1)
    with proxy.client() as in_flight:
        in_flight.send(b"GET /delay/1500 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.2)
        proxy.signal(signal.SIGTERM)
        began = time.monotonic()
        # The master passes TERM on; from then the stopping worker answers 503 at once, not
        # after its in-flight request.
        wait_for(lambda: (proxy.readyz() or (0,))[0] == 503, 5, "/readyz to say 503")
        assert time.monotonic() - began < 1.2
        assert in_flight.read_response().status == 200
    assert proxy.wait_exit() == 0
