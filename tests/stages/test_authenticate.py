"""The Authenticate stage with plain values: request heads from parse_head, key sources whose keys are set
directly or loaded by a fake loader, a fake clock. No sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Coroutine
from functools import cache
from typing import Any, TypeVar

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from fastproxy.http.errors import ProtocolError
from fastproxy.http.request import parse_head
from fastproxy.identity.apikeys import ApiKeyEntry, ApiKeyTable, digest
from fastproxy.identity.cache import TokenCache
from fastproxy.identity.jwk import KeySet, b64url_encode, hmac_key, parse_jwks
from fastproxy.identity.jws import Claims, Verifier
from fastproxy.identity.keysource import KeySource
from fastproxy.identity.mint import mint, public_jwk
from fastproxy.policy import Decision, Rejection, RequestContext, Stage, caller_key, run_stages
from fastproxy.stages.authenticate import Authenticate, Identity, JwtIssuer

T = TypeVar("T")

ISS = "https://idp.example.com/"
OTHER_ISS = "https://other.example.com/"
NOW = 1_700_000_000.0  # well in the past: a path that read the real clock would see expired tokens
CHALLENGE = 'Bearer realm="fastproxy"'
INVALID_CHALLENGE = 'Bearer realm="fastproxy", error="invalid_token"'
API_KEY = b"ci-bot-key-0123456789"
OPS_KEY = b"ops-key-9876543210"
HS_SECRET = b"0123456789abcdef0123456789abcdef-hs"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@cache
def pem(kind: str) -> bytes:
    if kind.startswith("rsa"):
        return _pem(rsa.generate_private_key(65537, 2048))
    if kind.startswith("ec"):
        return _pem(ec.generate_private_key(ec.SECP256R1()))
    return _pem(ed25519.Ed25519PrivateKey.generate())


def jwks(*keys: tuple[str, str] | tuple[str, str, str]) -> bytes:
    """A JWK Set document of the public halves of (key kind, kid[, alg]) tuples."""
    return orjson.dumps({"keys": [public_jwk(pem(key[0]), *key[1:]) for key in keys]})


@cache  # a KeySet is never changed, only replaced; parsing RSA keys (ROCA check included) is not free
def keyset(*keys: tuple[str, str] | tuple[str, str, str]) -> KeySet:
    return parse_jwks(jwks(*keys))[0]


def token(
    kind: str = "rsa",
    kid: str | None = "k1",
    *,
    sub: str = "alice",
    roles: tuple[str, ...] = ("reader",),
    scope: str | None = "orders:read",
    iss: str = ISS,
    aud: str = "orders",
    ttl: float = 3600,
    now: float = NOW,
    alg: str | None = None,
) -> bytes:
    return mint(
        pem(kind), sub=sub, roles=roles, scope=scope, ttl=ttl, aud=aud, iss=iss, now=now, kid=kid, alg=alg
    )


def hs256(payload: dict[str, Any], secret: bytes = HS_SECRET, kid: str | None = None) -> bytes:
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = b64url_encode(orjson.dumps(header)) + b"." + b64url_encode(orjson.dumps(payload))
    return signing_input + b"." + b64url_encode(hmac.new(secret, signing_input, hashlib.sha256).digest())


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Loader:
    """A key source's loader: answers the documents in turn (the last one again and again)."""

    def __init__(self, *documents: bytes | Exception, gate: asyncio.Event | None = None) -> None:
        self.documents = list(documents)
        self.calls = 0
        self.gate = gate

    async def __call__(self) -> bytes:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        document = self.documents[min(self.calls, len(self.documents)) - 1]
        if isinstance(document, Exception):
            raise document
        return document


class CountingVerifier(Verifier):
    """A Verifier that counts its signature verifications."""

    count = 0

    def verify(self, token: bytes, keys: KeySet, now: float) -> Claims:
        self.count += 1
        return super().verify(token, keys, now)


def source(
    keys: KeySet | None,
    loader: Loader | None = None,
    clock: Clock | None = None,
    name: str = "corp",
) -> KeySource[KeySet]:
    load = loader if loader is not None else Loader(OSError("no load expected"))
    found: KeySource[KeySet] = KeySource(
        name, load, parse_jwks, refresh=600, clock=clock or Clock(), min_refetch_interval=30
    )
    found.keys = keys
    found.generation = 0 if keys is None else 1
    return found


