"""mint() and public_jwks(): what they make is exactly what the verifier accepts."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x25519

from fastproxy.identity.jwk import parse_jwks
from fastproxy.identity.jws import Verifier, split_token
from fastproxy.identity.mint import mint, public_jwks

NOW = 1_800_000_000.0

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
    | x25519.X25519PrivateKey
)


def pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.NoEncryption() if password is None else serialization.BestAvailableEncryption(password)
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@cache
def key_pem(kind: str) -> bytes:
    key: PrivateKey
    if kind == "RSA":
        key = rsa.generate_private_key(65537, 2048)
    elif kind == "Ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = ec.generate_private_key(
            {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[kind]
        )
    return pem(key)


KINDS = [("RSA", "RS256"), ("P-256", "ES256"), ("P-384", "ES384"), ("P-521", "ES512"), ("Ed25519", "EdDSA")]


def claims_of(data: bytes) -> dict[str, Any]:
    return split_token(data).payload


@pytest.mark.parametrize(("kind", "alg"), KINDS)
def test_minted_token_verifies_with_the_published_jwks(kind: str, alg: str) -> None:
    private = key_pem(kind)
    document = public_jwks(private, "kid-1")
    keys, skipped = parse_jwks(json.dumps(document).encode())
    assert skipped == []
    assert keys.keys_by_kid["kid-1"].algorithms == {alg}
    data = mint(
        private,
        sub="alice",
        roles=["reader"],
        scope="a b",
        ttl=300,
        aud="api",
        iss="https://idp/",
        now=NOW,
        kid="kid-1",
    )
    parsed = split_token(data)
    assert parsed.header == {"alg": alg, "typ": "JWT", "kid": "kid-1"}
    verifier = Verifier(issuer="https://idp/", audience=["api"], algorithms=[alg])
    claims = verifier.verify(data, keys, NOW + 1)
    assert (claims.subject, claims.roles, claims.scopes, claims.expires_at) == (
        "alice",
        ("reader",),
        {"a", "b"},
        NOW + 300,
    )


@pytest.mark.parametrize(("kind", "alg"), KINDS)
def test_public_jwks_holds_only_the_public_half(kind: str, alg: str) -> None:
    (jwk,) = public_jwks(key_pem(kind), "k")["keys"]
    assert jwk["kid"] == "k" and jwk["use"] == "sig" and jwk["alg"] == alg
    assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(jwk)
    assert jwk["kty"] == {"RSA": "RSA", "Ed25519": "OKP"}.get(kind, "EC")


def test_claims() -> None:
    data = mint(
        key_pem("P-256"), sub="s", roles=["a", "b"], scope="x y", ttl=60.9, aud="api", iss="i", now=NOW + 0.7
    )
    claims = claims_of(data)
    assert {k: v for k, v in claims.items() if k != "jti"} == {
        "iss": "i",
        "sub": "s",
        "aud": "api",
        "roles": ["a", "b"],
        "scope": "x y",
        "iat": int(NOW),
        "exp": int(NOW + 61.6),
    }
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert "kid" not in split_token(data).header


def test_optional_claims_are_left_out() -> None:
    claims = claims_of(
        mint(key_pem("P-256"), sub="s", roles=(), scope=None, ttl=60, aud=None, iss=None, now=NOW)
    )
    assert set(claims) == {"sub", "roles", "iat", "exp", "jti"}
    assert claims["roles"] == []


def test_aud_list_and_scope_list() -> None:
    claims = claims_of(
        mint(key_pem("P-256"), sub="s", roles=[], scope=["x", "y"], ttl=60, aud=["a", "b"], iss="i", now=NOW)
    )
    assert claims["aud"] == ["a", "b"] and claims["scope"] == "x y"


def test_each_token_gets_its_own_jti() -> None:
    first, second = (
        claims_of(
            mint(key_pem("Ed25519"), sub="s", roles=[], scope=None, ttl=60, aud=None, iss=None, now=NOW)
        )
        for _ in range(2)
    )
    assert first["jti"] != second["jti"]


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_rsa_algorithms(alg: str) -> None:
    private = key_pem("RSA")
    keys, _ = parse_jwks(json.dumps(public_jwks(private, "r", alg=alg)).encode())
    data = mint(private, sub="s", roles=[], scope=None, ttl=60, aud=None, iss="i", now=NOW, kid="r", alg=alg)
    assert split_token(data).alg == alg
    Verifier(issuer="i", audience=[], algorithms=[alg]).verify(data, keys, NOW)


def test_ecdsa_signature_is_raw_r_and_s() -> None:
    for kind, size in (("P-256", 32), ("P-384", 48), ("P-521", 66)):
        data = mint(key_pem(kind), sub="s", roles=[], scope=None, ttl=60, aud=None, iss=None, now=NOW)
        assert len(split_token(data).signature) == 2 * size


@pytest.mark.parametrize(
    ("kind", "alg"),
    [("RSA", "ES256"), ("RSA", "HS256"), ("P-256", "ES384"), ("Ed25519", "ES256"), ("P-256", "none")],
)
def test_alg_that_does_not_fit_the_key(kind: str, alg: str) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        mint(key_pem(kind), sub="s", roles=[], scope=None, ttl=60, aud=None, iss=None, now=NOW, alg=alg)


@pytest.mark.parametrize(("sub", "ttl"), [("", 60), ("s", 0), ("s", -5)])
def test_bad_sub_or_ttl(sub: str, ttl: float) -> None:
    with pytest.raises(ValueError):
        mint(key_pem("P-256"), sub=sub, roles=[], scope=None, ttl=ttl, aud=None, iss=None, now=NOW)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: pem(rsa.generate_private_key(65537, 1024)), "RSA key of 1024 bits"),
        (lambda: pem(ec.generate_private_key(ec.SECP256K1())), "EC curve secp256k1"),
        (lambda: pem(ed448.Ed448PrivateKey.generate()), "cannot sign JWTs"),
        (lambda: pem(x25519.X25519PrivateKey.generate()), "cannot sign JWTs"),
        (lambda: pem(ec.generate_private_key(ec.SECP256R1()), b"password"), "cannot load"),
        (lambda: b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", "cannot load"),
        (lambda: b"", "cannot load"),
    ],
)
def test_keys_we_cannot_sign_with(make: Any, message: str) -> None:
    private = make()
    with pytest.raises(ValueError, match=message):
        mint(private, sub="s", roles=[], scope=None, ttl=60, aud=None, iss=None, now=NOW)
    with pytest.raises(ValueError, match=message):
        public_jwks(private, "k")
