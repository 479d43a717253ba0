"""Running wrk and reading its report.

`parse_wrk_output` is pure (text in, figures out) so it can be tested with captured reports; the
functions that start wrk are kept apart from it.
"""

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# wrk prints times with the smallest unit that keeps the figure readable (us, ms, s, m, h).
_MS_PER_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)"

_REQUESTS_RE = re.compile(rf"^\s*([0-9]+) requests in {_TIME}", re.MULTILINE)
_RPS_RE = re.compile(r"^Requests/sec:\s*([0-9]+(?:\.[0-9]+)?)", re.MULTILINE)
_PERCENTILE_RE = re.compile(rf"^\s*([0-9]+(?:\.[0-9]+)?)%\s+{_TIME}\s*$", re.MULTILINE)
_SOCKET_ERRORS_RE = re.compile(
    r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)"
)
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses: ([0-9]+)")


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed a report that could not be read."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    requests_per_sec: float
    # Latency percentile (as printed, e.g. "99") -> milliseconds.
    latency_ms: dict[str, float]
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx_3xx: int = 0

    @property
    def p50_ms(self) -> float:
        return self.latency_ms["50"]

    @property
    def p99_ms(self) -> float:
        return self.latency_ms["99"]

    @property
    def errors(self) -> int:
        """Every failed exchange: a bad status or a socket error of any kind."""
        return self.non_2xx_3xx + sum(self.socket_errors.values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _to_ms(value: str, unit: str) -> float:
    # Rounded so that 0.69 ms stays 0.69 in the JSON instead of 0.6900000000000001.
    return round(float(value) * _MS_PER_UNIT[unit], 6)


def parse_wrk_output(text: str) -> WrkResult:
    """Read the report that `wrk --latency` prints on stdout.

    Raises WrkError when a figure the benchmark depends on is missing.
    """
    requests = _REQUESTS_RE.search(text)
    rps = _RPS_RE.search(text)
    if requests is None or rps is None:
        raise WrkError(f"no request count or Requests/sec in wrk output:\n{text}")
    # Only the "Latency Distribution" table has lines of the form "<percent>% <time>".
    latency_ms = {m.group(1): _to_ms(m.group(2), m.group(3)) for m in _PERCENTILE_RE.finditer(text)}
    if "50" not in latency_ms or "99" not in latency_ms:
        raise WrkError(f"no p50/p99 in wrk output (was --latency passed?):\n{text}")
    socket_errors: dict[str, int] = {}
    if (m := _SOCKET_ERRORS_RE.search(text)) is not None:
        socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
    non_2xx = _NON_2XX_RE.search(text)
    return WrkResult(
        requests=int(requests.group(1)),
        duration_s=_to_ms(requests.group(2), requests.group(3)) / 1000.0,
        requests_per_sec=float(rps.group(1)),
        latency_ms=latency_ms,
        socket_errors=socket_errors,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def wrk_path() -> str:
    """Path of the wrk binary; raises WrkError with a hint when it is not installed."""
    path = shutil.which("wrk")
    if path is None:
        raise WrkError(
            "wrk is not installed; it is the only supported load generator "
            "(Debian/Ubuntu: apt-get install -y wrk)"
        )
    return path


def wrk_version() -> str:
    # `wrk -v` prints its version line followed by the usage text and exits non-zero.
    proc = subprocess.run([wrk_path(), "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (proc.stdout or proc.stderr).splitlines()[:1]
    if not first:
        return "unknown"
    return first[0].split(" Copyright")[0].removeprefix("wrk ").strip()


def run_wrk(
    url: str, *, duration_s: int, connections: int, threads: int = 1, headers: Sequence[str] = ()
) -> WrkResult:
    """Load url for duration_s seconds (each request with ``headers``) and return wrk's figures."""
    cmd = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        *(arg for header in headers for arg in ("-H", header)),
        url,
    ]
    # wrk stops on its own after duration_s; the margin covers start-up and its 2 s socket timeout.
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration_s + 30} s: {cmd}") from exc
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with {proc.returncode}: {proc.stderr.strip()}")
    return parse_wrk_output(proc.stdout)
