"""Metrics shared by every process, exposed on the admin listener's ``/metrics``.

* :class:`MetricsLayout` -- rows for route and upstream names, and where every cell lives
  (:mod:`fastproxy.metrics.layout`: label sets, status codes, buckets);
* :class:`SharedMetrics` -- the region the master makes before forking, and the master's
  operations on it (reload, release, a dead process's gauges) (:mod:`fastproxy.metrics.shared`:
  theory of operation);
* :class:`WorkerMetrics` -- one process's recorder, the hot-path increments;
* :func:`render` -- the Prometheus text, summed over every process
  (:mod:`fastproxy.metrics.exposition`).

Wiring
------
Master, before the first fork::

    layout = MetricsLayout([r.name for r in config.router.routes], list(config.upstreams),
                           slots=<size of the heartbeat table>)
    shared = SharedMetrics.create(layout)
    restarts = WorkerMetrics(shared, MASTER_SLOT)

* reaping a process that held slot ``s``: ``shared.clear_gauges(s)``; when a worker is respawned
  after dying (not when a reload or a stop retired it): ``restarts.worker_restarted()``;
* HUP with a valid configuration, before forking the new generation:
  ``layout = shared.relayout(route_names, upstream_names)`` -- a :class:`MetricsTableFull` (a
  ``ValueError``) refuses the reload like an invalid configuration; the new workers get ``layout``
  (it is also :attr:`SharedMetrics.layout`, the default of :class:`WorkerMetrics`);
* an abandoned reload: ``shared.layout = running_layout`` before forking anything else;
* once no process of an older generation (or of an abandoned one) is alive:
  ``shared.release([running_layout])``.

Worker, after fork (in ``Worker.run``): ``metrics = WorkerMetrics(shared, slot, layout)`` with its
heartbeat slot; rows looked up once (``metrics.route_row(route.name)``, ``route_row(None)`` for
requests no route matched, ``metrics.upstream_row(name)``); per answered request
``metrics.request(row, status, decision == "allow", seconds)``; the other methods where their
events happen. The audit writer takes ``AUDIT_SLOT``.

Admin listener: ``render(shared)`` (bytes; ``CONTENT_TYPE``), from whichever worker answers.
"""

from fastproxy.metrics.exposition import CONTENT_TYPE, escape_label_value, render
from fastproxy.metrics.layout import BUCKETS, STATUS_LABELS, UNMATCHED, MetricsLayout, status_cell
from fastproxy.metrics.shared import AUDIT_SLOT, MASTER_SLOT, MetricsTableFull, SharedMetrics, WorkerMetrics

__all__ = [
    "AUDIT_SLOT",
    "BUCKETS",
    "CONTENT_TYPE",
    "MASTER_SLOT",
    "STATUS_LABELS",
    "UNMATCHED",
    "MetricsLayout",
    "MetricsTableFull",
    "SharedMetrics",
    "WorkerMetrics",
    "escape_label_value",
    "render",
    "status_cell",
]
