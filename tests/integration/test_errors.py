"""Every error status of this release, through a running proxy: status, JSON body, connection."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from .helpers import (
    BlackholeUpstream,
    Client,
    DevServer,
    Proxy,
    ProxyLauncher,
    RecordingUpstream,
    assert_error,
    config_toml,
    free_port,
    wait_for,
)

MAX_BODY = 1000
MAX_HEADER = 4096


@pytest.fixture(scope="module")
def proxy(module_launcher: ProxyLauncher, devserver: DevServer) -> Proxy:
    return module_launcher.start(
        devserver.url,
        args=[
            "--header-timeout",
            "1",
            "--body-timeout",
            "1",
            "--upstream-timeout",
            "1",
            "--max-body-bytes",
            str(MAX_BODY),
            "--max-header-bytes",
            str(MAX_HEADER),
        ],
    )


@pytest.fixture(autouse=True)
def _proxy_stays_healthy(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test the shared proxy still runs, with no traceback in its log."""
    yield
    if "proxy" in request.fixturenames:
        proxy: Proxy = request.getfixturevalue("proxy")
        assert proxy.proc.poll() is None, proxy.log()
        proxy.assert_clean_log()
        assert "died" not in proxy.log()


def send_raw(proxy: Proxy, data: bytes) -> tuple[Client, object]:
    client = proxy.client()
    client.send(data)
    return client, client.read_response()


# -- 400 ------------------------------------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

SMUGGLING = {
    "cl-te": b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-cl": b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-list": b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-not-chunked": b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-space-before-colon": b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-obs-fold": b"POST /a HTTP/1.1\r\nHost: a\r\nX-Pad: 1\r\n Transfer-Encoding: chunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-on-http10": b"POST /a HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "two-content-lengths": b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Content-Length: 0\r\n\r\nhello" + SMUGGLED,
    "content-length-sign": b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello" + SMUGGLED,
    "bad-chunk-size": b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunk-size-overflow": b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"10000000000000005\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunk-without-crlf": b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhelloXX0\r\n\r\n" + SMUGGLED,
    "bare-lf-in-head": b"POST /a HTTP/1.1\nHost: a\nContent-Length: 0\n\n" + SMUGGLED,
}


@pytest.fixture(scope="module")
def smuggle_target(
    module_launcher: ProxyLauncher,
) -> Iterator[tuple[Proxy, RecordingUpstream]]:
    upstream = RecordingUpstream()
    try:
        yield module_launcher.start(upstream.url), upstream
    finally:
        upstream.close()


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_attempt_is_400_closed_and_never_reaches_the_upstream(
    smuggle_target: tuple[Proxy, RecordingUpstream], name: str
) -> None:
    proxy, upstream = smuggle_target
    before = len(upstream.snapshot())
    with proxy.client() as client:
        client.send(SMUGGLING[name])
        response = client.read_response()
        assert_error(response, 400, "bad_request")
        assert response.closes
        assert client.closed_by_peer()
    # Whatever reached the upstream (at most the head of the refused request) holds no second
    # request; a clean request afterwards arrives alone and intact.
    after = proxy.request("GET", "/after")
    assert after.status == 200
    seen = upstream.snapshot()[before:]
    assert [r.target for r in seen if r.target != "/a"] == ["/after"], seen
    assert all(r.target != "/smuggled" for r in upstream.snapshot())
    assert seen[-1].complete
    proxy.assert_clean_log()


