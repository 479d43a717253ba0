"""Project Wycheproof vectors (C2SP/wycheproof, copies in vectors/wycheproof/) through our own code paths.

The JOSE files go through the product path: the key or key set is parsed by ``parse_jwks`` and the
token checked by ``split_jws`` + ``verify_jws`` with every supported algorithm allowed. The five
raw-signature files go through ``verify_raw``, the one function every token signature passes.
Each test is one vector, named by file and tcId.

Where a vector's label and our decision differ, the vector is listed below with the reason; the test
asserts our decision (and, for the policy ones, that the signature itself is sound), so a change in
behaviour fails loudly either way.

json_web_signature_test.json
  =====  ============  ==========================================================================
  tcId   label         our decision and why
  =====  ============  ==========================================================================
  367    invalid       ACCEPT. "invalidBase64Padding": byte for byte the same token as tcId 357
                       (valid) -- the padding change the comment names is absent from the upstream
                       file, so no verifier can both accept 357 and reject this.
  370    invalid       ACCEPT. "invalidBase64PaddingInPayload": same as 367.
  372    valid         REJECT (malformed). "InvalidCharacterInsertedInHeader": '?' is not base64url
                       and our contract is strict base64url; the MAC is that of the unmodified
                       header, so accepting it takes a decoder that drops bad characters *and*
                       rebuilds the signing input.
  373    valid         REJECT (malformed). The same with '?' in the payload.
  346    valid         REJECT (key_alg_mismatch). RFC 7520 Figure 20 is PS384, but the key's "alg"
  350                  member says PS256. An "alg" member restricts the key to that algorithm
                       (RFC 7517 section 4.4); that same rule is the only thing that rejects tcIds
                       332-340 (group ps512: RS256/RS384/RS512/PS256/PS384 signatures that are
                       mathematically valid for the PS512-only key). One rule cannot give both.
  347    valid         REJECT (unknown_kid). RFC 7520 Figure 27 (ES512, P-521), but the key's "alg"
  351                  member is "ES521", which is no JWS algorithm: the key is skipped.
  =====  ============  ==========================================================================
  The file holds no JWE groups (all 23 are JsonWebSignature); the one JSON-serialized JWS (tcId 17)
  is rejected as malformed, since compact serialization is our contract.

json_web_key_test.json: every label followed. Groups with a "public" set are parsed as a fetched
  JWKS (allow_symmetric=False); the oct-only groups, which have none, as a secret set
  (allow_symmetric=True). tcId 1 (an HMAC secret in one set with a public EC key) is rejected
  because an oct key in a set that also holds asymmetric keys is skipped -- such a set is meant to
  be published, so its secret is not secret; tcId 7 by the ROCA fingerprint check.

rsa_signature_2048_sha256_test.json
  tcId 8, acceptable ("Missing NULL in the ASN encoding", flag MissingNull): REJECT. RFC 8017
  DigestInfo for SHA-256 carries the NULL parameters; the legacy form without it is no RS256 signature.

hmac_sha256_test.json: the MacTest format also covers 16-byte keys and tags truncated to 128 bits,
  neither of which is HS256 (RFC 7518 section 3.2: the key is at least the hash size and the whole
  MAC is compared). Those 36 "valid" vectors are asserted REJECTED: hmac_key refuses the 3+3 vectors
  with 128-bit keys, verify_raw refuses the 27+3 with 128-bit tags. The 30 valid vectors with a full
  tag and a key of at least 32 bytes are accepted; every invalid vector is rejected.

The ECDSA (P1363), RSA-PSS and Ed25519 files: every label followed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from fastproxy.identity.jwk import (
    SUPPORTED_ALGORITHMS,
    KeySet,
    VerifyKey,
    b64url_encode,
    hmac_key,
    key_from_jwk,
    parse_jwks,
)
from fastproxy.identity.jws import TokenError, split_jws, verify_jws, verify_raw

VECTORS = Path(__file__).parent / "vectors" / "wycheproof"

# tcId -> (accepted?, reason when rejected) where our decision differs from the label; see above.
JWS_DECISIONS: dict[int, tuple[bool, str | None]] = {
    367: (True, None),
    370: (True, None),
    372: (False, "malformed"),
    373: (False, "malformed"),
    346: (False, "key_alg_mismatch"),
    350: (False, "key_alg_mismatch"),
    347: (False, "unknown_kid"),
    351: (False, "unknown_kid"),
}
# The vectors above that fail on key policy alone: with the offending member removed they verify.
POLICY_ONLY = {346: "alg", 350: "alg", 347: "alg", 351: "alg"}

# Reasons asserted for named attacks, so that they fail for the right cause. The "Using..." vectors
# come in pairs: the other primitive's signature under the key's own alg (bad_signature), and the
# same under the other primitive's alg, which the PS512-only key may not verify.
WRONG_PRIMITIVE = {"bad_signature", "key_alg_mismatch"}
JWS_REASONS = {
    "algIsNone": {"alg_none"},
    "rejectsNoneAlgorithmAndMissingSignature": {"alg_none"},
    "rejectsAttackerProvidedEmbeddedJwk": {"embedded_key"},
    "rejectsSymmetryConfusionAttacks_aesKeyFromEcVerificationKeyBytes": {"key_alg_mismatch"},
    "UsingRS256": WRONG_PRIMITIVE,
    "UsingRS384": WRONG_PRIMITIVE,
    "UsingRS512": WRONG_PRIMITIVE,
    "UsingPS256": WRONG_PRIMITIVE,
    "UsingPS384": WRONG_PRIMITIVE,
    "rejectsValidJsonSerialization": {"malformed"},
    "rejectsExtraComponent": {"malformed"},
    "rejectWrongUse": {"unknown_kid"},
    "rejectWrongKeyOps": {"unknown_kid"},
}

RSA_ACCEPTABLE = {8: False}  # tcId -> accepted? (see the module docstring)


@cache
def load(name: str) -> dict[str, Any]:
    with open(VECTORS / name, encoding="utf-8") as f:
        document: dict[str, Any] = json.load(f)
    return document


def vectors(name: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for group in load(name)["testGroups"]:
        for test in group["tests"]:
            yield group, test


def params(name: str) -> list[Any]:
    return [
        pytest.param(group, test, id=f"tc{test['tcId']}-{test['result']}") for group, test in vectors(name)
    ]


def outcome(check: Callable[[], object]) -> str | None:
    """None when ``check`` accepts, else the TokenError reason."""
    try:
        check()
    except TokenError as exc:
        return exc.reason
    return None


def jose_keys(group: dict[str, Any], member: str | None = None) -> KeySet:
    """The group's key (set) as our product would load it: public set as fetched, oct set as secret."""
    document = group.get("public", group["private"]) if member is None else group[member]
    if "keys" not in document:
        document = {"keys": [document]}
    keys, _skipped = parse_jwks(json.dumps(document).encode(), allow_symmetric="public" not in group)
    return keys


