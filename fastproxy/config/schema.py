"""The configuration schema: every setting declared once.

Each field below is the single declaration of a setting: its TOML key (the field name under its
section), its type and bounds, its default and its help text. Fields marked ``CLI`` are also
command-line flags of ``fastproxy run``; :mod:`fastproxy.config.settings` derives the flags, and the
README's reference table is generated from the same fields, so nothing is repeated by hand.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "ApiKey",
    "ApiKeys",
    "AuditSettings",
    "FileConfig",
    "Identity",
    "JwtIssuer",
    "LimitsSettings",
    "Mask",
    "RateLimit",
    "RouteSettings",
    "ServerSettings",
    "UpstreamSettings",
]

# Marks a field that is also a flag of `fastproxy run`.
CLI: dict[str, Any] = {"cli": True}

PositiveInt = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(gt=0)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
# "none" is not among them, in any spelling; HS* needs secret_env (checked at load).
JwsAlgorithm = Literal[
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "HS256",
    "HS384",
    "HS512",
]
RateLimitKey = Annotated[
    str, Meta(pattern=r"^(principal|ip|api_key|route|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+)$")
]


class ServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: Annotated[
        list[str], Meta(description="address to serve on, HOST:PORT (repeatable)", extra=CLI)
    ] = msgspec.field(default_factory=lambda: ["127.0.0.1:8080"])
    workers: Annotated[
        Annotated[int, Meta(ge=1, le=512)] | None,
        Meta(description="worker processes (default: CPU count)", extra=CLI),
    ] = None
    admin_listen: Annotated[str, Meta(description='admin listener HOST:PORT, or "off"', extra=CLI)] = (
        "127.0.0.1:9901"
    )
    trusted_proxies: Annotated[list[str], Meta(description="CIDRs whose X-Forwarded-For is believed")] = (
        msgspec.field(default_factory=list)
    )
    graceful_timeout: Annotated[
        Seconds, Meta(description="seconds to finish in-flight requests on stop", extra=CLI)
    ] = 30.0
    max_connections: Annotated[PositiveInt, Meta(description="client connections per worker", extra=CLI)] = (
        10000
    )
    worker_timeout: Annotated[
        Seconds,
        Meta(description="seconds without a heartbeat before a worker is replaced", extra=CLI),
    ] = 30.0
    ratelimit_slots: Annotated[
        int, Meta(ge=1, le=2**32, description="rate-limit table size (slots, 16 bytes each)", extra=CLI)
    ] = 1048576
    tls_cert: Annotated[str | None, Meta(description="PEM certificate chain", extra=CLI)] = None
    tls_key: Annotated[str | None, Meta(description="PEM private key", extra=CLI)] = None
    log_level: Annotated[LogLevel, Meta(description="log verbosity", extra=CLI)] = "info"
    pid_file: Annotated[str | None, Meta(description="write the master's pid here", extra=CLI)] = None


class LimitsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_header_bytes: Annotated[
        PositiveInt, Meta(description="request line plus headers, bytes (431)", extra=CLI)
    ] = 32768
    max_headers: Annotated[PositiveInt, Meta(description="header fields (431)", extra=CLI)] = 100
    max_url_bytes: Annotated[PositiveInt, Meta(description="request target, bytes (414)", extra=CLI)] = 8192
    max_body_bytes: Annotated[
        Annotated[int, Meta(ge=0)], Meta(description="request body, bytes (413)", extra=CLI)
    ] = 1048576
    header_timeout: Annotated[
        Seconds, Meta(description="seconds to receive a request's headers (408)", extra=CLI)
    ] = 10.0
    body_timeout: Annotated[
        Seconds, Meta(description="seconds allowed between body reads (408)", extra=CLI)
    ] = 15.0
    keepalive_timeout: Annotated[
        Seconds, Meta(description="seconds an idle client connection is kept", extra=CLI)
    ] = 60.0


class UpstreamSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[upstreams.NAME]``; the ``--upstream-*`` flags set the defaults of all of them."""

    url: Annotated[str, Meta(description="http://HOST:PORT of the upstream")]
    pool_size: Annotated[
        PositiveInt, Meta(description="idle keep-alive connections kept per worker", extra=CLI)
    ] = 128
    connect_timeout: Annotated[Seconds, Meta(description="seconds to connect (502)", extra=CLI)] = 5.0
    timeout: Annotated[
        Seconds,
        Meta(description="seconds to wait for the response head, or between reads (504)", extra=CLI),
    ] = 30.0
    idle_timeout: Annotated[
        Seconds, Meta(description="seconds an idle pooled connection is kept", extra=CLI)
    ] = 50.0


