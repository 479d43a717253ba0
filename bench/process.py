"""Starting, waiting for and stopping the server processes the benchmark owns.

Every server is started here and stopped here, by pid, in bounded time; nothing is ever killed by
name. Servers get PR_SET_PDEATHSIG so that they do not outlive a harness that is killed outright.
"""

import ctypes
import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench import procstat

_PR_SET_PDEATHSIG = 1
_STOP_GRACE_S = 5.0


class ServerError(RuntimeError):
    """A server did not start, exited early, or never answered."""


def free_port() -> int:
    """A port the kernel reports free now (another process could still take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child between fork and exec, so that an orphaned server gets SIGTERM.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """One server process (and the processes it forks) started by the harness."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ServerError(f"{self.name} is not started")
        return self._proc.pid

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                # Its own session: a Ctrl-C reaches only the harness, which then stops servers
                # in order, instead of racing them all.
                start_new_session=True,
                # preexec_fn is unsafe only with threads, and the harness starts none.
                preexec_fn=_die_with_parent,
            )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise ServerError(
                f"{self.name} exited with {self._proc.returncode}; log {self.log_path}:\n{self.log_tail()}"
            )

    def wait_ready(self, url: str, timeout_s: float = 15.0) -> None:
        """Poll GET url until it answers 200, the process exits, or timeout_s passes."""
        deadline = time.monotonic() + timeout_s
        last_error = "no attempt"
        while time.monotonic() < deadline:
            self.check_alive()
            status, last_error = _get_status(url)
            if status == 200:
                return
            time.sleep(0.1)
        raise ServerError(
            f"{self.name} did not answer 200 at {url} within {timeout_s} s ({last_error}); "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; then the same for any orphaned descendant."""
        proc = self._proc
        if proc is None:
            return
        # Remember descendants by (pid, start time) so that a reused pid is never signalled.
        forked = [s for s in procstat.tree_stats(proc.pid) if s.pid != proc.pid]
        _terminate(proc)
        for stat in forked:
            _stop_orphan(stat)
        self._proc = None


def _get_status(url: str) -> tuple[int | None, str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=1.0)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        response.read()
        return response.status, f"status {response.status}"
    except OSError as exc:
        return None, repr(exc)
    finally:
        conn.close()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=_STOP_GRACE_S)


def _same_process(stat: procstat.ProcStat) -> bool:
    now = procstat.read_stat(stat.pid)
    return now is not None and now.state != "Z" and now.start_ticks == stat.start_ticks


def _stop_orphan(stat: procstat.ProcStat) -> None:
    """Stop a descendant that outlived its parent (a well-behaved server leaves none)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _same_process(stat):
            return
        try:
            os.kill(stat.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + _STOP_GRACE_S
        while time.monotonic() < deadline and _same_process(stat):
            time.sleep(0.05)
