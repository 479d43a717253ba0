"""An open-loop load generator: requests due at fixed times, latency counted from when each was due.

A closed-loop generator such as wrk sends a connection's next request only once the previous answer
is in, so while a server stalls it stops sending, and the requests that would have waited are never
measured: its tail latency hides the stall (coordinated omission). Here request i is due at
t0 + i/R whatever the server does. It goes out on the first idle connection (K keep-alive
connections, one request in flight on each) and its latency runs from when it was *due* to when
its answer is complete, so time spent waiting for a free connection counts.

Theory of operation: the schedule is arithmetic, so the queue of due-but-unsent requests is two
counters (due, sent). Each answer sends what is due, and a ticker wakes the loop at every due time.
uvloop's timers count whole milliseconds, so the ticker is a periodic timerfd where Linux has one.
How late the loop still gets round to a request, like every other cost of this Python process, is
inside the figures, which is why bench.run measures the generator against the bare upstream as a
baseline. Requests still unanswered when
the run ends (the drain after the last due time has passed) count in the percentiles with their
wait so far: a lower bound, never omitted.

Usage: python -m bench.openloop URL --rate R --duration S [--connections K] [-H 'Name: value']...
prints one JSON object (see OpenLoopResult).
"""

import argparse
import asyncio
import ctypes
import functools
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import uvloop

REPO_ROOT = Path(__file__).resolve().parents[1]

PERCENTILES = ("50", "90", "99", "99.9")
_CONNECT_TIMEOUT_S = 5.0


class OpenLoopError(RuntimeError):
    """The generator could not connect, failed, or printed something that is not its report."""


# -- schedule and figures (no sockets, no clocks) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    """Request i (0 <= i < total) is due at start + i / rate."""

    start: float
    rate: float
    total: int

    def due_at(self, i: int) -> float:
        return self.start + i / self.rate

    def due_by(self, now: float) -> int:
        """How many requests are due at `now` (a request is due from its due time on)."""
        if now < self.start:
            return 0
        last = min(math.floor((now - self.start) * self.rate), self.total - 1)
        # Rounding may put the estimate one off; due_at() itself decides, so that request i is
        # due exactly from due_at(i) on.
        while last + 1 < self.total and self.due_at(last + 1) <= now:
            last += 1
        while last >= 0 and self.due_at(last) > now:
            last -= 1
        return last + 1

    @property
    def end(self) -> float:
        """When the last request is due."""
        return self.due_at(max(self.total - 1, 0))


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value that at least q % of the values are at or below."""
    if not ordered:
        raise ValueError("no values")
    rank = math.ceil(round(q * len(ordered) / 100, 9))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def latency_figures(latencies_s: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99, p99.9 and max in milliseconds (None for all when there is no value)."""
    ordered = sorted(latencies_s)
    keys = [*PERCENTILES, "max"]
    if not ordered:
        return dict.fromkeys(keys)
    values = [percentile(ordered, float(q)) for q in PERCENTILES] + [ordered[-1]]
    return {key: round(v * 1000, 4) for key, v in zip(keys, values, strict=True)}


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    rate: float  # requests per second asked for
    duration_s: float  # seconds over which requests were due
    connections: int
    scheduled: int  # requests due in the run
    sent: int
    completed: int  # answers received, whatever their status
    errors: int  # answers that are not 2xx/3xx, and requests lost with their connection
    incomplete: int  # due but unanswered when the run ended (never sent, or sent and waiting)
    latency_ms: dict[str, float | None]  # from due time to answer; "50" ... "99.9", "max"
    send_lag_ms: dict[str, float | None]  # from due time to sent: connection wait plus timer lateness
    achieved_rate: float  # completed answers per second of the run
    generator_cpu_s: float  # this process's own CPU time over the run
    ticker: str  # what wakes the generator at due times: a timerfd or the event loop's timer

    @property
    def generator_cpu_share(self) -> float:
        """The generator's CPU over the run's wall time; near 1 it cannot keep its schedule."""
        elapsed = self.scheduled / self.rate if self.rate else 0.0
        return self.generator_cpu_s / elapsed if elapsed else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "generator_cpu_share": round(self.generator_cpu_share, 3)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "OpenLoopResult":
        return cls(**{name: obj[name] for name in cls.__dataclass_fields__})


# -- the generator -----------------------------------------------------------------------------


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # perf_counter() must read the clock the timerfd is armed on.
    if sys.platform != "linux" or "CLOCK_MONOTONIC" not in time.get_clock_info("perf_counter").implementation:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create, libc.timerfd_settime  # noqa: B018 - raises AttributeError when absent
    except (OSError, AttributeError):
        return None
    return libc


