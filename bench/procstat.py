"""Per-process CPU time and memory from /proc, for a server process and all its descendants.

Theory of operation: CPU is charged to a process tree as the sum, over every live process in the
tree, of utime + stime + cutime + cstime. The two "children" fields matter because a worker that
exits and is reaped during the load takes its CPU time with it out of the live set, and the kernel
adds that time to its parent's cutime/cstime at the same moment; summing all four fields keeps the
total conserved across respawns, so the before/after difference is the CPU the tree really used.
Constant offsets (time of children reaped before the first sample) cancel in the difference.
"""

import os
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    comm: str  # the kernel's 15-byte process name (prctl PR_SET_NAME can change it)
    state: str  # "Z" for a zombie: exited, only waiting to be reaped
    ppid: int
    start_ticks: int  # tells a live process apart from a later one that reused its pid
    cpu_ticks: int  # utime + stime + cutime + cstime


def parse_stat(pid: int, text: str) -> ProcStat:
    """Parse the text of /proc/<pid>/stat."""
    # The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    close = text.rindex(")")
    fields = text[close + 2 :].split()
    # fields[0] is field 3 of proc(5), so field N sits at index N - 3.
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ProcStat(
        pid=pid,
        comm=text[text.index("(") + 1 : close],
        state=fields[0],
        ppid=int(fields[1]),
        start_ticks=int(fields[19]),
        cpu_ticks=utime + stime + cutime + cstime,
    )


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat, or None when it no longer exists."""
    try:
        return parse_stat(pid, (_PROC / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None


def children(pid: int) -> list[int]:
    """Direct children of pid, over all its threads (a child is listed under its forking thread)."""
    found: list[int] = []
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue  # the thread exited between listing and reading
    return found


def descendants(pid: int) -> list[int]:
    """All live descendants of pid, parents before their children."""
    found: list[int] = []
    pending = children(pid)
    while pending:
        child = pending.pop(0)
        found.append(child)
        pending.extend(children(child))
    return found


def tree_stats(root: int) -> list[ProcStat]:
    """Stats of root and its live descendants; processes that vanish while reading are skipped."""
    stats = (read_stat(pid) for pid in [root, *descendants(root)])
    return [s for s in stats if s is not None]


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds charged so far to root's process tree (see the module docstring)."""
    return sum(s.cpu_ticks for s in tree_stats(root)) / CLOCK_TICKS_PER_SECOND


def rss_kib(pid: int) -> int | None:
    """Resident set size (VmRSS) in KiB, or None when the process is gone or has no memory."""
    try:
        status = (_PROC / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def cmdline(pid: int) -> str:
    """The process's command line as one string (nginx rewrites it into its role title)."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()
