"""compile_rate_limits, and the error lines load_config gives for rate limits it cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastproxy.config import ConfigError, load_config
from fastproxy.config.schema import RateLimit
from fastproxy.ratelimit import Limit
from fastproxy.ratelimit.policy import IDENTITY_KEYS, RateLimitSpec, compile_rate_limits

API_KEYS = """
[identity.api_keys]
header = "X-Service-Key"
keys = [{ id = "ci", sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }]
"""


def compile_all(
    settings: dict[str, RateLimit], api_key_header: bytes | None = None
) -> tuple[dict[str, RateLimitSpec], list[tuple[str, str]]]:
    errors: list[tuple[str, str]] = []
    specs = compile_rate_limits(settings, api_key_header, lambda key, message: errors.append((key, message)))
    return dict(specs), errors


def write(tmp_path: Path, limit: str, route: str = "public = true", extra: str = "") -> str:
    """A file with one limit ``l`` (its body) and one route ``r`` that names it."""
    path = tmp_path / "proxy.toml"
    path.write_text(
        f"""{extra}
[upstreams.api]
url = "http://127.0.0.1:9"

[rate_limits.l]
{limit}

[[routes]]
name = "r"
path = "/*"
upstream = "api"
rate_limit = "l"
{route}
"""
    )
    return str(path)


def errors_of(path: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.errors


# -- compiling ------------------------------------------------------------------------------------


def test_each_key_kind_compiles() -> None:
    specs, errors = compile_all(
        {
            "user": RateLimit(key="principal", rate=100, per=1.0, burst=20),
            "key": RateLimit(key="api_key", rate=3, on_full="fail_closed"),
            "ip": RateLimit(key="ip", rate=0.5, per=60),
            "route": RateLimit(key="route", rate=1000),
            "tenant": RateLimit(key="header:X-Tenant-Id", rate=10, burst=5),
        }
    )
    assert errors == []
    assert specs["user"] == RateLimitSpec("user", "principal", None, Limit(10_000_000, 20), True)
    assert specs["user"].shown_limit == b"21"
    # 1/3 s rounds up: never a hair more generous than configured.
    assert specs["key"] == RateLimitSpec("key", "api_key", None, Limit(333_333_334, 0), False)
    assert specs["ip"].limit == Limit(120_000_000_000, 0)
    assert specs["route"].key == "route"
    assert (specs["tenant"].key, specs["tenant"].header) == ("header", b"x-tenant-id")
    assert specs["tenant"].shown_limit == b"6"
    assert {"principal", "api_key"} == IDENTITY_KEYS


def test_a_spec_says_nothing_of_its_log_state() -> None:
    a, _ = compile_all({"l": RateLimit(key="ip", rate=1)})
    b, _ = compile_all({"l": RateLimit(key="ip", rate=1)})
    a["l"].full_log.logged = True
    assert a["l"] == b["l"]
    assert "full_log" not in repr(a["l"])
    assert a["l"].full_log is not b["l"].full_log


def test_every_bad_limit_is_reported_and_the_good_ones_kept() -> None:
    specs, errors = compile_all(
        {
            "a": RateLimit(key="header:Authorization", rate=1),
            "ok": RateLimit(key="ip", rate=1),
            "b": RateLimit(key="ip", rate=float("inf")),
            "c": RateLimit(key="ip", rate=1e-30),
        }
    )
    assert list(specs) == ["ok"]
    assert [key for key, _ in errors] == ["rate_limits.a.key", "rate_limits.b.rate", "rate_limits.c"]


# -- header keys the proxy cannot count by ----------------------------------------------------------

NOT_PASSED_ON = [
    "Connection",
    "keep-alive",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Content-Length",
    "Expect",
    "X-Request-Id",
    "X-Forwarded-For",
    "x-forwarded-proto",
    "X-Forwarded-Host",
    "X-Auth-Subject",
    "X-Auth-Roles",
    "x-auth-method",
    "X-Auth-Anything",
]


@pytest.mark.parametrize("name", NOT_PASSED_ON)
def test_a_header_key_the_proxy_takes_out_is_an_error(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f'key = "header:{name}"\nrate = 1')
    assert errors_of(path) == [
        f"{path}: rate_limits.l.key: {name} is not passed on by the proxy; use principal, api_key or ip"
    ]


@pytest.mark.parametrize("name", ["Authorization", "authorization", "Proxy-Authorization", "X-Service-Key"])
def test_a_header_key_on_a_credential_is_an_error(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f'key = "header:{name}"\nrate = 1', extra=API_KEYS)
    assert errors_of(path) == [
        f"{path}: rate_limits.l.key: {name} is a credential, which the proxy takes out of the request; "
        "count by api_key or principal"
    ]


def test_the_api_key_header_in_another_case_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, 'key = "header:x-SERVICE-key"\nrate = 1', extra=API_KEYS)
    assert len(errors_of(path)) == 1


@pytest.mark.parametrize("name", ["X-Service-Key", "Host", "X-Tenant", "User-Agent", "X-Forwarded"])
def test_other_header_keys_compile(tmp_path: Path, name: str) -> None:
    # Without [identity.api_keys] nothing takes X-Service-Key out of the request.
    config = load_config(write(tmp_path, f'key = "header:{name}"\nrate = 1'))
    assert config.rate_limits["l"].header == name.lower().encode()


@pytest.mark.parametrize("key", ["user", "header:", "header:X Y", "header:a:b", "IP", "ip "])
def test_an_unknown_key_kind_is_an_error(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f'key = "{key}"\nrate = 1')
    (error,) = errors_of(path)
    assert error.startswith(f"{path}: rate_limits.l.key: ")


# -- identity keys need identity --------------------------------------------------------------------


@pytest.mark.parametrize("key", ["principal", "api_key"])
def test_an_identity_key_on_a_public_route_is_an_error(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f'key = "{key}"\nrate = 1', extra=API_KEYS)
    assert errors_of(path) == [
        f"{path}: routes[0].rate_limit: [rate_limits.l] counts by {key}: the route needs identity"
    ]


@pytest.mark.parametrize("key", ["principal", "api_key"])
def test_an_identity_key_on_a_route_with_identity_compiles(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f'key = "{key}"\nrate = 1', route='identity = ["api_key"]', extra=API_KEYS)
    assert load_config(path).rate_limits["l"].key == key


@pytest.mark.parametrize("key", ["ip", "route", "header:X-Tenant"])
def test_other_keys_on_a_public_route_compile(tmp_path: Path, key: str) -> None:
    assert load_config(write(tmp_path, f'key = "{key}"\nrate = 1')).uses_rate_limits()


# -- numbers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("rate = 0", "rate_limits.l.rate: Expected `float` > 0.0"),
        ("rate = -5", "rate_limits.l.rate: Expected `float` > 0.0"),
        ("rate = nan", "rate_limits.l.rate: Expected `float` > 0.0"),
        ('rate = "10"', "rate_limits.l.rate: Expected `float`, got `str`"),
        ("rate = inf", "rate_limits.l.rate: must be a finite number"),
        ("rate = 1\nper = 0", "rate_limits.l.per: Expected `float` > 0.0"),
        ("rate = 1\nper = -1.5", "rate_limits.l.per: Expected `float` > 0.0"),
        ("rate = 1\nper = inf", "rate_limits.l.per: must be a finite number"),
        ("rate = 1\nburst = -1", "rate_limits.l.burst: Expected `int` >= 0"),
        ("rate = 1\nburst = 2.5", "rate_limits.l.burst: Expected `int`, got `float`"),
        ("", "rate_limits.l.rate: required key is missing"),
        ("rate = 1\non_full = 'drop'", "rate_limits.l.on_full: Invalid enum value 'drop'"),
        ("rate = 1\nwindow = 1", "rate_limits.l.window: unknown key"),
    ],
)
def test_bad_numbers_name_the_key(tmp_path: Path, body: str, error: str) -> None:
    path = write(tmp_path, f'key = "ip"\n{body}')
    (found,) = errors_of(path)
    assert found.startswith(f"{path}: {error}"), found
    assert "Fraction" not in found


@pytest.mark.parametrize(
    "body",
    [
        "rate = 1e-30",  # one request per 3e21 years
        "rate = 1\nper = 1e12",
        "rate = 1\nburst = 4611686018427387904",
        "rate = 1000\nburst = 9223372036854775807",
    ],
)
def test_a_bucket_longer_than_the_table_can_hold_is_an_error(tmp_path: Path, body: str) -> None:
    path = write(tmp_path, f'key = "ip"\n{body}')
    assert errors_of(path) == [
        f"{path}: rate_limits.l: per / rate (the interval) and (burst + 1) * per / rate (a full bucket) "
        "must be at most 2**62 ns, about 146 years"
    ]


@pytest.mark.parametrize(
    ("body", "interval_ns", "burst"),
    [
        ("rate = 1e300", 1, 0),  # faster than one per nanosecond: one per nanosecond
        ("rate = 1\nper = 4.6e9", 4_600_000_000_000_000_000, 0),  # 146 years
        ("rate = 7\nper = 0.001\nburst = 1000000", 142858, 1_000_000),
    ],
)
def test_extreme_but_usable_numbers_compile(tmp_path: Path, body: str, interval_ns: int, burst: int) -> None:
    limit = load_config(write(tmp_path, f'key = "ip"\n{body}')).rate_limits["l"].limit
    assert limit == Limit(interval_ns, burst)


# -- references ----------------------------------------------------------------------------------------


def test_an_unknown_limit_name_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(
        """