class _Ticker:
    """Calls back at every due time of a schedule (just after it) until stopped.

    A periodic timerfd (Linux) ticks within microseconds of each due time with no system call to
    re-arm it; its period is rounded up to whole nanoseconds, so it is re-anchored on the schedule
    every _REANCHOR ticks (drift under a microsecond). Elsewhere the loop's own timer is re-armed
    for each next due time, its delay rounded up to a whole millisecond (uvloop runs a delay under
    half of one as call_soon, which would spin).
    """

    _REANCHOR = 1000

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.schedule = Schedule(start=math.inf, rate=1.0, total=0)
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._ticks = 0
        self._fd = -1
        libc = _libc()
        if libc is not None:
            fd = libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                self._loop.add_reader(fd, self._readable)
        self.kind = "a periodic timerfd" if self._fd >= 0 else "the event loop's millisecond timer"

    def start(self, schedule: Schedule) -> None:
        self.schedule = schedule
        if self._fd >= 0:
            self._anchor(schedule.start)
        else:
            self._next()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fd >= 0:
            self._settime(0, 0, 0)

    def close(self) -> None:
        self.stop()
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _anchor(self, first: float) -> None:
        seconds = math.floor(first)
        self._settime(seconds, max(1, round((first - seconds) * 1e9)), math.ceil(1e9 / self.schedule.rate))
        self._ticks = 0

    def _settime(self, seconds: int, nanoseconds: int, period_ns: int) -> None:
        libc = _libc()
        assert libc is not None
        period = _Timespec(period_ns // 1_000_000_000, period_ns % 1_000_000_000)
        spec = _Itimerspec(period, _Timespec(seconds, nanoseconds))
        if libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _readable(self) -> None:
        try:
            expirations = int.from_bytes(os.read(self._fd, 8), sys.byteorder)
        except BlockingIOError:
            return
        self._ticks += expirations
        if self._ticks >= self._REANCHOR:
            upcoming = self.schedule.due_by(time.perf_counter())
            if upcoming < self.schedule.total:
                self._anchor(self.schedule.due_at(upcoming))
        self.callback()

    def _next(self) -> None:
        upcoming = self.schedule.due_by(time.perf_counter())
        if upcoming < self.schedule.total:
            wait = max(self.schedule.due_at(upcoming) - time.perf_counter(), 0.0)
            self._handle = self._loop.call_later(math.ceil(wait * 1000) / 1000, self._tick)

    def _tick(self) -> None:
        self._handle = None
        self.callback()
        self._next()


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, generator: "_Generator") -> None:
        self.generator = generator
        self.parser = httptools.HttpResponseParser(self)
        self.transport = cast(asyncio.Transport, None)
        self.due: float | None = None  # due time of the request in flight; None: idle
        self.complete = False
        self.broken = False

    # protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:  # not HTTP, or not what was asked: unusable
            self.broken = True
        if self.broken:
            self.transport.close()
        elif self.complete:
            self.complete = False
            self.generator.answered(self, self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.generator.lost(self)

    # parser callbacks

    def on_message_complete(self) -> None:
        self.complete = True

    # the generator's side

    def send(self, request: bytes, due: float) -> None:
        self.due = due
        self.transport.write(request)


class _Generator:
    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port = host, port
        self.request = request
        self.schedule = Schedule(start=math.inf, rate=1.0, total=0)  # nothing due before begin()
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.sent = 0
        self.answered_count = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.send_lags: list[float] = []
        self.ticker = _Ticker(self.pump)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stopping = False

    def begin(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.ticker.start(schedule)
        self.pump()

    async def connect(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port), _CONNECT_TIMEOUT_S
            )
            self.idle.append(conn)

    def pump(self) -> None:
        """Send every due request that an idle connection can take (on an answer, on a tick)."""
        schedule = self.schedule
        due = schedule.due_by(time.perf_counter())
        while self.sent < due and self.idle:
            conn = self.idle.pop()
            due_time = schedule.due_at(self.sent)
            conn.send(self.request, due_time)
            self.send_lags.append(time.perf_counter() - due_time)
            self.busy.add(conn)
            self.sent += 1
        if self.sent == schedule.total:
            self.ticker.stop()
        self._check_done()

    def answered(self, conn: _Connection, status: int) -> None:
        if conn.due is not None:
            self.latencies.append(time.perf_counter() - conn.due)
            self.answered_count += 1
            if not 200 <= status < 400:
                self.errors += 1
        conn.due = None
        self.busy.discard(conn)
        self.idle.append(conn)
        self.pump()

    def lost(self, conn: _Connection) -> None:
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.due is not None:
            conn.due = None
            self.errors += 1
        if not self.stopping:
            asyncio.get_running_loop().create_task(self._replace())
            self._check_done()

    async def _replace(self) -> None:
        try:
            await self.connect(1)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)  # refused: the next loss or answer retries
            if not self.stopping:
                asyncio.get_running_loop().create_task(self._replace())
            return
        self.pump()

    def _check_done(self) -> None:
        if self.sent == self.schedule.total and not self.busy and not self.done.done():
            self.done.set_result(None)

    def finish(self, now: float) -> int:
        """Stop sending; every request due and unanswered counts with its wait so far (how many)."""
        self.stopping = True
        self.ticker.stop()
        waiting = [conn.due for conn in self.busy if conn.due is not None]
        unsent = range(self.sent, self.schedule.due_by(now))
        self.latencies += [now - due for due in waiting]
        self.latencies += [now - self.schedule.due_at(i) for i in unsent]
        return len(waiting) + len(unsent)

    def close(self) -> None:
        self.stopping = True
        self.ticker.close()
        for conn in [*self.idle, *self.busy]:
            conn.transport.close()


