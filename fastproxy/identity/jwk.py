"""JSON Web Keys (RFC 7517/7518/8037): turn a JWK Set document into keys that can verify signatures.

Theory of operation
-------------------
A JWK Set comes from an identity provider we do not control, so parsing it is a filter, never a gate:
:func:`parse_jwks` keeps each entry that is unambiguously a public *signature verification* key of a
kind and size we accept, and skips every other entry with one human-readable line saying why. Only a
document that is not a JSON object with a ``"keys"`` array raises, because then there is nothing to
keep. One bad key must not take the good ones down with it (that would turn a provider's mistake into
an outage), but a skipped key can never verify anything.

Each :class:`VerifyKey` carries the exact set of JWS algorithms it may verify, derived from its type,
curve and size and narrowed to one by the JWK's ``alg`` member. The set is checked when the key is
built, so a key that claims an algorithm its material cannot serve (an HS384 secret of 32 bytes, an
ES512 key on P-256) cannot exist. The verifier then refuses any algorithm not in the set: this is
what stops algorithm confusion (an RSA public key used as an HMAC secret, a PS512 key accepting an
RS256 signature).

Rules that are deliberately strict:

* ``kid`` is an exact lookup key. A ``kid`` that occurs more than once makes every copy unusable,
  whatever else is wrong with them: with two keys behind one name, which one a token meant is a guess.
* Public keys only. An asymmetric entry carrying private members (``d``, ``p``, ``q``, ``dp``, ``dq``,
  ``qi``, ``oth``, or ``k``) is skipped: whoever published it has leaked it.
* Symmetric (``oct``) keys only where the caller says the document is secret (``allow_symmetric``),
  and even then not beside asymmetric keys: a document that mixes both is meant to be published, so
  its secrets are not secret.
* Base64url is strict everywhere (no padding, no ``+``/``/``, no whitespace, unused bits zero); EC
  coordinates must have the curve's full size and lie on the curve; RSA moduli must be 2048 to 8192
  bits, with a public exponent that is odd and at least 3, and without the ROCA fingerprint
  (CVE-2017-15361, keys from a faulty Infineon generator, whose factors can be recovered).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

RSA_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# Minimum HMAC secret length per algorithm: the hash size (RFC 7518 section 3.2).
HMAC_KEY_BYTES: Final[Mapping[str, int]] = MappingProxyType({"HS256": 32, "HS384": 48, "HS512": 64})
HMAC_ALGORITHMS: Final = frozenset(HMAC_KEY_BYTES)
# JWK "crv" -> (curve, coordinate size in bytes, the one JWS algorithm that uses it).
EC_CURVES: Final[Mapping[str, tuple[ec.EllipticCurve, int, str]]] = MappingProxyType(
    {
        "P-256": (ec.SECP256R1(), 32, "ES256"),
        "P-384": (ec.SECP384R1(), 48, "ES384"),
        "P-521": (ec.SECP521R1(), 66, "ES512"),
    }
)
EC_ALGORITHMS: Final = frozenset(alg for _, _, alg in EC_CURVES.values())
SUPPORTED_ALGORITHMS: Final = RSA_ALGORITHMS | EC_ALGORITHMS | HMAC_ALGORITHMS | {"EdDSA"}

MIN_RSA_BITS: Final = 2048
# Above this, one verification costs enough CPU to be a lever for whoever controls the key set.
MAX_RSA_BITS: Final = 8192

_ASYMMETRIC_PRIVATE_MEMBERS: Final = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_B64URL_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64URL_VALUE: Final = {c: i for i, c in enumerate(_B64URL_ALPHABET)}
_B64URL_TO_STD: Final = bytes.maketrans(b"-_", b"+/")
_B64STD_TO_URL: Final = bytes.maketrans(b"+/", b"-_")
# For a final group of 2 or 3 characters, the low bits of the last character that carry no data.
_UNUSED_BITS: Final = {2: 0x0F, 3: 0x03}
_PADDING: Final = {0: b"", 2: b"==", 3: b"="}


def b64url_decode(data: bytes | str) -> bytes:
    """Decode unpadded base64url strictly; ValueError for anything but its one canonical spelling."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    size = len(raw)
    tail = size % 4
    # Deleting every alphabet byte leaves whatever does not belong: '=', '+', '/', whitespace, ...
    if tail == 1 or raw.translate(None, _B64URL_ALPHABET):
        raise ValueError("not canonical unpadded base64url")
    if tail and _B64URL_VALUE[raw[-1]] & _UNUSED_BITS[tail]:
        raise ValueError("not canonical unpadded base64url (unused bits set)")
    return binascii.a2b_base64(raw.translate(_B64URL_TO_STD) + _PADDING[tail], strict_mode=True)