def verify_token(token: str, keys: KeySet) -> str | None:
    return outcome(lambda: verify_jws(split_jws(token.encode()), keys, SUPPORTED_ALGORITHMS))


def test_vector_files_are_the_documented_ones() -> None:
    counts = {
        "json_web_signature_test.json": 401,
        "json_web_key_test.json": 26,
        "ecdsa_secp256r1_sha256_p1363_test.json": 262,
        "rsa_signature_2048_sha256_test.json": 259,
        "rsa_pss_2048_sha256_mgf1_32_test.json": 108,
        "ed25519_test.json": 151,
        "hmac_sha256_test.json": 174,
    }
    for name, count in counts.items():
        assert load(name)["numberOfTests"] == count == sum(1 for _ in vectors(name))
    assert (VECTORS / "LICENSE").is_file() and (VECTORS / "README.md").is_file()
    assert {group["type"] for group in load("json_web_signature_test.json")["testGroups"]} == {
        "JsonWebSignature"
    }


@pytest.mark.parametrize(("group", "test"), params("json_web_signature_test.json"))
def test_json_web_signature(group: dict[str, Any], test: dict[str, Any]) -> None:
    reason = verify_token(test["jws"], jose_keys(group))
    tc = test["tcId"]
    if tc in JWS_DECISIONS:
        accepted, expected_reason = JWS_DECISIONS[tc]
        assert (reason is None) == accepted, reason
        assert reason == expected_reason
        return
    assert test["result"] in ("valid", "invalid")
    if test["result"] == "valid":
        assert reason is None
    else:
        assert reason is not None
        if test["comment"] in JWS_REASONS:
            assert reason in JWS_REASONS[test["comment"]]


@pytest.mark.parametrize("tc", sorted(POLICY_ONLY))
def test_json_web_signature_deviations_are_key_policy_only(tc: int) -> None:
    group, test = next((g, t) for g, t in vectors("json_web_signature_test.json") if t["tcId"] == tc)
    relaxed = {name: value for name, value in group["public"].items() if name != POLICY_ONLY[tc]}
    keys = KeySet([key_from_jwk(relaxed)])
    assert verify_token(test["jws"], keys) is None


@pytest.mark.parametrize(("group", "test"), params("json_web_key_test.json"))
def test_json_web_key(group: dict[str, Any], test: dict[str, Any]) -> None:
    reason = verify_token(test["jws"], jose_keys(group))
    assert test["result"] in ("valid", "invalid")
    assert (reason is None) == (test["result"] == "valid"), reason