def issuer(
    name: str = "corp",
    keys: KeySet | str | None = "default",
    *,
    iss: str = ISS,
    audience: tuple[str, ...] = ("orders",),
    algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA"),
    key_source: KeySource[KeySet] | None = None,
) -> JwtIssuer:
    verifier = CountingVerifier(issuer=iss, audience=audience, algorithms=algorithms, leeway=30)
    if key_source is None:
        key_source = source(keyset(("rsa", "k1")) if isinstance(keys, str) else keys, name=name)
    return JwtIssuer(name, verifier, key_source, TokenCache[Identity]())


def count(found: JwtIssuer) -> int:
    verifier = found.verifier
    assert isinstance(verifier, CountingVerifier)
    return verifier.count


API_KEYS = ApiKeyTable(
    [
        ApiKeyEntry("ci-bot", digest(API_KEY), ("reader",)),
        ApiKeyEntry("ops", digest(OPS_KEY), ("admin", "reader")),
    ]
)


def stage(
    *issuers: JwtIssuer,
    api_keys: ApiKeyTable | None = None,
    forward: bool = False,
    order: tuple[str, ...] | None = None,
    clock: Callable[[], float] | None = None,
) -> Authenticate:
    if order is None:
        order = ("jwt",) * bool(issuers) + ("api_key",) * (api_keys is not None)
    return Authenticate(issuers, api_keys, b"X-Api-Key", forward, order, clock or Clock())


def context(*headers: tuple[str, str | bytes], client_ip: str = "203.0.113.9") -> RequestContext:
    raw = [(b"Host", b"api.example.com")] + [
        (name.encode(), value if isinstance(value, bytes) else value.encode()) for name, value in headers
    ]
    # As a worker's parser does: the credentials taken out of the headers onto the head.
    head = parse_head("GET", b"/api/orders/7", "1.1", raw, True, 0, b"x-api-key")
    return RequestContext(head, client_ip, b"rid-1")


def bearer(value: bytes) -> tuple[str, bytes]:
    return ("Authorization", b"Bearer " + value)


def upstream(ctx: RequestContext) -> list[tuple[str, str]]:
    """What the upstream would receive of the client's headers and the stages' additions."""
    return [(n.decode().lower(), v.decode()) for n, v in [*ctx.head.headers, *ctx.upstream_headers]]


def named(ctx: RequestContext, name: str) -> list[str]:
    return [v for n, v in upstream(ctx) if n == name]


def settle(decision: Decision) -> Rejection | None:
    """A decision, awaited if it must be (the caller runs inside an event loop)."""
    assert decision is None or isinstance(decision, Rejection), f"unexpected awaitable {decision!r}"
    return decision


async def settle_async(decision: Decision) -> Rejection | None:
    if decision is None or isinstance(decision, Rejection):
        return decision
    assert isinstance(decision, Awaitable)
    return await decision


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def assert_no_credentials(decision: Decision) -> None:
    rejection = settle(decision)
    assert rejection is not None
    assert (rejection.status, rejection.reason) == (401, "no_credentials")
    assert rejection.headers == ((b"WWW-Authenticate", CHALLENGE.encode()),)


def assert_invalid(decision: Decision, reason: str) -> None:
    rejection = settle(decision)
    assert rejection is not None, f"accepted, expected {reason}"
    assert (rejection.status, rejection.reason) == (401, reason)
    assert rejection.headers == ((b"WWW-Authenticate", INVALID_CHALLENGE.encode()),)


def assert_admitted(ctx: RequestContext, subject: str, method: str, roles: tuple[str, ...]) -> None:
    assert (ctx.principal, ctx.auth, ctx.roles) == (subject, method, roles)
    assert ctx.caller == caller_key(method, subject)  # the per-principal rate-limit key
    assert ctx.upstream_headers[-3:] == [
        (b"X-Auth-Subject", subject.encode()),
        (b"X-Auth-Roles", ",".join(roles).encode()),
        (b"X-Auth-Method", method.encode()),
    ]


# -- no credential, and what is not one ------------------------------------------------------------


def test_no_credentials_is_a_challenge() -> None:
    ctx = context()
    assert_no_credentials(stage(issuer(), api_keys=API_KEYS).check(ctx))
    assert ctx.principal is None and ctx.upstream_headers == []


