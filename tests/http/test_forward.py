"""What the upstream receives: client address, X-Forwarded-*, X-Request-Id and framing."""

from __future__ import annotations

import pytest

from fastproxy.http.errors import ProtocolError
from fastproxy.http.forward import LAST_CHUNK, chunk, client_address, upstream_request_head
from fastproxy.http.request import RequestHead, parse_head
from fastproxy.net import Network, parse_networks

V4_PROXIES = parse_networks(["10.0.0.0/8", "192.0.2.1"])
V6_PROXIES = parse_networks(["2001:db8::/32"])


def head(
    *headers: tuple[bytes, bytes],
    method: str = "GET",
    target: bytes = b"/api/x?q=1",
    version: str = "1.1",
) -> RequestHead:
    return parse_head(method, target, version, [(b"Host", b"api.example"), *headers], True, 10_000)


def lines(serialized: bytes) -> list[bytes]:
    assert serialized.endswith(b"\r\n\r\n")
    return serialized[:-4].split(b"\r\n")


def values(serialized: bytes, name: bytes) -> list[bytes]:
    prefix = name.lower() + b": "
    return [line[len(prefix) :] for line in lines(serialized)[1:] if line.lower().startswith(prefix)]


def forward(
    request: RequestHead,
    peer: bytes = b"203.0.113.9",
    trusted: bool = False,
    proto: bytes = b"http",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    return upstream_request_head(request, peer, trusted, proto, b"rid-1", extra or [])


# -- client_address -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        # No trusted proxies: always the peer, whatever the header says.
        ("203.0.113.9", b"1.2.3.4", (), "203.0.113.9"),
        ("10.0.0.5", b"1.2.3.4", (), "10.0.0.5"),
        # An untrusted peer's X-Forwarded-For is ignored.
        ("203.0.113.9", b"1.2.3.4", V4_PROXIES, "203.0.113.9"),
        # A trusted peer without the header.
        ("10.0.0.5", None, V4_PROXIES, "10.0.0.5"),
        # A trusted peer: the rightmost untrusted hop is the client.
        ("10.0.0.5", b"198.51.100.7", V4_PROXIES, "198.51.100.7"),
        ("10.0.0.5", b"6.6.6.6, 198.51.100.7", V4_PROXIES, "198.51.100.7"),
        ("10.0.0.5", b"6.6.6.6,198.51.100.7 , 10.1.2.3", V4_PROXIES, "198.51.100.7"),
        ("192.0.2.1", b"6.6.6.6, 198.51.100.7, 192.0.2.1", V4_PROXIES, "198.51.100.7"),
        # Every hop trusted: the leftmost one.
        ("10.0.0.5", b"10.9.9.9, 10.1.1.1", V4_PROXIES, "10.9.9.9"),
        # 192.0.2.1 is trusted as a bare address (/32), its neighbour is not.
        ("192.0.2.2", b"1.2.3.4", V4_PROXIES, "192.0.2.2"),
        # IPv6.
        ("2001:db8::1", b"2606:4700::1", V6_PROXIES, "2606:4700::1"),
        ("2001:db8::1", b"2606:4700::6, 2606:4700::1, 2001:db8:5::5", V6_PROXIES, "2606:4700::1"),
        ("2001:db9::1", b"2606:4700::1", V6_PROXIES, "2001:db9::1"),
        ("10.0.0.5", b"2606:4700::1", V4_PROXIES, "2606:4700::1"),
        ("2001:db8::1", b"10.0.0.5", V4_PROXIES + V6_PROXIES, "10.0.0.5"),
        ("2001:db8::1", b"203.0.113.1, 10.0.0.5", V4_PROXIES + V6_PROXIES, "203.0.113.1"),
    ],
)
def test_client_address(peer: str, xff: bytes | None, trusted: tuple[Network, ...], expected: str) -> None:
    assert client_address(peer, xff, trusted) == expected


# -- X-Forwarded-For / X-Forwarded-Proto ----------------------------------------------------------


def test_xff_from_an_untrusted_peer_is_replaced_by_the_peer() -> None:
    request = head((b"X-Forwarded-For", b"1.2.3.4"), (b"X-Forwarded-Proto", b"https"))
    out = forward(request, peer=b"203.0.113.9", trusted=False, proto=b"http")
    assert values(out, b"X-Forwarded-For") == [b"203.0.113.9"]
    assert values(out, b"X-Forwarded-Proto") == [b"http"]


def test_xff_from_a_trusted_peer_is_appended_to() -> None:
    request = head(
        (b"X-Forwarded-For", b"1.2.3.4"),
        (b"X-Forwarded-For", b"5.6.7.8"),
        (b"X-Forwarded-Proto", b"https"),
    )
    out = forward(request, peer=b"10.0.0.5", trusted=True, proto=b"http")
    assert values(out, b"X-Forwarded-For") == [b"1.2.3.4, 5.6.7.8, 10.0.0.5"]
    assert values(out, b"X-Forwarded-Proto") == [b"https"]


