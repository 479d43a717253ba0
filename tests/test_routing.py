"""Routing: first match by method and path; exact, prefix and catch-all patterns."""

from __future__ import annotations

import importlib
import sys

import pytest

from fastproxy.config.model import Upstream
from fastproxy.config.schema import RouteSettings
from fastproxy.net import Address
from fastproxy.routing import Route, Router, check_method, compile_pattern

UPSTREAM = Upstream("api", Address("127.0.0.1", 9000), 8, 5.0, 30.0, 50.0)


def route(
    name: str, path: str, methods: tuple[str, ...] = (), mode: str = "enforce", audit: str = "best_effort"
) -> Route:
    exact, prefix = compile_pattern(path)
    settings = RouteSettings(
        name=name, path=path, upstream="api", methods=list(methods), public=True, mode=mode, audit=audit
    )
    return Route(name, frozenset(methods), exact, prefix, UPSTREAM, settings)


def matched(router: Router, method: str, path: str) -> str | None:
    found = router.match(method, path)
    return None if found is None else found.name


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/x", ("/x", None)),
        ("/", ("/", None)),
        ("/x/", ("/x/", None)),
        ("/api/v1/orders", ("/api/v1/orders", None)),
        ("/x/*", (None, "/x")),
        ("/api/v1/*", (None, "/api/v1")),
        ("/*", (None, "")),
    ],
)
def test_compile_pattern(pattern: str, expected: tuple[str | None, str | None]) -> None:
    assert compile_pattern(pattern) == expected


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "x",
        "api/*",
        "*",
        "/x*",
        "/x/*/y",
        "/*/x",
        "/x/**",
        "/a*b",
        "/x?y=1",
        "/x#frag",
        "/x y",
        "/x\ty",
        "/\x00",
        "/caf\u00e9",
    ],
)
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"must|allowed only"):
        compile_pattern(pattern)


@pytest.mark.parametrize(
    ("path", "hit"),
    [
        ("/x", True),
        ("/x/", False),
        ("/x/y", False),
        ("/xy", False),
        ("/", False),
        ("/X", False),
    ],
)
def test_exact_pattern(path: str, hit: bool) -> None:
    assert route("r", "/x").matches("GET", path) is hit


@pytest.mark.parametrize(
    ("path", "hit"),
    [
        ("/x", True),
        ("/x/", True),
        ("/x/y", True),
        ("/x/y/z/", True),
        ("/x//y", True),
        ("/xy", False),
        ("/xy/z", False),
        ("/x.json", False),
        ("/x%2Fy", False),
        ("/", False),
        ("/a/x/y", False),
        ("/X/y", False),
    ],
)
def test_prefix_pattern(path: str, hit: bool) -> None:
    assert route("r", "/x/*").matches("GET", path) is hit


@pytest.mark.parametrize(
    ("path", "hit"),
    [
        ("/api/v1", True),
        ("/api/v1/orders", True),
        ("/api/v10", False),
        ("/api/v", False),
        ("/api", False),
    ],
)
def test_nested_prefix_pattern(path: str, hit: bool) -> None:
    assert route("r", "/api/v1/*").matches("GET", path) is hit


@pytest.mark.parametrize("path", ["/", "/x", "/x/y/z", "//", "/%2e"])
def test_catch_all_matches_every_path(path: str) -> None:
    assert route("r", "/*").matches("DELETE", path)


def test_methods() -> None:
    read = route("read", "/x/*", ("GET", "HEAD"))
    assert read.matches("GET", "/x/1")
    assert read.matches("HEAD", "/x/1")
    assert not read.matches("POST", "/x/1")
    assert not read.matches("get", "/x/1")
    anything = route("any", "/x/*")
    for method in ("GET", "POST", "PATCH", "PROPFIND"):
        assert anything.matches(method, "/x/1")