@pytest.mark.parametrize("value", ["Basic YWxpY2U6cHc=", "Digest username=alice", "Token abc", "Bearerabc"])
def test_another_authorization_scheme_is_no_credential_and_is_not_forwarded(value: str) -> None:
    ctx = context(("Authorization", value))
    assert_no_credentials(stage(issuer()).check(ctx))
    assert named(ctx, "authorization") == []


def test_an_api_key_on_a_jwt_only_route_is_no_credential_and_is_not_forwarded() -> None:
    ctx = context(("X-Api-Key", API_KEY))
    assert_no_credentials(stage(issuer()).check(ctx))
    assert named(ctx, "x-api-key") == []


def test_a_bearer_token_on_an_api_key_only_route_is_no_credential() -> None:
    ctx = context(bearer(token()))
    assert_no_credentials(stage(api_keys=API_KEYS).check(ctx))
    assert named(ctx, "authorization") == []


# -- bearer tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_a_valid_jwt_names_the_principal(scheme: str) -> None:
    ctx = context(("Authorization", scheme.encode() + b" " + token(roles=("reader", "auditor"))))
    found = issuer()
    assert stage(found).check(ctx) is None
    assert_admitted(ctx, "alice", "jwt:corp", ("reader", "auditor"))
    assert ctx.scopes == {"orders:read"}
    assert named(ctx, "authorization") == []
    assert count(found) == 1


@pytest.mark.parametrize(
    ("kind", "alg"),
    [("rsa", "RS256"), ("rsa", "PS256"), ("ec", "ES256"), ("ed", "EdDSA")],
)
def test_each_algorithm_family_is_accepted(kind: str, alg: str) -> None:
    found = issuer(keys=keyset((kind, "k1", alg)))
    ctx = context(bearer(token(kind, alg=alg)))
    assert stage(found).check(ctx) is None
    assert ctx.principal == "alice"


def test_an_hs256_issuer_with_a_secret() -> None:
    secret_source = source(KeySet([hmac_key(HS_SECRET)]))
    found = issuer(key_source=secret_source, algorithms=("HS256",))
    claims = {"iss": ISS, "aud": "orders", "sub": "svc", "roles": ["writer"], "exp": NOW + 60}
    ctx = context(bearer(hs256(claims)))
    assert stage(found).check(ctx) is None
    assert_admitted(ctx, "svc", "jwt:corp", ("writer",))
    assert_invalid(
        stage(found).check(context(bearer(hs256(claims, b"x" * 40)))), "invalid_token:bad_signature"
    )


def test_an_hs256_token_against_an_rs256_issuer_is_refused() -> None:
    # Algorithm confusion: the RSA public key's bytes used as an HMAC secret.
    public_pem = (
        serialization.load_pem_private_key(pem("rsa"), None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = {"iss": ISS, "aud": "orders", "sub": "mallory", "exp": NOW + 60}
    found = issuer(algorithms=("RS256",))
    assert_invalid(
        stage(found).check(context(bearer(hs256(claims, public_pem, "k1")))), "invalid_token:alg_not_allowed"
    )
    found = issuer(algorithms=("RS256", "HS256"))
    assert_invalid(
        stage(found).check(context(bearer(hs256(claims, public_pem, "k1")))), "invalid_token:key_alg_mismatch"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"Bearer not-a-jwt", "invalid_token:malformed"),
        (b"Bearer a.b", "invalid_token:malformed"),
        (b"Bearer ", "invalid_token:malformed"),
        (b"Bearer", "invalid_token:malformed"),
        (b"Bearer a.b.c d", "invalid_token:malformed"),
        (b"Bearer " + b"a" * 9000, "invalid_token:too_large"),
    ],
)
def test_a_malformed_bearer_token_is_invalid(value: bytes, reason: str) -> None:
    ctx = context(("Authorization", value))
    assert_invalid(stage(issuer(), api_keys=API_KEYS).check(ctx), reason)
    assert ctx.principal is None and ctx.upstream_headers == []
    assert named(ctx, "authorization") == []


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: token(now=NOW - 7200), "invalid_token:expired"),
        (lambda: token(aud="billing"), "invalid_token:bad_audience"),
        (lambda: token("ec", "k1"), "invalid_token:key_alg_mismatch"),
        (lambda: token(kid=None, alg="RS512"), "invalid_token:alg_not_allowed"),
        (lambda: token()[:-4] + b"AAAA", "invalid_token:bad_signature"),
    ],
)
def test_an_invalid_token_is_401_invalid_token_with_the_reason(
    make: Callable[[], bytes], reason: str
) -> None:
    ctx = context(bearer(make()))
    assert_invalid(stage(issuer()).check(ctx), reason)
    assert ctx.principal is None and ctx.upstream_headers == []


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", "Bearer a.b.c"), ("authorization", "Basic eA==")],
        [("X-Api-Key", "one"), ("x-api-key", "two")],
    ],
)
def test_a_repeated_credential_never_reaches_the_stage(headers: list[tuple[str, str]]) -> None:
    # The stage relies on the parser for this: one Authorization and one API key at most.
    with pytest.raises(ProtocolError) as info:
        context(*headers)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("sub", "roles"),
    [
        ("alice\r\nX-Evil: 1", ("reader",)),
        ("alice\x00", ("reader",)),
        (" admin", ("reader",)),
        ("admin\t", ("reader",)),
        ("alice", ("reader,admin",)),
        ("alice", ("reader\nX-Evil: 1",)),
        ("alice", ("del\x7f",)),
        ("alice", ("admin ",)),
    ],
)
def test_claims_that_would_not_fit_a_header_are_refused(sub: str, roles: tuple[str, ...]) -> None:
    ctx = context(bearer(token(sub=sub, roles=roles)))
    assert_invalid(stage(issuer()).check(ctx), "invalid_token:bad_claim")
    assert ctx.upstream_headers == []


