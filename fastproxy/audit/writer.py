"""The audit writer: one process, the only writer of the audit files.

Made by the master (see :mod:`fastproxy.audit` for the calls)::

    endpoint = WriterEndpoint.create()     # before forking anything: workers connect to it
    ...fork...  in the child:  os._exit(run_writer(settings, endpoint, shared))

Theory of operation
-------------------
Workers connect to ``endpoint`` (a listening SOCK_SEQPACKET socket the master keeps open, so a
respawned writer inherits it and connections made while no writer runs wait in its backlog).
The writer runs one loop: accept, read every batch that is there, *commit*, acknowledge.

A commit seals the records read in that pass onto the chain (``prev`` = the head, ``hash`` over
the canonical form, :mod:`fastproxy.audit.chain`), writes them with one ``writev``, calls
``fdatasync`` when ``fsync = true``, then records in shared memory how far each worker's stream
is written and only then acknowledges. While a commit is syncing, more batches queue in the
sockets: the next commit takes them all (group commit), capped at :data:`COMMIT_MAX` bytes.
Under load the next commit also waits until :data:`COMMIT_SPACING` (20 ms, or ``flush_interval``
if that is shorter) after the start of the last one: a commit has fixed costs (the wakeup, the
``fdatasync``, a few hundred microseconds of CPU here) that are then shared by more records. It
delays only acknowledgements (by at most the spacing), not the workers: a batch sent waits in
its socket, where it outlives the worker that sent it. A pass that stopped reading with more
waiting (COMMIT_MAX reached, or _READS_PER_PASS messages from one connection) is not followed by
a wait: the writer's throughput is not capped.

Records are deduplicated by seq: a worker that lost its writer sends again what was not
acknowledged, and the writer skips records its file already has. It knows how far each stream
goes from shared memory (``written``) and, for the one commit that may have reached the file
without that note (a crash in between), from the tail of the file it reads when it starts.

On start the writer recovers the chain head from the last line of the current file (or, when
that file is missing or empty — a crash between a rotation's rename and its first record, or an
external rotation not yet followed by USR1 — from the most recently modified ``PATH.*``). A
partial last line (a write cut short by a crash) is cut off: its batch was not acknowledged. A
last line that is not a valid record stops the writer (:data:`EXIT_BAD_TAIL`): continuing a chain
from an unknown head would hide tampering.

A write, fdatasync, open or rename error (disk full included) is never retried: the writer logs
one line naming the file and the error and exits with :data:`EXIT_IO_ERROR`; nothing after the
last acknowledged batch was acknowledged, so the workers hold it for the next writer.

Rotation: once a commit brings the file to ``rotate_bytes`` or more (so a file exceeds it by at
most one commit), it is renamed
``PATH.<UTC yyyymmddThhmmss.ffffff>Z`` and a new ``PATH`` begins with a ``rotate`` marker whose
``prev`` is the last hash of the old file. USR1 closes and reopens ``PATH`` (after an external
``mv``) and writes a ``reopen`` marker. TERM asks every worker to flush, keeps reading until every
connection is closed or ``drain_timeout`` passes, commits, fsyncs and exits 0.

Log lines never carry record contents: counts, seqs, file names and errors only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import queue
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from fastproxy.audit.chain import Chain, LineError, Stream, TailState, scan_tail, span_of
from fastproxy.audit.protocol import (
    ACK,
    BATCH,
    FLUSH,
    HELLO,
    MSG_CAP,
    WELCOME,
    ProtocolError,
    decode_batch_payload,
    decode_hello,
    encode_seq,
)
from fastproxy.audit.record import format_timestamp, gap_record, writer_marker
from fastproxy.audit.shared import ASSIGNED, DEAD, LIVE, STATE, WORKER, WRITTEN, AuditShared
from fastproxy.config.schema import AuditSettings

__all__ = [
    "EXIT_BAD_TAIL",
    "EXIT_CRASH",
    "EXIT_IO_ERROR",
    "EXIT_OK",
    "PROCESS_NAME",
    "AuditFile",
    "Sequencer",
    "WriterEndpoint",
    "run_writer",
]

log = logging.getLogger("fastproxy.audit")

EXIT_OK = 0
EXIT_CRASH = 1  # a bug: an exception nobody expected
EXIT_BAD_TAIL = 65  # the current file does not end with a valid record (sysexits EX_DATAERR)
EXIT_IO_ERROR = 74  # a write, fdatasync, open or rename failed, disk full included (EX_IOERR)

PROCESS_NAME = "fastproxy-audit"  # /proc/PID/comm (15 characters at most)

TAIL_BYTES = 8 * 1024 * 1024  # read at start; must exceed COMMIT_MAX
COMMIT_MAX = 4 * 1024 * 1024
# Under load, commits start at least this far apart (or flush_interval apart, if that is shorter):
# what arrives meanwhile waits in the sockets and joins the next commit.
COMMIT_SPACING = 0.02
_READS_PER_PASS = 64  # messages from one connection before the others get a turn
_IOV_MAX = 1024  # buffers one writev takes (Linux)
_MSG_TRUNC = int(socket.MSG_TRUNC)  # an int: & on the IntFlag goes through enum, per message
_DEAD_POLL = 0.05  # seconds between looks for reaped workers to account for
_BACKLOG = 1024
_HELLO_TIMEOUT = 1.0

_UCRED = struct.Struct("=iII")  # struct ucred: pid, uid, gid

Opener = Callable[[str, int, int], int]  # os.open's shape: (path, flags, mode) -> fd


class WriterEndpoint:
    """The writer's listening socket and its address; made by the master before any fork.

    The default address is in Linux's abstract namespace (nothing on disk to clean up); since any
    local process could connect there, the writer accepts only peers of its own uid
    (SO_PEERCRED). Workers need only :attr:`address`: they call :meth:`close` after fork.
    """

    def __init__(self, address: str | bytes, sock: socket.socket | None) -> None:
        self.address = address
        self.sock = sock

    @classmethod
    def create(cls, address: str | bytes | None = None) -> WriterEndpoint:
        if address is None:
            address = f"\0fastproxy-audit-{os.getpid()}-{os.urandom(8).hex()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.bind(address)
            sock.listen(_BACKLOG)
        except OSError:
            sock.close()
            raise
        return cls(address, sock)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# -- the file ----------------------------------------------------------------------------------


class WriteFailed(Exception):
    """A file operation failed: the writer must stop (EXIT_IO_ERROR)."""

    def __init__(self, action: str, path: str, error: OSError) -> None:
        super().__init__(action, path, error)
        self.action = action
        self.path = path
        self.error = error

    def __str__(self) -> str:
        code = errno.errorcode.get(self.error.errno or 0, str(self.error.errno))
        return f"cannot {self.action} {self.path}: {self.error.strerror} ({code})"


class BadTail(Exception):
    """The file's last line is not a valid record: its chain cannot be continued."""