def b64url_encode(data: bytes) -> bytes:
    """Encode as base64url without padding (RFC 7515 section 2)."""
    return binascii.b2a_base64(data, newline=False).translate(_B64STD_TO_URL).rstrip(b"=")


class DuplicateMemberError(ValueError):
    """A JSON object names the same member twice (RFC 7515 section 5.2 and RFC 7517 section 4)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate member {_shown(name)}")
        self.name = name


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise DuplicateMemberError(name)
            seen.add(name)
    return obj


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; an "exp" of Infinity would never expire.
    raise ValueError(f"{name} is not JSON")


def loads_json(data: bytes) -> Any:
    """Parse strict JSON: UTF-8 only, no duplicate member names, no NaN/Infinity.

    Raises :class:`DuplicateMemberError` for a repeated name and ValueError for anything else wrong.
    """
    return _STRICT_JSON.decode(data.decode("utf-8"))


class _Duplicates(dict[str, Any]):
    """An object that named a member twice; parse_jwks skips such entries instead of failing."""

    __slots__ = ("duplicate",)
    duplicate: str


def _mark_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    try:
        return _unique_members(pairs)
    except DuplicateMemberError as exc:
        obj = _Duplicates(pairs)
        obj.duplicate = exc.name
        return obj


# Built once: json.loads with keyword arguments builds a new decoder on every call.
_STRICT_JSON: Final = json.JSONDecoder(object_pairs_hook=_unique_members, parse_constant=_reject_constant)
_MARKING_JSON: Final = json.JSONDecoder(object_pairs_hook=_mark_duplicates, parse_constant=_reject_constant)


# ROCA (CVE-2017-15361): moduli from the faulty generator are, modulo each of these primes, in the
# subgroup generated by 65537. A sound modulus passes all 38 tests with probability about 2**-28 (the
# product of subgroup size / (prime - 1)): a false alarm is a one in 200 million event per key.
_ROCA_PRIMES: Final = (
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71,
    73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
)  # fmt: skip


def _subgroup_mask(prime: int) -> int:
    mask, element = 0, 1
    while not mask >> element & 1:
        mask |= 1 << element
        element = element * 65537 % prime
    return mask


_ROCA_MASKS: Final = tuple((prime, _subgroup_mask(prime)) for prime in _ROCA_PRIMES)


def has_roca_fingerprint(modulus: int) -> bool:
    """Whether an RSA modulus was made by the generator broken in CVE-2017-15361."""
    return all(mask >> (modulus % prime) & 1 for prime, mask in _ROCA_MASKS)


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """One key that may verify signatures made with exactly the algorithms in ``algorithms``.

    ``key`` is a ``cryptography`` public key, or the secret bytes of an HMAC (``kty == "oct"``) key;
    it is left out of the repr so that a secret never reaches a log line. The constructor refuses an
    algorithm that the key's type, curve or size cannot serve.
    """

    kid: str | None
    kty: str
    key: PublicKey | bytes = field(repr=False)
    algorithms: frozenset[str]

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ValueError("a key must be able to verify at least one algorithm")
        key = self.key
        if isinstance(key, bytes):
            fits = self.kty == "oct" and all(
                alg in HMAC_KEY_BYTES and len(key) >= HMAC_KEY_BYTES[alg] for alg in self.algorithms
            )
        elif isinstance(key, rsa.RSAPublicKey):
            fits = self.kty == "RSA" and self.algorithms <= RSA_ALGORITHMS
        elif isinstance(key, ec.EllipticCurvePublicKey):
            curve = next((c for c in EC_CURVES.values() if c[0].name == key.curve.name), None)
            fits = self.kty == "EC" and curve is not None and self.algorithms == {curve[2]}
        elif isinstance(key, ed25519.Ed25519PublicKey):
            fits = self.kty == "OKP" and self.algorithms == {"EdDSA"}
        else:
            fits = False
        if not fits:
            raise ValueError(f"{self.kty} key cannot verify {', '.join(sorted(self.algorithms))}")


class KeySet:
    """The usable keys of one JWK Set.

    :meth:`find` uses a token's ``kid`` only as an exact lookup, never as a hint or a fallback. A
    token without ``kid`` gets a key only when exactly one key of the set (named or not) can verify
    its algorithm: with two candidates, trying each would let a token pick among keys, and the usual
    source of kid-less tokens is an issuer with a single key anyway.
    """

    __slots__ = ("_sole", "keys", "keys_by_kid", "unnamed")

    keys: tuple[VerifyKey, ...]
    keys_by_kid: Mapping[str, VerifyKey]
    unnamed: tuple[VerifyKey, ...]

    def __init__(self, keys: Iterable[VerifyKey] = ()) -> None:
        self.keys = tuple(keys)
        by_kid: dict[str, VerifyKey] = {}
        for key in self.keys:
            if key.kid is not None:
                if key.kid in by_kid:
                    raise ValueError(f"kid {_shown(key.kid)} occurs twice")
                by_kid[key.kid] = key
        self.keys_by_kid = MappingProxyType(by_kid)
        self.unnamed = tuple(key for key in self.keys if key.kid is None)
        candidates: dict[str, list[VerifyKey]] = {}
        for key in self.keys:
            for alg in key.algorithms:
                candidates.setdefault(alg, []).append(key)
        self._sole = {alg: found[0] for alg, found in candidates.items() if len(found) == 1}

    def find(self, kid: str | None, alg: str) -> VerifyKey | None:
        """The key for a token's ``kid`` and ``alg``, or None (see the class docstring)."""
        if kid is None:
            return self._sole.get(alg)
        key = self.keys_by_kid.get(kid)
        return key if key is not None and alg in key.algorithms else None

    def for_alg(self, alg: str) -> tuple[VerifyKey, ...]:
        """Every key that can verify ``alg``."""
        return tuple(key for key in self.keys if alg in key.algorithms)

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"KeySet({list(self.keys)!r})"