def test_a_non_ascii_subject_is_sent_as_utf8() -> None:
    ctx = context(bearer(token(sub="zoë", roles=("lecteur",))))
    assert stage(issuer()).check(ctx) is None
    assert (b"X-Auth-Subject", "zoë".encode()) in ctx.upstream_headers


def test_the_clients_own_x_auth_headers_never_reach_the_upstream() -> None:
    ctx = context(
        ("X-Auth-Subject", "root"),
        ("X-Auth-Roles", "admin"),
        ("x-auth-method", "api_key:ops"),
        ("X-Auth-Other", "1"),
        bearer(token()),
    )
    assert stage(issuer()).check(ctx) is None
    assert named(ctx, "x-auth-subject") == ["alice"]
    assert named(ctx, "x-auth-roles") == ["reader"]
    assert named(ctx, "x-auth-method") == ["jwt:corp"]
    assert named(ctx, "x-auth-other") == []


def test_no_keys_yet_is_invalid_and_not_remembered() -> None:
    found = issuer(keys=None)
    tok = token()
    assert_invalid(stage(found).check(context(bearer(tok))), "invalid_token:no_keys")
    found.source.keys = keyset(("rsa", "k1"))
    found.source.generation = 1
    assert stage(found).check(context(bearer(tok))) is None


# -- API keys ---------------------------------------------------------------------------------------


def test_a_valid_api_key_names_its_id() -> None:
    ctx = context(("X-Api-Key", API_KEY))
    assert stage(api_keys=API_KEYS).check(ctx) is None
    assert_admitted(ctx, "ci-bot", "api_key:ci-bot", ("reader",))
    assert ctx.scopes == frozenset()
    assert named(ctx, "x-api-key") == []


def test_the_api_key_header_name_is_case_insensitive() -> None:
    ctx = context(("x-API-key", OPS_KEY))
    assert stage(api_keys=API_KEYS).check(ctx) is None
    assert_admitted(ctx, "ops", "api_key:ops", ("admin", "reader"))


@pytest.mark.parametrize("value", [b"", b"nope", API_KEY + b"x", API_KEY.upper()])
def test_an_unknown_api_key_is_invalid(value: bytes) -> None:
    ctx = context(("X-Api-Key", value))
    assert_invalid(stage(issuer(), api_keys=API_KEYS).check(ctx), "invalid_api_key")
    assert ctx.principal is None and ctx.upstream_headers == []


# -- two credentials -----------------------------------------------------------------------------------


