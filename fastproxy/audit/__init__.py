"""The audit pipeline: one record per answered request, batched to one writer, hash-chained.

Pieces
------
- :mod:`~fastproxy.audit.record` — records as workers encode them (in C, ``_encode``: 0.4 µs
  with the timestamp; ``submit`` in all ~1.2 µs of worker CPU, measured by
  :mod:`~fastproxy.audit.measure` on the 2-core dev box; the msgspec reference took 1.5 and 2.4).
- :mod:`~fastproxy.audit.batcher` — a worker's stream without I/O: seqs, bounded queue, batches.
- :mod:`~fastproxy.audit.client` — :class:`AuditClient`, the worker's side on its event loop.
- :mod:`~fastproxy.audit.protocol` — the messages between workers and the writer.
- :mod:`~fastproxy.audit.shared` — :class:`AuditShared`, the master-made table in shared memory.
- :mod:`~fastproxy.audit.chain` — the canonical form and the hash chain (the writer seals whole
  batches in C, ``_seal``: 0.36 µs a record).
- :mod:`~fastproxy.audit.writer` — :func:`run_writer`, the writer process.
- :mod:`~fastproxy.audit.verify` — ``fastproxy audit verify``.

Wiring (master, workers, request path)
--------------------------------------
In the master, before forking anything, when ``[audit] path`` is set::

    shared = AuditShared.create(boot=new_boot_id())      # slots: at least 2 x workers
    endpoint = WriterEndpoint.create()                   # listening socket, abstract address

The writer (respawned with backoff whenever it exits non-zero; USR1 forwarded to it)::

    pid = os.fork()
    if pid == 0:                                  # close the proxy's listeners first
        os._exit(run_writer(config.audit, endpoint, shared, drain_timeout=graceful_timeout))
    ... on reaping it:  shared.writer_exited()

Each worker::

    slot, worker_number = shared.claim()         # in the master, before the fork
    pid = os.fork()
    if pid == 0:
        endpoint.close()                          # workers only connect
        ... in the worker's loop:
        client = AuditClient(loop, endpoint.address, shared, slot,
                             batch_max=config.audit.batch_max,
                             flush_interval=config.audit.flush_interval)
        client.start()
    ... on reaping it, whatever its status:  shared.worker_exited(slot)

Stop (TERM): stop the workers (each ``await client.drain(timeout)`` after its last response, then
``client.close()``), and once they have all exited send TERM to the writer and wait for it: it
commits, fsyncs and exits 0. ``shared.stats()`` gives /metrics its totals from any process;
``shared.writer_pid != 0`` says a writer is serving (for /readyz).

Writer exit statuses: 0 (stopped by TERM), 74 ``EXIT_IO_ERROR`` (write/fdatasync/open/rename
failed, disk full included: restart with backoff; meanwhile ``client.available`` is False and
fail_closed routes answer 503), 65 ``EXIT_BAD_TAIL`` (the file does not end with a valid record:
an operator must move it aside), 1 (a bug).

The request path, once per answered request: ``client.submit(...)`` (see
:class:`~fastproxy.audit.client.AuditClient`); on a fail_closed route, ``client.admits()`` before
calling the upstream, and 503 when it is False.

What survives what
------------------
A record is *submitted* when ``submit`` returns True, *sent* when its batch is in the writer's
socket, *written* when the writer's commit (write, then fdatasync with ``fsync = true``) is done,
and only then acknowledged. Every seq of every (boot, worker) stream ends up in the file exactly
once: as its record, or inside a gap record ``{"seq": S, "gap": N, "reason": …}``.

- Queue full (the writer is slow or down): ``submit`` returns False and the record is not kept;
  the run of such drops becomes one gap record (reason ``queue_full``) ahead of the next record
  kept, and the ``dropped`` counter grows.
- A worker killed (kill -9, crash): everything it had sent is written (the socket keeps it).
  What it still held — the open batch (at most ``flush_interval`` old, up to ``batch_max``
  records) and batches not sent or not acknowledged — is lost, and accounted: the writer writes
  one gap record (reason ``lost_with_worker``) for exactly those seqs once the master has reaped
  the worker, from the ``assigned`` counter the worker keeps in shared memory on every submit.
  With a writer up, a record whose response went out is therefore written within about one
  ``flush_interval`` (plus one commit, which under load starts up to 20 ms after the last: see
  :data:`fastproxy.audit.writer.COMMIT_SPACING`), or accounted as lost if the worker dies before. The
  record is submitted before the response's last bytes are written (ClientConnection.write_last),
  so a kill between the two cannot leave an answered request without its record or its gap;
  the exception is a response the upstream sent before the request body was all read (its
  record waits for the body's end, as bytes_in is not known before).
- The writer killed or failing: nothing acknowledged is lost (it was written before the ack).
  Workers keep what was not acknowledged, reconnect, and send it again to the next writer, which
  skips what its file already has; meanwhile they queue up to their bound (then drop, as above).
- A worker that exits gracefully drains first: nothing is lost unless the writer is down then,
  and that loss is accounted as for a killed worker.
- The host crashing: with ``fsync = true`` every acknowledged record is on disk; records written
  but not yet synced may be lost with the page cache, unaccounted (``fsync = false``: up to
  whatever the kernel had not written back).

No secret reaches a record or a log line: records hold only the values the request path passes
(never a token, an API key or an Authorization value), and the writer logs counts, seqs and file
names, never record contents.
"""

from __future__ import annotations

from fastproxy.audit.chain import GENESIS, Chain, LineError, canonical, check_line, seal
from fastproxy.audit.client import AuditClient
from fastproxy.audit.record import RECORD_MAX, RecordEncoder, RequestRecord
from fastproxy.audit.shared import AuditShared, AuditStats, new_boot_id
from fastproxy.audit.verify import Summary, VerifyError, verify_files
from fastproxy.audit.writer import (
    EXIT_BAD_TAIL,
    EXIT_CRASH,
    EXIT_IO_ERROR,
    EXIT_OK,
    PROCESS_NAME,
    WriterEndpoint,
    run_writer,
)

__all__ = [
    "EXIT_BAD_TAIL",
    "EXIT_CRASH",
    "EXIT_IO_ERROR",
    "EXIT_OK",
    "GENESIS",
    "PROCESS_NAME",
    "RECORD_MAX",
    "AuditClient",
    "AuditShared",
    "AuditStats",
    "Chain",
    "LineError",
    "RecordEncoder",
    "RequestRecord",
    "Summary",
    "VerifyError",
    "WriterEndpoint",
    "canonical",
    "check_line",
    "new_boot_id",
    "run_writer",
    "seal",
    "verify_files",
]