def test_trusted_peer_without_xff_sends_its_own_address_and_the_proxy_proto() -> None:
    out = forward(head(), peer=b"2001:db8::1", trusted=True, proto=b"https")
    assert values(out, b"X-Forwarded-For") == [b"2001:db8::1"]
    assert values(out, b"X-Forwarded-Proto") == [b"https"]


def test_proxy_headers_survive_a_connection_header_that_names_them() -> None:
    # A client cannot use Connection to strip the headers the proxy adds.
    request = head(
        (b"Connection", b"X-Forwarded-For, X-Request-Id, X-Forwarded-Proto, X-Auth-Subject"),
    )
    out = forward(request, extra=[(b"X-Auth-Subject", b"alice")])
    assert values(out, b"X-Forwarded-For") == [b"203.0.113.9"]
    assert values(out, b"X-Forwarded-Proto") == [b"http"]
    assert values(out, b"X-Request-Id") == [b"rid-1"]
    assert values(out, b"X-Auth-Subject") == [b"alice"]


def test_client_request_id_and_auth_headers_are_replaced() -> None:
    request = head((b"X-Request-Id", b"client-id"), (b"X-Auth-Subject", b"root"))
    out = forward(request, extra=[(b"X-Auth-Subject", b"alice"), (b"X-Auth-Roles", b"a,b")])
    assert values(out, b"X-Request-Id") == [b"rid-1"]
    assert values(out, b"X-Auth-Subject") == [b"alice"]
    assert values(out, b"X-Auth-Roles") == [b"a,b"]


# -- request line, headers, framing ---------------------------------------------------------------


def test_request_line_and_end_to_end_headers_in_order() -> None:
    request = head(
        (b"accept", b"*/*"),
        (b"X-Custom", b"  spaced value"),
        (b"Set-Thing", b"1"),
        (b"Set-Thing", b"2"),
        version="1.0",
    )
    out = forward(request)
    assert lines(out)[:6] == [
        b"GET /api/x?q=1 HTTP/1.1",
        b"Host: api.example",
        b"accept: */*",
        b"X-Custom:   spaced value",
        b"Set-Thing: 1",
        b"Set-Thing: 2",
    ]


def test_no_connection_or_hop_by_hop_header_reaches_the_upstream() -> None:
    request = head(
        (b"Connection", b"close, X-Secret"),
        (b"X-Secret", b"s"),
        (b"Keep-Alive", b"timeout=1"),
        (b"TE", b"trailers"),
        (b"Proxy-Authorization", b"Basic eA=="),
        (b"Upgrade", b"websocket"),
    )
    out = forward(request)
    names = {line.split(b":")[0].lower() for line in lines(out)[1:]}
    assert names.isdisjoint(
        {b"connection", b"x-secret", b"keep-alive", b"te", b"proxy-authorization", b"upgrade"}
    )


def test_absolute_form_is_forwarded_in_origin_form() -> None:
    request = parse_head("GET", b"http://api.example/a/b?c=d", "1.1", [(b"Host", b"api.example")], True, 10)
    assert lines(forward(request))[0] == b"GET /a/b?c=d HTTP/1.1"


def test_absolute_form_authority_wins_over_a_different_host() -> None:
    try:
        request = parse_head("GET", b"http://api.example/a", "1.1", [(b"Host", b"other.example")], True, 10)
    except ProtocolError as exc:
        assert exc.status == 400
        return
    assert values(forward(request), b"Host") == [b"api.example"]


@pytest.mark.parametrize(
    ("extra_headers", "framing"),
    [
        ((), []),
        (((b"Content-Length", b"12"),), [b"Content-Length: 12"]),
        (((b"Content-Length", b"0"),), [b"Content-Length: 0"]),
        (((b"Transfer-Encoding", b"chunked"),), [b"Transfer-Encoding: chunked"]),
    ],
)
def test_framing_is_reserialized(
    extra_headers: tuple[tuple[bytes, bytes], ...], framing: list[bytes]
) -> None:
    out = forward(head(*extra_headers, method="POST"))
    found = [
        line for line in lines(out) if line.lower().startswith((b"content-length:", b"transfer-encoding:"))
    ]
    assert found == framing


def test_extra_headers_follow_the_proxy_headers() -> None:
    out = forward(head(), extra=[(b"X-Auth-Method", b"api_key:ci")])
    tail = lines(out)[-4:]
    assert tail == [
        b"X-Forwarded-For: 203.0.113.9",
        b"X-Forwarded-Proto: http",
        b"X-Request-Id: rid-1",
        b"X-Auth-Method: api_key:ci",
    ]


def test_chunk_encoding() -> None:
    assert chunk(b"abc") == b"3\r\nabc\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"
