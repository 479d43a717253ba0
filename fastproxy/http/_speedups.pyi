# The C twins of fastproxy.http.response.response_head_reference,
# fastproxy.http.forward.request_head_reference and fastproxy.http.request.parse_head
# (see fastproxy/http/_speedups.c).

class HeadError(ValueError):
    """parse_head's ProtocolError: args are (status, reason, detail)."""

    args: tuple[int, str, str]

def response_head(
    raw: bytes, request_id: bytes, status: int, is_head: bool, client_http11: bool, keep_alive: bool, /
) -> tuple[bytes, int, int, bool, bool]: ...
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
    /,
) -> bytes: ...
def scan_request(
    method: str,
    url: bytes,
    version: str,
    raw_headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
    max_body_bytes: int,
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
]: ...
