"""Loading: TOML file + flags -> validated, compiled, immutable :class:`Config`.

Every problem found is collected, not just the first, so ``fastproxy check`` can print one line
per error, each naming the file and the key (``routes[2].upstream``) or the flag.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from types import MappingProxyType, UnionType
from typing import Any

import msgspec

from fastproxy.config.model import Config, Upstream
from fastproxy.config.schema import FileConfig, RouteSettings
from fastproxy.identity.issuers import compile_identity
from fastproxy.masking import CompiledMask, MaskConfigError, compile_mask
from fastproxy.net import Address, parse_address, parse_networks, parse_upstream_url
from fastproxy.ratelimit.policy import IDENTITY_KEYS, compile_rate_limits
from fastproxy.routing import Route, Router, check_method, compile_pattern
from fastproxy.server.tls import server_context

__all__ = ["ConfigError", "load_config"]

_UNSET = object()


class ConfigError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Errors:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{self.source}: {key}: {message}" if key else f"{self.source}: {message}")


def load_config(
    path: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    upstream_url: str | None = None,
) -> Config:
    """Read, validate and compile; raises :class:`ConfigError` with every problem found.

    ``overrides`` are flag values by section (see :func:`fastproxy.config.settings.flag_overrides`);
    they win over the file, except that ``upstreams.*`` flags are defaults an upstream's own key
    overrides. ``upstream_url`` (``--upstream``) stands in for a file: one public catch-all route.
    """
    overrides = overrides or {}
    source = path or "command line"
    errors = _Errors(source)
    warnings = []
    if path is not None and upstream_url is not None:
        raise ConfigError(
            ["--upstream: proxies without a config file; declare [upstreams.*] in the file instead"]
        )
    if path is not None:
        try:
            with open(path, "rb") as f:
                data: dict[str, Any] = tomllib.load(f)
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    elif upstream_url is not None:
        data = {
            "upstreams": {"default": {"url": upstream_url}},
            "routes": [{"name": "default", "path": "/*", "upstream": "default", "public": True}],
        }
        warnings.append(
            f"no config file: every path is proxied to {upstream_url} with no authentication or "
            "authorization (size limits, timeouts and request hygiene still apply)"
        )
    else:
        raise ConfigError(["give --config PATH or --upstream URL"])

    for section, values in overrides.items():
        if section == "upstreams.*":
            for table in (data.get("upstreams") or {}).values():
                if isinstance(table, dict):
                    for key, value in values.items():
                        table.setdefault(key, value)
        else:
            existing = data.setdefault(section, {})
            if isinstance(existing, dict):
                existing.update(values)

    decoded = _decode(FileConfig, data, "", errors)
    if errors.lines:
        raise ConfigError(errors.lines)
    assert isinstance(decoded, FileConfig)
    if path is not None:
        decoded = _resolve_paths(decoded, os.path.dirname(os.path.abspath(path)))
    config = _compile(decoded, path, errors, tuple(warnings))
    if errors.lines or config is None:
        raise ConfigError(errors.lines)
    return config


def _resolve_paths(file: FileConfig, base: str) -> FileConfig:
    """Relative paths in the file are relative to the file's own directory (flags: to the cwd)."""

    def resolve(value: str | None) -> str | None:
        return os.path.join(base, value) if value and not os.path.isabs(value) else value

    server = msgspec.structs.replace(
        file.server,
        pid_file=resolve(file.server.pid_file),
        tls_cert=resolve(file.server.tls_cert),
        tls_key=resolve(file.server.tls_key),
    )
    audit = msgspec.structs.replace(file.audit, path=resolve(file.audit.path))
    jwt = {
        name: msgspec.structs.replace(issuer, jwks_file=resolve(issuer.jwks_file))
        for name, issuer in file.identity.jwt.items()
    }
    identity = msgspec.structs.replace(file.identity, jwt=jwt)
    return msgspec.structs.replace(file, server=server, audit=audit, identity=identity)


# -- structure: decode each key on its own so every bad key is reported ---------------------------