[upstreams.api]
url = "http://127.0.0.1:9"

[rate_limits.per-ip]
key = "ip"
rate = 1

[[routes]]
name = "a"
path = "/a"
upstream = "api"
public = true
rate_limit = "per-ip"

[[routes]]
name = "b"
path = "/b"
upstream = "api"
public = true
rate_limit = "per_ip"
"""
    )
    assert errors_of(str(path)) == [f"{path}: routes[1].rate_limit: no [rate_limits.per_ip]"]


def test_a_limit_no_route_names_compiles_but_needs_no_table(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(
        '[upstreams.api]\nurl = "http://127.0.0.1:9"\n[rate_limits.unused]\nkey = "ip"\nrate = 1\n'
        '[[routes]]\nname = "a"\npath = "/*"\nupstream = "api"\npublic = true\n'
    )
    config = load_config(str(path))
    assert list(config.rate_limits) == ["unused"]
    assert not config.uses_rate_limits()


def test_every_rate_limit_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(
        """
[upstreams.api]
url = "http://127.0.0.1:9"

[rate_limits.user]
key = "principal"
rate = 1

[rate_limits.auth]
key = "header:Authorization"
rate = 1

[rate_limits.fast]
key = "ip"
rate = inf

[[routes]]
name = "a"
path = "/a"
upstream = "api"
public = true
rate_limit = "user"

[[routes]]
name = "b"
path = "/b"
upstream = "api"
public = true
rate_limit = "missing"
"""
    )
    assert [line.split(": ")[1] for line in errors_of(str(path))] == [
        "rate_limits.auth.key",
        "rate_limits.fast.rate",
        "routes[0].rate_limit",
        "routes[1].rate_limit",
    ]


def test_more_slots_than_the_table_takes_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, 'key = "ip"\nrate = 1', extra="[server]\nratelimit_slots = 5000000000\n")
    (error,) = errors_of(path)
    assert error.startswith(f"{path}: server.ratelimit_slots: ")
