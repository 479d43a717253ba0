# The C twins of fastproxy.http.response.response_head_reference and
# fastproxy.http.forward.request_head_reference (see fastproxy/http/_speedups.c).

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
