"""OpenTelemetry metrics for jobqueue, exported for Prometheus.

Importing this package loads the OpenTelemetry SDK; the service imports it
only when metrics are asked for, so telemetry off costs nothing.

Example:
    >>> metrics = JobMetrics()                       # doctest: +SKIP
    >>> metrics.attach(service.hooks)                # doctest: +SKIP
    >>> server = serve_metrics(9464)                 # doctest: +SKIP
"""

from __future__ import annotations

from jobqueue.telemetry.aggregates import HistogramTally, Tally
from jobqueue.telemetry.metrics import EVENT_BUCKETS, JOB_BUCKETS, JOBQUEUE_METRICS, JobMetrics
from jobqueue.telemetry.prometheus import PrometheusReader
from jobqueue.telemetry.registry import (
    BoundMetrics,
    LabelValueCap,
    MetricRegistry,
    MetricSpec,
    MetricType,
)
from jobqueue.telemetry.server import MetricsServer, serve_metrics

__all__ = [
    "EVENT_BUCKETS",
    "JOBQUEUE_METRICS",
    "JOB_BUCKETS",
    "BoundMetrics",
    "HistogramTally",
    "JobMetrics",
    "LabelValueCap",
    "MetricRegistry",
    "MetricSpec",
    "MetricType",
    "MetricsServer",
    "PrometheusReader",
    "Tally",
    "serve_metrics",
]
