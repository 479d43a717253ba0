"""load_config: TOML + flags -> compiled Config, or every problem as one line naming file and key."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fastproxy.config import Config, ConfigError, load_config
from fastproxy.identity.mint import public_jwks
from fastproxy.net import Address

UPSTREAM_AND_ROUTE = """
[upstreams.api]
url = "http://127.0.0.1:9000"

[[routes]]
name = "all"
path = "/*"
upstream = "api"
public = true
"""

KEY_HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

# The SPEC's example, with a real digest in place of "<hex>".
SPEC_EXAMPLE = f"""
[server]
listen = ["127.0.0.1:8080"]
workers = 4
admin_listen = "127.0.0.1:9901"
trusted_proxies = []            # CIDRs whose X-Forwarded-For is believed; default: none

[limits]
max_header_bytes = 32768
max_headers = 100
max_url_bytes = 8192
max_body_bytes = 1048576
header_timeout = 10.0
body_timeout = 15.0
keepalive_timeout = 60.0

[upstreams.api]
url = "http://127.0.0.1:9000"
pool_size = 128
connect_timeout = 5.0
timeout = 30.0

[identity.jwt.corp]             # a JWT issuer; several may be declared
issuer = "https://idp.example.com/"
audience = ["orders-api"]
algorithms = ["RS256", "ES256"] # never "none"; HS* only with `secret_env`
jwks_file = "keys/jwks.json"
jwks_refresh = 600
leeway = 30
roles_claim = "roles"
scope_claim = "scope"

[identity.api_keys]
header = "x-api-key"
keys = [ {{ id = "ci-bot", sha256 = "{KEY_HASH}", roles = ["reader"] }} ]

[rate_limits.per-user]
key = "principal"
rate = 100
per = 1.0
burst = 20

[masks.pii]
fields = ["ssn", "owner.email", "items[*].card.number"]
replacement = "***"
exempt_roles = ["auditor"]

ROUTES

[audit]
path = "/var/log/fastproxy/audit.jsonl"
batch_max = 512
flush_interval = 0.05           # seconds
fsync = true
rotate_bytes = 104857600
"""

SPEC_ROUTE = """
[[routes]]                      # first match wins; no match -> 404
name = "orders-read"
methods = ["GET", "HEAD"]
path = "/api/orders/*"          # exact "/x", prefix "/x/*"
upstream = "api"
identity = ["jwt:corp", "api_key"]   # any one suffices; omit only with public = true
roles_any = ["reader", "admin"]      # at least one of these roles
scopes_all = []                      # all of these scopes
allow_ips = []                       # CIDRs; empty = any
deny_ips = []
rate_limit = "per-user"
mask = "pii"
mode = "enforce"                     # enforce | shadow (decide, audit, but never block)
audit = "fail_closed"                # fail_closed | best_effort
"""

PUBLIC_ROUTES = """
[[routes]]
name = "orders-read"
methods = ["GET", "HEAD"]
path = "/api/orders/*"
upstream = "api"
public = true
mode = "shadow"
audit = "fail_closed"