def test_json_web_key_skip_reasons() -> None:
    """The key-set groups fail for the reason they are about, not by accident."""
    expected = {
        "jws_mixedSymmetryKeyset": ["symmetric (oct) key in a set that also holds asymmetric keys"],
        "jws_duplicate_kid": ["kid occurs 2 times", "kid occurs 2 times"],
        "jws_rsa_roca_key": ["ROCA"],
        "keysize_too_small": ["RSA key of 1024 bits (minimum 2048)"],
        "exponentOne": ["public exponent 1 is not odd, >= 3"],
        "wrong_algorithm": ["alg 'ES521' is not a supported JWS algorithm"],
        "invalid_algorithm": ["alg 'ES224' is not a supported JWS algorithm"],
        "invalid_use": ["use 'enc'"],
        "invalid_point": ["not on curve P-256"],
        "wrong_curve": ["P-384 coordinates must be 48 bytes"],
        "wrong_kty": ["member 'n' missing"],
        "invalid_aes_gcm_key": ["alg 'A256GCM' does not fit an oct key"],
        "invalid_aes_kw_key": ["alg 'A256KW' does not fit an oct key"],
    }
    seen = set()
    for group in load("json_web_key_test.json")["testGroups"]:
        document = group.get("public", group["private"])
        keys, skipped = parse_jwks(json.dumps(document).encode(), allow_symmetric="public" not in group)
        comment = group["comment"]
        if comment in expected:
            seen.add(comment)
            assert len(keys) == (1 if comment == "jws_mixedSymmetryKeyset" else 0)  # the EC key stays
            assert len(skipped) == len(expected[comment])
            for line, needle in zip(skipped, expected[comment], strict=True):
                assert needle in line
        elif comment in ("HS256", "HS384", "HS512") and group["tests"][0]["result"] == "invalid":
            assert len(keys) == 0
            assert [line.split(": ", 1)[1].startswith("HMAC key of") for line in skipped] == [True]
    assert seen == set(expected)


def p1363_key(group: dict[str, Any]) -> VerifyKey:
    if "publicKeyJwk" in group:
        return key_from_jwk(group["publicKeyJwk"])
    # 10 groups carry no JWK: build the same JWK from the hex coordinates.
    point = group["publicKey"]
    assert point["curve"] == "secp256r1"
    x, y = (int(point[name], 16).to_bytes(32, "big") for name in ("wx", "wy"))
    return key_from_jwk(
        {"kty": "EC", "crv": "P-256", "x": b64url_encode(x).decode(), "y": b64url_encode(y).decode()}
    )


@pytest.mark.parametrize(("group", "test"), params("ecdsa_secp256r1_sha256_p1363_test.json"))
def test_ecdsa_p256_sha256_p1363(group: dict[str, Any], test: dict[str, Any]) -> None:
    assert group["sha"] == "SHA-256"
    key = p1363_key(group)
    reason = outcome(lambda: verify_raw("ES256", key, bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])))
    assert test["result"] in ("valid", "invalid")
    assert (reason is None) == (test["result"] == "valid"), reason


@pytest.mark.parametrize(("group", "test"), params("rsa_signature_2048_sha256_test.json"))
def test_rsa_pkcs1_2048_sha256(group: dict[str, Any], test: dict[str, Any]) -> None:
    assert group["sha"] == "SHA-256"
    key = key_from_jwk(group["keyJwk"])
    reason = outcome(lambda: verify_raw("RS256", key, bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])))
    if test["result"] == "acceptable":
        assert (reason is None) == RSA_ACCEPTABLE[test["tcId"]], reason
    else:
        assert (reason is None) == (test["result"] == "valid"), reason


@pytest.mark.parametrize(("group", "test"), params("rsa_pss_2048_sha256_mgf1_32_test.json"))
def test_rsa_pss_2048_sha256(group: dict[str, Any], test: dict[str, Any]) -> None:
    # PS256 is exactly this parameter set: SHA-256, MGF1 with SHA-256, 32-byte salt.
    assert (group["sha"], group["mgf"], group["mgfSha"], group["sLen"]) == ("SHA-256", "MGF1", "SHA-256", 32)
    key = key_from_jwk(group["publicKeyJwk"])
    reason = outcome(lambda: verify_raw("PS256", key, bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])))
    assert test["result"] in ("valid", "invalid")
    assert (reason is None) == (test["result"] == "valid"), reason


@pytest.mark.parametrize(("group", "test"), params("ed25519_test.json"))
def test_ed25519(group: dict[str, Any], test: dict[str, Any]) -> None:
    key = key_from_jwk(group["publicKeyJwk"])
    reason = outcome(lambda: verify_raw("EdDSA", key, bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])))
    assert test["result"] in ("valid", "invalid")
    assert (reason is None) == (test["result"] == "valid"), reason


@pytest.mark.parametrize(("group", "test"), params("hmac_sha256_test.json"))
def test_hmac_sha256(group: dict[str, Any], test: dict[str, Any]) -> None:
    secret = bytes.fromhex(test["key"])
    assert len(secret) * 8 == group["keySize"]
    if len(secret) < 32:
        with pytest.raises(ValueError, match="minimum 32"):
            hmac_key(secret)
        return
    key = hmac_key(secret)
    tag = bytes.fromhex(test["tag"])
    reason = outcome(lambda: verify_raw("HS256", key, bytes.fromhex(test["msg"]), tag))
    if group["tagSize"] != 256:
        assert reason == "bad_signature"  # a truncated MAC is no HS256 MAC, whatever its label
    else:
        assert test["result"] in ("valid", "invalid")
        assert (reason is None) == (test["result"] == "valid"), reason
