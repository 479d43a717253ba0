"""compile_identity through load_config: [identity.*] compiled once, each problem one exact line."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fastproxy.config import load_config
from fastproxy.config.loader import ConfigError
from fastproxy.config.model import Config
from fastproxy.identity.issuers import IssuerSpec
from fastproxy.identity.jwk import KeySet, b64url_encode
from fastproxy.identity.jws import TokenError
from fastproxy.identity.mint import public_jwks

SECRET = "s3cret-value-for-hs256-0123456789abcdef"  # 39 bytes
SECRET_ENV = "FASTPROXY_TEST_ISSUERS_SECRET"

_EC_PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
JWKS = json.dumps(public_jwks(_EC_PEM, "k1")).encode()

ROUTE = """
[upstreams.api]
url = "http://127.0.0.1:9"

[[routes]]
name = "all"
path = "/*"
upstream = "api"
public = true
"""


def write(tmp_path: Path, identity: str) -> Path:
    (tmp_path / "jwks.json").write_bytes(JWKS)
    path = tmp_path / "fastproxy.toml"
    path.write_text(identity + "\n" + ROUTE)
    return path


def load(tmp_path: Path, identity: str) -> Config:
    return load_config(str(write(tmp_path, identity)))


def errors(tmp_path: Path, identity: str) -> list[str]:
    path = write(tmp_path, identity)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    prefix = f"{path}: "
    assert all(line.startswith(prefix) for line in info.value.errors), info.value.errors
    return [line[len(prefix) :] for line in info.value.errors]


def issuer(body: str, name: str = "corp") -> str:
    return f'[identity.jwt.{name}]\nissuer = "https://idp.example.com/"\n{body}\n'


# -- what compiles -----------------------------------------------------------------------------


def test_a_jwks_file_issuer_compiles_to_a_spec(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        issuer('audience = ["orders"]\nalgorithms = ["ES256"]\njwks_file = "jwks.json"\nleeway = 5'),
    )
    spec = config.identity.issuers["corp"]
    assert spec.kind == "file"
    # Relative to the config file's own directory.
    assert spec.location == str(tmp_path / "jwks.json")
    assert spec.verifier.issuer == "https://idp.example.com/"
    assert spec.verifier.audience == ("orders",)
    assert spec.verifier.algorithms == {"ES256"}
    assert spec.verifier.leeway == 5.0
    assert spec.refresh == 600.0
    assert spec.secret is None
    assert config.identity.api_keys is None
    assert config.identity.api_key_header == b"x-api-key"


def test_the_file_key_source_loads_the_keys(tmp_path: Path) -> None:
    spec = load(tmp_path, issuer('algorithms = ["ES256"]\njwks_file = "jwks.json"')).identity.issuers["corp"]

    async def main() -> None:
        source = spec.key_source()
        await source.start()
        try:
            assert source.keys is not None
            assert list(source.keys.keys_by_kid) == ["k1"]
        finally:
            await source.close()

    asyncio.run(main())


def test_url_and_discovery_issuers(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        issuer('jwks_url = "https://idp.example.com/jwks"', "a")
        + issuer("discovery = true\njwks_refresh = 60", "b"),
    )
    a, b = config.identity.issuers["a"], config.identity.issuers["b"]
    assert (a.kind, a.location) == ("url", "https://idp.example.com/jwks")
    assert (b.kind, b.location, b.refresh) == ("discovery", "https://idp.example.com/", 60.0)


def test_a_secret_issuer_reads_the_environment_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    spec = load(tmp_path, issuer(f'algorithms = ["HS256"]\nsecret_env = "{SECRET_ENV}"')).identity.issuers[
        "corp"
    ]
    assert (spec.kind, spec.location, spec.secret) == ("secret", SECRET_ENV, SECRET.encode())
    assert SECRET not in repr(spec)
    assert SECRET not in repr(spec.verifier)

    async def main() -> None:
        source = spec.key_source()
        await source.start()
        try:
            assert source.keys is not None and len(source.keys) == 1
            assert source.keys.keys[0].key == SECRET.encode()
        finally:
            await source.close()

    asyncio.run(main())


def loaded_keys(spec: IssuerSpec) -> KeySet:
    """The keys a worker's key source for ``spec`` installs on its first load."""

    async def main() -> KeySet:
        source = spec.key_source()
        await source.start()
        await source.close()
        assert source.keys is not None
        return source.keys

    return asyncio.run(main())


