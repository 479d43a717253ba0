"""Minting signed JWTs and publishing the matching JWK Set, for ``fastproxy token``, the demo and tests.

The proxy itself only verifies; this is the other half, kept small and strict so that what it makes
is exactly what :mod:`fastproxy.identity.jws` accepts (compact JWS, one of our algorithms, ``exp``
always set, keys of at least 2048 bits).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any, TypeAlias

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fastproxy.identity.jwk import EC_CURVES, MIN_RSA_BITS, RSA_ALGORITHMS, b64url_encode

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
# cryptography's curve name -> (JWK crv, coordinate bytes, JWS alg)
_CURVES = {curve.name: (crv, size, alg) for crv, (curve, size, alg) in EC_CURVES.items()}


def load_private_key(private_key_pem: bytes) -> PrivateKey:
    """Load an unencrypted PEM private key of a kind we can sign with; ValueError otherwise."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (TypeError, ValueError) as exc:  # TypeError: the PEM is encrypted
        raise ValueError(f"cannot load the private key: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits (minimum {MIN_RSA_BITS})")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _CURVES:
            raise ValueError(f"EC curve {key.curve.name} (use P-256, P-384 or P-521)")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ValueError(f"cannot sign JWTs with a {type(key).__name__}")


def _algorithm(key: PrivateKey, alg: str | None) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        fits, default = RSA_ALGORITHMS, "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        default = _CURVES[key.curve.name][2]
        fits = frozenset({default})
    else:
        fits, default = frozenset({"EdDSA"}), "EdDSA"
    if alg is None:
        return default
    if alg not in fits:
        raise ValueError(f"alg {alg!r} does not fit this key (use one of {', '.join(sorted(fits))})")
    return alg


def _sign(key: PrivateKey, alg: str, message: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        digest = _HASHES[alg[2:]]()
        if alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            return key.sign(message, pss, digest)
        return key.sign(message, padding.PKCS1v15(), digest)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = _CURVES[key.curve.name][1]
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(_HASHES[alg[2:]]())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(message)


def mint(
    private_key_pem: bytes,
    *,
    sub: str,
    roles: Sequence[str] = (),
    scope: str | Sequence[str] | None = None,
    ttl: float = 3600,
    aud: str | Sequence[str] | None = None,
    iss: str | None = None,
    now: float,
    kid: str | None = None,
    alg: str | None = None,
) -> bytes:
    """Sign a compact JWT.

    Claims: ``iss`` and ``aud`` when given, ``sub``, ``roles`` (a list), ``scope`` (one
    space-separated string) when given, ``iat`` = ``now``, ``exp`` = ``now + ttl`` (both whole
    seconds) and a random ``jti``. ``alg`` defaults to RS256 for RSA keys, ES256/384/512 by curve
    and EdDSA for Ed25519; the header carries ``kid`` when given.
    """
    if not sub:
        raise ValueError("sub must not be empty")
    if not ttl > 0:
        raise ValueError("ttl must be positive")
    key = load_private_key(private_key_pem)
    alg = _algorithm(key, alg)
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    claims: dict[str, Any] = {}
    if iss is not None:
        claims["iss"] = iss
    claims["sub"] = sub
    if aud is not None:
        claims["aud"] = aud if isinstance(aud, str) else list(aud)
    claims["roles"] = list(roles)
    if scope is not None:
        claims["scope"] = scope if isinstance(scope, str) else " ".join(scope)
    claims["iat"] = int(now)
    claims["exp"] = int(now + ttl)
    claims["jti"] = secrets.token_urlsafe(12)
    signing_input = b64url_encode(orjson.dumps(header)) + b"." + b64url_encode(orjson.dumps(claims))
    return signing_input + b"." + b64url_encode(_sign(key, alg, signing_input))


def _unsigned(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def public_jwk(private_key_pem: bytes, kid: str, alg: str | None = None) -> dict[str, Any]:
    """The public half of a PEM private key as one JWK (``use`` "sig", ``alg`` as :func:`mint` uses)."""
    key = load_private_key(private_key_pem)
    jwk: dict[str, Any] = {"kid": kid, "use": "sig", "alg": _algorithm(key, alg)}
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        jwk |= {"kty": "RSA", "n": _unsigned(numbers.n), "e": _unsigned(numbers.e)}
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        crv, size, _ = _CURVES[key.curve.name]
        point = key.public_key().public_numbers()
        jwk |= {
            "kty": "EC",
            "crv": crv,
            "x": point.x.to_bytes(size, "big"),
            "y": point.y.to_bytes(size, "big"),
        }
    else:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk |= {"kty": "OKP", "crv": "Ed25519", "x": raw}
    return {name: b64url_encode(v).decode() if isinstance(v, bytes) else v for name, v in jwk.items()}


def public_jwks(private_key_pem: bytes, kid: str, alg: str | None = None) -> dict[str, Any]:
    """The JWK Set holding the public half of a PEM private key (see :func:`public_jwk`)."""
    return {"keys": [public_jwk(private_key_pem, kid, alg)]}