def hmac_key(secret: bytes, kid: str | None = None, alg: str | None = None) -> VerifyKey:
    """An HMAC key for an HS* issuer configured with a secret.

    Without ``alg`` the key verifies every HS* algorithm its length allows; ValueError when the
    secret is shorter than 32 bytes (or than ``alg``'s hash).
    """
    return VerifyKey(kid, "oct", bytes(secret), _hmac_algorithms(len(secret), alg))


def _hmac_algorithms(size: int, alg: str | None) -> frozenset[str]:
    if alg is not None:
        if alg not in HMAC_KEY_BYTES:
            raise ValueError(f"alg {_shown(alg)} does not fit an oct key")
        needed = HMAC_KEY_BYTES[alg]
        if size < needed:
            raise ValueError(f"HMAC key of {size} bytes is too short for {alg} (minimum {needed})")
        return frozenset({alg})
    if size < HMAC_KEY_BYTES["HS256"]:
        raise ValueError(f"HMAC key of {size} bytes (minimum 32)")
    return frozenset(alg for alg, needed in HMAC_KEY_BYTES.items() if size >= needed)


def key_from_jwk(obj: Mapping[str, Any], *, allow_symmetric: bool = False) -> VerifyKey:
    """Build the verification key one JWK describes; ValueError naming the first problem found."""
    kid = obj.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    kty = obj.get("kty")
    if not isinstance(kty, str):
        raise ValueError("no kty")
    use = obj.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"use {_shown(use)} (only 'sig' keys verify signatures)")
    ops = obj.get("key_ops")
    if ops is not None and not (isinstance(ops, list) and "verify" in ops):
        raise ValueError(f"key_ops {_shown(ops)} does not include 'verify'")
    alg = obj.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise ValueError("alg is not a string")
    if kty == "oct":
        if not allow_symmetric:
            raise ValueError("symmetric (oct) key where only public keys are accepted")
        secret = _member(obj, "k")
        return VerifyKey(kid, kty, secret, _hmac_algorithms(len(secret), alg))
    private = [name for name in _ASYMMETRIC_PRIVATE_MEMBERS if name in obj]
    if private:
        raise ValueError(f"holds private key material ({', '.join(private)})")
    key: PublicKey
    if kty == "RSA":
        key, algorithms = _rsa_key(obj), RSA_ALGORITHMS
    elif kty == "EC":
        key, algorithms = _ec_key(obj)
    elif kty == "OKP":
        key, algorithms = _okp_key(obj), frozenset({"EdDSA"})
    else:
        raise ValueError(f"unknown kty {_shown(kty)}")
    if alg is not None:
        if alg not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"alg {_shown(alg)} is not a supported JWS algorithm")
        if alg not in algorithms:
            crv = f"{obj['crv']} " if "crv" in obj else ""
            raise ValueError(f"alg {alg} does not fit this {crv}{kty} key")
        algorithms = frozenset({alg})
    return VerifyKey(kid, kty, key, algorithms)