def _hs256(secret: bytes, kid: str | None) -> bytes:
    header: dict[str, str] = {"alg": "HS256"} | ({"kid": kid} if kid is not None else {})
    payload = {"iss": "https://idp.example.com/", "sub": "svc", "exp": 2_000_000_000}
    signing_input = (
        b64url_encode(json.dumps(header).encode()) + b"." + b64url_encode(json.dumps(payload).encode())
    )
    return signing_input + b"." + b64url_encode(hmac.new(secret, signing_input, hashlib.sha256).digest())


@pytest.mark.parametrize("kid", [None, "2024-rotation", "anything"])
def test_a_secret_verifies_tokens_whatever_kid_they_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kid: str | None
) -> None:
    # The configured secret has no kid; HS* issuers often set one. There is one key either way.
    monkeypatch.setenv(SECRET_ENV, SECRET)
    spec = load(tmp_path, issuer(f'algorithms = ["HS256"]\nsecret_env = "{SECRET_ENV}"')).identity.issuers[
        "corp"
    ]
    keys = loaded_keys(spec)
    assert spec.verifier.verify(_hs256(SECRET.encode(), kid), keys, 1_900_000_000).subject == "svc"
    with pytest.raises(TokenError, match="bad_signature"):
        spec.verifier.verify(_hs256(b"another-secret-of-enough-length-0123456789", kid), keys, 1_900_000_000)


def test_a_secret_is_the_variables_utf8_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    value = "clé-secrète-" + "é" * 12
    monkeypatch.setenv(SECRET_ENV, value)
    spec = load(tmp_path, issuer(f'algorithms = ["HS256"]\nsecret_env = "{SECRET_ENV}"')).identity.issuers[
        "corp"
    ]
    assert spec.secret == value.encode("utf-8")


def test_api_keys_compile_to_a_table(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"the-key").hexdigest().upper()
    config = load(
        tmp_path,
        f'[identity.api_keys]\nheader = "X-Service-Key"\n'
        f'keys = [{{ id = "ci-bot", sha256 = "{digest}", roles = ["reader"] }}]\n',
    )
    table = config.identity.api_keys
    assert table is not None and len(table) == 1
    found = table.lookup(b"the-key")
    assert found is not None and (found.id, found.roles) == ("ci-bot", ("reader",))
    assert config.identity.api_key_header == b"x-service-key"


# -- what does not: one line each ------------------------------------------------------------------


def test_no_key_source(tmp_path: Path) -> None:
    assert errors(tmp_path, issuer("")) == [
        "identity.jwt.corp: needs exactly one key source: jwks_file, jwks_url, discovery = true or secret_env"
    ]


def test_two_key_sources(tmp_path: Path) -> None:
    assert errors(tmp_path, issuer('jwks_file = "jwks.json"\njwks_url = "https://idp.example.com/k"')) == [
        "identity.jwt.corp: needs exactly one key source: jwks_file, jwks_url, discovery = true or "
        "secret_env (has jwks_file, jwks_url)"
    ]


def test_hs_without_secret_env(tmp_path: Path) -> None:
    assert errors(tmp_path, issuer('algorithms = ["HS256", "HS384"]\njwks_file = "jwks.json"')) == [
        "identity.jwt.corp.algorithms: HS256, HS384 needs secret_env"
    ]


def test_secret_env_with_public_key_algorithms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert errors(tmp_path, issuer(f'algorithms = ["HS256", "RS256"]\nsecret_env = "{SECRET_ENV}"')) == [
        "identity.jwt.corp.algorithms: an issuer with secret_env takes HS* algorithms only (has RS256)"
    ]
    # The default algorithms are RS256: a secret_env needs them named.
    assert errors(tmp_path, issuer(f'secret_env = "{SECRET_ENV}"')) == [
        "identity.jwt.corp.algorithms: an issuer with secret_env takes HS* algorithms only (has RS256)"
    ]


def test_secret_env_not_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert errors(tmp_path, issuer(f'algorithms = ["HS256"]\nsecret_env = "{SECRET_ENV}"')) == [
        f"identity.jwt.corp.secret_env: environment variable '{SECRET_ENV}' is not set"
    ]


@pytest.mark.parametrize(
    ("algorithms", "value", "line"),
    [
        ('["HS256"]', "short-but-secret-value", "holds 22 bytes; HS256 needs at least 32"),
        ('["HS256"]', "x" * 31, "holds 31 bytes; HS256 needs at least 32"),
        ('["HS256", "HS512"]', SECRET, "holds 39 bytes; HS256, HS512 needs at least 64"),
        ('["HS384"]', "é" * 20, "holds 40 bytes; HS384 needs at least 48"),
    ],
)
def test_secret_too_short_says_its_length_never_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, algorithms: str, value: str, line: str
) -> None:
    monkeypatch.setenv(SECRET_ENV, value)
    found = errors(tmp_path, issuer(f'algorithms = {algorithms}\nsecret_env = "{SECRET_ENV}"'))
    assert found == [f"identity.jwt.corp.secret_env: {SECRET_ENV} {line}"]
    assert value not in found[0]