def _bare(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _struct_of(tp: Any) -> type[msgspec.Struct] | None:
    tp = _bare(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    if isinstance(tp, UnionType) or typing.get_origin(tp) is typing.Union:
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        if len(members) == 1:
            return _struct_of(members[0])
    return None


def _join(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _decode(tp: Any, value: Any, where: str, errors: _Errors) -> Any:
    """``value`` converted to ``tp``; on error, records it and returns _UNSET."""
    struct = _struct_of(tp)
    bare = _bare(tp)
    origin = typing.get_origin(bare)
    if struct is not None and (value is not None or struct is bare):
        return _decode_struct(struct, value, where, errors)
    if origin is dict and _struct_of(typing.get_args(bare)[1]) is not None:
        if not isinstance(value, dict):
            errors.add(where, "expected a table of tables")
            return _UNSET
        item = typing.get_args(bare)[1]
        out = {k: _decode(item, v, _join(where, k), errors) for k, v in value.items()}
        return _UNSET if _UNSET in out.values() else out
    if origin is list and _struct_of(typing.get_args(bare)[0]) is not None:
        if not isinstance(value, list):
            errors.add(where, "expected an array of tables")
            return _UNSET
        item = typing.get_args(bare)[0]
        items = [_decode(item, v, _join(where, i), errors) for i, v in enumerate(value)]
        return _UNSET if _UNSET in items else items
    try:
        return msgspec.convert(value, tp)
    except msgspec.ValidationError as exc:
        message = str(exc)
        # msgspec appends " - at `$...`" for nested values; name the key our way instead.
        text, _, at = message.partition(" - at `$")
        errors.add(where + at.rstrip("`"), text)
        return _UNSET


def _decode_struct(struct: type[msgspec.Struct], value: Any, where: str, errors: _Errors) -> Any:
    if not isinstance(value, dict):
        errors.add(where, "expected a table")
        return _UNSET
    fields = {f.name: f for f in msgspec.structs.fields(struct)}
    ok = True
    for key in value:
        if key not in fields:
            errors.add(_join(where, key), "unknown key")
            ok = False
    kwargs = {}
    for name, field in fields.items():
        if name not in value:
            if field.required:
                errors.add(_join(where, name), "required key is missing")
                ok = False
            continue
        converted = _decode(field.type, value[name], _join(where, name), errors)
        if converted is _UNSET:
            ok = False
        else:
            kwargs[name] = converted
    return struct(**kwargs) if ok else _UNSET


# -- meaning: references, addresses, patterns -----------------------------------------------------


def _address(text: str, key: str, errors: _Errors) -> Address | None:
    try:
        return parse_address(text)
    except ValueError as exc:
        errors.add(key, str(exc))
        return None


def _compile(file: FileConfig, path: str | None, errors: _Errors, warnings: tuple[str, ...]) -> Config | None:
    server = file.server
    listen = tuple(
        a for i, t in enumerate(server.listen) if (a := _address(t, f"server.listen[{i}]", errors))
    )
    if not server.listen:
        errors.add("server.listen", "at least one address is needed")
    admin = (
        None if server.admin_listen == "off" else _address(server.admin_listen, "server.admin_listen", errors)
    )
    try:
        trusted = parse_networks(server.trusted_proxies)
    except ValueError as exc:
        errors.add("server.trusted_proxies", str(exc))
        trusted = ()
    if (server.tls_cert is None) != (server.tls_key is None):
        errors.add("server.tls_cert", "tls_cert and tls_key go together")
    if server.tls_cert is not None and server.tls_key is not None:
        try:
            server_context(server.tls_cert, server.tls_key)
        except ValueError as exc:
            errors.add("server.tls_cert", str(exc))

    identity = compile_identity(file.identity, errors.add)
    masks = {}
    for name, mask_settings in file.masks.items():
        try:
            masks[name] = compile_mask(name, mask_settings)
        except MaskConfigError as exc:
            for key, problem in exc.errors:
                errors.add(f"masks.{name}.{key}", problem)
    rate_limits = compile_rate_limits(
        file.rate_limits, identity.api_key_header if identity.api_keys is not None else None, errors.add
    )

    upstreams: dict[str, Upstream] = {}
    for name, upstream_settings in file.upstreams.items():
        try:
            address = parse_upstream_url(upstream_settings.url)
        except ValueError as exc:
            errors.add(f"upstreams.{name}.url", str(exc))
            continue
        upstreams[name] = Upstream(
            name,
            address,
            upstream_settings.pool_size,
            upstream_settings.connect_timeout,
            upstream_settings.timeout,
            upstream_settings.idle_timeout,
        )

    routes = []
    seen: set[str] = set()
    for index, settings in enumerate(file.routes):
        route = _compile_route(index, settings, file, upstreams, masks, errors)
        if settings.name in seen:
            errors.add(f"routes[{index}].name", f"route name {settings.name!r} is used twice")
        seen.add(settings.name)
        if route is not None:
            routes.append(route)
    if not file.routes:
        errors.add("routes", "no [[routes]]: every request would be a 404")

    if errors.lines:
        return None
    workers = server.workers or os.cpu_count() or 1
    return Config(
        source=os.path.abspath(path) if path else None,
        server=server,
        limits=file.limits,
        audit=file.audit,
        listen=listen,
        admin=admin,
        workers=workers,
        trusted_proxies=trusted,
        upstreams=MappingProxyType(upstreams),
        router=Router(tuple(routes)),
        identity=identity,
        rate_limits=rate_limits,
        file=file,
        warnings=warnings,
    )


def _compile_route(
    index: int,
    settings: RouteSettings,
    file: FileConfig,
    upstreams: Mapping[str, Upstream],
    masks: Mapping[str, CompiledMask],
    errors: _Errors,
) -> Route | None:
    key = f"routes[{index}]"
    ok = True
    try:
        exact, prefix = compile_pattern(settings.path)
    except ValueError as exc:
        errors.add(f"{key}.path", str(exc))
        ok = False
    for method in settings.methods:
        try:
            check_method(method)
        except ValueError as exc:
            errors.add(f"{key}.methods", str(exc))
            ok = False
    upstream = upstreams.get(settings.upstream)
    if upstream is None:
        if settings.upstream not in file.upstreams:
            errors.add(f"{key}.upstream", f"no [upstreams.{settings.upstream}]")
        ok = False
    if not settings.public and not settings.identity:
        errors.add(f"{key}.identity", "a route names its identity methods, or says public = true")
        ok = False
    if settings.public and settings.identity:
        errors.add(f"{key}.public", "a public route takes no identity")
        ok = False
    for ref in settings.identity:
        if ref == "api_key":
            if file.identity.api_keys is None:
                errors.add(f"{key}.identity", "api_key needs [identity.api_keys]")
                ok = False
        elif ref.startswith("jwt:"):
            if ref[4:] not in file.identity.jwt:
                errors.add(f"{key}.identity", f"no [identity.jwt.{ref[4:]}]")
                ok = False
        else:
            errors.add(f"{key}.identity", f"unknown identity method {ref!r} (jwt:NAME or api_key)")
            ok = False
    if settings.public and (settings.roles_any or settings.scopes_all):
        errors.add(f"{key}.public", "roles_any and scopes_all need a principal: not with public = true")
        ok = False
    if settings.forward_credentials and settings.public:
        errors.add(f"{key}.forward_credentials", "a public route forwards every header it is sent")
        ok = False
    if settings.audit == "fail_closed" and file.audit.path is None:
        errors.add(
            f"{key}.audit", "fail_closed needs [audit] path (or --audit-path): nothing would be audited"
        )
        ok = False
    if settings.rate_limit is not None:
        limit = file.rate_limits.get(settings.rate_limit)
        if limit is None:
            errors.add(f"{key}.rate_limit", f"no [rate_limits.{settings.rate_limit}]")
            ok = False
        elif limit.key in IDENTITY_KEYS and not settings.identity:
            errors.add(
                f"{key}.rate_limit",
                f"[rate_limits.{settings.rate_limit}] counts by {limit.key}: the route needs identity",
            )
            ok = False
    if settings.mask is not None and settings.mask not in file.masks:
        errors.add(f"{key}.mask", f"no [masks.{settings.mask}]")
        ok = False
    elif settings.mask is not None and settings.mask not in masks:
        ok = False  # the mask itself is wrong, and said so
    for name in ("allow_ips", "deny_ips"):
        try:
            parse_networks(getattr(settings, name))
        except ValueError as exc:
            errors.add(f"{key}.{name}", str(exc))
            ok = False
    if not ok:
        return None
    assert upstream is not None
    return Route(
        settings.name,
        frozenset(settings.methods),
        exact,
        prefix,
        upstream,
        settings,
        # A route with identity: its authentication stage forwards them when asked to.
        forward_credentials=settings.public,
        mask=masks.get(settings.mask) if settings.mask is not None else None,
    )