def _rsa_key(obj: Mapping[str, Any]) -> rsa.RSAPublicKey:
    n = int.from_bytes(_member(obj, "n"), "big")
    e = int.from_bytes(_member(obj, "e"), "big")
    bits = n.bit_length()
    if bits < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {bits} bits (minimum {MIN_RSA_BITS})")
    if bits > MAX_RSA_BITS:
        raise ValueError(f"RSA key of {bits} bits (maximum {MAX_RSA_BITS})")
    if e < 3 or not e & 1 or e >= n:
        raise ValueError(f"RSA public exponent {e if e < 1 << 64 else '(huge)'} is not odd, >= 3 and < n")
    if has_roca_fingerprint(n):
        raise ValueError("RSA modulus has the ROCA fingerprint (CVE-2017-15361)")
    return rsa.RSAPublicNumbers(e, n).public_key()


def _ec_key(obj: Mapping[str, Any]) -> tuple[ec.EllipticCurvePublicKey, frozenset[str]]:
    crv = obj.get("crv")
    if not isinstance(crv, str) or crv not in EC_CURVES:
        raise ValueError(f"unknown EC crv {_shown(crv)}")
    curve, size, alg = EC_CURVES[crv]
    x, y = _member(obj, "x"), _member(obj, "y")
    if len(x) != size or len(y) != size:
        raise ValueError(f"{crv} coordinates must be {size} bytes each (got {len(x)} and {len(y)})")
    point = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve)
    try:
        return point.public_key(), frozenset({alg})
    except ValueError:
        raise ValueError(f"EC point is not on curve {crv}") from None


def _okp_key(obj: Mapping[str, Any]) -> ed25519.Ed25519PublicKey:
    crv = obj.get("crv")
    if crv != "Ed25519":
        raise ValueError(f"unknown OKP crv {_shown(crv)} (only Ed25519 signs)")
    x = _member(obj, "x")
    if len(x) != 32:
        raise ValueError(f"Ed25519 public key of {len(x)} bytes (must be 32)")
    return ed25519.Ed25519PublicKey.from_public_bytes(x)


def _member(obj: Mapping[str, Any], name: str) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ValueError(f"member {name!r} missing or not a string")
    try:
        return b64url_decode(value)
    except ValueError:
        raise ValueError(f"member {name!r} is not canonical unpadded base64url") from None


def _shown(value: object) -> str:
    """A value from the document as it may appear in a message: quoted, and never very long."""
    text = repr(value)
    return text if len(text) <= 66 else text[:60] + "...'"


def parse_jwks(data: bytes, *, allow_symmetric: bool = False) -> tuple[KeySet, list[str]]:
    """Parse a JWK Set document into its usable keys and one line per entry skipped.

    ``allow_symmetric`` admits ``oct`` keys; leave it False for any document fetched from a
    provider (a published secret is no secret). ValueError only when the document is not a JSON
    object with a ``"keys"`` array.
    """
    try:
        document = _MARKING_JSON.decode(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError; deep nesting
        raise ValueError(f"JWK Set is not JSON: {exc}") from None
    if not isinstance(document, dict) or (isinstance(document, _Duplicates) and document.duplicate == "keys"):
        raise ValueError("JWK Set is not a JSON object with one 'keys' member")
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWK Set has no 'keys' array")

    kid_counts: dict[str, int] = {}
    mixed = False
    for entry in entries:
        if isinstance(entry, dict):
            kid = entry.get("kid")
            if isinstance(kid, str):
                kid_counts[kid] = kid_counts.get(kid, 0) + 1
            mixed = mixed or entry.get("kty") != "oct"

    keys: list[VerifyKey] = []
    skipped: list[str] = []
    for index, entry in enumerate(entries):
        kid = entry.get("kid") if isinstance(entry, dict) else None
        name = f"kid {_shown(kid)}" if isinstance(kid, str) else f"key #{index}"
        if not isinstance(entry, dict):
            skipped.append(f"{name}: not a JSON object")
        elif isinstance(entry, _Duplicates):
            skipped.append(f"{name}: duplicate member {_shown(entry.duplicate)}")
        elif isinstance(kid, str) and kid_counts[kid] > 1:
            skipped.append(f"{name}: kid occurs {kid_counts[kid]} times in the set (every copy skipped)")
        elif allow_symmetric and mixed and entry.get("kty") == "oct":
            skipped.append(f"{name}: symmetric (oct) key in a set that also holds asymmetric keys")
        else:
            try:
                keys.append(key_from_jwk(entry, allow_symmetric=allow_symmetric))
            except ValueError as exc:
                skipped.append(f"{name}: {exc}")
    return KeySet(keys), skipped
