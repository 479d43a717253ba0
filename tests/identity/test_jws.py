"""Compact JWS: the structural checks of split_token, signature verification, and key selection."""

from __future__ import annotations

import hashlib
import hmac
import json
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fastproxy.identity.jwk import KeySet, VerifyKey, b64url_encode, hmac_key
from fastproxy.identity.jws import (
    MAX_TOKEN_BYTES,
    REASONS,
    TokenError,
    split_jws,
    split_token,
    verify_jws,
    verify_raw,
    verify_signature,
)

PAYLOAD = {"sub": "alice", "exp": 2_000_000_000}
SECRET = b"an HMAC secret of sixty-four bytes, long enough for HS512 too..."
assert len(SECRET) == 64

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "ES256": (ec.SECP256R1(), 32),
    "ES384": (ec.SECP384R1(), 48),
    "ES512": (ec.SECP521R1(), 66),
}


@cache
def private_key(alg: str) -> PrivateKey:
    if alg[:2] in ("RS", "PS"):
        return rsa_private()
    if alg in CURVES:
        return ec.generate_private_key(CURVES[alg][0])
    return ed25519.Ed25519PrivateKey.generate()


@cache
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def verify_key(alg: str, kid: str | None = "k1") -> VerifyKey:
    """The VerifyKey for alg, from the same material the token helpers sign with."""
    if alg.startswith("HS"):
        return hmac_key(SECRET, kid)
    public = private_key(alg).public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return VerifyKey(
            kid, "RSA", public, frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
        )
    if isinstance(public, ec.EllipticCurvePublicKey):
        return VerifyKey(kid, "EC", public, frozenset({alg}))
    assert isinstance(public, ed25519.Ed25519PublicKey)
    return VerifyKey(kid, "OKP", public, frozenset({"EdDSA"}))


def sign(alg: str, message: bytes) -> bytes:
    """An independent signer (not mint's), so that the two cannot share a mistake."""
    if alg.startswith("HS"):
        return hmac.new(SECRET, message, getattr(hashlib, "sha" + alg[2:])).digest()
    key = private_key(alg)
    if isinstance(key, rsa.RSAPrivateKey):
        digest = HASHES[alg[2:]]()
        if alg.startswith("PS"):
            return key.sign(message, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
        return key.sign(message, padding.PKCS1v15(), digest)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = CURVES[alg][1]
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(HASHES[alg[2:]]())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(message)


def segment(part: dict[str, Any] | bytes) -> bytes:
    return b64url_encode(part if isinstance(part, bytes) else json.dumps(part).encode())


def token(
    header: dict[str, Any] | bytes | None = None,
    payload: dict[str, Any] | bytes | None = None,
    *,
    alg: str = "ES256",
    signature: bytes | None = None,
) -> bytes:
    """A compact JWS; the header defaults to {"alg": alg, "kid": "k1"} and is signed with alg."""
    header = {"alg": alg, "kid": "k1"} if header is None else header
    signing_input = segment(header) + b"." + segment(PAYLOAD if payload is None else payload)
    if signature is None:
        signature = sign(alg, signing_input)
    return signing_input + b"." + b64url_encode(signature)


def reason_of(data: bytes) -> str:
    with pytest.raises(TokenError) as caught:
        split_token(data)
    assert caught.value.reason in REASONS
    for piece in data.split(b"."):  # no part of the token in the message
        if len(piece) > 3:
            assert piece.decode("latin-1") not in str(caught.value)
    return caught.value.reason


# -- structure ---------------------------------------------------------------------------------


def test_split_token_returns_the_parts() -> None:
    data = token({"alg": "ES256", "kid": "k1", "typ": "JWT"})
    parsed = split_token(data)
    assert parsed.header == {"alg": "ES256", "kid": "k1", "typ": "JWT"}
    assert parsed.payload == PAYLOAD
    assert parsed.signing_input == data.rsplit(b".", 1)[0]
    assert len(parsed.signature) == 64
    assert (parsed.alg, parsed.kid) == ("ES256", "k1")
    assert split_token(token({"alg": "ES256"})).kid is None


def test_size_cap_is_checked_before_decoding() -> None:
    assert reason_of(b"\x00" * (MAX_TOKEN_BYTES + 1)) == "too_large"
    assert reason_of(b"A" * (MAX_TOKEN_BYTES + 1)) == "too_large"
    assert reason_of(b"A" * MAX_TOKEN_BYTES) == "malformed"  # at the cap it is read (and refused)


def test_token_of_exactly_the_cap_is_accepted() -> None:
    exact = next(
        data
        for kid in ("k", "kk", "kkk")
        for pad in range(5990, 6020)
        if len(data := token({"alg": "ES256", "kid": kid}, PAYLOAD | {"pad": "x" * pad})) == MAX_TOKEN_BYTES
    )
    split_token(exact)
    header, payload, signature = exact.split(b".")
    assert reason_of(header + b"." + payload + b"A" + b"." + signature) == "too_large"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"abc",
        b"a.b",
        b"a.b.c.d",
        b"..",
        b"...",
        b'{"payload":"Zm9v","signatures":[]}',  # JSON serialization: compact only
    ],
)
def test_not_three_segments(data: bytes) -> None:
    assert reason_of(data) == "malformed"