def _request(url: str, headers: Sequence[str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise OpenLoopError(f"expected an http:// URL: {url}")
    host, port = parts.hostname, parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", *headers]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def generate(
    url: str,
    *,
    rate: float,
    duration_s: float,
    connections: int,
    headers: Sequence[str] = (),
    drain_s: float = 2.0,
) -> OpenLoopResult:
    """Load url at `rate` requests/s for duration_s seconds over `connections` connections."""
    host, port, request = _request(url, headers)
    generator = _Generator(host, port, request)
    try:
        # Connections open before the schedule starts: connecting is not part of the figures.
        await generator.connect(connections)
        cpu_before = _cpu_seconds()
        total = max(1, round(rate * duration_s))
        schedule = Schedule(start=time.perf_counter() + 0.01, rate=rate, total=total)
        generator.begin(schedule)
        # Every answer in, or the deadline: what is still unanswered then counts as incomplete.
        deadline = schedule.end + drain_s
        await asyncio.wait([generator.done], timeout=max(0.0, deadline - time.perf_counter()))
        ended = time.perf_counter()
        incomplete = generator.finish(ended)
        cpu_s = _cpu_seconds() - cpu_before
    finally:
        generator.close()
        await asyncio.sleep(0)  # the transports' close callbacks
    return OpenLoopResult(
        rate=rate,
        duration_s=duration_s,
        connections=connections,
        scheduled=schedule.total,
        sent=generator.sent,
        completed=generator.answered_count,
        errors=generator.errors,
        incomplete=incomplete,
        latency_ms=latency_figures(generator.latencies),
        send_lag_ms=latency_figures(generator.send_lags),
        achieved_rate=round(generator.answered_count / max(ended - schedule.start, 1e-9), 1),
        generator_cpu_s=round(cpu_s, 4),
        ticker=generator.ticker.kind,
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the harness's side: run the generator in its own process ---------------------------------


def run_openloop(
    url: str,
    *,
    rate: float,
    duration_s: float,
    connections: int,
    headers: Sequence[str] = (),
    drain_s: float = 2.0,
) -> OpenLoopResult:
    """Run `python -m bench.openloop` (its own process, its own CPU) and read its report."""
    cmd = [sys.executable, "-m", "bench.openloop", url, f"--rate={rate}", f"--duration={duration_s}"]
    cmd += [f"--connections={connections}", f"--drain={drain_s}"]
    cmd += [arg for header in headers for arg in ("-H", header)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    limit = duration_s + drain_s + 30
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=limit, check=False, cwd=REPO_ROOT, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise OpenLoopError(f"the open-loop generator did not finish within {limit} s: {cmd}") from exc
    if proc.returncode != 0:
        raise OpenLoopError(f"the open-loop generator exited with {proc.returncode}: {proc.stderr.strip()}")
    try:
        return OpenLoopResult.from_json(json.loads(proc.stdout))
    except (ValueError, KeyError, TypeError) as exc:
        raise OpenLoopError(f"unreadable report from the open-loop generator: {proc.stdout!r}") from exc


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.openloop", description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=_positive_float, required=True, help="requests per second")
    parser.add_argument("--duration", type=_positive_float, required=True, help="seconds of requests")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds to wait for late answers")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value', repeatable")
    args = parser.parse_args(argv)
    try:
        result = uvloop.run(
            generate(
                args.url,
                rate=args.rate,
                duration_s=args.duration,
                connections=args.connections,
                headers=args.header,
                drain_s=args.drain,
            )
        )
    except (OSError, TimeoutError, OpenLoopError) as exc:
        print(f"bench.openloop: {exc!r}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
