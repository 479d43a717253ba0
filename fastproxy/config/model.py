"""The compiled configuration: what workers run with, immutable, built once per (re)load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastproxy.config.schema import AuditSettings, FileConfig, LimitsSettings, ServerSettings
from fastproxy.net import Address, Network

if TYPE_CHECKING:
    from fastproxy.identity.issuers import CompiledIdentity
    from fastproxy.ratelimit.policy import RateLimitSpec
    from fastproxy.routing import Router

__all__ = ["Config", "Upstream"]


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    address: Address
    pool_size: int
    connect_timeout: float
    timeout: float
    idle_timeout: float


@dataclass(frozen=True, slots=True)
class Config:
    source: str | None  # the TOML file, None when run from flags alone
    server: ServerSettings
    limits: LimitsSettings
    audit: AuditSettings
    listen: tuple[Address, ...]
    admin: Address | None
    workers: int
    trusted_proxies: tuple[Network, ...]
    upstreams: Mapping[str, Upstream]
    router: Router
    identity: CompiledIdentity
    rate_limits: Mapping[str, RateLimitSpec]
    file: FileConfig
    warnings: tuple[str, ...] = ()

    def uses_rate_limits(self) -> bool:
        return any(route.settings.rate_limit is not None for route in self.router.routes)

    def jwt_issuers_used(self) -> frozenset[str]:
        """The ``[identity.jwt.*]`` names some route accepts (only those get live keys)."""
        return frozenset(
            ref[4:]
            for route in self.router.routes
            for ref in route.settings.identity
            if ref.startswith("jwt:")
        )