def test_with_two_valid_credentials_the_first_listed_method_names_the_principal() -> None:
    headers = (bearer(token()), ("X-Api-Key", API_KEY))
    ctx = context(*headers)
    assert stage(issuer(), api_keys=API_KEYS, order=("jwt", "api_key")).check(ctx) is None
    assert_admitted(ctx, "alice", "jwt:corp", ("reader",))
    assert len(ctx.upstream_headers) == 3
    ctx = context(*headers)
    assert stage(issuer(), api_keys=API_KEYS, order=("api_key", "jwt")).check(ctx) is None
    assert_admitted(ctx, "ci-bot", "api_key:ci-bot", ("reader",))
    assert len(ctx.upstream_headers) == 3


def test_an_invalid_api_key_next_to_a_valid_token_is_rejected() -> None:
    ctx = context(bearer(token()), ("X-Api-Key", b"wrong"))
    assert_invalid(stage(issuer(), api_keys=API_KEYS).check(ctx), "invalid_api_key")
    assert ctx.principal is None


def test_an_invalid_token_next_to_a_valid_api_key_is_rejected() -> None:
    ctx = context(bearer(token(now=NOW - 7200)), ("X-Api-Key", API_KEY))
    assert_invalid(
        stage(issuer(), api_keys=API_KEYS, order=("api_key", "jwt")).check(ctx), "invalid_token:expired"
    )
    assert ctx.principal is None


# -- forwarding the credential --------------------------------------------------------------------------


def test_credentials_are_forwarded_once_with_forward_credentials() -> None:
    tok = token()
    ctx = context(bearer(tok), ("X-Api-Key", API_KEY), ("Accept", "application/json"))
    assert stage(issuer(), api_keys=API_KEYS, forward=True).check(ctx) is None
    assert named(ctx, "authorization") == ["Bearer " + tok.decode()]
    assert named(ctx, "x-api-key") == [API_KEY.decode()]
    assert named(ctx, "accept") == ["application/json"]


def test_credentials_are_removed_but_other_headers_kept() -> None:
    ctx = context(bearer(token()), ("X-Api-Key", API_KEY), ("Accept", "application/json"), ("X-Trace", "t"))
    assert stage(issuer(), api_keys=API_KEYS).check(ctx) is None
    assert [n for n, _ in upstream(ctx)] == [
        "host",
        "accept",
        "x-trace",
        "x-auth-subject",
        "x-auth-roles",
        "x-auth-method",
    ]


def test_a_shadow_route_goes_on_without_the_credential_it_rejected() -> None:
    ctx = context(bearer(b"forged.token.here"), ("X-Api-Key", b"wrong"))
    assert run_stages((stage(issuer(), api_keys=API_KEYS),), ctx, shadow=True) is None
    assert ctx.would_deny == "invalid_api_key"
    assert ctx.principal is None and ctx.upstream_headers == []
    assert named(ctx, "authorization") == [] and named(ctx, "x-api-key") == []


def test_a_shadow_route_with_forward_credentials_forwards_them_whatever_the_verdict() -> None:
    ctx = context(bearer(b"forged.token.here"))
    assert run_stages((stage(issuer(), forward=True),), ctx, shadow=True) is None
    assert ctx.would_deny == "invalid_token:malformed"
    assert named(ctx, "authorization") == ["Bearer forged.token.here"]
    assert ctx.principal is None


# -- the verified-token cache -----------------------------------------------------------------------------


def test_a_cached_token_is_verified_once() -> None:
    found = issuer()
    auth = stage(found)
    tok = token()
    for _ in range(3):
        ctx = context(bearer(tok))
        assert auth.check(ctx) is None
        assert_admitted(ctx, "alice", "jwt:corp", ("reader",))
    assert count(found) == 1
    assert (found.cache.hits, found.cache.misses) == (2, 1)


def test_a_cached_token_expires_with_its_exp_plus_leeway() -> None:
    clock = Clock()
    found = issuer()
    auth = stage(found, clock=clock)
    tok = token(ttl=60)
    assert auth.check(context(bearer(tok))) is None
    clock.now = NOW + 60 + 29
    assert auth.check(context(bearer(tok))) is None
    assert count(found) == 1
    clock.now = NOW + 60 + 30
    assert_invalid(auth.check(context(bearer(tok))), "invalid_token:expired")


