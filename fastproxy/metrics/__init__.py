"""Metrics shared by every process, exposed on the admin listener's ``/metrics``.

* :class:`MetricsLayout` -- rows for route and upstream names, and where every cell lives
  (:mod:`fastproxy.metrics.layout`: label sets, status codes, buckets);
* :class:`SharedMetrics` -- the region the master makes before forking, and the master's
  operations on it (reload, release, a dead process's gauges) (:mod:`fastproxy.metrics.shared`:
  theory of operation);
* :class:`WorkerMetrics` -- one process's recorder, the hot-path increments;
* :func:`render` -- the Prometheus text, summed over every process
  (:mod:`fastproxy.metrics.exposition`).
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
