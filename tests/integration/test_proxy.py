"""Proxying through a running fastproxy: what reaches the upstream, what comes back, framing."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fastproxy.devserver import pattern

from .helpers import (
    DevServer,
    Proxy,
    ProxyLauncher,
    Recorded,
    RecordingUpstream,
    assert_error,
    config_toml,
    json_response,
    request,
)

FIVE_MB = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def proxy(module_launcher: ProxyLauncher, devserver: DevServer) -> Proxy:
    return module_launcher.start(devserver.url, workers=2, args=["--max-body-bytes", "10000000"])


def echo_headers(document: dict[str, object]) -> list[tuple[str, str]]:
    headers = document["headers"]
    assert isinstance(headers, list)
    return [(str(n), str(v)) for n, v in headers]


def http_json(body: bytes) -> dict[str, object]:
    document = json.loads(body)
    assert isinstance(document, dict)
    return document


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in headers if n.lower() == name.lower()]


# -- what goes through ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 404, 500, 503])
def test_upstream_status_and_body_pass_through(proxy: Proxy, status: int) -> None:
    response = proxy.request("GET", f"/status/{status}")
    assert response.status == status
    assert response.body == b'{"status":%d}' % status


def test_status_body_and_headers_come_back(proxy: Proxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request("GET", "/status/201")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 201
    assert body == b'{"status":201}'
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Content-Length") == str(len(body))
    assert response.getheader("X-Request-Id")


def test_request_line_and_body_reach_the_upstream(proxy: Proxy) -> None:
    body = b"hello upstream"
    response = proxy.request("PUT", "/echo?a=1&b=two", [("Content-Type", "text/plain")], body)
    assert response.status == 200
    document = response.json()
    assert document["method"] == "PUT"
    assert document["target"] == "/echo?a=1&b=two"
    assert document["body_bytes"] == len(body)
    assert document["body_sha256"] == hashlib.sha256(body).hexdigest()
    headers = echo_headers(document)
    assert values(headers, "Content-Type") == ["text/plain"]
    assert values(headers, "Content-Length") == [str(len(body))]


def test_request_id_is_added_and_matches_the_response(proxy: Proxy) -> None:
    response = proxy.request("GET", "/echo")
    sent = values(echo_headers(response.json()), "X-Request-Id")
    assert len(sent) == 1
    assert sent[0] == response.header("X-Request-Id")
    other = proxy.request("GET", "/echo")
    assert other.header("X-Request-Id") != response.header("X-Request-Id")


def test_well_formed_client_request_id_is_kept(proxy: Proxy) -> None:
    rid = "client-Id_1.2"
    response = proxy.request("GET", "/echo", [("X-Request-Id", rid)])
    assert values(echo_headers(response.json()), "X-Request-Id") == [rid]
    assert response.header_all("X-Request-Id") == [rid]


@pytest.mark.parametrize("bad", ["has space", "semi;colon", "x" * 129, "é"])
def test_malformed_client_request_id_is_replaced(proxy: Proxy, bad: str) -> None:
    response = proxy.request("GET", "/echo", [("X-Request-Id", bad)])
    sent = values(echo_headers(response.json()), "X-Request-Id")
    assert len(sent) == 1
    assert sent[0] != bad
    assert sent[0] == response.header("X-Request-Id")


def test_forwarded_for_is_the_peer_and_the_client_list_is_not_trusted(proxy: Proxy) -> None:
    response = proxy.request(
        "GET",
        "/echo",
        [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https")],
    )
    headers = echo_headers(response.json())
    assert values(headers, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(headers, "X-Forwarded-Proto") == ["http"]


def test_forwarded_for_from_a_trusted_proxy_is_appended(
    launcher: ProxyLauncher, devserver: DevServer
) -> None:
    proxy = launcher.start(
        config=config_toml(
            devserver.url,
            [{"name": "all", "path": "/*"}],
            '[server]\ntrusted_proxies = ["127.0.0.0/8"]\n',
        )
    )
    response = proxy.request(
        "GET",
        "/echo",
        [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https")],
    )
    headers = echo_headers(response.json())
    assert values(headers, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
    assert values(headers, "X-Forwarded-Proto") == ["https"]


def test_hop_by_hop_and_connection_named_headers_are_removed(proxy: Proxy) -> None:
    response = proxy.request(
        "GET",
        "/echo",
        [
            ("Connection", "keep-alive, X-Drop-Me"),
            ("Connection", "x-also-dropped"),
            ("X-Drop-Me", "1"),
            ("X-Also-Dropped", "2"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
            ("X-Kept", "yes"),
        ],
    )
    assert response.status == 200
    names = {n.lower() for n, _ in echo_headers(response.json())}
    removed = {
        "connection",
        "x-drop-me",
        "x-also-dropped",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "transfer-encoding",
    }
    assert not names & removed, names & removed
    assert "x-kept" in names


def test_a_public_route_forwards_the_clients_authorization(proxy: Proxy) -> None:
    # The parser takes credentials out of the header list; a route that consumes none puts them
    # back, as they came. A repeated Authorization is refused rather than guessed at.
    response = proxy.request("GET", "/echo", [("Authorization", "Basic dXNlcjpwYXNz"), ("X-Kept", "yes")])
    assert response.status == 200
    headers = echo_headers(response.json())
    assert values(headers, "Authorization") == ["Basic dXNlcjpwYXNz"]
    assert values(headers, "X-Kept") == ["yes"]
    repeated = proxy.request("GET", "/echo", [("Authorization", "Basic a"), ("authorization", "Basic b")])
    assert_error(repeated, 400, "bad_request")


def test_hop_by_hop_response_headers_are_removed(
    launcher: ProxyLauncher, recorder: RecordingUpstream
) -> None:
    body = b"done"
    recorder.responder = lambda request: (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n"
        b"X-Request-Id: upstream-made\r\n"
        b"X-End-To-End: kept\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    proxy = launcher.start(recorder.url)
    with proxy.client() as client:
        response = client.request("GET", "/x")
        assert (response.status, response.body) == (200, body)
        names = {n.lower() for n, _ in response.headers}
        assert not names & {"x-hop", "keep-alive", "proxy-connection", "upgrade"}
        assert response.header_all("Connection") in ([], ["keep-alive"])
        assert response.header("X-End-To-End") == "kept"
        assert response.header_all("X-Request-Id") not in ([], ["upstream-made"])
        assert len(response.header_all("X-Request-Id")) == 1
        assert client.request("GET", "/y").body == body


def test_upstream_trailers_are_dropped_and_the_connection_reused(
    launcher: ProxyLauncher, recorder: RecordingUpstream
) -> None:
    recorder.responder = lambda request: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Sum: abc\r\n\r\n"
    )
    proxy = launcher.start(recorder.url)
    with proxy.client() as client:
        for _ in range(3):
            response = client.request("GET", "/t")
            assert (response.status, response.body) == (200, b"hello")
            assert response.header("X-Sum") is None
    assert recorder.connections == 1


def test_host_is_preserved(proxy: Proxy) -> None:
    response = proxy.request("GET", "/echo", host="api.example.test:8443")
    assert values(echo_headers(response.json()), "Host") == ["api.example.test:8443"]


def test_absolute_form_target_is_forwarded_in_origin_form(proxy: Proxy) -> None:
    response = proxy.request("GET", "http://api.example.test/echo?x=1", host="api.example.test")
    assert response.status == 200
    assert response.json()["target"] == "/echo?x=1"
    # RFC 9112 3.2.2: the target's authority wins over a different Host (or the request is
    # refused).
    response = proxy.request("GET", "http://a.example/echo", host="b.example")
    if response.status != 400:
        assert response.status == 200
        assert values(echo_headers(response.json()), "Host") == ["a.example"]


# -- connections ----------------------------------------------------------------------------------


def test_many_requests_on_one_client_connection(proxy: Proxy) -> None:
    with proxy.client() as client:
        port = client.local_port
        for i in range(50):
            response = client.request("GET", f"/echo?i={i}")
            assert response.status == 200
            assert response.json()["target"] == f"/echo?i={i}"
            assert not response.closes
        # The upstream closing its side (Connection: close) does not end the client's connection.
        response = client.request("GET", "/close")
        assert response.status == 200
        assert response.body == b'{"closing":true}'
        assert client.request("GET", "/echo").status == 200
        assert client.local_port == port


def test_upstream_connections_are_reused(launcher: ProxyLauncher, recorder: RecordingUpstream) -> None:
    proxy = launcher.start(recorder.url, workers=1)
    with proxy.client() as client:
        for _ in range(10):
            assert client.request("GET", "/a").status == 200
    for _ in range(10):  # and across client connections of the same worker
        assert proxy.request("GET", "/b").status == 200
    seen = recorder.snapshot()
    assert len(seen) == 20
    assert recorder.connections == 1
    assert [r.index for r in seen] == list(range(20))


def test_client_connection_close_is_honoured(proxy: Proxy) -> None:
    with proxy.client() as client:
        response = client.request("GET", "/status/200", [("Connection", "close")])
        assert response.status == 200
        assert response.closes
        assert client.closed_by_peer()


def test_idle_keepalive_connection_is_closed(launcher: ProxyLauncher, devserver: DevServer) -> None:
    proxy = launcher.start(devserver.url, args=["--keepalive-timeout", "1"])
    with proxy.client() as client:
        assert client.request("GET", "/echo").status == 200
        started = time.monotonic()
        assert client.closed_by_peer(timeout=5.0)
        assert time.monotonic() - started < 4.0


def test_reused_upstream_connection_closed_under_a_get_is_retried(
    launcher: ProxyLauncher, recorder: RecordingUpstream
) -> None:
    """The upstream closes a kept-alive connection as the next request arrives: retry once."""

    def close_second_request(request: Recorded) -> bytes | None:
        return None if request.index == 1 else json_response({"ok": request.connection})

    recorder.responder = close_second_request
    proxy = launcher.start(recorder.url, workers=1)
    assert proxy.request("GET", "/first").status == 200
    response = proxy.request("GET", "/second")
    assert response.status == 200
    assert [(r.connection, r.target) for r in recorder.snapshot()] == [
        (0, "/first"),
        (0, "/second"),
        (1, "/second"),
    ]


def test_request_with_a_body_is_never_replayed(launcher: ProxyLauncher, recorder: RecordingUpstream) -> None:
    def close_second_request(request: Recorded) -> bytes | None:
        return None if request.index == 1 else json_response({"ok": request.connection})

    recorder.responder = close_second_request
    proxy = launcher.start(recorder.url, workers=1)
    assert proxy.request("GET", "/first").status == 200
    response = proxy.request("POST", "/order", body=b'{"buy":1}')
    assert response.status == 502
    assert [r.target for r in recorder.snapshot()] == ["/first", "/order"]


# -- big bodies -----------------------------------------------------------------------------------


def test_five_megabyte_request_body_with_content_length(proxy: Proxy) -> None:
    data = pattern(FIVE_MB)[::-1]
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        conn.request("POST", "/echo", body=data)
        response = conn.getresponse()
        document = response.read()
    finally:
        conn.close()
    assert response.status == 200
    echoed = http_json(document)
    assert echoed["body_bytes"] == FIVE_MB
    assert echoed["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_five_megabyte_chunked_request_body(proxy: Proxy) -> None:
    data = pattern(FIVE_MB)
    pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        conn.request("POST", "/echo", body=iter(pieces), encode_chunked=True)
        response = conn.getresponse()
        document = response.read()
    finally:
        conn.close()
    assert response.status == 200
    echoed = http_json(document)
    assert echoed["body_bytes"] == FIVE_MB
    assert echoed["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert values(echo_headers(echoed), "Transfer-Encoding") == ["chunked"]


@pytest.mark.parametrize(("path", "framing"), [("bytes", "length"), ("chunked", "chunked")])
def test_five_megabyte_response_is_byte_exact(proxy: Proxy, path: str, framing: str) -> None:
    with proxy.client(timeout=30) as client:
        response = client.request("GET", f"/{path}/{FIVE_MB}")
        assert response.status == 200
        assert response.framing == framing
        assert len(response.body) == FIVE_MB
        assert response.body == pattern(FIVE_MB)
        # The connection is still in step afterwards.
        assert client.request("GET", "/bytes/10").body == pattern(10)


# -- framing corner cases ----------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(proxy: Proxy) -> None:
    with proxy.client() as client:
        client.send(
            b"GET /delay/300 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /status/201 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /echo?third HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        )
        first = client.read_response()
        second = client.read_response()
        third = client.read_response()
        assert (first.status, first.body) == (200, b'{"delayed":true}')
        assert (second.status, second.body) == (201, b'{"status":201}')
        assert third.status == 200
        assert third.json()["target"] == "/echo?third"
        assert third.json()["body_bytes"] == 3
        ids = {r.header("X-Request-Id") for r in (first, second, third)}
        assert len(ids) == 3


def test_head_response_has_no_body(proxy: Proxy) -> None:
    with proxy.client() as client:
        response = client.request("HEAD", "/bytes/1000")
        assert response.status == 200
        assert response.header("Content-Length") == "1000"
        # Had a body followed, it would be read here as the next response's head.
        after = client.request("GET", "/bytes/7")
        assert (after.status, after.body) == (200, pattern(7))
        # The devserver wrongly sends a chunked body even to HEAD: the proxy must drop it.
        response = client.request("HEAD", "/chunked/1000")
        assert response.status == 200
        assert response.header("Content-Length") is None
        after = client.request("GET", "/bytes/9")
        assert (after.status, after.body) == (200, pattern(9))


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(proxy: Proxy, status: int) -> None:
    with proxy.client() as client:
        response = client.request("GET", f"/status/{status}")
        assert response.status == status
        assert response.header("Transfer-Encoding") is None
        assert response.header("Content-Length") in (None, "0")
        after = client.request("GET", "/status/202")
        assert (after.status, after.body) == (202, b'{"status":202}')


@pytest.mark.parametrize("path", ["/bytes/3000", "/chunked/3000"])
def test_http10_client(proxy: Proxy, path: str) -> None:
    with proxy.client() as client:
        client.send(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        response = client.read_response()
        assert response.status == 200
        assert response.header("Transfer-Encoding") is None  # never chunked to HTTP/1.0
        assert response.body == pattern(3000)
        assert client.closed_by_peer()


def test_http10_keepalive_client(proxy: Proxy) -> None:
    """An HTTP/1.1 answer without ``close`` persists (RFC 9112 9.3), so it must really persist."""
    with proxy.client() as client:
        for size in (10, 20):
            client.send(b"GET /bytes/%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % size)
            response = client.read_response()
            assert (response.status, response.body) == (200, pattern(size))
            if response.closes:
                assert client.closed_by_peer()
                return


def test_interim_response_from_the_upstream(launcher: ProxyLauncher, recorder: RecordingUpstream) -> None:
    recorder.responder = lambda request: (
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    proxy = launcher.start(recorder.url)
    with proxy.client() as client:
        for _ in range(2):
            response = client.request("GET", "/x")
            while response.status < 200:
                response = client.read_response()
            assert (response.status, response.body) == (200, b"ok")


def test_close_delimited_upstream_response(proxy: Proxy) -> None:
    with proxy.client() as client:
        response = client.request("GET", "/http10")
        assert response.status == 200
        assert response.body == b"until close"
        # No length from the upstream: re-framed as chunked, so the client connection lives on.
        assert response.framing == "chunked"
        assert client.request("GET", "/status/201").status == 201


def test_chunk_extensions_and_trailers_are_not_forwarded(proxy: Proxy) -> None:
    with proxy.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        response = client.read_response()
        assert response.status == 200
        document = response.json()
        assert document["body_bytes"] == 11
        assert document["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()
        assert not values(echo_headers(document), "X-Trailer")
        assert client.request("GET", "/status/201").status == 201


def test_half_closed_client_still_gets_its_response(proxy: Proxy) -> None:
    with proxy.client() as client:
        client.send(b"GET /delay/100 HTTP/1.1\r\nHost: a\r\n\r\n")
        client.sock.shutdown(socket.SHUT_WR)
        response = client.read_response()
        assert (response.status, response.body) == (200, b'{"delayed":true}')


def test_expect_100_continue(proxy: Proxy) -> None:
    with proxy.client() as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = client.read_response()
        assert interim.status == 100
        client.send(b"hello")
        response = client.read_response()
        assert response.status == 200
        assert response.json()["body_bytes"] == 5
        assert not values(echo_headers(response.json()), "Expect")


def test_admin_endpoints(proxy: Proxy) -> None:
    health = request(proxy.admin_port, "GET", "/healthz")
    assert health.status == 200
    assert health.json() == {"status": "ok"}
    ready = request(proxy.admin_port, "GET", "/readyz")
    assert ready.status == 200
    assert ready.json()["ready"] is True
    assert ready.json()["workers_ready"] == 2
    assert len(proxy.worker_pids()) == 2
    assert request(proxy.admin_port, "GET", "/nope").status == 404
    assert request(proxy.admin_port, "POST", "/readyz").status == 405


# -- clients and upstreams that go their own way ------------------------------------------------


def test_early_upstream_answer_drops_the_rest_of_the_body(
    launcher: ProxyLauncher, recorder: RecordingUpstream
) -> None:
    """The upstream answers before the body is in: the rest is read and dropped, never sent on."""
    recorder.reply_before_body = True
    proxy = launcher.start(recorder.url, workers=1)
    with proxy.client() as client:
        client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n\r\n")
        client.send(b"a" * 1000)
        early = client.read_response()
        assert early.status == 200
        assert early.json()["target"] == "/upload"
        # The rest of the body carries what would be a request if it were parsed as one.
        rest = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        client.send(rest + b"b" * (19000 - len(rest)))
        after = client.request("GET", "/next")
        assert after.status == 200
        assert after.json()["target"] == "/next"
    assert [r.target for r in recorder.snapshot()] == ["/upload", "/next"]


def test_client_gone_mid_response(proxy: Proxy) -> None:
    with proxy.client(timeout=30) as client:
        client.send(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % FIVE_MB)
        client.rfile.read(100_000)
    time.sleep(0.2)
    for _ in range(5):
        assert proxy.request("GET", "/status/200").status == 200
    proxy.assert_clean_log()


def test_concurrent_clients(proxy: Proxy) -> None:
    def one(i: int) -> tuple[int, str]:
        response = proxy.request("GET", f"/echo?client={i}")
        return response.status, response.json()["target"]

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, range(200)))
    assert results == [(200, f"/echo?client={i}") for i in range(200)]


def test_an_upgrade_request_is_answered_as_plain_http_then_closed(proxy: Proxy) -> None:
    with proxy.client() as client:
        client.send(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        response = client.read_response()
        assert response.status == 200
        assert response.closes
        forwarded = {n.lower() for n, _ in echo_headers(response.json())}
        assert not forwarded & {"upgrade", "connection"}
        assert client.closed_by_peer()