def test_first_match_wins() -> None:
    router = Router(
        (
            route("orders-read", "/api/orders/*", ("GET",)),
            route("orders-exact", "/api/orders"),
            route("orders-any", "/api/orders/*"),
            route("fallback", "/*"),
        )
    )
    assert matched(router, "GET", "/api/orders") == "orders-read"
    assert matched(router, "POST", "/api/orders") == "orders-exact"
    assert matched(router, "POST", "/api/orders/7") == "orders-any"
    assert matched(router, "GET", "/api/ordersx") == "fallback"
    assert matched(router, "GET", "/other") == "fallback"


def test_order_matters() -> None:
    wide_first = Router((route("all", "/*"), route("specific", "/x")))
    assert matched(wide_first, "GET", "/x") == "all"
    narrow_first = Router((route("specific", "/x"), route("all", "/*")))
    assert matched(narrow_first, "GET", "/x") == "specific"


def test_no_match_is_none() -> None:
    router = Router((route("a", "/a/*"), route("b", "/b", ("POST",))))
    assert matched(router, "GET", "/c") is None
    assert matched(router, "GET", "/b") is None
    assert matched(router, "GET", "/ab") is None
    assert matched(Router(()), "GET", "/") is None


def test_the_router_picks_the_first_route_that_matches() -> None:
    # Router.match inlines Route.matches (it is compiled, and runs for every request): the two
    # agree on every method and path of a grid made to hit each boundary.
    routes = (
        route("exact-get", "/a", ("GET",)),
        route("below-a", "/a/*", ("POST", "PUT")),
        route("exact-slash", "/b/"),
        route("below-bc", "/b/c/*"),
        route("root-exact", "/"),
        route("everything-delete", "/*", ("DELETE",)),
    )
    router = Router(routes)
    paths = ["/", "/a", "/a/", "/a/x", "/ab", "/b", "/b/", "/b/c", "/b/c/", "/b/cd", "/b/c/d/e", "/c", ""]
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        for path in paths:
            expected = next((r.name for r in routes if r.matches(method, path)), None)
            assert matched(router, method, path) == expected, (method, path)
    assert router.routes == routes


def test_with_stages_keeps_everything_else() -> None:
    base = route("r", "/x/*", ("GET",), mode="shadow")
    base = Route(
        base.name, base.methods, base.exact, base.prefix, base.upstream, base.settings,
        forward_credentials=True, mask=None,
    )  # fmt: skip
    stages = (object(),)
    staged = base.with_stages(stages)  # type: ignore[arg-type]
    assert staged is not base and staged.stages == stages and base.stages == ()
    names = ("name", "methods", "exact", "prefix", "upstream", "settings", "forward_credentials", "mask")
    derived = ("mode", "shadow", "audit_fail_closed", "upstream_name")
    assert all(getattr(staged, n) == getattr(base, n) for n in (*names, *derived))
    assert staged.shadow and staged.forward_credentials


def test_shadow_follows_the_route_mode() -> None:
    assert route("s", "/x", mode="shadow").shadow
    assert not route("e", "/x").shadow


def test_what_a_request_reads_is_taken_from_the_settings_and_the_upstream() -> None:
    assert route("c", "/x", audit="fail_closed").audit_fail_closed
    assert not route("b", "/x").audit_fail_closed
    assert route("c", "/x").upstream_name == UPSTREAM.name == "api"


@pytest.mark.parametrize("method", ["GET", "POST", "M-SEARCH", "PROPFIND", "X_Y"])
def test_good_methods(method: str) -> None:
    check_method(method)


@pytest.mark.parametrize(
    "method",
    [
        "get",
        "Get",
        "",
        "GE T",
        "GET\r\n",
        "G(ET)",
        "G\u00c9T",
        pytest.param(
            "GET\n",
        ),
    ],
)
def test_bad_methods(method: str) -> None:
    with pytest.raises(ValueError, match="method"):
        check_method(method)


def test_routing_can_be_imported_first() -> None:
    saved = {n: m for n, m in sys.modules.items() if n == "fastproxy" or n.startswith("fastproxy.")}
    try:
        for module in saved:
            del sys.modules[module]
        assert hasattr(importlib.import_module("fastproxy.routing"), "Router")
    finally:
        for name in [n for n in sys.modules if n == "fastproxy" or n.startswith("fastproxy.")]:
            del sys.modules[name]
        sys.modules.update(saved)