[[routes]]
name = "health"
path = "/health"
upstream = "api"
public = true
"""


def write(tmp_path: Path, text: str, name: str = "fastproxy.toml") -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if "keys/jwks.json" in text:
        write_jwks(path.parent / "keys" / "jwks.json")
    return str(path)


def write_jwks(path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(public_jwks(pem, "k1")))


def errors_of(path: str, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def only_error(path: str) -> str:
    errors = errors_of(path)
    assert len(errors) == 1, errors
    return errors[0]


# -- valid files --------------------------------------------------------------------------------


def test_minimal_config_and_its_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, UPSTREAM_AND_ROUTE)
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.source == path
    assert config.listen == (Address("127.0.0.1", 8080),)
    assert config.admin == Address("127.0.0.1", 9901)
    assert config.workers >= 1
    assert config.trusted_proxies == ()
    assert config.limits.max_header_bytes == 32768
    assert config.limits.max_headers == 100
    assert config.limits.max_url_bytes == 8192
    assert config.limits.max_body_bytes == 1048576
    assert config.limits.header_timeout == 10.0
    assert config.limits.keepalive_timeout == 60.0
    assert config.server.graceful_timeout == 30.0
    assert config.server.max_connections == 10000
    upstream = config.upstreams["api"]
    assert upstream.address == Address("127.0.0.1", 9000)
    assert (upstream.pool_size, upstream.connect_timeout, upstream.timeout) == (128, 5.0, 30.0)
    route = config.router.match("PATCH", "/anything/at/all")
    assert route is not None
    assert route.name == "all"
    assert route.upstream is upstream
    assert config.warnings == ()


def test_spec_example_with_routes_that_use_only_what_this_release_has(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE.replace("ROUTES", PUBLIC_ROUTES)))
    assert config.workers == 4
    assert config.file.identity.jwt["corp"].audience == ["orders-api"]
    assert config.file.identity.api_keys is not None
    assert config.file.identity.api_keys.keys[0].id == "ci-bot"
    assert config.file.rate_limits["per-user"].burst == 20
    assert config.file.masks["pii"].fields[2] == "items[*].card.number"
    assert config.audit.path == "/var/log/fastproxy/audit.jsonl"
    assert config.audit.batch_max == 512
    route = config.router.match("HEAD", "/api/orders/7")
    assert route is not None
    assert route.name == "orders-read"
    assert route.shadow
    assert config.router.match("POST", "/api/orders/7") is None
    health = config.router.match("POST", "/health")
    assert health is not None
    assert health.name == "health"
    assert config.router.match("GET", "/health/x") is None


def test_spec_example_route_compiles_with_every_stage(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE.replace("ROUTES", SPEC_ROUTE)))
    route = config.router.routes[0]
    assert route.mask is not None and route.mask.name == "pii"
    assert set(config.rate_limits) == {"per-user"}


def test_a_bad_mask_path_is_named(tmp_path: Path) -> None:
    text = SPEC_EXAMPLE.replace("ROUTES", PUBLIC_ROUTES).replace('"owner.email"', '"owner..email"')
    path = write(tmp_path, text)
    error = only_error(path)
    assert error.startswith(f"{path}: masks.pii.fields[1]: ")


def test_a_principal_rate_limit_needs_identity(tmp_path: Path) -> None:
    route = '[[routes]]\nname = "r"\npath = "/r"\nupstream = "api"\npublic = true\nrate_limit = "per-user"\n'
    path = write(tmp_path, SPEC_EXAMPLE.replace("ROUTES", route))
    assert only_error(path) == (
        f"{path}: routes[0].rate_limit: [rate_limits.per-user] counts by principal: the route needs identity"
    )


def test_spec_example_route_without_rate_limit_and_mask_compiles(tmp_path: Path) -> None:
    route = SPEC_ROUTE.replace('mask = "pii"', "")
    config = load_config(write(tmp_path, SPEC_EXAMPLE.replace("ROUTES", route)))
    assert set(config.identity.issuers) == {"corp"}
    spec = config.identity.issuers["corp"]
    assert (spec.kind, spec.location) == ("file", str(tmp_path / "keys" / "jwks.json"))
    assert spec.verifier.audience == ("orders-api",)
    assert config.identity.api_keys is not None
    assert config.identity.api_key_header == b"x-api-key"


@pytest.mark.parametrize(("key", "value"), [("roles_any", '["admin"]'), ("scopes_all", '["orders:read"]')])
def test_roles_and_scopes_need_a_principal(tmp_path: Path, key: str, value: str) -> None:
    route = f'[[routes]]\nname = "r"\npath = "/r"\nupstream = "api"\npublic = true\n{key} = {value}\n'
    path = write(tmp_path, SPEC_EXAMPLE.replace("ROUTES", route))
    assert only_error(path) == (
        f"{path}: routes[0].public: roles_any and scopes_all need a principal: not with public = true"
    )


@pytest.mark.parametrize(
    ("key", "value"), [("allow_ips", '["10.0.0.0/8"]'), ("deny_ips", '["192.0.2.0/24"]')]
)
def test_ip_rules_on_a_public_route(tmp_path: Path, key: str, value: str) -> None:
    route = f'[[routes]]\nname = "r"\npath = "/r"\nupstream = "api"\npublic = true\n{key} = {value}\n'
    config = load_config(write(tmp_path, SPEC_EXAMPLE.replace("ROUTES", route)))
    assert getattr(config.router.routes[0].settings, key) == [value[2:-2]]


def test_admin_listen_off(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[server]\nadmin_listen = "off"\n' + UPSTREAM_AND_ROUTE))
    assert config.admin is None


def test_ipv6_listen_and_trusted_proxies(tmp_path: Path) -> None:
    text = (
        '[server]\nlisten = ["[::1]:8443", "127.0.0.1:8080"]\n'
        'trusted_proxies = ["10.0.0.0/8", "2001:db8::/32"]\n' + UPSTREAM_AND_ROUTE
    )
    config = load_config(write(tmp_path, text))
    assert config.listen == (Address("::1", 8443), Address("127.0.0.1", 8080))
    assert [str(n) for n in config.trusted_proxies] == ["10.0.0.0/8", "2001:db8::/32"]


def test_an_integer_is_accepted_for_seconds(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[limits]\nheader_timeout = 5\n" + UPSTREAM_AND_ROUTE))
    assert config.limits.header_timeout == 5.0


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    text = '[server]\npid_file = "run/fp.pid"\n[audit]\npath = "audit.jsonl"\n'
    config = load_config(write(tmp_path, text + UPSTREAM_AND_ROUTE, "etc/fastproxy.toml"))
    assert config.server.pid_file == str(tmp_path / "etc" / "run" / "fp.pid")
    assert config.audit.path == str(tmp_path / "etc" / "audit.jsonl")


# -- structure errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bogus = 1\n" + UPSTREAM_AND_ROUTE, "bogus"),
        ("[server]\nbogus = 1\n" + UPSTREAM_AND_ROUTE, "server.bogus"),
        ("[limits]\nmax_body = 1\n" + UPSTREAM_AND_ROUTE, "limits.max_body"),
        ("[audit]\nfile = 'x'\n" + UPSTREAM_AND_ROUTE, "audit.file"),
        (UPSTREAM_AND_ROUTE + "bogus = 1\n", "routes[0].bogus"),
        (UPSTREAM_AND_ROUTE.replace('9000"', '9000"\nretries = 3'), "upstreams.api.retries"),
        ("[identity]\nldap = {}\n" + UPSTREAM_AND_ROUTE, "identity.ldap"),
        ("[identity.jwt.corp]\nissuer = 'i'\nkid = 'k'\n" + UPSTREAM_AND_ROUTE, "identity.jwt.corp.kid"),
        ("[identity.api_keys]\nprefix = 'x'\n" + UPSTREAM_AND_ROUTE, "identity.api_keys.prefix"),
        (
            f"[identity.api_keys]\nkeys = [{{id = 'a', sha256 = '{KEY_HASH}', key = 's'}}]\n"
            + UPSTREAM_AND_ROUTE,
            "identity.api_keys.keys[0].key",
        ),
        ("[rate_limits.x]\nkey = 'ip'\nrate = 1\nwindow = 1\n" + UPSTREAM_AND_ROUTE, "rate_limits.x.window"),
        ("[masks.m]\nfields = ['a']\nregex = 'x'\n" + UPSTREAM_AND_ROUTE, "masks.m.regex"),
    ],
)
def test_unknown_keys_at_every_level(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    assert only_error(path) == f"{path}: {key}: unknown key"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nworkers = 'four'\n" + UPSTREAM_AND_ROUTE, "server.workers"),
        ("[server]\nlisten = '127.0.0.1:8080'\n" + UPSTREAM_AND_ROUTE, "server.listen"),
        ("[server]\nlisten = [8080]\n" + UPSTREAM_AND_ROUTE, "server.listen[0]"),
        ("[limits]\nmax_body_bytes = '1MiB'\n" + UPSTREAM_AND_ROUTE, "limits.max_body_bytes"),
        ("[limits]\nmax_headers = 5.5\n" + UPSTREAM_AND_ROUTE, "limits.max_headers"),
        ("[limits]\nmax_headers = true\n" + UPSTREAM_AND_ROUTE, "limits.max_headers"),
        ("[audit]\nfsync = 'yes'\n" + UPSTREAM_AND_ROUTE, "audit.fsync"),
        ("[server]\nlog_level = 'loud'\n" + UPSTREAM_AND_ROUTE, "server.log_level"),
        (UPSTREAM_AND_ROUTE.replace("public = true", "public = 'yes'"), "routes[0].public"),
        (UPSTREAM_AND_ROUTE + "methods = 'GET'\n", "routes[0].methods"),
        (UPSTREAM_AND_ROUTE + "mode = 'audit-only'\n", "routes[0].mode"),
        (UPSTREAM_AND_ROUTE + "audit = 'never'\n", "routes[0].audit"),
        ("server = 1\n" + UPSTREAM_AND_ROUTE, "server"),
        ("upstreams = []\n[[routes]]\nname='a'\npath='/'\nupstream='api'\npublic=true\n", "upstreams"),
        ('[upstreams.api]\nurl = "http://h:1"\n[routes]\nname = "a"\n', "routes"),
        ("[identity]\njwt = []\n" + UPSTREAM_AND_ROUTE, "identity.jwt"),
        (
            f"[identity.api_keys]\nkeys = [{{id = 'a', sha256 = '{KEY_HASH}', roles = 'r'}}]\n"
            + UPSTREAM_AND_ROUTE,
            "identity.api_keys.keys[0].roles",
        ),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    assert only_error(path).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nworkers = 0\n", "server.workers"),
        ("[server]\nworkers = 513\n", "server.workers"),
        ("[server]\ngraceful_timeout = 0\n", "server.graceful_timeout"),
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
        ("[server]\nratelimit_slots = -1\n", "server.ratelimit_slots"),
        ("[limits]\nmax_headers = 0\n", "limits.max_headers"),
        ("[limits]\nmax_header_bytes = 0\n", "limits.max_header_bytes"),
        ("[limits]\nmax_url_bytes = -5\n", "limits.max_url_bytes"),
        ("[limits]\nmax_body_bytes = -1\n", "limits.max_body_bytes"),
        ("[limits]\nheader_timeout = 0\n", "limits.header_timeout"),
        ("[limits]\nbody_timeout = -1.5\n", "limits.body_timeout"),
        ("[limits]\nkeepalive_timeout = 0.0\n", "limits.keepalive_timeout"),
        ("[audit]\nbatch_max = 0\n", "audit.batch_max"),
        ("[audit]\nflush_interval = 0\n", "audit.flush_interval"),
        ("[audit]\nrotate_bytes = 0\n", "audit.rotate_bytes"),
        ("[rate_limits.x]\nkey = 'ip'\nrate = 0\n", "rate_limits.x.rate"),
        ("[rate_limits.x]\nkey = 'ip'\nrate = 1\nburst = -1\n", "rate_limits.x.burst"),
        ("[identity.jwt.c]\nissuer = 'i'\nleeway = -1\n", "identity.jwt.c.leeway"),
        ("[identity.api_keys]\nkeys = [{id = 'a', sha256 = '<hex>'}]\n", "identity.api_keys.keys[0].sha256"),
    ],
)
def test_bounds(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text + UPSTREAM_AND_ROUTE)
    assert only_error(path).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("server", "workers", 512),
        ("server", "workers", 1),
        ("limits", "max_body_bytes", 0),
        ("limits", "max_headers", 1),
    ],
)
def test_bounds_are_inclusive(tmp_path: Path, section: str, key: str, value: int) -> None:
    config = load_config(write(tmp_path, f"[{section}]\n{key} = {value}\n" + UPSTREAM_AND_ROUTE))
    assert getattr(getattr(config.file, section), key) == value


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            '[upstreams.api]\npool_size = 3\n[[routes]]\nname="a"\npath="/"\nupstream="api"\npublic=true\n',
            "upstreams.api.url",
        ),
        (
            '[upstreams.api]\nurl="http://h:1"\n[[routes]]\npath="/"\nupstream="api"\npublic=true\n',
            "routes[0].name",
        ),
        (
            '[upstreams.api]\nurl="http://h:1"\n[[routes]]\nname="a"\nupstream="api"\npublic=true\n',
            "routes[0].path",
        ),
        (
            '[upstreams.api]\nurl="http://h:1"\n[[routes]]\nname="a"\npath="/"\npublic=true\n',
            "routes[0].upstream",
        ),
        ("[identity.jwt.corp]\naudience = ['x']\n" + UPSTREAM_AND_ROUTE, "identity.jwt.corp.issuer"),
        (
            "[identity.api_keys]\nkeys = [{id = 'a'}]\n" + UPSTREAM_AND_ROUTE,
            "identity.api_keys.keys[0].sha256",
        ),
        ("[rate_limits.x]\nkey = 'ip'\n" + UPSTREAM_AND_ROUTE, "rate_limits.x.rate"),
        ("[masks.m]\nreplacement = 'x'\n" + UPSTREAM_AND_ROUTE, "masks.m.fields"),
    ],
)
def test_missing_required_keys(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    assert only_error(path) == f"{path}: {key}: required key is missing"


# -- meaning errors -----------------------------------------------------------------------------


def test_route_without_identity_and_not_public(tmp_path: Path) -> None:
    path = write(tmp_path, UPSTREAM_AND_ROUTE.replace("public = true", ""))
    assert only_error(path) == (
        f"{path}: routes[0].identity: a route names its identity methods, or says public = true"
    )


def test_route_public_false_without_identity(tmp_path: Path) -> None:
    path = write(tmp_path, UPSTREAM_AND_ROUTE.replace("public = true", "public = false"))
    assert only_error(path).startswith(f"{path}: routes[0].identity: ")


def test_public_route_with_identity(tmp_path: Path) -> None:
    text = "[identity.api_keys]\n" + UPSTREAM_AND_ROUTE + 'identity = ["api_key"]\n'
    path = write(tmp_path, text)
    assert only_error(path) == f"{path}: routes[0].public: a public route takes no identity"


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        ('["jwt:corp"]', "no [identity.jwt.corp]"),
        ('["api_key"]', "api_key needs [identity.api_keys]"),
        ('["ldap"]', "unknown identity method 'ldap'"),
    ],
)
def test_identity_references(tmp_path: Path, identity: str, message: str) -> None:
    text = UPSTREAM_AND_ROUTE.replace("public = true", f"identity = {identity}")
    path = write(tmp_path, text)
    assert only_error(path).startswith(f"{path}: routes[0].identity: {message}")


def test_unknown_rate_limit_and_mask_references(tmp_path: Path) -> None:
    path = write(tmp_path, UPSTREAM_AND_ROUTE + 'rate_limit = "nope"\nmask = "gone"\n')
    assert errors_of(path) == [
        f"{path}: routes[0].rate_limit: no [rate_limits.nope]",
        f"{path}: routes[0].mask: no [masks.gone]",
    ]


def test_unknown_upstream(tmp_path: Path) -> None:
    path = write(tmp_path, UPSTREAM_AND_ROUTE.replace('upstream = "api"', 'upstream = "nope"'))
    assert only_error(path) == f"{path}: routes[0].upstream: no [upstreams.nope]"


def test_duplicate_route_names(tmp_path: Path) -> None:
    second = '[[routes]]\nname = "all"\npath = "/x"\nupstream = "api"\npublic = true\n'
    path = write(tmp_path, UPSTREAM_AND_ROUTE + second)
    assert only_error(path) == f"{path}: routes[1].name: route name 'all' is used twice"


def test_no_routes(tmp_path: Path) -> None:
    path = write(tmp_path, '[upstreams.api]\nurl = "http://127.0.0.1:9000"\n')
    assert only_error(path).startswith(f"{path}: routes: ")


@pytest.mark.parametrize(
    ("server", "key"),
    [
        ('listen = ["localhost"]', "server.listen[0]"),
        ('listen = ["127.0.0.1:8080", "::1:8080"]', "server.listen[1]"),
        ('listen = ["127.0.0.1:0"]', "server.listen[0]"),
        ("listen = []", "server.listen"),
        ('admin_listen = "127.0.0.1"', "server.admin_listen"),
        ('admin_listen = "127.0.0.1:70000"', "server.admin_listen"),
        ('trusted_proxies = ["10.0.0.0/8", "proxy.local"]', "server.trusted_proxies"),
    ],
)
def test_bad_addresses(tmp_path: Path, server: str, key: str) -> None:
    path = write(tmp_path, f"[server]\n{server}\n" + UPSTREAM_AND_ROUTE)
    assert only_error(path).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:9000", "http://127.0.0.1:9000/api", "127.0.0.1:9000", "http://h:0x1"]
)
def test_bad_upstream_url(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, UPSTREAM_AND_ROUTE.replace("http://127.0.0.1:9000", url))
    assert only_error(path).startswith(f"{path}: upstreams.api.url: ")


@pytest.mark.parametrize("pattern", ["api/*", "/x*", "/x?y", "/a b"])
def test_bad_route_path(tmp_path: Path, pattern: str) -> None:
    path = write(tmp_path, UPSTREAM_AND_ROUTE.replace('path = "/*"', f'path = "{pattern}"'))
    assert only_error(path).startswith(f"{path}: routes[0].path: ")


def test_bad_route_method(tmp_path: Path) -> None:
    path = write(tmp_path, UPSTREAM_AND_ROUTE + 'methods = ["GET", "post"]\n')
    assert only_error(path) == f"{path}: routes[0].methods: not an upper-case HTTP method: 'post'"


def test_bad_route_networks(tmp_path: Path) -> None:
    path = write(tmp_path, UPSTREAM_AND_ROUTE + 'deny_ips = ["bogus"]\n')
    assert only_error(path) == f"{path}: routes[0].deny_ips: not an IP network: 'bogus'"


def test_tls_is_refused_in_this_release(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\ntls_cert = "c.pem"\ntls_key = "k.pem"\n' + UPSTREAM_AND_ROUTE)
    assert only_error(path).startswith(f"{path}: server.tls_cert: ")
    path = write(tmp_path, '[server]\ntls_key = "k.pem"\n' + UPSTREAM_AND_ROUTE)
    assert any("go together" in e for e in errors_of(path))


def test_every_problem_is_reported_once(tmp_path: Path) -> None:
    text = (
        "[server]\nworkers = 0\nbogus = 1\n"
        "[limits]\nmax_headers = 'many'\n" + UPSTREAM_AND_ROUTE + "extra = 1\n"
    )
    path = write(tmp_path, text)
    errors = errors_of(path)
    assert sorted(e.split(": ")[1] for e in errors) == [
        "limits.max_headers",
        "routes[0].extra",
        "server.bogus",
        "server.workers",
    ]
    assert all(e.startswith(f"{path}: ") and "\n" not in e for e in errors)


def test_every_meaning_problem_is_reported(tmp_path: Path) -> None:
    text = (
        '[server]\nlisten = ["nope"]\n'
        '[upstreams.api]\nurl = "https://h"\n'
        '[[routes]]\nname = "a"\npath = "x"\nupstream = "gone"\n'
        '[[routes]]\nname = "a"\npath = "/b"\nupstream = "api"\npublic = true\n'
    )
    path = write(tmp_path, text)
    keys = sorted(e.split(": ")[1] for e in errors_of(path))
    assert keys == [
        "routes[0].identity",
        "routes[0].path",
        "routes[0].upstream",
        "routes[1].name",
        "server.listen[0]",
        "upstreams.api.url",
    ]


def test_not_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nworkers = 1\n")
    assert only_error(path).startswith(f"{path}: not valid TOML: ")


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.toml")
    assert only_error(path).startswith(f"{path}: cannot read")


def test_neither_file_nor_upstream() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None)
    assert len(info.value.errors) == 1


def test_file_and_upstream_together_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, UPSTREAM_AND_ROUTE)
    errors = errors_of(path, upstream_url="http://127.0.0.1:9000")
    assert len(errors) == 1
    assert errors[0].startswith("--upstream: ")


def test_jwt_algorithm_none_is_refused(tmp_path: Path) -> None:
    text = '[identity.jwt.c]\nissuer = "i"\nalgorithms = ["RS256", "none"]\n'
    path = write(tmp_path, text + UPSTREAM_AND_ROUTE)
    error = only_error(path)
    assert error.startswith(f"{path}: identity.jwt.c.algorithms[1]: ")
    assert "'none'" in error


def test_jwt_hmac_without_secret_env_is_refused(tmp_path: Path) -> None:
    text = '[identity.jwt.c]\nissuer = "i"\nalgorithms = ["HS256"]\n'
    path = write(tmp_path, text + UPSTREAM_AND_ROUTE)
    assert only_error(path).startswith(f"{path}: identity.jwt.c.")


def test_rate_limit_key_must_be_a_known_kind(tmp_path: Path) -> None:
    text = '[rate_limits.x]\nkey = "user"\nrate = 1\n'
    path = write(tmp_path, text + UPSTREAM_AND_ROUTE)
    assert only_error(path).startswith(f"{path}: rate_limits.x.key: ")


# -- flags ---------------------------------------------------------------------------------------


def test_flags_override_the_file(tmp_path: Path) -> None:
    text = (
        '[server]\nworkers = 4\nlisten = ["127.0.0.1:8080"]\nlog_level = "info"\n'
        "[limits]\nmax_body_bytes = 100\nmax_headers = 7\n" + UPSTREAM_AND_ROUTE
    )
    overrides = {
        "server": {"workers": 2, "listen": ["127.0.0.1:9090", "[::1]:9090"]},
        "limits": {"max_body_bytes": 5},
        "audit": {"path": "/tmp/audit.jsonl"},
    }
    config = load_config(write(tmp_path, text), overrides)
    assert config.workers == 2
    assert config.listen == (Address("127.0.0.1", 9090), Address("::1", 9090))
    assert config.limits.max_body_bytes == 5
    assert config.limits.max_headers == 7
    assert config.server.log_level == "info"
    assert config.audit.path == "/tmp/audit.jsonl"


def test_a_bad_override_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, UPSTREAM_AND_ROUTE)
    errors = errors_of(path, overrides={"server": {"listen": ["nope"]}})
    assert len(errors) == 1
    assert "server.listen[0]" in errors[0]


def test_upstream_flags_are_defaults_an_upstream_key_overrides(tmp_path: Path) -> None:
    text = (
        '[upstreams.api]\nurl = "http://127.0.0.1:9000"\ntimeout = 2.0\n'
        '[upstreams.slow]\nurl = "http://127.0.0.1:9001"\n'
        '[[routes]]\nname = "a"\npath = "/a/*"\nupstream = "api"\npublic = true\n'
        '[[routes]]\nname = "s"\npath = "/s/*"\nupstream = "slow"\npublic = true\n'
    )
    overrides = {"upstreams.*": {"timeout": 90.0, "pool_size": 4}}
    config = load_config(write(tmp_path, text), overrides)
    assert config.upstreams["api"].timeout == 2.0
    assert config.upstreams["slow"].timeout == 90.0
    assert config.upstreams["api"].pool_size == 4
    assert config.upstreams["slow"].pool_size == 4
    assert config.upstreams["slow"].connect_timeout == 5.0


def test_upstream_without_a_file_is_one_public_catch_all_route() -> None:
    config = load_config(None, {"upstreams.*": {"timeout": 3.0}}, "http://127.0.0.1:9000")
    assert config.source is None
    routes = config.router.routes
    assert len(routes) == 1
    assert routes[0].settings.public
    assert routes[0].settings.identity == []
    for method, path in (("GET", "/"), ("POST", "/a/b"), ("DELETE", "/x?y")):
        found = config.router.match(method, path)
        assert found is routes[0]
    assert routes[0].upstream.address == Address("127.0.0.1", 9000)
    assert routes[0].upstream.timeout == 3.0
    assert len(config.warnings) == 1
    assert "http://127.0.0.1:9000" in config.warnings[0]
    assert "authentication" in config.warnings[0]


def test_bad_upstream_flag_url_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, None, "https://127.0.0.1:9000")
    assert len(info.value.errors) == 1
    assert "only http://" in info.value.errors[0]