def next_commit_at(now: float, spacing: float, more_waiting: bool) -> float:
    """When the commit after one that started at ``now`` may start.

    A pass that stopped reading with more waiting (COMMIT_MAX reached, or _READS_PER_PASS
    messages read from a connection) is followed at once: spaced, such commits would cap the
    writer at COMMIT_MAX, or at _READS_PER_PASS messages per connection, per ``spacing``.
    """
    return 0.0 if more_waiting else now + spacing


class AuditFile:
    """The current audit file: recovery of its tail, appends, fdatasync, rotation, reopening."""

    def __init__(self, path: str, opener: Opener = os.open, tail_bytes: int = TAIL_BYTES) -> None:
        self.path = path
        self.opener = opener
        self.tail_bytes = tail_bytes
        self.fd = -1
        self.size = 0

    def open(self) -> tuple[TailState, str | None]:
        """Open (creating) the file; returns what its tail says and, if the head came from a
        rotated sibling, that file's name. Raises WriteFailed or BadTail."""
        self._open()
        tail = self._recover()
        if tail is not None:
            return tail, None
        return self._sibling_tail()

    def _open(self) -> None:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            self.fd = self.opener(self.path, flags, 0o640)
            self.size = os.fstat(self.fd).st_size
        except OSError as exc:
            raise WriteFailed("open", self.path, exc) from None

    def _recover(self) -> TailState | None:
        if not self.size:
            return None
        start = max(0, self.size - self.tail_bytes)
        try:
            data = os.pread(self.fd, self.size - start, start)
        except OSError as exc:
            raise WriteFailed("read", self.path, exc) from None
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            keep = start + cut
            log.warning(
                "audit writer: %s ends with %d bytes of a record cut short (a crash while writing); "
                "removing them: that batch was never acknowledged and is sent again",
                self.path,
                self.size - keep,
            )
            try:
                os.ftruncate(self.fd, keep)
            except OSError as exc:
                raise WriteFailed("truncate", self.path, exc) from None
            self.size = keep
            data = data[:cut]
        if not data:
            return None if not self.size else TailState()
        try:
            return scan_tail(data, from_start=start == 0)
        except LineError as exc:
            raise BadTail(f"the last record of {self.path} is not valid ({exc})") from None

    def _sibling_tail(self) -> tuple[TailState, str | None]:
        directory = os.path.dirname(self.path) or "."
        prefix = os.path.basename(self.path) + "."
        candidates = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith(prefix) and entry.is_file():
                        stat = entry.stat()
                        if stat.st_size:
                            candidates.append((stat.st_mtime_ns, entry.name))
        except OSError:
            return TailState(), None
        for _, name in sorted(candidates, reverse=True):
            sibling = os.path.join(directory, name)
            tail = _read_tail(sibling, self.tail_bytes)
            if tail is not None:
                return tail, sibling
        if candidates:
            log.warning(
                "audit writer: %s is empty and no %s* file ends with a valid record: starting a new chain",
                self.path,
                prefix,
            )
        return TailState(), None

    def append(self, chunks: list[bytes]) -> None:
        """Write ``chunks`` in order, with one ``writev`` each _IOV_MAX of them (not joined: that
        would copy them all); a short write is finished from where it stopped."""
        try:
            for start in range(0, len(chunks), _IOV_MAX):
                group = chunks[start : start + _IOV_MAX]
                written = os.writev(self.fd, group)
                self.size += written
                if written < sum(map(len, group)):
                    self._write_all(memoryview(b"".join(group))[written:])
        except OSError as exc:
            raise WriteFailed("write", self.path, exc) from None

    def _write_all(self, view: memoryview) -> None:
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
            self.size += written

    def sync(self) -> None:
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            raise WriteFailed("fdatasync", self.path, exc) from None

    def rotate(self, now_ns: int, durable: bool) -> str:
        """Rename the file aside and start a new one; returns the new name of the old file."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns // 1_000_000_000))
        rotated = f"{self.path}.{stamp}.{now_ns // 1000 % 1_000_000:06d}Z"
        suffix = 0
        while os.path.lexists(rotated if not suffix else f"{rotated}-{suffix}"):
            suffix += 1
        if suffix:
            rotated = f"{rotated}-{suffix}"
        try:
            os.rename(self.path, rotated)
        except OSError as exc:
            raise WriteFailed("rename", self.path, exc) from None
        self.close()
        self._open()
        if durable:
            self._sync_directory()
        return rotated

    def reopen(self) -> None:
        self.close()
        self._open()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)

    def _sync_directory(self) -> None:
        directory = os.path.dirname(self.path) or "."
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise WriteFailed("fsync the directory of", self.path, exc) from None


def _read_tail(path: str, tail_bytes: int) -> TailState | None:
    """The tail of a file that is not ours to repair: its last complete line, or None."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - tail_bytes)
            f.seek(start)
            data = f.read()
    except OSError:
        return None
    cut = data.rfind(b"\n") + 1
    if not cut:
        return None
    try:
        return scan_tail(data[:cut], from_start=start == 0)
    except LineError:
        return None


