# The C twin of fastproxy.audit.record.RecordEncoder.request_reference (see fastproxy/audit/_encode.c).

from typing import Final

VERSION: Final[int]
RECORD_MAX: Final[int]

def request_record(
    now: int,
    boot: str,
    worker: int,
    seq: int,
    request_id: str | bytes,
    client_ip: str,
    method: str,
    path: str,
    route: str | None,
    principal: str | None,
    auth: str | None,
    decision: str,
    reason: str,
    mode: str,
    would_deny: str | None,
    status: int,
    upstream: str | None,
    latency_ms: float,
    bytes_in: int,
    bytes_out: int,
    masked: int,
    mask_skipped: str | None,
    /,
) -> bytes | None: ...  # None: a record left to the reference (a lone surrogate, one to cut, ...)