MALFORMED = {
    "no-host": b"GET /echo HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "http-2-version": b"GET /echo HTTP/2.0\r\nHost: a\r\n\r\n",
    "garbage-line": b"HELLO\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "nul-in-header": b"GET /echo HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
    "dot-segment": b"GET /api/../admin HTTP/1.1\r\nHost: a\r\n\r\n",
    "encoded-dot-segment": b"GET /api/%2e%2e/admin HTTP/1.1\r\nHost: a\r\n\r\n",
    "authority-form": b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n",
    "bad-expect": b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_is_400_and_closed(proxy: Proxy, name: str) -> None:
    with proxy.client() as client:
        client.send(MALFORMED[name])
        response = client.read_response()
        assert_error(response, 400, "bad_request")
        assert client.closed_by_peer()


@pytest.mark.parametrize("pool", ["warm", "cold"])
def test_error_after_a_good_request_comes_after_its_response(
    launcher: ProxyLauncher, devserver: DevServer, pool: str
) -> None:
    """A malformed request pipelined behind a good one: the good one's answer, then the 400.

    ``warm``: the worker holds an idle upstream connection, so the first request is forwarded
    at once; ``cold``: the first request has to wait for a new upstream connection.
    """
    proxy = launcher.start(devserver.url, workers=1, args=["--graceful-timeout", "1"])
    if pool == "warm":
        assert proxy.request("GET", "/status/200").status == 200
    with proxy.client(timeout=2.0) as client:
        client.send(b"GET /delay/200 HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\n\r\n")
        first = client.read_response()
        assert (first.status, first.body) == (200, b'{"delayed":true}')
        assert_error(client.read_response(), 400, "bad_request")
        assert client.closed_by_peer()
    proxy.assert_clean_log()


def test_client_gone_mid_body_ends_the_exchange(launcher: ProxyLauncher, recorder: RecordingUpstream) -> None:
    proxy = launcher.start(recorder.url, args=["--body-timeout", "10", "--graceful-timeout", "2"])
    with proxy.client() as client:
        client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc")
        wait_for(recorder.snapshot, 5.0, "the request head upstream")
    # The body can never be completed: the upstream connection is given up at once ...
    wait_for(lambda: 0 in recorder.ended(), 2.0, "the upstream connection to be closed")
    assert not recorder.snapshot()[0].complete
    # ... and nothing is left for a graceful stop to wait for.
    signalled = time.monotonic()
    proxy.signal(signal.SIGTERM)
    assert proxy.wait_exit() == 0
    assert time.monotonic() - signalled < 1.5
    proxy.assert_clean_log()


# -- 414, 431, 413 ---------------------------------------------------------------------------------


def test_url_too_long_is_414(proxy: Proxy) -> None:
    with proxy.client() as client:
        client.send(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert_error(client.read_response(), 414, "uri_too_long")


def test_url_at_the_limit_is_accepted(proxy: Proxy) -> None:
    target = "/echo?" + "q" * (8192 - len("/echo?"))
    response = proxy.request("GET", target)
    assert response.status == 200
    assert response.json()["target"] == target


def test_headers_under_the_limit_are_accepted(proxy: Proxy) -> None:
    response = proxy.request("GET", "/echo", [("X-Big", "a" * (MAX_HEADER - 200))])
    assert response.status == 200


@pytest.mark.parametrize("size", [MAX_HEADER + 1, 40000])
def test_headers_too_large_is_431(proxy: Proxy, size: int) -> None:
    with proxy.client() as client:
        client.send(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
        assert_error(client.read_response(), 431, "headers_too_large")


def test_endless_header_is_431_before_it_ends(proxy: Proxy) -> None:
    with proxy.client() as client:
        client.send(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: ")
        for _ in range(10):  # 80 KiB of one header that never ends
            try:
                client.send(b"a" * 8192)
            except (BrokenPipeError, ConnectionResetError):
                break  # refused and closed already
            time.sleep(0.02)
        assert_error(client.read_response(), 431, "headers_too_large")


def test_too_many_headers_is_431(proxy: Proxy) -> None:
    fields = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    with proxy.client() as client:
        client.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")
        assert_error(client.read_response(), 431, "headers_too_large")


def test_body_at_the_limit_is_accepted(proxy: Proxy) -> None:
    response = proxy.request("POST", "/echo", body=b"x" * MAX_BODY)
    assert response.status == 200
    assert response.json()["body_bytes"] == MAX_BODY


def test_declared_body_too_large_is_413_before_the_body(proxy: Proxy) -> None:
    with proxy.client() as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        assert_error(client.read_response(), 413, "payload_too_large")


def test_chunked_body_too_large_is_413(proxy: Proxy) -> None:
    with proxy.client() as client:
        # Two chunks of 600 bytes; the proxy answers as soon as the second passes the limit.
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"258\r\n" + b"y" * 600 + b"\r\n") * 2
        )
        assert_error(client.read_response(), 413, "payload_too_large")


# -- 408 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["first-request", "after-a-keepalive-request"])
def test_slow_head_is_408_and_closed(proxy: Proxy, first: str) -> None:
    with proxy.client() as client:
        if first == "after-a-keepalive-request":
            assert client.request("GET", "/status/200").status == 200
        started = time.monotonic()
        client.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n")
        assert_error(client.read_response(), 408, "request_timeout")
        assert 0.7 < time.monotonic() - started < 3.0
        assert client.closed_by_peer()


def test_dribbled_head_is_408_however_it_trickles(proxy: Proxy) -> None:
    """A slowloris client: a byte every 0.2 s must not keep extending the header timeout."""
    head = b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 100
    with proxy.client() as client:
        started = time.monotonic()
        client.sock.settimeout(0.2)
        answer = b""
        for byte in head:
            try:
                client.sock.sendall(bytes([byte]))
                answer = client.sock.recv(4096)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                break
            if answer or time.monotonic() - started > 5:
                break
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert time.monotonic() - started < 3.0


def test_slow_body_is_408_and_closed(proxy: Proxy) -> None:
    with proxy.client() as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        assert_error(client.read_response(), 408, "request_timeout")
        assert client.closed_by_peer()


def test_silent_connection_is_closed(proxy: Proxy) -> None:
    with proxy.client() as client:
        started = time.monotonic()
        client.sock.settimeout(5.0)
        answer = client.rfile.read()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
        assert time.monotonic() - started < 4.0


# -- 404 ----------------------------------------------------------------------------------------------


def test_no_route_is_404(launcher: ProxyLauncher, devserver: DevServer) -> None:
    config = config_toml(
        devserver.url,
        [
            {"name": "api", "path": "/api/*"},
            {"name": "only-get", "path": "/exact", "methods": ["GET"]},
        ],
    )
    proxy = launcher.start(config=config)
    assert proxy.request("GET", "/api/things").status == 200
    assert proxy.request("GET", "/api").status == 200
    assert proxy.request("GET", "/exact").status == 200
    for method, path in [
        ("GET", "/"),
        ("GET", "/apiary"),
        ("GET", "/API/things"),
        ("GET", "/api%2Fthings"),
        ("POST", "/exact"),
        ("GET", "/exact/below"),
    ]:
        assert_error(proxy.request(method, path), 404, "not_found")
    response = proxy.request("GET", "/nowhere", [("X-Request-Id", "mine-404")])
    assert assert_error(response, 404, "not_found")["request_id"] == "mine-404"
    with proxy.client() as client:
        head = client.request("HEAD", "/nowhere")
        assert head.status == 404
        assert client.request("GET", "/api/x").status == 200  # no stray body in between
        assert_error(client.request("GET", "/nowhere"), 404, "not_found")
        assert client.request("GET", "/api/x").status == 200  # a 404 keeps the connection
    proxy.assert_clean_log()


# -- 502, 504 --------------------------------------------------------------------------------------


def test_upstream_port_closed_is_502(launcher: ProxyLauncher) -> None:
    proxy = launcher.start(f"http://127.0.0.1:{free_port()}")
    with proxy.client() as client:
        assert_error(client.request("GET", "/echo"), 502, "bad_gateway")
        assert_error(client.request("POST", "/echo", body=b"abc"), 502, "bad_gateway")
    assert_error(proxy.request("GET", "/again"), 502, "bad_gateway")
    ready = proxy.readyz()
    assert ready is not None
    assert ready[0] == 200
    proxy.assert_clean_log()


def test_upstream_reset_before_answering_is_502(launcher: ProxyLauncher, recorder: RecordingUpstream) -> None:
    recorder.responder = lambda request: None  # read the request, close without a word
    proxy = launcher.start(recorder.url)
    assert_error(proxy.request("GET", "/x"), 502, "bad_gateway")
    proxy.assert_clean_log()


def test_upstream_too_slow_is_504(proxy: Proxy) -> None:
    with proxy.client() as client:
        started = time.monotonic()
        assert_error(client.request("GET", "/delay/3000"), 504, "gateway_timeout")
        assert time.monotonic() - started < 2.5
        assert client.request("GET", "/status/200").status == 200


def test_upstream_connect_timeout_is_502(launcher: ProxyLauncher) -> None:
    """An upstream that never accepts is unreachable (SPEC: 502), answered at the connect timeout."""
    upstream = BlackholeUpstream()
    try:
        proxy = launcher.start(upstream.url, args=["--upstream-connect-timeout", "1"])
        with proxy.client() as client:
            started = time.monotonic()
            response = client.request("GET", "/x")
            assert 0.7 < time.monotonic() - started < 2.5
            assert_error(response, 502, "bad_gateway")
        proxy.assert_clean_log()
    finally:
        upstream.close()


def test_upstream_malformed_response_is_502(launcher: ProxyLauncher, recorder: RecordingUpstream) -> None:
    recorder.responder = lambda request: b"HTTP/1.1 2x0 Nonsense\r\n\r\n"
    proxy = launcher.start(recorder.url)
    assert_error(proxy.request("GET", "/x"), 502, "bad_gateway")
    proxy.assert_clean_log()


def test_upstream_response_with_length_and_chunked_is_502(
    launcher: ProxyLauncher, recorder: RecordingUpstream
) -> None:
    recorder.responder = lambda request: (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
    )
    proxy = launcher.start(recorder.url)
    with proxy.client() as client:
        response = client.request("GET", "/x")
        assert response.body != b"forged"
        assert_error(response, 502, "bad_gateway")
    proxy.assert_clean_log()


@pytest.mark.parametrize(
    "pieces",
    [
        "over-the-limit-first",
        pytest.param(
            "over-the-limit-with-the-end",
        ),
    ],
)
def test_upstream_response_head_over_64k_is_502(
    launcher: ProxyLauncher, recorder: RecordingUpstream, pieces: str
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: " + b"h" * 70_000 + b"\r\n\r\n"
    cut = 60_000 if pieces == "over-the-limit-with-the-end" else 66_000
    recorder.responder = lambda request: [head[:cut], head[cut:] + b"ok"]
    proxy = launcher.start(recorder.url)
    assert_error(proxy.request("GET", "/x"), 502, "bad_gateway")
    proxy.assert_clean_log()


def test_over_max_connections_is_503(launcher: ProxyLauncher, devserver: DevServer) -> None:
    proxy = launcher.start(devserver.url, args=["--max-connections", "2"])
    with proxy.client() as first, proxy.client() as second:
        assert first.request("GET", "/status/200").status == 200
        assert second.request("GET", "/status/200").status == 200
        with proxy.client() as third:
            response = third.read_response()
            assert_error(response, 503, "unavailable")
            assert response.header("Retry-After") == "1"
            assert third.closed_by_peer()
        assert first.request("GET", "/status/200").status == 200
    proxy.assert_clean_log()


@pytest.mark.parametrize("ending", ["stall", "reset"])
def test_response_cut_short_by_the_upstream_is_cut_short_for_the_client(
    launcher: ProxyLauncher, recorder: RecordingUpstream, ending: str
) -> None:
    """After the head went out, a failure cannot become a 502/504: the client sees the cut."""
    recorder.responder = lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
    recorder.close_after_reply = ending == "reset"
    proxy = launcher.start(recorder.url, args=["--upstream-timeout", "1"])
    with proxy.client(timeout=5.0) as client:
        started = time.monotonic()
        client.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises(ConnectionError):
            client.read_response()
        assert time.monotonic() - started < 3.0
    proxy.assert_clean_log()


def test_every_good_request_pipelined_before_a_bad_one_is_answered(
    launcher: ProxyLauncher, devserver: DevServer
) -> None:
    proxy = launcher.start(devserver.url, workers=1)
    with proxy.client(timeout=5.0) as client:
        client.send(
            b"GET /delay/200 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /x HTTP/1.1\r\n\r\n"  # no Host: 400
        )
        first = client.read_response()
        assert (first.status, first.body) == (200, b'{"delayed":true}')
        second = client.read_response()
        assert second.status == 200
        assert second.json()["target"] == "/echo"
        assert_error(client.read_response(), 400, "bad_request")
        assert client.closed_by_peer()
    proxy.assert_clean_log()
