"""JWK parsing: which keys a JWK Set yields, which entries it skips and why, and KeySet lookup."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from fastproxy.identity.jwk import (
    RSA_ALGORITHMS,
    DuplicateMemberError,
    KeySet,
    VerifyKey,
    b64url_decode,
    b64url_encode,
    has_roca_fingerprint,
    hmac_key,
    key_from_jwk,
    loads_json,
    parse_jwks,
)


def b64(data: bytes) -> str:
    return b64url_encode(data).decode()


def uint(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@cache
def rsa_public(bits: int = 2048) -> rsa.RSAPublicKey:
    return rsa.generate_private_key(65537, bits).public_key()


def rsa_jwk(kid: str | None = "r1", bits: int = 2048, **extra: Any) -> dict[str, Any]:
    numbers = rsa_public(bits).public_numbers()
    jwk: dict[str, Any] = {"kty": "RSA", "n": uint(numbers.n), "e": uint(numbers.e)}
    if kid is not None:
        jwk["kid"] = kid
    return jwk | extra


@cache
def ec_public(crv: str) -> ec.EllipticCurvePublicKey:
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[crv]
    return ec.generate_private_key(curve).public_key()


def ec_jwk(crv: str = "P-256", kid: str | None = "e1", **extra: Any) -> dict[str, Any]:
    size = {"P-256": 32, "P-384": 48, "P-521": 66}[crv]
    point = ec_public(crv).public_numbers()
    jwk: dict[str, Any] = {
        "kty": "EC",
        "crv": crv,
        "x": b64(point.x.to_bytes(size, "big")),
        "y": b64(point.y.to_bytes(size, "big")),
    }
    if kid is not None:
        jwk["kid"] = kid
    return jwk | extra


@cache
def ed_public_bytes() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()


def okp_jwk(kid: str | None = "o1", **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = {"kty": "OKP", "crv": "Ed25519", "x": b64(ed_public_bytes())}
    if kid is not None:
        jwk["kid"] = kid
    return jwk | extra


def oct_jwk(secret: bytes = b"s" * 32, kid: str | None = "h1", **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = {"kty": "oct", "k": b64(secret)}
    if kid is not None:
        jwk["kid"] = kid
    return jwk | extra


def jwks(*keys: Any) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def parse(*keys: Any, allow_symmetric: bool = False) -> tuple[KeySet, list[str]]:
    return parse_jwks(jwks(*keys), allow_symmetric=allow_symmetric)


# -- base64url and JSON ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", b""), ("AA", b"\x00"), ("AAA", b"\x00\x00"), ("AAAA", b"\x00\x00\x00"), ("-_8", b"\xfb\xff")],
)
def test_b64url_decode_accepts_canonical_unpadded(text: str, expected: bytes) -> None:
    assert b64url_decode(text) == expected
    assert b64url_decode(text.encode()) == expected
    assert b64url_encode(expected).decode() == text


@pytest.mark.parametrize(
    "text",
    [
        "AA==",  # padding
        "AAA=",
        "+/8",  # the standard alphabet
        "A/8",
        "AA AA",  # whitespace
        "AAAA\n",
        "A",  # a length no encoding has
        "AAAAA",
        "AB",  # unused bits set: canonical is "AA"
        "AAB",  # canonical is "AAA"
        "AAé",
        "A.AA",
    ],
)
def test_b64url_decode_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


def test_loads_json_is_strict() -> None:
    assert loads_json(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    with pytest.raises(DuplicateMemberError) as caught:
        loads_json(b'{"a": 1, "b": {"c": 1, "c": 2}}')
    assert caught.value.name == "c"
    for bad in (b'{"exp": NaN}', b'{"exp": Infinity}', b'{"exp": -Infinity}', b'{"a": 1} x', b"\xff{}"):
        with pytest.raises(ValueError):
            loads_json(bad)
    with pytest.raises(ValueError):  # UTF-16 is valid JSON elsewhere, not here
        loads_json('{"a": 1}'.encode("utf-16"))


# -- usable keys -------------------------------------------------------------------------------


def test_rsa_key_may_verify_every_rsa_algorithm_unless_alg_narrows_it() -> None:
    key = key_from_jwk(rsa_jwk())
    assert (key.kid, key.kty, key.algorithms) == ("r1", "RSA", RSA_ALGORITHMS)
    assert isinstance(key.key, rsa.RSAPublicKey)
    assert key_from_jwk(rsa_jwk(alg="PS384")).algorithms == {"PS384"}


@pytest.mark.parametrize(("crv", "alg"), [("P-256", "ES256"), ("P-384", "ES384"), ("P-521", "ES512")])
def test_ec_key_verifies_only_the_algorithm_of_its_curve(crv: str, alg: str) -> None:
    key = key_from_jwk(ec_jwk(crv))
    assert key.algorithms == {alg}
    assert key_from_jwk(ec_jwk(crv, alg=alg)).algorithms == {alg}
    other = "ES384" if alg != "ES384" else "ES256"
    with pytest.raises(ValueError, match=f"alg {other} does not fit this {crv} EC key"):
        key_from_jwk(ec_jwk(crv, alg=other))


def test_okp_ed25519_key() -> None:
    key = key_from_jwk(okp_jwk(use="sig", key_ops=["verify"], alg="EdDSA"))
    assert (key.kty, key.algorithms) == ("OKP", {"EdDSA"})
    assert isinstance(key.key, ed25519.Ed25519PublicKey)


def test_kid_is_optional() -> None:
    keys, skipped = parse(rsa_jwk(kid=None), ec_jwk(kid="e"))
    assert skipped == []
    assert len(keys) == 2 and [k.kid for k in keys.unnamed] == [None] and list(keys.keys_by_kid) == ["e"]


def test_unknown_members_and_x5c_are_ignored() -> None:
    keys, skipped = parse(rsa_jwk(x5c=["MIIB..."], x5t="abc", extra={"a": 1}))
    assert skipped == [] and len(keys) == 1


# -- skipped entries ---------------------------------------------------------------------------


def test_small_rsa_key_is_skipped_with_a_readable_line() -> None:
    keys, skipped = parse(rsa_jwk("k1", bits=1024), rsa_jwk("k2"))
    assert list(keys.keys_by_kid) == ["k2"]
    assert skipped == ["kid 'k1': RSA key of 1024 bits (minimum 2048)"]


def test_huge_rsa_modulus_is_skipped() -> None:
    n = (1 << 8200) - 1  # only the size is looked at before the key is refused
    keys, skipped = parse({"kty": "RSA", "kid": "big", "n": uint(n), "e": "AQAB"})
    assert len(keys) == 0 and skipped == ["kid 'big': RSA key of 8200 bits (maximum 8192)"]


@pytest.mark.parametrize("e", [1, 2, 65536])
def test_bad_rsa_exponent_is_skipped(e: int) -> None:
    keys, skipped = parse(rsa_jwk(e=uint(e)))
    assert len(keys) == 0 and "public exponent" in skipped[0]


def test_roca_modulus_is_skipped() -> None:
    vectors = Path(__file__).parent / "vectors" / "wycheproof" / "json_web_key_test.json"
    groups = json.loads(vectors.read_text())["testGroups"]
    roca = next(g for g in groups if g["comment"] == "jws_rsa_roca_key")["public"]["keys"][0]
    assert has_roca_fingerprint(int.from_bytes(b64url_decode(roca["n"]), "big"))
    assert not has_roca_fingerprint(rsa_public().public_numbers().n)
    keys, skipped = parse(roca)
    assert len(keys) == 0 and "ROCA" in skipped[0]


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
@pytest.mark.parametrize("make", [rsa_jwk, ec_jwk, okp_jwk])
def test_private_key_material_is_skipped(member: str, make: Any) -> None:
    keys, skipped = parse(make(**{member: "AQAB"}))
    assert len(keys) == 0
    assert skipped[0].endswith(f"holds private key material ({member})")


def test_duplicate_kid_skips_every_copy() -> None:
    keys, skipped = parse(rsa_jwk("dup"), ec_jwk(kid="dup"), ec_jwk("P-384", kid="dup"), okp_jwk("ok"))
    assert list(keys.keys_by_kid) == ["ok"]
    assert skipped == ["kid 'dup': kid occurs 3 times in the set (every copy skipped)"] * 3


def test_duplicate_kid_counts_copies_that_are_unusable_anyway() -> None:
    # Were the broken copy ignored first, the other would be picked by a kid that means two keys.
    keys, skipped = parse(rsa_jwk("dup"), {"kid": "dup", "kty": "RSA", "n": "bad="})
    assert len(keys) == 0 and len(skipped) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"use": "enc"}, "use 'enc' (only 'sig' keys verify signatures)"),
        ({"use": None}, None),  # JSON null reads as absent
        ({"key_ops": ["sign"]}, "key_ops ['sign'] does not include 'verify'"),
        ({"key_ops": ["encrypt", "decrypt"]}, "does not include 'verify'"),
        ({"key_ops": "verify"}, "does not include 'verify'"),
        ({"key_ops": ["sign", "verify"]}, None),
        ({"alg": "RSA-OAEP"}, "alg 'RSA-OAEP' is not a supported JWS algorithm"),
        ({"alg": "none"}, "alg 'none' is not a supported JWS algorithm"),
        ({"alg": "ES256"}, "alg ES256 does not fit this RSA key"),
        ({"alg": "HS256"}, "alg HS256 does not fit this RSA key"),
        ({"alg": 256}, "alg is not a string"),
        ({"kid": 7}, "kid is not a string"),
    ],
)
def test_use_key_ops_alg_and_kid(extra: dict[str, Any], message: str | None) -> None:
    keys, skipped = parse(rsa_jwk(**extra))
    if message is None:
        assert len(keys) == 1 and skipped == []
    else:
        assert len(keys) == 0
        assert message in skipped[0]


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ({"kty": "DSA", "kid": "x"}, "unknown kty 'DSA'"),
        ({"kid": "x"}, "no kty"),
        ({"kty": "EC", "crv": "P-192", "x": "AA", "y": "AA"}, "unknown EC crv 'P-192'"),
        ({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}, "unknown EC crv 'secp256k1'"),
        ({"kty": "OKP", "crv": "X25519", "x": "AA"}, "unknown OKP crv 'X25519' (only Ed25519 signs)"),
        ({"kty": "OKP", "crv": "Ed448", "x": "AA"}, "unknown OKP crv 'Ed448'"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, "Ed25519 public key of 3 bytes (must be 32)"),
        ({"kty": "RSA", "n": 5, "e": "AQAB"}, "member 'n' missing or not a string"),
    ],
)
def test_unknown_or_incomplete_keys(jwk: dict[str, Any], message: str) -> None:
    keys, skipped = parse(jwk)
    assert len(keys) == 0 and message in skipped[0]


@pytest.mark.parametrize("mangle", ["pad", "std", "space", "bits"])
@pytest.mark.parametrize(("make", "member"), [(rsa_jwk, "n"), (ec_jwk, "x"), (okp_jwk, "x")])
def test_bad_base64url_in_a_member_is_skipped(mangle: str, make: Any, member: str) -> None:
    jwk = make()
    value = jwk[member]
    if mangle == "pad":
        value += "=" * (-len(value) % 4 or 4)
    elif mangle == "std":
        value = value.replace(value[1], "+", 1)
    elif mangle == "space":
        value = value[:4] + " " + value[4:]
    else:  # flip an unused low bit of the last character, if it has any
        value = "AAB" if len(value) % 4 != 3 else "AAAAB"
    jwk[member] = value
    keys, skipped = parse(jwk)
    assert len(keys) == 0
    assert "base64url" in skipped[0] or "bytes" in skipped[0] or "coordinates" in skipped[0]


def test_ec_point_not_on_curve_is_skipped() -> None:
    jwk = ec_jwk()
    y = bytearray(b64url_decode(jwk["y"]))
    y[-1] ^= 1
    jwk["y"] = b64(bytes(y))
    keys, skipped = parse(jwk)
    assert len(keys) == 0 and skipped == ["kid 'e1': EC point is not on curve P-256"]


def test_ec_coordinates_must_have_the_curve_size() -> None:
    jwk = ec_jwk()
    jwk["x"] = b64(b"\x00" + b64url_decode(jwk["x"]))  # a leading zero byte: same number, wrong size
    keys, skipped = parse(jwk)
    assert len(keys) == 0 and "P-256 coordinates must be 32 bytes each (got 33 and 32)" in skipped[0]


def test_entry_that_is_not_an_object_or_names_a_member_twice() -> None:
    document = b'{"keys": [42, {"kty": "EC", "kid": "twice", "crv": "P-256", "crv": "P-384"}, "x"]}'
    keys, skipped = parse_jwks(document)
    assert len(keys) == 0
    assert skipped == [
        "key #0: not a JSON object",
        "kid 'twice': duplicate member 'crv'",
        "key #2: not a JSON object",
    ]


def test_long_kid_is_shortened_in_messages() -> None:
    _keys, skipped = parse(rsa_jwk("k" * 5000, bits=1024))
    assert len(skipped[0]) < 150


# -- symmetric keys ----------------------------------------------------------------------------


def test_oct_keys_are_refused_by_default() -> None:
    secret = b"0123456789abcdef0123456789abcdef"
    keys, skipped = parse(oct_jwk(secret))
    assert len(keys) == 0
    assert skipped == ["kid 'h1': symmetric (oct) key where only public keys are accepted"]
    assert b64(secret) not in skipped[0]


@pytest.mark.parametrize(
    ("size", "algorithms"),
    [(32, {"HS256"}), (47, {"HS256"}), (48, {"HS256", "HS384"}), (64, {"HS256", "HS384", "HS512"})],
)
def test_oct_key_algorithms_follow_its_length(size: int, algorithms: set[str]) -> None:
    keys, skipped = parse(oct_jwk(b"s" * size), allow_symmetric=True)
    assert skipped == [] and keys.keys_by_kid["h1"].algorithms == algorithms


@pytest.mark.parametrize(
    ("size", "alg"), [(0, None), (31, None), (31, "HS256"), (47, "HS384"), (63, "HS512")]
)
def test_short_oct_key_is_skipped(size: int, alg: str | None) -> None:
    extra = {} if alg is None else {"alg": alg}
    keys, skipped = parse(oct_jwk(b"s" * size, **extra), allow_symmetric=True)
    assert len(keys) == 0 and f"HMAC key of {size} bytes" in skipped[0]


def test_oct_key_beside_asymmetric_keys_is_skipped() -> None:
    keys, skipped = parse(oct_jwk(), ec_jwk(), allow_symmetric=True)
    assert list(keys.keys_by_kid) == ["e1"]
    assert skipped == ["kid 'h1': symmetric (oct) key in a set that also holds asymmetric keys"]


def test_hmac_key() -> None:
    assert hmac_key(b"k" * 32).algorithms == {"HS256"}
    assert hmac_key(b"k" * 64, kid="a").algorithms == {"HS256", "HS384", "HS512"}
    assert hmac_key(b"k" * 64, alg="HS384").algorithms == {"HS384"}
    for secret, alg in ((b"k" * 31, None), (b"", None), (b"k" * 40, "HS384"), (b"k" * 64, "RS256")):
        with pytest.raises(ValueError):
            hmac_key(secret, alg=alg)
    assert "kkkk" not in repr(hmac_key(b"k" * 32))  # a secret never reaches a log line


def test_verify_key_refuses_algorithms_its_material_cannot_serve() -> None:
    public = rsa_public()
    with pytest.raises(ValueError):
        VerifyKey("a", "RSA", public, frozenset({"HS256"}))
    with pytest.raises(ValueError):
        VerifyKey("a", "oct", b"k" * 32, frozenset({"RS256"}))
    with pytest.raises(ValueError):
        VerifyKey("a", "oct", b"k" * 32, frozenset({"HS512"}))
    with pytest.raises(ValueError):
        VerifyKey("a", "EC", ec_public("P-256"), frozenset({"ES384"}))
    with pytest.raises(ValueError):
        VerifyKey("a", "RSA", public, frozenset())
    with pytest.raises(ValueError):
        VerifyKey("a", "EC", public, frozenset({"RS256"}))  # kty must match the material


# -- whole documents ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"not json",
        b"[]",
        b'"keys"',
        b"{}",
        b'{"keys": {}}',
        b'{"keys": null}',
        b'{"keys": [], "keys": []}',
        b"\xff\xfe{}",
        b'{"keys": [NaN]}',
        b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_document_that_is_not_a_jwk_set_raises(document: bytes) -> None:
    with pytest.raises(ValueError, match="JWK Set"):
        parse_jwks(document)


def test_empty_set_is_fine() -> None:
    keys, skipped = parse_jwks(b'{"keys": []}')
    assert len(keys) == 0 and skipped == []


def test_key_from_jwk_raises_naming_the_problem() -> None:
    with pytest.raises(ValueError, match=r"RSA key of 1024 bits \(minimum 2048\)"):
        key_from_jwk(rsa_jwk(bits=1024))
    assert key_from_jwk(oct_jwk(), allow_symmetric=True).algorithms == {"HS256"}


# -- KeySet ------------------------------------------------------------------------------------


def test_find_uses_kid_as_an_exact_lookup() -> None:
    keys, _ = parse(rsa_jwk("a"), ec_jwk(kid="b"))
    assert keys.find("a", "RS256") is keys.keys_by_kid["a"]
    assert keys.find("a", "PS512") is keys.keys_by_kid["a"]
    assert keys.find("b", "ES256") is keys.keys_by_kid["b"]
    assert keys.find("a", "ES256") is None  # the key exists, but may not verify that alg
    assert keys.find("A", "RS256") is None
    assert keys.find("a ", "RS256") is None
    assert keys.find("", "RS256") is None


def test_find_without_kid_needs_exactly_one_candidate() -> None:
    keys, _ = parse(rsa_jwk("a"), ec_jwk(kid=None), ec_jwk("P-384", kid="c"))
    assert keys.find(None, "ES256") is keys.unnamed[0]
    assert keys.find(None, "ES384") is keys.keys_by_kid["c"]
    assert keys.find(None, "RS256") is keys.keys_by_kid["a"]
    assert keys.find(None, "EdDSA") is None
    two, _ = parse(rsa_jwk("a"), rsa_jwk("b"))
    assert two.find(None, "RS256") is None
    assert len(two.for_alg("RS256")) == 2


def test_kid_less_key_is_not_found_by_a_token_kid() -> None:
    keys, _ = parse(ec_jwk(kid=None))
    assert keys.find("anything", "ES256") is None


def test_keyset_refuses_duplicate_kids() -> None:
    key = key_from_jwk(ec_jwk())
    with pytest.raises(ValueError, match="occurs twice"):
        KeySet([key, key])
    assert len(KeySet()) == 0
