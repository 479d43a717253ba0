"""Addresses: HOST:PORT strings, upstream URLs and CIDR lists, parsed once at load."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "Address",
    "Network",
    "in_networks",
    "parse_address",
    "parse_networks",
    "parse_upstream_url",
    "unmapped",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """``HOST:PORT`` or ``[V6]:PORT``; raises ValueError naming what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address needs brackets: [{host}]:{port_text}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port must be 1-65535, got {port_text!r}")
    return Address(host, int(port_text))


def parse_upstream_url(url: str) -> Address:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// upstreams are supported, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"an upstream URL is scheme://host:port only, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"missing host in {url!r}")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}") from exc
    return Address(parts.hostname, port)


def parse_networks(cidrs: list[str]) -> tuple[Network, ...]:
    """CIDRs (a bare address is a /32 or /128); raises ValueError naming the bad one."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {cidr!r}") from None
    return tuple(networks)


def unmapped(ip: str) -> str:
    """An IPv4-mapped IPv6 address (how a dual-stack listener sees an IPv4 peer) as that IPv4
    address, so that IP rules, rate-limit keys and the audit see one client however it came."""
    try:
        mapped = ipaddress.IPv6Address(ip).ipv4_mapped
    except ValueError:
        return ip
    return str(mapped) if mapped is not None else ip


def in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        # What a dual-stack [::] listener sees for an IPv4 peer; rules name it as IPv4.
        mapped = address.ipv4_mapped
        if any(mapped in network for network in networks):
            return True
    return any(address in network for network in networks)