class JwtIssuer(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    issuer: str
    audience: list[str] = msgspec.field(default_factory=list)
    algorithms: list[JwsAlgorithm] = msgspec.field(default_factory=lambda: ["RS256"])
    jwks_file: str | None = None
    jwks_url: str | None = None
    discovery: bool = False
    jwks_refresh: Annotated[float, Meta(gt=0)] = 600.0
    leeway: Annotated[float, Meta(ge=0)] = 30.0
    roles_claim: str = "roles"
    scope_claim: str = "scope"
    secret_env: str | None = None


class ApiKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: str
    sha256: Annotated[str, Meta(pattern="^[0-9a-fA-F]{64}$")]
    roles: list[str] = msgspec.field(default_factory=list)


class ApiKeys(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    header: str = "x-api-key"
    keys: list[ApiKey] = msgspec.field(default_factory=list)


class Identity(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    jwt: dict[str, JwtIssuer] = msgspec.field(default_factory=dict)
    api_keys: ApiKeys | None = None


class RateLimit(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    key: RateLimitKey
    rate: Annotated[float, Meta(gt=0)]
    per: Annotated[float, Meta(gt=0)] = 1.0
    burst: Annotated[int, Meta(ge=0)] = 0
    on_full: Literal["fail_open", "fail_closed"] = "fail_open"


class Mask(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    fields: list[str]
    replacement: Any = "***"
    exempt_roles: list[str] = msgspec.field(default_factory=list)
    max_bytes: Annotated[
        Annotated[int, Meta(ge=0)],
        Meta(description="largest response body masked, bytes; a larger one is unmaskable"),
    ] = 1048576
    on_unmaskable: Annotated[
        Literal["pass", "refuse"],
        Meta(
            description="a response that cannot be masked (not JSON, compressed, too large, invalid): "
            '"pass" it unchanged (the audit says why) or "refuse" it (502)'
        ),
    ] = "pass"


class RouteSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    path: str
    upstream: str
    methods: list[str] = msgspec.field(default_factory=list)
    public: bool = False
    identity: list[str] = msgspec.field(default_factory=list)
    roles_any: list[str] = msgspec.field(default_factory=list)
    scopes_all: list[str] = msgspec.field(default_factory=list)
    allow_ips: list[str] = msgspec.field(default_factory=list)
    deny_ips: list[str] = msgspec.field(default_factory=list)
    rate_limit: str | None = None
    mask: str | None = None
    mode: Literal["enforce", "shadow"] = "enforce"
    audit: Literal["fail_closed", "best_effort"] = "best_effort"
    forward_credentials: bool = False


class AuditSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: Annotated[str | None, Meta(description="audit log file (JSON lines)", extra=CLI)] = None
    batch_max: Annotated[PositiveInt, Meta(description="records per batch to the writer")] = 512
    flush_interval: Annotated[Seconds, Meta(description="seconds before a partial batch is sent")] = 0.05
    fsync: Annotated[bool, Meta(description="fdatasync each batch before acknowledging")] = True
    rotate_bytes: Annotated[PositiveInt, Meta(description="rotate the file at this size")] = 104857600


class FileConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole TOML file."""

    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    limits: LimitsSettings = msgspec.field(default_factory=LimitsSettings)
    upstreams: dict[str, UpstreamSettings] = msgspec.field(default_factory=dict)
    identity: Identity = msgspec.field(default_factory=Identity)
    rate_limits: dict[str, RateLimit] = msgspec.field(default_factory=dict)
    masks: dict[str, Mask] = msgspec.field(default_factory=dict)
    routes: list[RouteSettings] = msgspec.field(default_factory=list)
    audit: AuditSettings = msgspec.field(default_factory=AuditSettings)
