"""The compile half of identity: ``[identity.*]`` checked once per load, into immutable specs.

The master compiles (so ``fastproxy check`` and a reload find every problem before a worker
starts); each worker turns an :class:`IssuerSpec` into a live :class:`KeySource` after fork.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from fastproxy.config.schema import ApiKeys, Identity, JwtIssuer
from fastproxy.http.request import HOP_BY_HOP
from fastproxy.identity.apikeys import ApiKeyEntry, ApiKeyTable
from fastproxy.identity.jwk import HMAC_KEY_BYTES, KeySet, VerifyKey, hmac_key, parse_jwks
from fastproxy.identity.jws import Verifier
from fastproxy.identity.keysource import (
    FetchError,
    KeySource,
    Loader,
    discovery_loader,
    file_loader,
    url_loader,
)

__all__ = ["CompiledIdentity", "IssuerSpec", "compile_identity", "prime_keys"]

log = logging.getLogger("fastproxy.identity")

# How long one fetch of a JWKS or discovery document may take.
FETCH_TIMEOUT = 5.0
# The largest JWKS document a file or provider may hand us (the loaders refuse more).
MAX_JWKS_BYTES = 1 << 20

AddError = Callable[[str, str], None]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# Headers the request parser removes or the proxy sets itself (see fastproxy.http.request): an API
# key sent in one of them would never reach the stage, or would be taken for something else.
_NOT_KEY_HEADERS = HOP_BY_HOP | {b"authorization", b"host", b"content-length", b"expect", b"x-request-id"}
_NOT_KEY_HEADER_PREFIXES = ("x-forwarded-", "x-auth-")


def _header_value_safe(text: str) -> bool:
    # Becomes part of an X-Auth-* header value: non-empty, no control character (no header
    # injection), no surrounding whitespace (an upstream would strip it).
    return bool(text) and text == text.strip(" \t") and all(ch >= " " and ch != "\x7f" for ch in text)


@dataclass(frozen=True, slots=True)
class IssuerSpec:
    name: str
    verifier: Verifier
    kind: str  # "file", "url", "discovery" or "secret"
    location: str  # the path, the URL, the issuer (discovery) or the environment variable
    refresh: float
    # HS*: the key, read from the environment at load; never in a repr (nor so in a log line).
    secret: bytes | None = field(default=None, repr=False)
    # The JWKS document the master loaded (see prime_keys); workers start with its keys.
    document: bytes | None = field(default=None, repr=False)

    def key_source(self) -> KeySource[KeySet]:
        """The live key source; made in the worker, after fork."""
        if self.kind == "secret":
            secret = self.secret
            assert secret is not None

            async def load_secret() -> bytes:
                return secret

            return KeySource(self.name, load_secret, _secret_keys, refresh=self.refresh)
        return KeySource(self.name, self.loader(), parse_jwks, refresh=self.refresh, initial=self.document)

    def loader(self) -> Loader:
        if self.kind == "file":
            return file_loader(self.location)
        if self.kind == "url":
            return url_loader(self.location, FETCH_TIMEOUT)
        assert self.kind == "discovery"
        return discovery_loader(self.location, FETCH_TIMEOUT)


class _SecretKeySet(KeySet):
    """The one key of an issuer configured with a secret, whatever ``kid`` a token names.

    A configured secret has no kid to match, and HS* issuers often put one in their tokens; with a
    single key there is nothing for a kid to choose between (the signature still has to verify).
    """

    __slots__ = ()

    def find(self, kid: str | None, alg: str) -> VerifyKey | None:
        return super().find(None, alg)


def _secret_keys(secret: bytes) -> tuple[KeySet, list[str]]:
    return _SecretKeySet([hmac_key(secret)]), []


@dataclass(frozen=True, slots=True)
class CompiledIdentity:
    issuers: Mapping[str, IssuerSpec]
    api_keys: ApiKeyTable | None
    api_key_header: bytes


def compile_identity(identity: Identity, add_error: AddError) -> CompiledIdentity:
    issuers = {}
    for name, settings in identity.jwt.items():
        spec = _compile_issuer(name, settings, add_error)
        if spec is not None:
            issuers[name] = spec
    api_keys: ApiKeyTable | None = None
    header = b"x-api-key"
    if identity.api_keys is not None:
        api_keys = _compile_api_keys(identity.api_keys, add_error)
        header = identity.api_keys.header.lower().encode()
    return CompiledIdentity(MappingProxyType(issuers), api_keys, header)


def _compile_issuer(name: str, settings: JwtIssuer, add_error: AddError) -> IssuerSpec | None:
    key = f"identity.jwt.{name}"
    ok = True
    if not _TOKEN.fullmatch(name):
        # The name goes upstream in X-Auth-Method ("jwt:NAME").
        add_error(key, f"an issuer name is letters, digits and !#$%&'*+.^_`|~- only, got {name!r}")
        ok = False
    if not settings.issuer:
        add_error(f"{key}.issuer", "must not be empty")
        ok = False
    if not settings.algorithms:
        add_error(f"{key}.algorithms", "name at least one algorithm")
        ok = False
    hs = [alg for alg in settings.algorithms if alg.startswith("HS")]
    if hs and settings.secret_env is None:
        add_error(f"{key}.algorithms", f"{', '.join(hs)} needs secret_env")
        return None
    if settings.secret_env is not None and len(hs) != len(settings.algorithms):
        # Never a secret and public keys under one issuer: that is algorithm confusion's door.
        others = ", ".join(alg for alg in settings.algorithms if not alg.startswith("HS"))
        add_error(f"{key}.algorithms", f"an issuer with secret_env takes HS* algorithms only (has {others})")
        return None

    sources = [
        label
        for label, given in (
            ("jwks_file", settings.jwks_file is not None),
            ("jwks_url", settings.jwks_url is not None),
            ("discovery", settings.discovery),
            ("secret_env", settings.secret_env is not None),
        )
        if given
    ]
    if len(sources) != 1:
        add_error(
            key,
            "needs exactly one key source: jwks_file, jwks_url, discovery = true or secret_env"
            + (f" (has {', '.join(sources)})" if sources else ""),
        )
        return None
    secret: bytes | None = None
    if settings.jwks_file is not None:
        kind, location = "file", settings.jwks_file
        ok = _check_jwks_file(location, f"{key}.jwks_file", add_error) and ok
    elif settings.jwks_url is not None:
        kind, location = "url", settings.jwks_url
        ok = _check_url(location, f"{key}.jwks_url", add_error) and ok
    elif settings.discovery:
        kind, location = "discovery", settings.issuer
        ok = _check_url(location, f"{key}.issuer", add_error) and ok
    else:
        assert settings.secret_env is not None
        kind, location = "secret", settings.secret_env
        value = os.environ.get(settings.secret_env) if settings.secret_env else None
        need = max(HMAC_KEY_BYTES[alg] for alg in hs)
        # The variable's bytes as the environment holds them (UTF-8 text gives its UTF-8 bytes;
        # str.encode() would raise on bytes that are not UTF-8).
        raw = os.fsencode(value) if value is not None else None
        if raw is None:
            add_error(f"{key}.secret_env", f"environment variable {settings.secret_env!r} is not set")
            ok = False
        elif len(raw) < need:
            # The length only: never the secret.
            add_error(
                f"{key}.secret_env",
                f"{settings.secret_env} holds {len(raw)} bytes; {', '.join(hs)} needs at least {need}",
            )
            ok = False
        else:
            secret = raw
    if not ok:
        return None
    for claim in ("roles_claim", "scope_claim"):
        path = getattr(settings, claim)
        if not path or "" in path.split("."):
            add_error(f"{key}.{claim}", f"not a dotted claim path: {path!r}")
            ok = False
    if not math.isfinite(settings.leeway):
        add_error(f"{key}.leeway", "must be a finite number of seconds")
        ok = False
    if not ok:
        return None
    try:
        verifier = Verifier(
            issuer=settings.issuer,
            audience=tuple(settings.audience),
            algorithms=tuple(settings.algorithms),
            leeway=settings.leeway,
            roles_claim=settings.roles_claim,
            scope_claim=settings.scope_claim,
        )
    except ValueError as exc:  # what the checks above missed, rather than a traceback
        add_error(key, str(exc))
        return None
    return IssuerSpec(name, verifier, kind, location, settings.jwks_refresh, secret)


def _check_url(url: str, key: str, add_error: AddError) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a port out of range or not a number
    except ValueError as exc:
        add_error(key, f"not a URL ({exc}): {url!r}")
        return False
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        add_error(key, f"expected an http:// or https:// URL, got {url!r}")
        return False
    if any(ch <= " " or ch == "\x7f" for ch in url) or not url.isascii():
        add_error(key, f"a URL without spaces, control or non-ASCII characters, got {url!r}")
        return False
    return True


def _check_jwks_file(path: str, key: str, add_error: AddError) -> bool:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        add_error(key, f"cannot read {path}: {exc.strerror}")
        return False
    if len(data) > MAX_JWKS_BYTES:
        add_error(key, f"{path}: over {MAX_JWKS_BYTES} bytes")
        return False
    try:
        keys, _skipped = parse_jwks(data)
    except ValueError as exc:
        add_error(key, f"{path}: {exc}")
        return False
    if not len(keys):
        add_error(key, f"{path}: no usable key")
        return False
    return True


def _compile_api_keys(settings: ApiKeys, add_error: AddError) -> ApiKeyTable | None:
    if not _TOKEN.fullmatch(settings.header):
        add_error("identity.api_keys.header", f"not a header name: {settings.header!r}")
        return None
    lname = settings.header.lower()
    if lname.encode() in _NOT_KEY_HEADERS or lname.startswith(_NOT_KEY_HEADER_PREFIXES):
        add_error("identity.api_keys.header", f"{settings.header} cannot carry API keys")
        return None
    ok = True
    for index, entry in enumerate(settings.keys):
        # The id and roles go upstream in X-Auth-Subject, X-Auth-Method and X-Auth-Roles.
        if not _header_value_safe(entry.id):
            add_error(
                f"identity.api_keys.keys[{index}].id",
                f"not empty, no control characters, no surrounding spaces: {entry.id!r}",
            )
            ok = False
        for role in entry.roles:
            if "," in role or not _header_value_safe(role):
                add_error(
                    f"identity.api_keys.keys[{index}].roles",
                    f"a role is not empty and has no comma, control characters or surrounding spaces: "
                    f"{role!r}",
                )
                ok = False
    if not ok:
        return None
    try:
        return ApiKeyTable(
            ApiKeyEntry(entry.id, bytes.fromhex(entry.sha256), tuple(entry.roles)) for entry in settings.keys
        )
    except ValueError as exc:
        add_error("identity.api_keys.keys", str(exc))
        return None


def prime_keys(
    identity: CompiledIdentity, used: Collection[str], previous: CompiledIdentity | None = None
) -> CompiledIdentity:
    """``identity`` with each used issuer's JWKS document loaded now, for workers to start with.

    The master calls this at start and on every reload, before it forks: workers then hold keys
    from their first request, and a reload while an identity provider is down keeps the keys the
    running configuration had for the same source (the old workers' keys are not lost with
    them). A document that cannot be loaded is logged and left to the workers, which keep trying.
    This blocks the master for at most one fetch timeout (two for discovery), all issuers at once.
    """
    wanted = [spec for name, spec in identity.issuers.items() if name in used and spec.kind != "secret"]
    if not wanted:
        return identity
    loaded = asyncio.run(_load_all(wanted))
    issuers = dict(identity.issuers)
    for spec, (document, why) in zip(wanted, loaded, strict=True):
        if document is None:
            kept = _previous_document(spec, previous)
            log.warning(
                "issuer %s: cannot load keys at start: %s; %s",
                spec.name,
                why,
                "keeping the keys of the running configuration" if kept else "the workers will keep trying",
            )
            document = kept
        if document is not None:
            issuers[spec.name] = dataclasses.replace(spec, document=document)
    return dataclasses.replace(identity, issuers=MappingProxyType(issuers))


async def _load_all(specs: list[IssuerSpec]) -> list[tuple[bytes | None, str]]:
    return list(await asyncio.gather(*(_load_one(spec) for spec in specs)))


async def _load_one(spec: IssuerSpec) -> tuple[bytes | None, str]:
    try:
        document = await spec.loader()()
        keys, skipped = parse_jwks(document)
    except (FetchError, OSError, ValueError) as exc:
        return None, str(exc)
    for line in skipped:
        log.warning("issuer %s: %s", spec.name, line)
    if not len(keys):
        return None, "no usable key"
    return document, ""


def _previous_document(spec: IssuerSpec, previous: CompiledIdentity | None) -> bytes | None:
    if previous is None:
        return None
    old = previous.issuers.get(spec.name)
    if old is None or (old.kind, old.location) != (spec.kind, spec.location):
        return None
    return old.document
