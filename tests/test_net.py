"""Addresses, upstream URLs and CIDR lists."""

from __future__ import annotations

import ipaddress

import pytest

from fastproxy.net import Address, in_networks, parse_address, parse_networks, parse_upstream_url


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
        ("0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"),
        ("localhost:65535", "localhost", 65535, "localhost:65535"),
        ("[::1]:9901", "::1", 9901, "[::1]:9901"),
        ("[::]:80", "::", 80, "[::]:80"),
        ("[2001:db8::7]:443", "2001:db8::7", 443, "[2001:db8::7]:443"),
    ],
)
def test_parse_address(text: str, host: str, port: int, shown: str) -> None:
    address = parse_address(text)
    assert address == Address(host, port)
    assert str(address) == shown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "HOST:PORT"),
        ("", "HOST:PORT"),
        (":8080", "HOST:PORT"),
        ("::1:8080", "brackets"),
        ("2001:db8::1:80", "brackets"),
        ("127.0.0.1:", "port"),
        ("127.0.0.1:0", "port"),
        ("127.0.0.1:65536", "port"),
        ("127.0.0.1:-1", "port"),
        ("127.0.0.1:http", "port"),
        ("127.0.0.1: 80", "port"),
    ],
)
def test_bad_addresses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(text)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:9000", Address("127.0.0.1", 9000)),
        ("http://127.0.0.1:9000/", Address("127.0.0.1", 9000)),
        ("http://api.internal", Address("api.internal", 80)),
        ("http://[::1]:9000", Address("::1", 9000)),
        ("HTTP://Api.Internal:81", Address("api.internal", 81)),
    ],
)
def test_parse_upstream_url(url: str, expected: Address) -> None:
    assert parse_upstream_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1:9000", "only http://"),
        ("127.0.0.1:9000", "only http://"),
        ("ftp://h", "only http://"),
        ("http://h:9000/api", "scheme://host:port only"),
        ("http://h:9000?x=1", "scheme://host:port only"),
        ("http://h:9000#f", "scheme://host:port only"),
        ("http://user:pw@h:9000", "scheme://host:port only"),
        ("http://", "missing host"),
        ("http://:9000", "missing host"),
        ("http://h:99999", "bad port"),
        ("http://h:port", "bad port"),
    ],
)
def test_bad_upstream_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_upstream_url(url)


def test_parse_networks() -> None:
    networks = parse_networks(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1", "172.16.5.4/12"])
    assert networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("172.16.0.0/12"),
    )
    assert parse_networks([]) == ()


@pytest.mark.parametrize("bad", ["bogus", "10.0.0.0/33", "10.0.0.256", "", "::/129"])
def test_bad_networks_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match="not an IP network") as info:
        parse_networks(["10.0.0.0/8", bad])
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("ip", "inside"),
    [
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("2001:db8:1::5", True),
        ("2001:db9::5", False),
        ("not-an-ip", False),
        ("", False),
        ("10.1.2.3:80", False),
    ],
)
def test_in_networks(ip: str, inside: bool) -> None:
    networks = parse_networks(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
    assert in_networks(ip, networks) is inside


def test_in_no_networks_is_false() -> None:
    assert not in_networks("10.0.0.1", ())
