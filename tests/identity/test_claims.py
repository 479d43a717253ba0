"""JWT claims: time checks with leeway, issuer and audience, and what Verifier picks out of a payload."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fastproxy.identity.jwk import KeySet, b64url_encode, key_from_jwk
from fastproxy.identity.jws import Claims, TokenError, Verifier, check_claims
from fastproxy.identity.mint import mint, public_jwk

NOW = 1_800_000_000.0
ISS = "https://idp.example.com/"
BASE: dict[str, Any] = {"iss": ISS, "sub": "alice", "aud": "orders-api", "exp": NOW + 60}


def reason(
    payload: dict[str, Any], now: float = NOW, audience: tuple[str, ...] = ("orders-api",), leeway: float = 0
) -> str | None:
    try:
        check_claims(payload, now, issuer=ISS, audience=audience, leeway=leeway)
    except TokenError as exc:
        return exc.reason
    return None


# -- exp ---------------------------------------------------------------------------------------


def test_exp_boundary_without_leeway() -> None:
    assert reason(BASE | {"exp": NOW + 0.001}) is None
    assert reason(BASE | {"exp": NOW}) == "expired"  # valid while now < exp
    assert reason(BASE | {"exp": NOW - 1}) == "expired"


def test_exp_boundary_with_leeway() -> None:
    assert reason(BASE | {"exp": NOW - 29.999}, leeway=30) is None
    assert reason(BASE | {"exp": NOW - 30}, leeway=30) == "expired"
    assert reason(BASE | {"exp": NOW - 31}, leeway=30) == "expired"


def test_exp_is_required() -> None:
    payload = dict(BASE)
    del payload["exp"]
    assert reason(payload) == "missing_exp"
    assert reason(BASE | {"exp": None}) == "missing_exp"


@pytest.mark.parametrize(
    "exp", [True, False, "1900000000", [1900000000], {"t": 1}, float("inf"), float("nan"), -float("inf")]
)
def test_exp_must_be_a_finite_number(exp: Any) -> None:
    assert reason(BASE | {"exp": exp}) == "malformed_claim"


def test_exp_may_be_int_or_float() -> None:
    assert reason(BASE | {"exp": int(NOW) + 1}) is None
    assert reason(BASE | {"exp": NOW + 0.5}) is None
    assert reason(BASE | {"exp": 10**30}) is None  # far future, but a number


# -- nbf and iat -------------------------------------------------------------------------------


@pytest.mark.parametrize(("claim", "why"), [("nbf", "not_yet_valid"), ("iat", "issued_in_future")])
def test_nbf_and_iat_may_lie_at_most_leeway_ahead(claim: str, why: str) -> None:
    assert reason(BASE | {claim: NOW}) is None
    assert reason(BASE | {claim: NOW - 3600}) is None
    assert reason(BASE | {claim: NOW + 0.001}) == why
    assert reason(BASE | {claim: NOW + 30}, leeway=30) is None
    assert reason(BASE | {claim: NOW + 30.001}, leeway=30) == why
    assert reason(BASE | {claim: True}) == "malformed_claim"
    assert reason(BASE | {claim: "0"}) == "malformed_claim"
    assert reason(BASE | {claim: None}) is None  # null reads as absent


# -- iss ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iss",
    [
        None,
        "",
        "https://idp.example.com",
        "https://IDP.example.com/",
        ISS + " ",
        ["https://idp.example.com/"],
        1,
    ],
)
def test_iss_must_equal_the_issuer_exactly(iss: Any) -> None:
    payload = BASE | {"iss": iss}
    if iss is None:
        del payload["iss"]
    assert reason(payload) == "bad_issuer"


# -- aud ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aud", "expected"),
    [
        ("orders-api", None),
        (["orders-api"], None),
        (["other", "orders-api"], None),
        ("billing", None),
        ("other", "bad_audience"),
        (["other"], "bad_audience"),
        ([], "bad_audience"),
        ("Orders-API", "bad_audience"),
        ("orders-api ", "bad_audience"),
        ("orders-api billing", "bad_audience"),  # a string is one audience, not a list
        (None, "bad_audience"),
        (42, "malformed_claim"),
        (["orders-api", 42], "malformed_claim"),
        ({"orders-api": True}, "malformed_claim"),
    ],
)
def test_aud(aud: Any, expected: str | None) -> None:
    payload = BASE | {"aud": aud}
    assert reason(payload, audience=("orders-api", "billing")) == expected


def test_missing_aud() -> None:
    payload = dict(BASE)
    del payload["aud"]
    assert reason(payload) == "bad_audience"


def test_aud_is_not_checked_without_a_configured_audience() -> None:
    assert reason(BASE | {"aud": "anything"}, audience=()) is None
    assert reason(BASE | {"aud": 42}, audience=()) is None


# -- Verifier ----------------------------------------------------------------------------------


@cache
def signing_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@cache
def keys() -> KeySet:
    return KeySet([key_from_jwk(public_jwk(signing_key(), "k1"))])


def signed(claims: dict[str, Any]) -> bytes:
    """A token carrying exactly ``claims``, signed with the test key (ES256, kid k1)."""
    key = serialization.load_pem_private_key(signing_key(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signing_input = (
        b64url_encode(json.dumps({"alg": "ES256", "kid": "k1"}).encode())
        + b"."
        + b64url_encode(json.dumps(claims).encode())
    )
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return signing_input + b"." + b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def verifier(**overrides: Any) -> Verifier:
    settings: dict[str, Any] = {
        "issuer": ISS,
        "audience": ["orders-api"],
        "algorithms": ["ES256"],
        "leeway": 30,
    }
    return Verifier(**(settings | overrides))


def verified(claims: dict[str, Any], **overrides: Any) -> Claims:
    return verifier(**overrides).verify(signed(claims), keys(), NOW)


def refused(claims: dict[str, Any], **overrides: Any) -> str:
    with pytest.raises(TokenError) as caught:
        verified(claims, **overrides)
    return caught.value.reason


def test_verify_returns_the_claims() -> None:
    claims = verified(BASE | {"roles": ["reader", "admin"], "scope": "orders:read orders:write"})
    assert claims == Claims(
        "alice", ("reader", "admin"), frozenset({"orders:read", "orders:write"}), NOW + 60
    )


def test_verify_a_minted_token() -> None:
    data = mint(
        signing_key(),
        sub="bob",
        roles=["reader"],
        scope="a b",
        ttl=60,
        aud="orders-api",
        iss=ISS,
        now=NOW,
        kid="k1",
    )
    assert verifier().verify(data, keys(), NOW + 59) == Claims(
        "bob", ("reader",), frozenset({"a", "b"}), NOW + 60
    )
    with pytest.raises(TokenError) as caught:
        verifier().verify(data, keys(), NOW + 90)
    assert caught.value.reason == "expired"


def test_verify_uses_the_configured_leeway() -> None:
    assert verified(BASE | {"exp": NOW - 29}).subject == "alice"
    assert refused(BASE | {"exp": NOW - 29}, leeway=0) == "expired"


def test_roles_and_scope_may_be_missing() -> None:
    claims = verified(BASE)
    assert claims.roles == () and claims.scopes == frozenset()


@pytest.mark.parametrize(
    ("extra", "roles"),
    [
        ({"roles": "reader admin"}, ("reader", "admin")),
        ({"roles": "  reader\tadmin  "}, ("reader", "admin")),
        ({"roles": ""}, ()),
        ({"roles": []}, ()),
        ({"roles": ["reader"]}, ("reader",)),
        ({"roles": None}, ()),
    ],
)
def test_roles_list_or_space_separated(extra: dict[str, Any], roles: tuple[str, ...]) -> None:
    assert verified(BASE | extra).roles == roles


@pytest.mark.parametrize("value", [42, True, {"a": 1}, ["reader", 1], [["reader"]]])
def test_roles_of_another_shape_are_refused(value: Any) -> None:
    assert refused(BASE | {"roles": value}) == "malformed_claim"


def test_dotted_roles_path() -> None:
    payload = BASE | {"realm_access": {"roles": ["offline_access", "admin"]}, "roles": ["ignored"]}
    assert verified(payload, roles_claim="realm_access.roles").roles == ("offline_access", "admin")
    deep = BASE | {"a": {"b": {"c": "x y"}}}
    assert verified(deep, roles_claim="a.b.c").roles == ("x", "y")
    for missing in (
        BASE,
        BASE | {"realm_access": {}},
        BASE | {"realm_access": "admin"},
        BASE | {"realm_access": None},
    ):
        assert verified(missing, roles_claim="realm_access.roles").roles == ()


def test_claim_name_with_dots_wins_over_the_nested_reading() -> None:
    name = "https://example.com/roles"
    payload = BASE | {name: ["namespaced"], "https://example": {"com/roles": ["nested"]}}
    assert verified(payload, roles_claim=name).roles == ("namespaced",)


def test_scopes() -> None:
    assert verified(BASE | {"scope": "a b a"}).scopes == {"a", "b"}
    assert verified(BASE | {"scp": ["x", "y"]}, scope_claim="scp").scopes == {"x", "y"}
    assert refused(BASE | {"scope": 7}) == "malformed_claim"


@pytest.mark.parametrize("sub", [None, "", 42, ["alice"], True])
def test_sub_must_be_a_non_empty_string(sub: Any) -> None:
    payload = BASE | {"sub": sub}
    if sub is None:
        del payload["sub"]
    assert refused(payload) == "bad_subject"


def test_claims_are_checked_only_after_the_signature() -> None:
    data = signed(BASE | {"exp": NOW - 3600})
    header, payload, sig = data.split(b".")
    tampered = header + b"." + payload + b"." + sig[:-2] + (b"AA" if sig[-2:] != b"AA" else b"BA")
    with pytest.raises(TokenError) as caught:
        verifier().verify(tampered, keys(), NOW)
    assert caught.value.reason == "bad_signature"


def test_verify_order_structure_then_alg_then_key() -> None:
    assert refused(BASE, algorithms=["RS256"]) == "alg_not_allowed"
    with pytest.raises(TokenError) as caught:
        verifier().verify(signed(BASE), KeySet(), NOW)
    assert caught.value.reason == "unknown_kid"


@pytest.mark.parametrize(
    "settings",
    [
        {"algorithms": []},
        {"algorithms": ["none"]},
        {"algorithms": ["ES256", "HS1"]},
        {"leeway": -1},
        {"leeway": float("inf")},
        {"roles_claim": ""},
        {"roles_claim": "a..b"},
        {"scope_claim": ".scope"},
    ],
)
def test_verifier_refuses_bad_settings(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        verifier(**settings)