def test_the_cache_is_flushed_when_the_keys_change() -> None:
    found = issuer()
    auth = stage(found)
    tok = token()
    assert auth.check(context(bearer(tok))) is None
    assert auth.check(context(bearer(tok))) is None
    assert count(found) == 1
    # The provider replaced k1: what the old k1 signed must stop authenticating at once.
    found.source.keys = keyset(("rsa-2", "k1"))
    found.source.generation += 1
    assert_invalid(auth.check(context(bearer(tok))), "invalid_token:bad_signature")
    assert count(found) == 2


def test_an_unchanged_generation_keeps_the_cache() -> None:
    found = issuer()
    auth = stage(found)
    tok = token()
    assert auth.check(context(bearer(tok))) is None
    found.source.keys = keyset(("rsa-2", "k1"))  # installed without a new generation: not seen
    assert auth.check(context(bearer(tok))) is None
    assert count(found) == 1


def test_an_invalid_token_is_remembered_briefly() -> None:
    clock = Clock()
    found = issuer()
    auth = stage(found, clock=clock)
    forged = token()[:-4] + b"AAAA"
    for _ in range(3):
        assert_invalid(auth.check(context(bearer(forged))), "invalid_token:bad_signature")
    assert count(found) == 1
    clock.now += found.cache.bad_ttl
    assert_invalid(auth.check(context(bearer(forged))), "invalid_token:bad_signature")
    assert count(found) == 2


def test_a_token_not_yet_valid_is_not_remembered_as_invalid() -> None:
    clock = Clock()
    found = issuer()
    auth = stage(found, clock=clock)
    early = token(now=NOW + 120)  # iat in the future, beyond the 30 s leeway
    assert_invalid(auth.check(context(bearer(early))), "invalid_token:issued_in_future")
    clock.now = NOW + 120
    assert auth.check(context(bearer(early))) is None
    assert count(found) == 2


# -- unknown kid: one shared, rate-limited refetch ---------------------------------------------------------


def test_an_unknown_kid_refetches_and_then_accepts() -> None:
    async def main() -> None:
        clock = Clock()
        loader = Loader(jwks(("rsa", "k1"), ("ec", "k2")))
        found = issuer(key_source=source(keyset(("rsa", "k1")), loader, clock))
        auth = stage(found)
        ctx = context(bearer(token("ec", "k2", sub="bob")))
        decision = auth.check(ctx)
        assert decision is not None and not isinstance(decision, Rejection)
        assert await settle_async(decision) is None
        assert_admitted(ctx, "bob", "jwt:corp", ("reader",))
        assert loader.calls == 1
        # Now known (and cached): no more fetching.
        ctx = context(bearer(token("ec", "k2", sub="bob")))
        assert auth.check(ctx) is None
        assert ctx.principal == "bob"
        # The old key still works.
        assert auth.check(context(bearer(token()))) is None
        assert loader.calls == 1

    run(main())


def test_the_refetch_uses_the_stages_clock() -> None:
    async def main() -> None:
        loader = Loader(jwks(("rsa", "k1"), ("ec", "k2")))
        found = issuer(key_source=source(keyset(("rsa", "k1")), loader))
        # Tokens of a moment long past are valid by this stage's clock, and must stay so after the refetch.
        ctx = context(bearer(token("ec", "k2", ttl=60)))
        assert await settle_async(stage(found, clock=Clock(NOW + 10)).check(ctx)) is None
        assert ctx.principal == "alice"

    run(main())


def test_an_unknown_kid_still_unknown_after_the_refetch_is_rejected() -> None:
    async def main() -> None:
        loader = Loader(jwks(("rsa", "k1")))
        found = issuer(key_source=source(keyset(("rsa", "k1")), loader))
        decision = stage(found).check(context(bearer(token("ec", "k9"))))
        assert not isinstance(decision, Rejection) and decision is not None
        rejection = await settle_async(decision)
        assert rejection is not None and rejection.reason == "invalid_token:unknown_kid"
        assert loader.calls == 1

    run(main())