def test_extra_segment_is_refused() -> None:
    assert reason_of(token() + b".") == "malformed"
    assert reason_of(token() + b".e30") == "malformed"


@pytest.mark.parametrize("where", [0, 1, 2])
@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s + b"=",
        lambda s: s + b"==",
        lambda s: s[:2] + b"+" + s[3:],
        lambda s: s[:2] + b"/" + s[3:],
        lambda s: s[:2] + b" " + s[2:],
        lambda s: s + b"\n",
        lambda s: s[:2] + b"\xc3\xa9" + s[2:],
        lambda s: s[:2] + b"?" + s[2:],
    ],
    ids=["pad1", "pad2", "plus", "slash", "space", "newline", "non-ascii", "question"],
)
def test_strict_base64url_in_every_segment(where: int, mangle: Any) -> None:
    parts = token().split(b".")
    parts[where] = mangle(parts[where])
    assert reason_of(b".".join(parts)) == "malformed"


def test_non_canonical_trailing_bits() -> None:
    # Both spellings decode to the same bytes in a lenient decoder; only the canonical one is ours.
    header = segment({"alg": "ES256", "kid": "k1"})  # 44 characters: no unused bits
    payload = segment(b'{"a":1}')  # 10 characters: the last carries 4 unused bits
    assert len(payload) % 4 == 2
    last = payload[-1:]
    bumped = bytes([b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(last) + 1
    ]])  # fmt: skip
    data = header + b"." + payload[:-1] + bumped + b"." + b64url_encode(b"x" * 64)
    assert reason_of(data) == "malformed"
    sig = b64url_encode(b"x" * 64)  # 86 characters: 2 bits unused
    assert reason_of(header + b"." + payload + b"." + sig[:-1] + b"h") == "malformed"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"not json", "malformed"),
        (b"\xff\xfe{}", "malformed"),
        ('{"alg":"ES256"}'.encode("utf-16"), "malformed"),
        (b'["alg", "ES256"]', "not_object"),
        (b'"ES256"', "not_object"),
        (b"null", "not_object"),
        (b'{"alg":"ES256","alg":"none"}', "duplicate_member"),
        (b'{"alg":"ES256","x":{"a":1,"a":2}}', "duplicate_member"),
        (b"{}", "malformed"),
        (b'{"alg":null}', "malformed"),
        (b'{"alg":256}', "malformed"),
        (b'{"alg":["ES256"]}', "malformed"),
        (b'{"alg":"ES256","kid":7}', "malformed"),
        (b'{"alg":"ES256","kid":null}', None),  # null reads as absent
        (b'{"alg":"ES256","n":NaN}', "malformed"),
        (b'{"alg":"ES256"} ', None),
        (b'{"alg":"ES256"}x', "malformed"),
    ],
)
def test_header(header: bytes, reason: str | None) -> None:
    data = token(header, alg="ES256")
    if reason is None:
        assert split_token(data).alg == "ES256"
    else:
        assert reason_of(data) == reason


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_spelling(alg: str) -> None:
    assert reason_of(token({"alg": alg}, signature=b"")) == "alg_none"
    assert reason_of(token({"alg": alg, "kid": "k1"}, signature=b"x" * 64)) == "alg_none"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"crit": ["exp"]}, "crit"),
        ({"crit": []}, "crit"),
        ({"b64": False}, "b64"),
        ({"b64": True}, "b64"),
        ({"jwk": {"kty": "EC"}}, "embedded_key"),
        ({"jku": "https://attacker.example/jwks"}, "embedded_key"),
        ({"x5u": "https://attacker.example/cert"}, "embedded_key"),
        ({"x5c": ["MIIB"]}, "embedded_key"),
        ({"typ": "JWT", "cty": "x", "x5t": "abc", "unknown": 1}, None),
    ],
)
def test_headers_we_refuse_to_act_on(extra: dict[str, Any], reason: str | None) -> None:
    data = token({"alg": "ES256", "kid": "k1"} | extra)
    if reason is None:
        split_token(data)
    else:
        assert reason_of(data) == reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"foo", "malformed"),
        (b"", "malformed"),
        (b"[1]", "not_object"),
        (b"42", "not_object"),
        (b'{"sub":"a","sub":"b"}', "duplicate_member"),
        (b'{"exp":Infinity}', "malformed"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "too_large"),
        (b"[" * 2000 + b"]" * 2000, "malformed"),  # nesting too deep for the parser
    ],
)
def test_payload(payload: bytes, reason: str) -> None:
    assert reason_of(token(payload=payload)) == reason


