"""RequestHead: one request's line and headers, as the parser hands them to the proxy.

A plain class compiled with mypyc (setup.py): the connection, the forwarder and the policy stages,
all compiled, read its fields as struct members instead of looking each name up on the type,
which under load -- caches cold for every request -- cost about 50 ns a read, 20-odd reads a
request. The C callbacks (``_speedups.RequestCallbacks``) and the Python reference
(:func:`fastproxy.http.request.parse_head_reference`) both build it with the positional order
below.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FIELDS", "RequestHead"]

# The order of the constructor's parameters, which the C callbacks pass positionally.
FIELDS: Final = (
    "method",
    "target",
    "path",
    "version",
    "headers",
    "keep_alive",
    "content_length",
    "chunked",
    "host",
    "request_id",
    "forwarded_for",
    "forwarded_proto",
    "expect_continue",
    "authorization",
    "api_key",
)

# Never shown by repr: a head that reaches a log line must not carry the credentials.
_HIDDEN: Final = frozenset({"authorization", "api_key"})


class RequestHead:
    """One request's line and headers, checked and stripped of what the proxy re-serializes."""

    __slots__ = (
        "api_key",
        "authorization",
        "chunked",
        "content_length",
        "expect_continue",
        "forwarded_for",
        "forwarded_proto",
        "headers",
        "host",
        "keep_alive",
        "method",
        "path",
        "request_id",
        "target",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: bytes,  # origin-form, as forwarded upstream
        path: str,  # target without the query, for routing
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        content_length: int | None = None,
        chunked: bool = False,
        host: bytes | None = None,
        request_id: bytes | None = None,  # the client's, when well-formed
        forwarded_for: bytes | None = None,
        forwarded_proto: bytes | None = None,
        expect_continue: bool = False,
        authorization: bytes | None = None,  # the client's Authorization, not in headers
        api_key: bytes | None = None,  # the configured API key header's value, not in headers
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.host = host
        self.request_id = request_id
        self.forwarded_for = forwarded_for
        self.forwarded_proto = forwarded_proto
        self.expect_continue = expect_continue
        self.authorization = authorization
        self.api_key = api_key

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def __repr__(self) -> str:
        fields = (
            f"{name}=<hidden>"
            if name in _HIDDEN and getattr(self, name) is not None
            else f"{name}={getattr(self, name)!r}"
            for name in FIELDS
        )
        return f"RequestHead({', '.join(fields)})"