def test_jwks_file_missing(tmp_path: Path) -> None:
    assert errors(tmp_path, issuer('jwks_file = "keys/none.json"')) == [
        f"identity.jwt.corp.jwks_file: cannot read {tmp_path / 'keys/none.json'}: No such file or directory"
    ]


def test_jwks_file_not_json(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    [line] = errors(tmp_path, issuer('jwks_file = "bad.json"'))
    assert line.startswith(f"identity.jwt.corp.jwks_file: {tmp_path / 'bad.json'}: JWK Set is not JSON")


def test_jwks_file_without_keys_array(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text('{"keys": "none"}')
    assert errors(tmp_path, issuer('jwks_file = "empty.json"')) == [
        f"identity.jwt.corp.jwks_file: {tmp_path / 'empty.json'}: JWK Set has no 'keys' array"
    ]


@pytest.mark.parametrize(
    "document",
    [
        {"keys": []},
        # A secret in a key file is no public key: skipped, so nothing usable remains.
        {"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]},
        {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]},
    ],
)
def test_jwks_file_with_no_usable_key(tmp_path: Path, document: dict[str, object]) -> None:
    (tmp_path / "unusable.json").write_text(json.dumps(document))
    assert errors(tmp_path, issuer('jwks_file = "unusable.json"')) == [
        f"identity.jwt.corp.jwks_file: {tmp_path / 'unusable.json'}: no usable key"
    ]


def test_jwks_file_too_large(tmp_path: Path) -> None:
    (tmp_path / "huge.json").write_bytes(b" " * ((1 << 20) + 1))
    assert errors(tmp_path, issuer('jwks_file = "huge.json"')) == [
        f"identity.jwt.corp.jwks_file: {tmp_path / 'huge.json'}: over 1048576 bytes"
    ]


@pytest.mark.parametrize(
    ("url", "line"),
    [
        (
            "ftp://idp.example.com/jwks",
            "expected an http:// or https:// URL, got 'ftp://idp.example.com/jwks'",
        ),
        ("idp.example.com/jwks", "expected an http:// or https:// URL, got 'idp.example.com/jwks'"),
        ("https:///jwks", "expected an http:// or https:// URL, got 'https:///jwks'"),
        ("http://idp:99999/jwks", "not a URL (Port out of range 0-65535): 'http://idp:99999/jwks'"),
        ("http://[::1/jwks", "not a URL (Invalid IPv6 URL): 'http://[::1/jwks'"),
        (
            "http://idp/jw ks",
            "a URL without spaces, control or non-ASCII characters, got 'http://idp/jw ks'",
        ),
    ],
)
def test_bad_jwks_url(tmp_path: Path, url: str, line: str) -> None:
    assert errors(tmp_path, issuer(f"jwks_url = {json.dumps(url)}")) == [
        f"identity.jwt.corp.jwks_url: {line}"
    ]


def test_discovery_needs_an_http_issuer(tmp_path: Path) -> None:
    text = '[identity.jwt.corp]\nissuer = "corp-idp"\ndiscovery = true\n'
    assert errors(tmp_path, text) == [
        "identity.jwt.corp.issuer: expected an http:// or https:// URL, got 'corp-idp'"
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("roles_claim", ""),
        ("roles_claim", "realm_access..roles"),
        ("roles_claim", ".roles"),
        ("scope_claim", "scp."),
    ],
)
def test_bad_claim_path(tmp_path: Path, key: str, value: str) -> None:
    assert errors(tmp_path, issuer(f'jwks_file = "jwks.json"\n{key} = "{value}"')) == [
        f"identity.jwt.corp.{key}: not a dotted claim path: {value!r}"
    ]


def test_empty_issuer_and_algorithms(tmp_path: Path) -> None:
    text = '[identity.jwt.corp]\nissuer = ""\nalgorithms = []\njwks_file = "jwks.json"\n'
    assert errors(tmp_path, text) == [
        "identity.jwt.corp.issuer: must not be empty",
        "identity.jwt.corp.algorithms: name at least one algorithm",
    ]


def test_alg_none_is_not_an_algorithm(tmp_path: Path) -> None:
    assert errors(tmp_path, issuer('algorithms = ["none"]\njwks_file = "jwks.json"')) == [
        "identity.jwt.corp.algorithms[0]: Invalid enum value 'none'"
    ]


def test_infinite_leeway(tmp_path: Path) -> None:
    assert errors(tmp_path, issuer('jwks_file = "jwks.json"\nleeway = inf')) == [
        "identity.jwt.corp.leeway: must be a finite number of seconds"
    ]


@pytest.mark.parametrize("name", ['"corp idp"', '"corp\\r\\nX-Evil: 1"', '"a,b"', '""'])
def test_issuer_name_must_fit_a_header(tmp_path: Path, name: str) -> None:
    shown = repr(json.loads(name))
    assert errors(tmp_path, issuer('jwks_file = "jwks.json"', name)) == [
        f"identity.jwt.{json.loads(name)}: an issuer name is letters, digits and !#$%&'*+.^_`|~- only, "
        f"got {shown}"
    ]


def test_every_issuer_is_checked(tmp_path: Path) -> None:
    text = issuer("", "a") + issuer('jwks_url = "ftp://x/"', "b") + issuer('jwks_file = "jwks.json"', "c")
    assert errors(tmp_path, text) == [
        "identity.jwt.a: needs exactly one key source: jwks_file, jwks_url, discovery = true or secret_env",
        "identity.jwt.b.jwks_url: expected an http:// or https:// URL, got 'ftp://x/'",
    ]


# -- API keys ----------------------------------------------------------------------------------

DIGEST_A = hashlib.sha256(b"key-a").hexdigest()
DIGEST_B = hashlib.sha256(b"key-b").hexdigest()


def api_keys(header: str = "x-api-key", keys: str = "") -> str:
    return f"[identity.api_keys]\nheader = {json.dumps(header)}\nkeys = [{keys}]\n"


@pytest.mark.parametrize("header", ["x api key", "x-api-key:", "", "x-clé"])
def test_api_key_header_not_a_header_name(tmp_path: Path, header: str) -> None:
    assert errors(tmp_path, api_keys(header)) == [f"identity.api_keys.header: not a header name: {header!r}"]


@pytest.mark.parametrize(
    "header",
    [
        "Authorization",
        "host",
        "Content-Length",
        "transfer-encoding",
        "connection",
        "proxy-authorization",
        "te",
        "x-request-id",
        "x-forwarded-key",
        "X-Auth-Key",
        "expect",
    ],
)
def test_api_key_header_the_proxy_removes_or_owns(tmp_path: Path, header: str) -> None:
    assert errors(tmp_path, api_keys(header)) == [f"identity.api_keys.header: {header} cannot carry API keys"]


def test_duplicate_api_key_id(tmp_path: Path) -> None:
    keys = f'{{ id = "ci", sha256 = "{DIGEST_A}" }}, {{ id = "ci", sha256 = "{DIGEST_B}" }}'
    assert errors(tmp_path, api_keys(keys=keys)) == ["identity.api_keys.keys: duplicate API key id 'ci'"]


def test_duplicate_api_key_digest_in_any_case(tmp_path: Path) -> None:
    keys = f'{{ id = "a", sha256 = "{DIGEST_A}" }}, {{ id = "b", sha256 = "{DIGEST_A.upper()}" }}'
    assert errors(tmp_path, api_keys(keys=keys)) == [
        "identity.api_keys.keys: API keys 'a' and 'b' are the same key"
    ]


def test_api_key_digest_must_be_hex_sha256_and_is_not_echoed(tmp_path: Path) -> None:
    # An operator who pastes the key itself must not see it printed back (into CI logs, say).
    keys = '{ id = "a", sha256 = "the-key-itself" }'
    assert errors(tmp_path, api_keys(keys=keys)) == [
        "identity.api_keys.keys[0].sha256: Expected `str` matching regex '^[0-9a-fA-F]{64}$'"
    ]


@pytest.mark.parametrize("key_id", ["", " ci", "ci\\nX-Evil: 1", "ci\\u007f"])
def test_api_key_id_must_fit_a_header(tmp_path: Path, key_id: str) -> None:
    keys = f'{{ id = "{key_id}", sha256 = "{DIGEST_A}" }}'
    shown = repr(json.loads(f'"{key_id}"'))
    assert errors(tmp_path, api_keys(keys=keys)) == [
        f"identity.api_keys.keys[0].id: not empty, no control characters, no surrounding spaces: {shown}"
    ]


@pytest.mark.parametrize("role", ["", "a,b", "admin ", "x\\r\\ny"])
def test_api_key_role_must_fit_x_auth_roles(tmp_path: Path, role: str) -> None:
    keys = f'{{ id = "ci", sha256 = "{DIGEST_A}", roles = ["reader", "{role}"] }}'
    shown = repr(json.loads(f'"{role}"'))
    assert errors(tmp_path, api_keys(keys=keys)) == [
        "identity.api_keys.keys[0].roles: a role is not empty and has no comma, control characters or "
        f"surrounding spaces: {shown}"
    ]