def test_unknown_kids_cost_at_most_one_fetch_per_interval() -> None:
    async def main() -> None:
        clock = Clock()
        loader = Loader(jwks(("rsa", "k1")))
        found = issuer(key_source=source(keyset(("rsa", "k1")), loader, clock))
        auth = stage(found)
        first = await settle_async(auth.check(context(bearer(token("ec", "made-up-0")))))
        assert first is not None and first.reason == "invalid_token:unknown_kid"
        assert loader.calls == 1
        # Within the interval: refused at once, without waiting and without fetching.
        for n in range(1, 20):
            assert_invalid(
                auth.check(context(bearer(token("ec", f"made-up-{n}")))), "invalid_token:unknown_kid"
            )
        assert loader.calls == 1
        clock.now += 30
        decision = auth.check(context(bearer(token("ec", "made-up-20"))))
        assert not isinstance(decision, Rejection)
        await settle_async(decision)
        assert loader.calls == 2

    run(main())


def test_a_refused_refetch_rejects_even_a_kid_the_provider_now_has() -> None:
    async def main() -> None:
        clock = Clock()
        loader = Loader(jwks(("rsa", "k1")), jwks(("rsa", "k1"), ("ec", "k2")))
        found = issuer(key_source=source(keyset(("rsa", "k1")), loader, clock))
        auth = stage(found)
        await settle_async(auth.check(context(bearer(token("ec", "k0")))))
        assert loader.calls == 1
        # k2 exists at the provider now, but the last refetch was too recent.
        assert_invalid(auth.check(context(bearer(token("ec", "k2")))), "invalid_token:unknown_kid")
        clock.now += 31
        assert await settle_async(auth.check(context(bearer(token("ec", "k2"))))) is None
        assert loader.calls == 2

    run(main())


def test_concurrent_unknown_kids_share_one_fetch() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        loader = Loader(jwks(("rsa", "k1"), ("ec", "k2")), gate=gate)
        found = issuer(key_source=source(keyset(("rsa", "k1")), loader))
        auth = stage(found)
        contexts = [context(bearer(token("ec", "k2", sub=f"user{n}"))) for n in range(5)]
        decisions = [auth.check(ctx) for ctx in contexts]
        assert all(d is not None and not isinstance(d, Rejection) for d in decisions)
        gate.set()
        results = await asyncio.gather(*(settle_async(d) for d in decisions))
        assert results == [None] * 5
        assert [ctx.principal for ctx in contexts] == [f"user{n}" for n in range(5)]
        assert loader.calls == 1

    run(main())


def test_provider_down_old_keys_still_work() -> None:
    async def main() -> None:
        loader = Loader(OSError("connection refused"))
        found = issuer(key_source=source(keyset(("rsa", "k1")), loader))
        auth = stage(found)
        rejection = await settle_async(auth.check(context(bearer(token("ec", "k2")))))
        assert rejection is not None and rejection.reason == "invalid_token:unknown_kid"
        assert loader.calls == 1
        assert auth.check(context(bearer(token()))) is None

    run(main())


def test_an_unknown_kid_from_another_issuer_triggers_no_fetch() -> None:
    loader = Loader(jwks(("rsa", "k1")))
    found = issuer(key_source=source(keyset(("rsa", "k1")), loader))
    auth = stage(found)
    # Synchronous: no refetch, so no event loop is needed.
    assert_invalid(
        auth.check(context(bearer(token("ec", "their-kid", iss=OTHER_ISS)))), "invalid_token:bad_issuer"
    )
    assert loader.calls == 0


# -- several issuers ------------------------------------------------------------------------------------


def two_issuers() -> tuple[JwtIssuer, JwtIssuer]:
    corp = issuer("corp", keyset(("rsa", "k1")))
    partner = issuer("partner", keyset(("ec", "p1")), iss=OTHER_ISS)
    return corp, partner


def test_the_tokens_iss_selects_the_issuer() -> None:
    corp, partner = two_issuers()
    auth = stage(corp, partner)
    ctx = context(bearer(token()))
    assert auth.check(ctx) is None
    assert ctx.auth == "jwt:corp"
    ctx = context(bearer(token("ec", "p1", sub="pat", iss=OTHER_ISS)))
    assert auth.check(ctx) is None
    assert (ctx.principal, ctx.auth) == ("pat", "jwt:partner")
    assert (count(corp), count(partner)) == (1, 1)
    # A token goes to its iss's keys only: signed by the partner's key, it claims corp.
    assert_invalid(auth.check(context(bearer(token("ec", "k1")))), "invalid_token:key_alg_mismatch")
    assert (count(corp), count(partner)) == (2, 1)