def test_split_jws_takes_any_payload_bytes() -> None:
    parsed = split_jws(token(payload=b"\x00\xffnot json"))
    assert parsed.payload == b"\x00\xffnot json"


# -- signatures --------------------------------------------------------------------------------

ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
ALGS += ["HS256", "HS384", "HS512"]


@pytest.mark.parametrize("alg", ALGS)
def test_each_algorithm_verifies_and_refuses_a_changed_token(alg: str) -> None:
    data = token(alg=alg)
    key = verify_key(alg)
    verify_signature(split_token(data), key)
    header, _payload, sig = data.split(b".")
    forged = header + b"." + segment(PAYLOAD | {"sub": "mallory"}) + b"." + sig
    with pytest.raises(TokenError) as caught:
        verify_signature(split_token(forged), key)
    assert caught.value.reason == "bad_signature"


def raw_reason(alg: str, key: VerifyKey, message: bytes, signature: bytes) -> str | None:
    try:
        verify_raw(alg, key, message, signature)
    except TokenError as exc:
        return exc.reason
    return None


@pytest.mark.parametrize("alg", ALGS)
def test_signature_of_the_wrong_length_is_refused(alg: str) -> None:
    good = sign(alg, b"msg")
    key = verify_key(alg)
    assert raw_reason(alg, key, b"msg", good) is None
    assert raw_reason(alg, key, b"msg", b"\x00" + good) == "bad_signature"
    assert raw_reason(alg, key, b"msg", good + b"\x00") == "bad_signature"
    assert raw_reason(alg, key, b"msg", good[:-1]) == "bad_signature"
    assert raw_reason(alg, key, b"msg", b"") == "bad_signature"


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
def test_ecdsa_der_signature_is_refused(alg: str) -> None:
    key = private_key(alg)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    der = key.sign(b"msg", ec.ECDSA(HASHES[alg[2:]]()))
    assert raw_reason(alg, verify_key(alg), b"msg", der) == "bad_signature"


def test_ecdsa_high_s_and_zero_values() -> None:
    # r || s with s replaced by n - s is the same signature in another spelling; ECDSA allows it,
    # JWS does not forbid it, and OpenSSL accepts it: only the zero and out-of-range values must fail.
    key = verify_key("ES256")
    sig = sign("ES256", b"msg")
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    assert raw_reason("ES256", key, b"msg", r.to_bytes(32, "big") + (n - s).to_bytes(32, "big")) is None
    for bad_r, bad_s in ((0, s), (r, 0), (r + n, s) if r + n < 1 << 256 else (n, s), (r, n)):
        assert raw_reason("ES256", key, b"msg", bad_r.to_bytes(32, "big") + bad_s.to_bytes(32, "big"))


def test_pss_with_another_salt_length_is_refused() -> None:
    key = rsa_private()
    digest = hashes.SHA256()
    for salt in (0, 20, padding.PSS.MAX_LENGTH):
        sig = key.sign(b"msg", padding.PSS(padding.MGF1(hashes.SHA256()), salt), digest)
        assert raw_reason("PS256", verify_key("PS256"), b"msg", sig) == "bad_signature"
    mgf_sha1 = key.sign(b"msg", padding.PSS(padding.MGF1(hashes.SHA1()), 32), digest)
    assert raw_reason("PS256", verify_key("PS256"), b"msg", mgf_sha1) == "bad_signature"


def test_pkcs1_and_pss_do_not_stand_in_for_each_other() -> None:
    key = verify_key("RS256")
    assert raw_reason("PS256", key, b"msg", sign("RS256", b"msg")) == "bad_signature"
    assert raw_reason("RS256", key, b"msg", sign("PS256", b"msg")) == "bad_signature"
    assert raw_reason("RS384", key, b"msg", sign("RS256", b"msg")) == "bad_signature"


# -- algorithm confusion -----------------------------------------------------------------------


