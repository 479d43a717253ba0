"""Compact JWS verification (RFC 7515/7518) and JWT claim checks (RFC 7519), without I/O or clocks.

Theory of operation
-------------------
:meth:`Verifier.verify` runs four steps, cheapest and least trusting first, and stops at the first
failure with a :class:`TokenError` whose ``reason`` goes to the audit record as
``invalid_token:<reason>``:

1. :func:`split_token` -- structure only, no cryptography: the size cap (8 KiB, checked before any
   decoding), three segments of canonical unpadded base64url, header and payload that are JSON
   objects with unique member names, a string ``alg`` that is not ``none`` in any spelling, and no
   header we would have to act on: ``crit`` and ``b64`` change how the token must be processed and we
   implement neither, and ``jwk``/``jku``/``x5u``/``x5c`` would have the token name its own key. They
   are refused, never trusted or fetched.
2. :func:`verify_jws` -- ``alg`` must be in the issuer's configured list; the key comes from the
   issuer's key set by exact ``kid`` (``unknown_kid`` lets the caller refetch the set once); the key
   must be allowed to verify that ``alg`` (see :mod:`fastproxy.identity.jwk`), which is what defeats
   algorithm confusion; then the signature, through :func:`verify_raw`.
3. :func:`check_claims` -- only now is the payload believed: ``exp`` (required), ``nbf``, ``iat``
   against ``now`` with leeway, ``iss`` exactly, ``aud`` by exact string match.
4. :class:`Claims` -- subject, roles and scopes picked out of the payload.

Messages never contain the token or any part of it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fastproxy.identity.jwk import (
    EC_CURVES,
    SUPPORTED_ALGORITHMS,
    DuplicateMemberError,
    KeySet,
    VerifyKey,
    b64url_decode,
    loads_json,
)

MAX_TOKEN_BYTES: Final = 8192

REASONS: Final = frozenset(
    {
        "too_large",  # over MAX_TOKEN_BYTES; refused before decoding
        "malformed",  # not three segments of canonical base64url, not JSON, alg or kid not strings
        "duplicate_member",  # header or payload names a member twice
        "not_object",  # header or payload is JSON but not an object
        "alg_none",  # alg is "none" in any spelling
        "crit",  # a crit header: extensions we would have to understand
        "b64",  # the unencoded-payload option (RFC 7797)
        "embedded_key",  # jwk, jku, x5u or x5c: the token naming its own key
        "alg_not_allowed",  # alg not among the issuer's algorithms
        "unknown_kid",  # no key with that kid (or no single key for a kid-less token); refetch
        "ambiguous_key",  # no kid, and several keys could verify alg
        "key_alg_mismatch",  # the key found may not verify this alg (algorithm confusion)
        "bad_signature",
        "missing_exp",
        "malformed_claim",  # exp/nbf/iat not a finite number, iss/aud/roles/scope of the wrong type
        "expired",
        "not_yet_valid",  # nbf in the future
        "issued_in_future",  # iat in the future
        "bad_issuer",
        "bad_audience",
        "bad_subject",  # sub missing, not a string, or empty
    }
)

_EMBEDDED_KEY_HEADERS: Final = ("jwk", "jku", "x5u", "x5c")
_HASHES: Final[Mapping[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_HMAC_DIGESTS: Final = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_PKCS1: Final = padding.PKCS1v15()
_RSA_HASH: Final = {alg: _HASHES[alg[2:]]() for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")}
# RFC 7518 section 3.5: MGF1 with the signature's hash, salt exactly as long as the hash output.
_PSS: Final = {
    alg: padding.PSS(mgf=padding.MGF1(_RSA_HASH[alg]), salt_length=_RSA_HASH[alg].digest_size)
    for alg in ("PS256", "PS384", "PS512")
}
_ECDSA: Final = {alg: (ec.ECDSA(_HASHES[alg[2:]]()), size) for _, size, alg in EC_CURVES.values()}


class TokenError(Exception):
    """A token was refused; ``reason`` is one of :data:`REASONS`. The message never holds the token."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedJws:
    """A compact JWS that passed the structural checks; ``payload`` is the decoded payload bytes."""

    header: dict[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes
    alg: str
    kid: str | None


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A JWT that passed the structural checks: a :class:`ParsedJws` whose payload is a JSON object."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes
    alg: str
    kid: str | None


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says about its bearer."""

    subject: str
    roles: tuple[str, ...]
    scopes: frozenset[str]
    expires_at: float


def _decode(segment: bytes, part: str) -> bytes:
    try:
        return b64url_decode(segment)
    except ValueError:
        raise TokenError("malformed", f"{part} is not canonical unpadded base64url") from None


def _json_object(data: bytes, part: str) -> dict[str, Any]:
    try:
        value = loads_json(data)
    except DuplicateMemberError as exc:
        raise TokenError("duplicate_member", f"{part}: {exc}") from None
    except (ValueError, RecursionError):
        raise TokenError("malformed", f"{part} is not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise TokenError("not_object", f"{part} is not a JSON object")
    return value


def split_jws(token: bytes) -> ParsedJws:
    """Check a compact JWS's structure and header; no cryptography. The payload may be any bytes."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("too_large", f"{len(token)} bytes (maximum {MAX_TOKEN_BYTES})")
    first = token.find(b".")
    last = token.rfind(b".")
    if first == last or token.find(b".", first + 1) != last:
        raise TokenError("malformed", "not three dot-separated segments")
    header = _json_object(_decode(token[:first], "header"), "header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenError("malformed", "alg missing or not a string")
    if alg.lower() == "none":
        raise TokenError("alg_none", "unsecured token")
    if "crit" in header:
        raise TokenError("crit", "crit header")
    if "b64" in header:
        raise TokenError("b64", "b64 header")
    for name in _EMBEDDED_KEY_HEADERS:
        if name in header:
            raise TokenError("embedded_key", f"{name} header")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenError("malformed", "kid is not a string")
    return ParsedJws(
        header,
        _decode(token[first + 1 : last], "payload"),
        token[:last],
        _decode(token[last + 1 :], "signature"),
        alg,
        kid,
    )


def split_token(token: bytes) -> ParsedToken:
    """:func:`split_jws`, and the payload must be a JSON object with unique member names."""
    jws = split_jws(token)
    payload = _json_object(jws.payload, "payload")
    return ParsedToken(jws.header, payload, jws.signing_input, jws.signature, jws.alg, jws.kid)


def verify_raw(alg: str, key: VerifyKey, message: bytes, signature: bytes) -> None:
    """Verify one JWS signature value; TokenError ``key_alg_mismatch`` or ``bad_signature``.

    This is the one place a signature is checked, both for tokens and for the Wycheproof vectors.
    """
    if alg not in key.algorithms:
        raise TokenError("key_alg_mismatch", f"{key.kty} key may not verify {alg}")
    material = key.key
    # VerifyKey guarantees the material fits its algorithms; the isinstance checks restate it so
    # that no key can ever reach the wrong primitive.
    try:
        if alg in _HMAC_DIGESTS:
            if not isinstance(material, bytes):
                raise TokenError("key_alg_mismatch", f"{key.kty} key used for {alg}")
            expected = hmac.new(material, message, _HMAC_DIGESTS[alg]).digest()
            if not hmac.compare_digest(expected, signature):
                raise InvalidSignature
        elif alg in _RSA_HASH:
            if not isinstance(material, rsa.RSAPublicKey):
                raise TokenError("key_alg_mismatch", f"{key.kty} key used for {alg}")
            if len(signature) != (material.key_size + 7) // 8:
                raise InvalidSignature
            material.verify(signature, message, _PSS.get(alg, _PKCS1), _RSA_HASH[alg])
        elif alg in _ECDSA:
            if not isinstance(material, ec.EllipticCurvePublicKey):
                raise TokenError("key_alg_mismatch", f"{key.kty} key used for {alg}")
            scheme, size = _ECDSA[alg]
            # JWS carries r || s, each exactly the curve's size (RFC 7518 section 3.4); no DER.
            if len(signature) != 2 * size:
                raise InvalidSignature
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            material.verify(encode_dss_signature(r, s), message, scheme)
        elif alg == "EdDSA":
            if not isinstance(material, ed25519.Ed25519PublicKey):
                raise TokenError("key_alg_mismatch", f"{key.kty} key used for {alg}")
            material.verify(signature, message)
        else:
            raise TokenError("alg_not_allowed", "unsupported alg")
    except InvalidSignature:
        raise TokenError("bad_signature", f"{alg} signature does not verify") from None


def verify_signature(parsed: ParsedJws | ParsedToken, key: VerifyKey) -> None:
    """Verify a parsed token's signature with ``key``; TokenError on failure."""
    verify_raw(parsed.alg, key, parsed.signing_input, parsed.signature)


def verify_jws(parsed: ParsedJws | ParsedToken, keys: KeySet, algorithms: Collection[str]) -> VerifyKey:
    """Check ``alg`` against ``algorithms``, find the key in ``keys`` and verify; return the key."""
    alg, kid = parsed.alg, parsed.kid
    if alg not in algorithms:
        raise TokenError("alg_not_allowed", "alg not configured for this issuer")
    key = keys.find(kid, alg)
    if key is None:
        if kid is None:
            if len(keys.for_alg(alg)) > 1:
                raise TokenError("ambiguous_key", "no kid and several keys fit alg")
            raise TokenError("unknown_kid", "no kid and no key fits alg")
        if kid in keys.keys_by_kid:
            raise TokenError("key_alg_mismatch", "the key with this kid may not verify alg")
        raise TokenError("unknown_kid", "no key with this kid")
    verify_signature(parsed, key)
    return key


def _number(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    # bool is an int subclass, and 1e999 parses as infinity: neither is a NumericDate.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError("malformed_claim", f"{name} is not a finite number")
    return value


def check_claims(
    payload: Mapping[str, Any], now: float, *, issuer: str, audience: Sequence[str], leeway: float
) -> None:
    """Check exp, nbf, iat, iss and aud of a verified payload at time ``now`` (seconds since 1970).

    ``exp`` is required and the token is valid while ``now < exp + leeway``; ``nbf`` and ``iat``
    (if present) may lie at most ``leeway`` seconds ahead of ``now``. ``iss`` must equal ``issuer``
    exactly. When ``audience`` is non-empty, ``aud`` (a string or a list of strings) must contain one
    of its values; when it is empty, ``aud`` is not looked at.
    """
    exp = _number(payload, "exp")
    if exp is None:
        raise TokenError("missing_exp", "no exp claim")
    if not now < exp + leeway:
        raise TokenError("expired", "exp has passed")
    nbf = _number(payload, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenError("not_yet_valid", "nbf is in the future")
    iat = _number(payload, "iat")
    if iat is not None and iat > now + leeway:
        raise TokenError("issued_in_future", "iat is in the future")
    iss = payload.get("iss")
    if not isinstance(iss, str) or iss != issuer:
        raise TokenError("bad_issuer", "iss missing or not the configured issuer")
    if audience:
        aud = payload.get("aud")
        if isinstance(aud, str):
            ok = aud in audience
        elif isinstance(aud, list) and all(isinstance(item, str) for item in aud):
            ok = any(item in audience for item in aud)
        elif aud is None:
            ok = False
        else:
            raise TokenError("malformed_claim", "aud is not a string or a list of strings")
        if not ok:
            raise TokenError("bad_audience", "aud does not name this audience")


def _claim_path(path: str) -> tuple[str, tuple[str, ...]]:
    return path, tuple(path.split("."))


def _lookup(payload: Mapping[str, Any], path: tuple[str, tuple[str, ...]]) -> Any:
    # A claim whose own name holds dots ("https://example.com/roles", common with namespaced
    # claims) wins over the nested reading of the same path.
    whole, parts = path
    if whole in payload:
        return payload[whole]
    value: Any = payload
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _words(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise TokenError("malformed_claim", f"{name} is not a list of strings or a space-separated string")


class Verifier:
    """Verifies the tokens of one issuer, as configured: issuer, audience, algorithms, leeway, claims.

    ``roles_claim`` and ``scope_claim`` are dotted paths into the payload ("realm_access.roles"); the
    value found may be a list of strings or one space-separated string, and a missing one is empty.
    """

    __slots__ = ("algorithms", "audience", "issuer", "leeway", "roles_claim", "scope_claim")

    def __init__(
        self,
        *,
        issuer: str,
        audience: Sequence[str],
        algorithms: Sequence[str],
        leeway: float = 0.0,
        roles_claim: str = "roles",
        scope_claim: str = "scope",
    ) -> None:
        if not algorithms:
            raise ValueError("no algorithms")
        for alg in algorithms:
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"unsupported algorithm {alg!r}")
        if not (math.isfinite(leeway) and leeway >= 0):
            raise ValueError("leeway must be a finite number >= 0")
        for path in (roles_claim, scope_claim):
            if not path or "" in path.split("."):
                raise ValueError(f"bad claim path {path!r}")
        self.issuer = issuer
        self.audience = tuple(audience)
        self.algorithms = frozenset(algorithms)
        self.leeway = float(leeway)
        self.roles_claim = _claim_path(roles_claim)
        self.scope_claim = _claim_path(scope_claim)

    def verify(self, token: bytes, keys: KeySet, now: float) -> Claims:
        """Verify ``token`` with ``keys`` at time ``now``; TokenError with the reason on failure."""
        parsed = split_token(token)
        verify_jws(parsed, keys, self.algorithms)
        payload = parsed.payload
        check_claims(payload, now, issuer=self.issuer, audience=self.audience, leeway=self.leeway)
        subject = payload.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenError("bad_subject", "sub missing, empty or not a string")
        exp = payload["exp"]  # check_claims made sure it is a finite number
        return Claims(
            subject,
            _words(_lookup(payload, self.roles_claim), "roles claim"),
            frozenset(_words(_lookup(payload, self.scope_claim), "scope claim")),
            float(exp),
        )