def test_an_unknown_iss_is_bad_issuer() -> None:
    assert_invalid(
        stage(*two_issuers()).check(context(bearer(token(iss="https://evil/")))), "invalid_token:bad_issuer"
    )


def test_a_garbled_token_with_several_issuers_is_malformed() -> None:
    assert_invalid(stage(*two_issuers()).check(context(bearer(b"x.y.z"))), "invalid_token:malformed")


def test_with_several_issuers_a_cached_token_costs_no_verification() -> None:
    corp, partner = two_issuers()
    auth = stage(corp, partner)
    tok = token("ec", "p1", iss=OTHER_ISS)
    for _ in range(3):
        assert auth.check(context(bearer(tok))) is None
    assert count(partner) == 1
    assert (partner.cache.hits, partner.cache.misses) == (2, 1)
    assert (corp.cache.hits, corp.cache.misses) == (0, 0)


def test_with_several_issuers_new_keys_flush_the_cache_too() -> None:
    corp, partner = two_issuers()
    auth = stage(corp, partner)
    tok = token("ec", "p1", iss=OTHER_ISS)
    assert auth.check(context(bearer(tok))) is None
    partner.source.keys = keyset(("ec-2", "p1"))
    partner.source.generation += 1
    assert_invalid(auth.check(context(bearer(tok))), "invalid_token:bad_signature")


def test_an_unknown_kid_refetches_only_at_the_tokens_issuer() -> None:
    async def main() -> None:
        corp_loader = Loader(jwks(("rsa", "k1")))
        partner_loader = Loader(jwks(("ec", "p1"), ("ed", "p2")))
        corp = issuer("corp", key_source=source(keyset(("rsa", "k1")), corp_loader))
        partner = issuer("partner", iss=OTHER_ISS, key_source=source(keyset(("ec", "p1")), partner_loader))
        ctx = context(bearer(token("ed", "p2", iss=OTHER_ISS)))
        assert await settle_async(stage(corp, partner).check(ctx)) is None
        assert ctx.auth == "jwt:partner"
        assert (corp_loader.calls, partner_loader.calls) == (0, 1)

    run(main())


def test_issuers_sharing_an_iss_are_each_tried() -> None:
    # One provider, two configured audiences: any one suffices.
    orders = issuer("orders", keyset(("rsa", "k1")), audience=("orders",))
    billing = issuer("billing", keyset(("rsa", "k1")), audience=("billing",))
    auth = stage(orders, billing)
    ctx = context(bearer(token(aud="billing")))
    assert auth.check(ctx) is None
    assert ctx.auth == "jwt:billing"
    ctx = context(bearer(token(aud="orders")))
    assert auth.check(ctx) is None
    assert ctx.auth == "jwt:orders"
    # Neither: the first one's reason.
    assert_invalid(auth.check(context(bearer(token(aud="hr")))), "invalid_token:bad_audience")


def test_issuers_sharing_an_iss_after_a_refetch() -> None:
    async def main() -> None:
        loader = Loader(jwks(("rsa", "k1"), ("ec", "k2")))
        orders = issuer("orders", key_source=source(keyset(("rsa", "k1")), loader), audience=("orders",))
        billing = issuer("billing", keyset(("rsa", "k1"), ("ec", "k2")), audience=("billing",))
        ctx = context(bearer(token("ec", "k2", aud="billing")))
        assert await settle_async(stage(orders, billing).check(ctx)) is None
        assert ctx.auth == "jwt:billing"
        assert loader.calls == 1

    run(main())


# -- the stage as the policy chain runs it ------------------------------------------------------------


def test_run_stages_with_a_refetch_and_a_following_stage() -> None:
    class Seen:
        name = "seen"

        def __init__(self) -> None:
            self.principal: str | None = None

        def check(self, ctx: RequestContext) -> Decision:
            self.principal = ctx.principal
            return None

    async def main() -> None:
        loader = Loader(jwks(("rsa", "k1"), ("ec", "k2")))
        found = issuer(key_source=source(keyset(("rsa", "k1")), loader))
        seen = Seen()
        stages: tuple[Stage, ...] = (stage(found), seen)
        ctx = context(bearer(token("ec", "k2", sub="bob")))
        assert await settle_async(run_stages(stages, ctx, shadow=False)) is None
        assert seen.principal == "bob"

    run(main())
