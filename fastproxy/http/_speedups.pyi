# The C twins of fastproxy.http.response.response_head_reference, .media_fields_reference,
# fastproxy.http.forward.request_head_reference, fastproxy.http.request.parse_head and
# fastproxy.http.request.RequestCallbacks (see fastproxy/http/_speedups.c).

from typing import Any, Protocol, final

from httptools import HttpRequestParser

class _Handler(Protocol):
    def on_request(self, head: Any, /) -> object: ...
    def on_body(self, chunk: bytes, /) -> object: ...
    def on_request_end(self) -> object: ...

class HeadError(ValueError):
    """parse_head's ProtocolError: args are (status, reason, detail)."""

    args: tuple[int, str, str]

def response_head(
    raw: bytes, request_id: bytes, status: int, is_head: bool, client_http11: bool, keep_alive: bool, /
) -> tuple[bytes, int, int, bool, bool]: ...
def media_fields(raw: bytes, /) -> tuple[bytes | None, bytes | None]: ...
def request_head(
    method: bytes | str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    forwarded_for: bytes,
    proto: bytes,
    request_id: bytes,
    extra: list[tuple[bytes, bytes]],
    chunked: bool,
    content_length: int,
    masked: bool,
    /,
) -> bytes: ...
def scan_request(
    method: str,
    url: bytes,
    version: str,
    raw_headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
    max_body_bytes: int,
    credential_header: bytes | None,
    /,
) -> tuple[
    bytes,  # target
    str,  # path
    list[tuple[bytes, bytes]],  # headers
    int | None,  # content_length
    bool,  # chunked
    bytes | None,  # host
    bytes | None,  # request_id
    bytes | None,  # forwarded_for
    bytes | None,  # forwarded_proto
    bool,  # expect_continue
    bytes | None,  # authorization
    bytes | None,  # api_key
]: ...

@final
class RequestCallbacks:
    """request.RequestCallbacks in C: llhttp's callbacks for one connection.

    ``head_class`` is RequestHead (called with parse_head's 15 arguments), ``error_class`` is
    ProtocolError (raised as ``error_class(status, reason, detail)``).
    """

    in_head: bool
    head_seen: int
    began: bool
    chunk: bytes | None  # the bytes being fed (see RequestParser.feed)
    parser: HttpRequestParser | None  # set by RequestParser after construction
    def __init__(
        self,
        handler: _Handler,
        max_url: int,
        max_headers: int,
        max_header_bytes: int,
        max_body: int,
        head_class: Any,
        error_class: type[BaseException],
        credential_header: bytes | None,
        /,
    ) -> None: ...
    def start(self, data: bytes, /) -> None: ...
    def finish(self, data: bytes, /) -> int: ...
    def on_message_begin(self) -> None: ...
    def on_url(self, url: bytes, /) -> None: ...
    def on_header(self, name: bytes, value: bytes, /) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes, /) -> None: ...
    def on_message_complete(self) -> None: ...