# -- which records are new ---------------------------------------------------------------------


@dataclass
class Sequencer:
    """How far each stream is in the file, and which records of a batch are new (sans-I/O)."""

    last: dict[Stream, int] = field(default_factory=dict)

    def known(self, stream: Stream) -> int:
        return self.last.get(stream, 0)

    def note(self, stream: Stream, seq: int) -> None:
        if seq > self.last.get(stream, 0):
            self.last[stream] = seq

    def admit(
        self, stream: Stream, first: int, last: int, payload: bytes | memoryview, ts: str
    ) -> tuple[list[bytes | memoryview], int]:
        """What of a batch to write, as payloads in order, and how many seqs a "missing" gap covers.

        ``payload`` holds the batch's records separated by ``\\n``, and so does each payload
        returned. Records the file already has (seq at or below ``known``) are skipped: a batch
        sent again after a writer restart. A batch that starts past ``known + 1`` leaves a hole no
        one can fill any more; a gap record with reason "missing" accounts for it.
        """
        known = self.last.get(stream, 0)
        if last <= known:
            return [], 0
        lost = 0
        out: list[bytes | memoryview] = []
        if first > known + 1:
            lost = first - known - 1
            out.append(gap_record(ts, stream[0], stream[1], known + 1, lost, "missing"))
            out.append(payload)
        elif first == known + 1:
            out.append(payload)  # the common case: the batch as it came
        else:
            # Part of this batch is already written: find where, by each record's own seq.
            for record in bytes(payload).split(b"\n"):
                try:
                    obj = orjson.loads(record)
                except orjson.JSONDecodeError:
                    raise ProtocolError("a batch record is not valid JSON") from None
                span = span_of(obj) if isinstance(obj, dict) else None
                if span is None:
                    raise ProtocolError("a batch record has no seq")
                _, start, end = span
                if start > known:
                    out.append(record)
                elif end > known:
                    # Only possible if the worker's records changed between sends: account, skip.
                    lost += end - known
                    out.append(gap_record(ts, stream[0], stream[1], known + 1, end - known, "missing"))
                known = max(known, end)
        self.last[stream] = last
        return out, lost


