"""Authorization stages (IP rules, roles, scopes) with plain values, and the order a worker attaches the
stages of a route in (PolicyRuntime, built from a configuration file; no event loop, no I/O).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fastproxy.config import load_config
from fastproxy.http.forward import client_address
from fastproxy.http.request import parse_head
from fastproxy.identity.mint import public_jwks
from fastproxy.net import parse_networks
from fastproxy.policy import Decision, Rejection, RequestContext, run_stages
from fastproxy.stages.authenticate import Authenticate
from fastproxy.stages.authorize import IpRules, RequireRoles, RequireScopes
from fastproxy.stages.build import PolicyRuntime


def context(
    client_ip: str = "203.0.113.9", roles: tuple[str, ...] = (), scopes: frozenset[str] = frozenset()
) -> RequestContext:
    head = parse_head("GET", b"/x", "1.1", [(b"Host", b"a")], True, 0)
    ctx = RequestContext(head, client_ip, b"rid")
    ctx.roles = roles
    ctx.scopes = scopes
    return ctx


def ip_rules(allow: list[str] = [], deny: list[str] = []) -> IpRules:  # noqa: B006 -- never mutated
    return IpRules(parse_networks(allow), parse_networks(deny))


def verdict(decision: Decision) -> str | None:
    assert decision is None or isinstance(decision, Rejection)
    if decision is None:
        return None
    return f"{decision.status} {decision.reason}"


# -- IP rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize("client_ip", ["203.0.113.9", "10.1.2.3", "::1", "2001:db8::7", "::ffff:10.0.0.1"])
def test_no_rules_allow_any_address(client_ip: str) -> None:
    assert verdict(ip_rules().check(context(client_ip))) is None


@pytest.mark.parametrize(
    ("allow", "client_ip", "expected"),
    [
        (["10.0.0.0/8"], "10.255.0.1", None),
        (["10.0.0.0/8"], "11.0.0.1", "403 ip_denied"),
        (["10.0.0.0/8", "192.0.2.7"], "192.0.2.7", None),
        (["10.0.0.0/8", "192.0.2.7"], "192.0.2.8", "403 ip_denied"),
        (["2001:db8::/32"], "2001:db8:1::5", None),
        (["2001:db8::/32"], "2001:db9::5", "403 ip_denied"),
        (["2001:db8::/32"], "10.0.0.1", "403 ip_denied"),
        (["10.0.0.0/8"], "2001:db8::1", "403 ip_denied"),
        # An IPv4-mapped IPv6 peer (a dual-stack listener) is its IPv4 address for the rules.
        (["10.0.0.0/8"], "::ffff:10.0.0.1", None),
        (["10.0.0.0/8"], "::ffff:11.0.0.1", "403 ip_denied"),
        # ... and a rule written in the mapped form matches both forms.
        (["::ffff:10.0.0.0/104"], "10.0.0.1", None),
        (["::ffff:10.0.0.0/104"], "::ffff:10.0.0.1", None),
        (["::1"], "::1", None),
        (["127.0.0.1"], "::1", "403 ip_denied"),
    ],
)
def test_allow_list(allow: list[str], client_ip: str, expected: str | None) -> None:
    assert verdict(ip_rules(allow=allow).check(context(client_ip))) == expected


@pytest.mark.parametrize(
    ("deny", "client_ip", "expected"),
    [
        (["10.0.0.0/8"], "10.0.0.1", "403 ip_denied"),
        (["10.0.0.0/8"], "192.0.2.1", None),
        (["2001:db8::/32"], "2001:db8::1", "403 ip_denied"),
        (["10.0.0.0/8"], "::ffff:10.0.0.1", "403 ip_denied"),
        (["::ffff:10.0.0.0/104"], "10.0.0.1", "403 ip_denied"),
        (["::ffff:10.0.0.0/104"], "::ffff:10.9.9.9", "403 ip_denied"),
        (["::ffff:10.0.0.0/104"], "11.0.0.1", None),
    ],
)
def test_deny_list(deny: list[str], client_ip: str, expected: str | None) -> None:
    assert verdict(ip_rules(deny=deny).check(context(client_ip))) == expected


@pytest.mark.parametrize("client_ip", ["10.0.0.1", "::ffff:10.0.0.1"])
def test_deny_wins_over_allow(client_ip: str) -> None:
    rules = ip_rules(allow=["10.0.0.0/8"], deny=["10.0.0.0/24"])
    assert verdict(rules.check(context(client_ip))) == "403 ip_denied"
    assert verdict(rules.check(context("10.0.1.1"))) is None


@pytest.mark.parametrize("client_ip", ["unix", "", "not-an-ip", "10.0.0.1:443", "203.0.113.9, 10.0.0.1"])
def test_an_address_that_is_no_ip_is_denied_by_any_rule(client_ip: str) -> None:
    assert verdict(ip_rules(deny=["192.0.2.0/24"]).check(context(client_ip))) == "403 ip_denied"
    assert verdict(ip_rules(allow=["0.0.0.0/0", "::/0"]).check(context(client_ip))) == "403 ip_denied"


# -- roles and scopes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (("reader",), None),
        (("auditor", "admin"), None),
        (("auditor",), "403 forbidden:role"),
        ((), "403 forbidden:role"),
        (("Reader",), "403 forbidden:role"),  # exact, case-sensitive
        (("reader,admin",), "403 forbidden:role"),
    ],
)
def test_roles_any(roles: tuple[str, ...], expected: str | None) -> None:
    assert verdict(RequireRoles(frozenset({"reader", "admin"})).check(context(roles=roles))) == expected


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        ({"orders:read", "orders:write"}, None),
        ({"orders:read", "orders:write", "extra"}, None),
        ({"orders:read"}, "403 forbidden:scope"),
        (set(), "403 forbidden:scope"),
        ({"orders:read orders:write"}, "403 forbidden:scope"),
    ],
)
def test_scopes_all(scopes: set[str], expected: str | None) -> None:
    stage = RequireScopes(frozenset({"orders:read", "orders:write"}))
    assert verdict(stage.check(context(scopes=frozenset(scopes)))) == expected


def test_a_trusted_proxy_seen_through_a_dual_stack_listener_is_trusted() -> None:
    trusted = parse_networks(["127.0.0.2/32"])
    assert client_address("::ffff:127.0.0.2", b"198.51.100.7", trusted) == "198.51.100.7"


def test_shadow_mode_records_the_first_denial_and_goes_on() -> None:
    ctx = context("10.0.0.1", roles=("guest",))
    stages = (ip_rules(deny=["10.0.0.0/8"]), RequireRoles(frozenset({"admin"})))
    assert run_stages(stages, ctx, shadow=True) is None
    assert ctx.would_deny == "ip_denied"
    rejection = run_stages(stages, context("10.0.0.1"), shadow=False)
    assert isinstance(rejection, Rejection) and rejection.reason == "ip_denied"


# -- the stages of each route, in order -------------------------------------------------------------------


def test_policy_runtime_attaches_the_stages_each_route_asks_for(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "jwks.json").write_text(json.dumps(public_jwks(pem, "k1")))
    digest = hashlib.sha256(b"key").hexdigest()
    (tmp_path / "proxy.toml").write_text(
        f"""
