"""Authorization stages: IP rules, then roles and scopes of the authenticated principal.

Least privilege: a route grants nothing it does not name. ``roles_any`` needs at least one of its
roles, ``scopes_all`` needs every one of its scopes; both are checked after authentication, on
what it put on the request context. IP rules run first, before any signature is verified, on the
client address resolved through ``trusted_proxies``: a deny rule wins over an allow rule, and a
non-empty allow list refuses every address it does not contain.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from fastproxy.net import Network
from fastproxy.policy import Decision, Rejection, RequestContext

__all__ = ["IpRules", "RequireRoles", "RequireScopes"]

FORBIDDEN_ROLE: Final = Rejection(403, "forbidden:role")
FORBIDDEN_SCOPE: Final = Rejection(403, "forbidden:scope")
IP_DENIED: Final = Rejection(403, "ip_denied")


class IpRules:
    name = "ip_rules"

    __slots__ = ("allow", "deny")

    def __init__(self, allow: tuple[Network, ...], deny: tuple[Network, ...]) -> None:
        self.allow = tuple(_unmapped_network(network) for network in allow)
        self.deny = tuple(_unmapped_network(network) for network in deny)

    def check(self, ctx: RequestContext) -> Decision:
        try:
            address = ipaddress.ip_address(ctx.client_ip)
        except ValueError:
            return IP_DENIED  # a Unix-socket peer, say: no address to allow
        # An IPv4-mapped client is already its IPv4 address (RequestContext sees to it).
        for network in self.deny:
            if address in network:
                return IP_DENIED
        if self.allow and not any(address in network for network in self.allow):
            return IP_DENIED
        return None


_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped_network(network: Network) -> Network:
    """::ffff:10.0.0.1 is 10.0.0.1 for the rules, on both sides: an IPv4-mapped IPv6 address (a
    dual-stack listener's IPv4 peer) is compared as its IPv4 address, and a rule written in the
    mapped form ("::ffff:10.0.0.0/104") as the IPv4 network it names."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


class RequireRoles:
    name = "roles_any"

    __slots__ = ("roles",)

    def __init__(self, roles: frozenset[str]) -> None:
        self.roles = roles

    def check(self, ctx: RequestContext) -> Decision:
        for role in ctx.roles:
            if role in self.roles:
                return None
        return FORBIDDEN_ROLE


class RequireScopes:
    name = "scopes_all"

    __slots__ = ("scopes",)

    def __init__(self, scopes: frozenset[str]) -> None:
        self.scopes = scopes

    def check(self, ctx: RequestContext) -> Decision:
        if self.scopes <= ctx.scopes:
            return None
        return FORBIDDEN_SCOPE