# -- the process -------------------------------------------------------------------------------


class _Conn:
    __slots__ = (
        "accepted", "ack_due", "closed", "gone", "pid", "slot", "sock", "stream", "touched",
        "welcome_due", "welcomed", "writing",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.accepted = now
        self.slot = -1  # until its hello
        self.stream: Stream = ("", 0)
        self.pid = 0
        self.welcomed = False
        self.welcome_due = False
        self.touched = False  # it sent records in the commit being built
        self.ack_due = 0  # an acknowledgement not sent yet (the socket was full)
        self.writing = False  # waiting for room to send it
        self.closed = False
        self.gone = False  # it cannot take acknowledgements any more (closed its end)


class _Writer:
    def __init__(
        self,
        settings: AuditSettings,
        endpoint: WriterEndpoint,
        shared: AuditShared,
        opener: Opener,
        drain_timeout: float,
        clock: Callable[[], int],
    ) -> None:
        assert settings.path is not None and endpoint.sock is not None
        self.settings = settings
        self.listener = endpoint.sock
        self.shared = shared
        self.boot = shared.boot
        self.file = AuditFile(settings.path, opener)
        self.drain_timeout = drain_timeout
        self.clock = clock
        self.pid = os.getpid()
        self.chain = Chain()
        self.sequencer = Sequencer()
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, _Conn] = {}
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.lines: list[bytes] = []
        self.lines_bytes = 0
        self.records = 0  # in the commit being built
        self.lost = 0
        self.slots_done: list[tuple[int, int]] = []  # (slot, seq) written once the commit is durable
        self.to_free: list[int] = []
        self.stopping = False
        self.deadline = 0.0
        self.reopen_wanted = False
        self.next_dead_poll = 0.0
        self.spacing = min(COMMIT_SPACING, settings.flush_interval)
        self.next_commit = 0.0  # no commit of records starts before this (time.monotonic())
        self.more_waiting = False  # this pass stopped reading with more in a socket
        self._wakeup_r = -1
        # Every message is read into this one buffer and sealed from a view of it, before the
        # next read: no allocation and no copy per message.
        self._buffer = bytearray(MSG_CAP)
        self._view = memoryview(self._buffer)

    # -- life ---------------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        tail, sibling = self.file.open()
        self.chain = Chain(tail.head)
        self.sequencer = Sequencer(dict(tail.last_seq))
        log.info(
            "audit writer %d: appending to %s (chain head %s…%s)",
            self.pid,
            self.file.path,
            tail.head[:12].decode(),
            f", recovered from {sibling}" if sibling else "",
        )
        self._marker("writer_start")
        self._commit(durable=True)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, None)
        self.shared.writer_serving(self.pid)
        while True:
            self._pass()
            if self.stopping:
                self._accept()
                if not self.conns or time.monotonic() >= self.deadline:
                    self._account_dead()
                    self._commit(durable=True)
                    self.file.sync()
                    log.info(
                        "audit writer %d: stopped; %d workers still connected",
                        self.pid,
                        len(self.conns),
                    )
                    return EXIT_OK

    def _pass(self) -> None:
        if not self.stopping:
            wait = self.next_commit - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # a signal's handler only enqueues: it waits for this pass
        timeout = _DEAD_POLL
        if self.stopping:
            timeout = max(0.0, min(timeout, self.deadline - time.monotonic()))
        for key, events in self.selector.select(timeout):
            if key.fileobj is self.listener:
                self._accept()
            elif key.fileobj == self._wakeup_r:
                self._drain_wakeup()
            else:
                conn = key.data
                if not conn.closed and events & selectors.EVENT_WRITE:
                    self._send_ack(conn)
                if not conn.closed and events & selectors.EVENT_READ:
                    self._read(conn)
        self._handle_signals()
        now = time.monotonic()
        if now >= self.next_dead_poll:
            self.next_dead_poll = now + _DEAD_POLL
            self._account_dead()
        self._commit(durable=self.settings.fsync)
        if self.reopen_wanted:
            self.reopen_wanted = False
            self.file.reopen()
            log.info("audit writer %d: reopened %s", self.pid, self.file.path)
            self._marker("reopen")
            self._commit(durable=True)

    # -- connections --------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("audit writer: accept failed: %s", exc.strerror)
                return
            uid = _peer_uid(sock)
            if uid != os.geteuid():
                log.warning("audit writer: refused a connection from uid %s", uid)
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic())
            self.conns[sock.fileno()] = conn
            self.selector.register(sock, selectors.EVENT_READ, conn)
            # Read its hello now: until then nobody knows whose connection this is.
            self._read(conn)

    def _read(self, conn: _Conn) -> None:
        for _ in range(_READS_PER_PASS):
            if self.lines_bytes >= COMMIT_MAX:
                self.more_waiting = True  # the rest waits in the socket for the next commit
                return
            try:
                size, _, flags, _ = conn.sock.recvmsg_into([self._buffer])
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionResetError:
                # The worker closed (or died) with acknowledgements unread. Linux reports that
                # once, before the batches it sent: read on to its end.
                continue
            except OSError:
                self._close(conn)
                return
            if not size:
                self._close(conn)
                return
            message = self._view[:size]
            try:
                if flags & _MSG_TRUNC:
                    raise ProtocolError("message larger than the writer reads")
                if message[:1] == BATCH and conn.welcomed:
                    self._batch(conn, message)
                elif message[:1] == HELLO and conn.slot < 0:
                    self._hello(conn, message)
                else:
                    raise ProtocolError(f"unexpected message {bytes(message[:1])!r}")
            except ProtocolError as exc:
                log.error(
                    "audit writer: worker %d (pid %d): %s; closing its connection",
                    conn.stream[1],
                    conn.pid,
                    exc,
                )
                self._close(conn)
                return
        self.more_waiting = True  # _READS_PER_PASS read: the others get their turn first

    def _hello(self, conn: _Conn, message: memoryview) -> None:
        slot, worker, pid, boot = decode_hello(bytes(message))
        if boot != self.boot or not 0 <= slot < self.shared.slots:
            raise ProtocolError("hello names another boot or no slot")
        # DEAD too: a worker may die between its hello and the writer reading it.
        if self.shared.get(slot, WORKER) != worker or self.shared.get(slot, STATE) not in (LIVE, DEAD):
            raise ProtocolError(f"hello names slot {slot}, which is not worker {worker}'s")
        for other in list(self.conns.values()):
            if other is not conn and other.slot == slot:
                self._close(other)  # a stale connection of the same worker
        conn.slot, conn.stream, conn.pid = slot, (boot, worker), pid
        self.sequencer.note(conn.stream, self.shared.get(slot, WRITTEN))
        # Welcomed only after the commit in progress: the welcome must not count unwritten records.
        conn.welcome_due = True

    def _batch(self, conn: _Conn, message: memoryview) -> None:
        first, last, _, payload = decode_batch_payload(message)
        ts = format_timestamp(self.clock())
        out, lost = self.sequencer.admit(conn.stream, first, last, payload, ts)
        if lost:
            log.warning(
                "audit writer: worker %d: %d records missing before seq %d", conn.stream[1], lost, first
            )
        self._add(out, lost)
        conn.touched = True
        self.slots_done.append((conn.slot, last))

    def _close(self, conn: _Conn) -> None:
        if not conn.closed:
            conn.closed = True
            self.conns.pop(conn.sock.fileno(), None)
            self.selector.unregister(conn.sock)
            conn.sock.close()

    # -- committing ---------------------------------------------------------------------------

    def _add(self, payloads: list[bytes | memoryview], lost: int = 0, markers: int = 0) -> None:
        count = 0
        for payload in payloads:
            lines, n = self.chain.seal(payload)
            self.lines.append(lines)
            self.lines_bytes += len(lines)
            count += n
        self.records += count - markers
        self.lost += lost

    def _marker(self, event: str, **extra: str | int) -> None:
        ts = format_timestamp(self.clock())
        self._add([writer_marker(ts, self.boot, event, self.pid, **extra)], markers=1)

    def _commit(self, durable: bool, may_rotate: bool = True) -> None:
        more_waiting, self.more_waiting = self.more_waiting, False
        if self.lines:
            self.next_commit = next_commit_at(time.monotonic(), self.spacing, more_waiting)
            self.file.append(self.lines)
            if durable:
                self.file.sync()
            self.shared.count_written(self.records, self.lost)
            self.lines = []
            self.lines_bytes = 0
            self.records = 0
            self.lost = 0
        # Durable from here: say so in shared memory first, then to the workers.
        for slot, seq in self.slots_done:
            if seq > self.shared.get(slot, WRITTEN):
                self.shared.set(slot, WRITTEN, seq)
        self.slots_done = []
        for slot in self.to_free:
            self.shared.free(slot)
        self.to_free = []
        for conn in list(self.conns.values()):
            if conn.welcome_due:
                conn.welcome_due = False
                conn.welcomed = True
                # A fresh socket has room for this; if not, the worker is broken or gone.
                if not self._send(conn, encode_seq(WELCOME, self.sequencer.known(conn.stream))):
                    self._close(conn)
                elif self.stopping:
                    self._send(conn, FLUSH)
            elif conn.touched:
                conn.ack_due = self.sequencer.known(conn.stream)
                self._send_ack(conn)
            conn.touched = False
        if may_rotate and self.file.size >= self.settings.rotate_bytes:
            self._rotate()

    def _rotate(self) -> None:
        rotated = self.file.rotate(self.clock(), durable=self.settings.fsync)
        log.info("audit writer %d: rotated %s to %s", self.pid, self.file.path, rotated)
        self._marker("rotate", previous=os.path.basename(rotated))
        self._commit(durable=True, may_rotate=False)  # even if the marker alone reaches rotate_bytes

    def _send_ack(self, conn: _Conn) -> None:
        """Send the latest acknowledgement due; a full socket keeps it for when there is room
        (only the latest matters: it covers the ones before)."""
        sent = self._send(conn, encode_seq(ACK, conn.ack_due)) if conn.ack_due else True
        if sent is not False:
            conn.ack_due = 0
        if conn.closed or (sent is False) == conn.writing:
            return
        conn.writing = sent is False
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.writing else 0)
        self.selector.modify(conn.sock, events, conn)

    def _send(self, conn: _Conn, message: bytes) -> bool | None:
        """Send a control message: True, False if the socket is full, None if the worker is gone.

        A gone worker's connection stays open: the batches it sent before it closed are still
        to be read, up to the end of the connection.
        """
        if conn.gone:
            return None
        try:
            conn.sock.send(message, socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            conn.gone = True
            return None
        return True

    # -- workers that died --------------------------------------------------------------------

    def _account_dead(self) -> None:
        """Write one gap record for what each reaped worker numbered but never delivered."""
        dead = self.shared.dead_slots()
        if not dead:
            return
        self._accept()  # a dead worker's connection may still wait in the backlog, with data
        now = time.monotonic()
        for conn in list(self.conns.values()):
            if conn.slot < 0 and now - conn.accepted > _HELLO_TIMEOUT:
                log.warning("audit writer: a connection sent no hello in %.0fs; closing it", _HELLO_TIMEOUT)
                self._close(conn)
        if any(conn.slot < 0 for conn in self.conns.values()):
            return  # one of them may be a dead worker's: wait for its hello or its end
        live = {conn.slot for conn in self.conns.values()}
        for slot in dead:
            if slot in live or slot in self.to_free:
                continue  # its connection still has data to read first
            stream = (self.boot, self.shared.get(slot, WORKER))
            self.sequencer.note(stream, self.shared.get(slot, WRITTEN))
            known = self.sequencer.known(stream)
            assigned = self.shared.get(slot, ASSIGNED)
            if assigned > known:
                count = assigned - known
                log.warning(
                    "audit writer: worker %d exited holding %d records (seq %d to %d): gap record written",
                    stream[1],
                    count,
                    known + 1,
                    assigned,
                )
                ts = format_timestamp(self.clock())
                self._add([gap_record(ts, self.boot, stream[1], known + 1, count, "lost_with_worker")], count)
                self.sequencer.note(stream, assigned)
                self.slots_done.append((slot, assigned))
            self.to_free.append(slot)

    # -- signals: the handlers only enqueue -----------------------------------------------------

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup_r = read_fd
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(signum, self._enqueue)
        # Ctrl-C reaches the whole process group: the master turns it into an orderly TERM.
        for signum in (signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        for signum in (signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_DFL)

    def _enqueue(self, signum: int, frame: object) -> None:
        self.signals.put_nowait(signum)

    def _drain_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wakeup_r, 512):
                pass

    def _handle_signals(self) -> None:
        while True:
            try:
                signum = self.signals.get_nowait()
            except queue.Empty:
                return
            if signum == signal.SIGUSR1:
                self.reopen_wanted = True
            elif signum == signal.SIGTERM and not self.stopping:
                self.stopping = True
                self.deadline = time.monotonic() + self.drain_timeout
                log.info("audit writer %d: stopping; draining %d workers", self.pid, len(self.conns))
                for conn in list(self.conns.values()):
                    if conn.welcomed:
                        self._send(conn, FLUSH)


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    uid: int = _UCRED.unpack(creds)[1]
    return uid


def set_process_name(name: str = PROCESS_NAME) -> None:
    """What ``ps`` and /proc/PID/comm show (Linux prctl PR_SET_NAME); silently nothing elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # 15 = PR_SET_NAME
    except (OSError, AttributeError):
        pass


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Each commit allocates a few buffers of a batch's size (hundreds of KiB). By default glibc serves
# such a buffer with a fresh mmap, or returns the freed heap top to the kernel, so every commit
# faulted its buffers in page by page again: 60 faults per batch, about 0.3 us per record (measured
# under load). Kept in the heap instead, the same few MiB are reused by every commit.
_HEAP_KEEP = 64 * 1024 * 1024


def keep_buffers_in_heap() -> None:
    """Serve the writer's batch-sized buffers from a heap that is never trimmed (glibc only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_KEEP)
        libc.mallopt(_M_TRIM_THRESHOLD, _HEAP_KEEP)
    except (OSError, AttributeError):
        pass  # another C library: its own policy


def run_writer(
    settings: AuditSettings,
    endpoint: WriterEndpoint,
    shared: AuditShared,
    *,
    opener: Opener = os.open,
    drain_timeout: float = 5.0,
    clock: Callable[[], int] = time.time_ns,
) -> int:
    """The writer's whole life, in the child the master forked; returns its exit status.

    EXIT_OK after TERM; EXIT_IO_ERROR when the file cannot be written (the master restarts it
    with backoff); EXIT_BAD_TAIL when the current file does not end with a valid record;
    EXIT_CRASH on a bug. ``opener`` (os.open's shape) lets tests inject a failing file.
    """
    set_process_name()
    keep_buffers_in_heap()
    if settings.path is None or endpoint.sock is None:
        log.error("audit writer: no audit path or no listening socket")
        return EXIT_CRASH
    writer = _Writer(settings, endpoint, shared, opener, drain_timeout, clock)
    try:
        return writer.run()
    except WriteFailed as exc:
        log.error(
            "audit writer %d: %s; exiting (status %d), nothing unwritten was acknowledged",
            writer.pid,
            exc,
            EXIT_IO_ERROR,
        )
        return EXIT_IO_ERROR
    except BadTail as exc:
        log.error(
            "audit writer %d: %s; refusing to continue that chain: move the file aside (status %d)",
            writer.pid,
            exc,
            EXIT_BAD_TAIL,
        )
        return EXIT_BAD_TAIL
    except Exception:
        log.exception("audit writer %d crashed", writer.pid)
        return EXIT_CRASH
    finally:
        writer.file.close()