[upstreams.api]
url = "http://127.0.0.1:9"

[identity.jwt.corp]
issuer = "https://idp.example.com/"
algorithms = ["ES256"]
jwks_file = "jwks.json"

[identity.jwt.unused]
issuer = "https://unused.example.com/"
algorithms = ["ES256"]
jwks_file = "jwks.json"

[identity.api_keys]
header = "X-Service-Key"
keys = [{{ id = "ci", sha256 = "{digest}" }}]

[[routes]]
name = "full"
path = "/full/*"
upstream = "api"
identity = ["api_key", "jwt:corp"]
roles_any = ["reader"]
scopes_all = ["orders:read"]
allow_ips = ["10.0.0.0/8"]
deny_ips = ["10.9.0.0/16"]
forward_credentials = true

[[routes]]
name = "jwt-only"
path = "/jwt"
upstream = "api"
identity = ["jwt:corp"]
mode = "shadow"

[[routes]]
name = "open"
path = "/*"
upstream = "api"
public = true
"""
    )
    runtime = PolicyRuntime(load_config(str(tmp_path / "proxy.toml")))
    # Key sources only for the issuers some route uses; none has loaded yet (no loop has run).
    assert list(runtime.issuers) == ["corp"]
    assert not runtime.keys_ready()
    assert runtime.not_ready() == ["jwt:corp: loading"]

    full, jwt_only, public = runtime.router.routes
    assert [stage.name for stage in full.stages] == ["ip_rules", "authenticate", "roles_any", "scopes_all"]
    authenticate = full.stages[1]
    assert isinstance(authenticate, Authenticate)
    assert authenticate.order == ("api_key", "jwt")
    assert authenticate.forward_credentials
    assert authenticate.api_key_header == b"x-service-key"
    assert authenticate.api_keys is not None
    assert list(authenticate.issuers) == ["https://idp.example.com/"]

    assert [stage.name for stage in jwt_only.stages] == ["authenticate"]
    assert jwt_only.shadow
    only = jwt_only.stages[0]
    assert isinstance(only, Authenticate)
    assert only.api_keys is None and not only.forward_credentials
    # One issuer object per worker, shared by the routes that name it (one cache, one key source).
    assert only.issuers == authenticate.issuers

    assert public.stages == ()
