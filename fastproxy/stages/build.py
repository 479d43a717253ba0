"""Each route's stages, attached in the worker, where the key sources and token caches live.

The configuration is compiled in the master (:mod:`fastproxy.identity.issuers` checks every
issuer, key and CIDR); a worker makes the live half after fork — one key source and one token
cache per JWT issuer that some route uses — and attaches to each route the stages it asks for,
in this order: IP rules (before any signature is verified), authentication, roles, scopes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fastproxy.config.model import Config
from fastproxy.identity.cache import TokenCache
from fastproxy.identity.issuers import CompiledIdentity
from fastproxy.net import parse_networks
from fastproxy.policy import Stage
from fastproxy.routing import Route, Router
from fastproxy.stages.authenticate import Authenticate, Identity, JwtIssuer
from fastproxy.stages.authorize import IpRules, RequireRoles, RequireScopes
from fastproxy.stages.ratelimit import RateLimitStage

if TYPE_CHECKING:
    from fastproxy.ratelimit._gcra import Table

__all__ = ["PolicyRuntime"]

log = logging.getLogger("fastproxy.worker")


class PolicyRuntime:
    """The live policy state of one worker."""

    def __init__(self, config: Config, ratelimit_table: Table | None = None) -> None:
        identity = config.identity
        used = config.jwt_issuers_used()
        self.identity: CompiledIdentity = identity
        self.rate_limits = config.rate_limits
        self.ratelimit_table = ratelimit_table
        self.issuers: dict[str, JwtIssuer] = {
            name: JwtIssuer(name, spec.verifier, spec.key_source(), TokenCache[Identity]())
            for name, spec in identity.issuers.items()
            if name in used
        }
        self.router = Router(tuple(self._attach(route) for route in config.router.routes))
        self._starting: list[asyncio.Task[None]] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin loading every issuer's keys; serving does not wait for them (see keys_ready)."""
        for issuer in self.issuers.values():
            self._starting.append(loop.create_task(issuer.source.start(), name=f"keys-{issuer.name}"))

    def jwt_cache_counts(self) -> tuple[int, int]:
        """Verified-token cache hits and misses of this worker so far, all issuers together."""
        return (
            sum(issuer.cache.hits for issuer in self.issuers.values()),
            sum(issuer.cache.misses for issuer in self.issuers.values()),
        )

    def keys_ready(self) -> bool:
        return all(issuer.source.ready for issuer in self.issuers.values())

    def not_ready(self) -> list[str]:
        """The issuers without keys yet, with why, for /readyz."""
        return [
            f"jwt:{issuer.name}: {issuer.source.last_error or 'loading'}"
            for issuer in self.issuers.values()
            if not issuer.source.ready
        ]

    async def close(self) -> None:
        for task in self._starting:
            task.cancel()
        for issuer in self.issuers.values():
            await issuer.source.close()

    def _attach(self, route: Route) -> Route:
        settings = route.settings
        stages: list[Stage] = []
        if settings.allow_ips or settings.deny_ips:
            stages.append(IpRules(parse_networks(settings.allow_ips), parse_networks(settings.deny_ips)))
        if settings.identity:
            issuers = tuple(self.issuers[ref[4:]] for ref in settings.identity if ref.startswith("jwt:"))
            api_keys = self.identity.api_keys if "api_key" in settings.identity else None
            order = tuple("api_key" if ref == "api_key" else "jwt" for ref in settings.identity)
            stages.append(
                Authenticate(
                    issuers,
                    api_keys,
                    self.identity.api_key_header,
                    settings.forward_credentials,
                    order,
                )
            )
        if settings.roles_any:
            stages.append(RequireRoles(frozenset(settings.roles_any)))
        if settings.scopes_all:
            stages.append(RequireScopes(frozenset(settings.scopes_all)))
        if settings.rate_limit is not None:
            # Last: a request refused for who it is never spends anyone's budget.
            table = self.ratelimit_table
            if table is None:
                raise RuntimeError("a route has a rate limit but the master made no rate-limit table")
            stages.append(RateLimitStage(self.rate_limits[settings.rate_limit], table, route.name))
        return route.with_stages(tuple(stages))