def test_hs256_made_with_the_public_key_as_secret_is_refused() -> None:
    # The classic: sign HS256 with the RSA public key's PEM as the HMAC secret.
    public = rsa_private().public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = segment({"alg": "HS256", "kid": "k1"}) + b"." + segment(PAYLOAD)
    forged = signing_input + b"." + b64url_encode(hmac.new(pem, signing_input, hashlib.sha256).digest())
    parsed = split_token(forged)
    with pytest.raises(TokenError) as caught:
        verify_signature(parsed, verify_key("RS256"))
    assert caught.value.reason == "key_alg_mismatch"
    keys = KeySet([verify_key("RS256")])
    with pytest.raises(TokenError) as caught:
        verify_jws(parsed, keys, ["RS256", "HS256"])
    assert caught.value.reason == "key_alg_mismatch"


@pytest.mark.parametrize(
    ("token_alg", "key_alg"),
    [
        ("RS256", "HS256"),
        ("HS256", "ES256"),
        ("ES256", "ES384"),
        ("ES384", "ES256"),
        ("EdDSA", "ES256"),
        ("ES256", "EdDSA"),
        ("HS512", "RS256"),
        ("PS256", "EdDSA"),
    ],
)
def test_a_key_only_verifies_its_own_algorithms(token_alg: str, key_alg: str) -> None:
    with pytest.raises(TokenError) as caught:
        verify_signature(split_token(token(alg=token_alg)), verify_key(key_alg))
    assert caught.value.reason == "key_alg_mismatch"


def test_hs384_with_a_32_byte_secret_is_not_possible() -> None:
    key = hmac_key(SECRET[:32])
    signing_input = segment({"alg": "HS384"}) + b"." + segment(PAYLOAD)
    sig = hmac.new(SECRET[:32], signing_input, hashlib.sha384).digest()
    with pytest.raises(TokenError) as caught:
        verify_signature(split_token(signing_input + b"." + b64url_encode(sig)), key)
    assert caught.value.reason == "key_alg_mismatch"


# -- key selection -----------------------------------------------------------------------------


def jws_reason(data: bytes, keys: KeySet, algorithms: list[str]) -> str | None:
    try:
        verify_jws(split_token(data), keys, algorithms)
    except TokenError as exc:
        return exc.reason
    return None


def test_alg_must_be_configured() -> None:
    keys = KeySet([verify_key("ES256")])
    assert jws_reason(token(alg="ES256"), keys, ["ES256"]) is None
    assert jws_reason(token(alg="ES256"), keys, ["RS256"]) == "alg_not_allowed"
    assert jws_reason(token({"alg": "es256", "kid": "k1"}), keys, ["ES256"]) == "alg_not_allowed"
    assert (
        jws_reason(token({"alg": "ES256K", "kid": "k1"}, signature=b"x"), keys, ["ES256"])
        == "alg_not_allowed"
    )


def test_kid_lookup() -> None:
    keys = KeySet([verify_key("ES256", "k1"), verify_key("RS256", "k2")])
    assert jws_reason(token(alg="ES256"), keys, ["ES256", "RS256"]) is None
    assert jws_reason(token({"alg": "ES256", "kid": "k9"}), keys, ["ES256"]) == "unknown_kid"
    assert jws_reason(token({"alg": "ES256", "kid": "K1"}), keys, ["ES256"]) == "unknown_kid"
    assert (
        jws_reason(token({"alg": "RS256", "kid": "k1"}, alg="RS256"), keys, ["RS256"]) == "key_alg_mismatch"
    )
    assert jws_reason(token({"alg": "ES256", "kid": "k2"}), keys, ["ES256"]) == "key_alg_mismatch"


def test_token_without_kid() -> None:
    one = KeySet([verify_key("ES256", "k1"), verify_key("RS256", "k2")])
    assert jws_reason(token({"alg": "ES256"}), one, ["ES256"]) is None
    assert jws_reason(token({"alg": "EdDSA"}, alg="EdDSA"), one, ["EdDSA"]) == "unknown_kid"
    two = KeySet([verify_key("ES256", "k1"), verify_key("ES256", "k2")])
    assert jws_reason(token({"alg": "ES256"}), two, ["ES256"]) == "ambiguous_key"
    assert jws_reason(token({"alg": "ES256"}), KeySet(), ["ES256"]) == "unknown_kid"


def test_wrong_key_under_the_right_kid() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    keys = KeySet([VerifyKey("k1", "EC", other, frozenset({"ES256"}))])
    assert jws_reason(token(alg="ES256"), keys, ["ES256"]) == "bad_signature"


def test_token_error_carries_reason_and_no_token() -> None:
    data = token(alg="ES256")
    keys = KeySet([verify_key("ES256", "other")])
    with pytest.raises(TokenError) as caught:
        verify_jws(split_token(data), keys, ["ES256"])
    assert caught.value.reason == "unknown_kid"
    assert str(caught.value).startswith("unknown_kid")
    assert all(part.decode() not in str(caught.value) for part in data.split(b"."))
