"""Pre-aggregated metrics: totals and histograms kept in plain Python containers.

A synchronous OpenTelemetry SDK call costs about 5 µs; updating a dict entry
or a list slot costs tens of nanoseconds. :class:`Tally` (behind an observable
counter) and :class:`HistogramTally` (exported as OpenTelemetry histogram data
by :class:`~jobqueue.telemetry.prometheus.PrometheusReader`) are what the
metrics subscriber writes on the event-loop thread; the exporter reads copies
of them on the thread that collects.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Mapping

from opentelemetry.sdk.metrics.export import AggregationTemporality, HistogramDataPoint, Metric
from opentelemetry.sdk.metrics.export import Histogram as HistogramData

from jobqueue.errors import MetricLabelError
from jobqueue.telemetry.registry import MetricSpec

__all__ = ["COUNTS", "HistogramTally", "Tally"]

#: Index of the first bucket count in a :class:`HistogramTally` point
#: (``[sum, min, max, count_0, ..., count_n]``).
COUNTS = 3


class _Aggregate:
    """Label names fixed and checked against the declaration once; values come in order."""

    __slots__ = ("_names", "spec")

    def __init__(self, spec: MetricSpec, names: tuple[str, ...]) -> None:
        spec.check(dict.fromkeys(names, ""))
        self.spec = spec
        self._names = names

    def _check(self, values: tuple[str, ...]) -> None:
        if len(values) != len(self._names):
            raise MetricLabelError(
                f"metric {self.spec.name!r}: got {len(values)} label values for {list(self._names)}"
            )

    def labels(self, values: tuple[str, ...]) -> dict[str, str]:
        """The label mapping of the label set ``values``."""
        return dict(zip(self._names, values, strict=True))


class Tally(_Aggregate):
    """Running totals per label set, reported by an observable (up-down) counter.

    Args:
        spec: An observable counter or up-down counter.
        names: Label names, in the order :meth:`add` receives their values.

    Raises:
        MetricLabelError: If ``names`` does not match the metric's labels.
    """

    __slots__ = ("_totals",)

    def __init__(self, spec: MetricSpec, names: tuple[str, ...] = ()) -> None:
        super().__init__(spec, names)
        self._totals: dict[tuple[str, ...], float] = {}

    def add(self, values: tuple[str, ...], amount: float = 1) -> None:
        """Add ``amount`` to the total of the label set ``values`` (one thread only)."""
        self._check(values)
        self._totals[values] = self._totals.get(values, 0) + amount

    def add_known(self, values: tuple[str, ...], amount: float = 1) -> None:
        """:meth:`add` without the label count check, for callers whose tuples are fixed."""
        self._totals[values] = self._totals.get(values, 0) + amount

    def observe(self) -> list[tuple[float, Mapping[str, str]]]:
        """The totals as ``(value, labels)`` pairs; safe to call from another thread."""
        return [(v, self.labels(k)) for k, v in self._totals.copy().items()]


class HistogramTally(_Aggregate):
    """A pre-aggregated explicit-bucket histogram, exported as OpenTelemetry data.

    Each label set has one *point*, a list ``[sum, min, max, count_0, ...,
    count_n]`` (bucket counts start at :data:`COUNTS`). :meth:`record` updates
    it with a bisect and a few additions; a hot-path recorder may also hold the
    list from :meth:`point` and update it in place the same way (one thread
    only). :meth:`to_metric` builds the cumulative ``Metric`` the Prometheus
    reader exports. As in OpenTelemetry, bucket ``i`` holds values in
    ``(bounds[i-1], bounds[i]]``.

    Args:
        spec: A histogram with explicit ``buckets``.
        names: Label names, in the order :meth:`record` receives their values.

    Raises:
        MetricLabelError: If ``names`` does not match the metric's labels.
        ValueError: If ``spec`` has no buckets.
    """

    __slots__ = ("_points", "_start_ns", "bounds")

    def __init__(self, spec: MetricSpec, names: tuple[str, ...] = ()) -> None:
        if spec.buckets is None:
            raise ValueError(f"metric {spec.name!r} is not a histogram with buckets")
        super().__init__(spec, names)
        #: The bucket upper bounds (inclusive), for recorders that bisect themselves.
        self.bounds: tuple[float, ...] = spec.buckets
        self._points: dict[tuple[str, ...], list[float]] = {}
        self._start_ns = time.time_ns()

    def point(self, values: tuple[str, ...]) -> list[float]:
        """The live point of the label set ``values``, created empty if new.

        Raises:
            MetricLabelError: If ``values`` has the wrong number of labels.
        """
        p = self._points.get(values)
        if p is None:
            self._check(values)
            p = self._points[values] = [0.0, math.inf, -math.inf, *[0] * (len(self.bounds) + 1)]
        return p

    def record(self, values: tuple[str, ...], x: float) -> None:
        """Add one value to the label set ``values`` (one thread only).

        Raises:
            MetricLabelError: If ``values`` has the wrong number of labels.
        """
        p = self._points.get(values) or self.point(values)
        p[0] += x
        p[bisect_left(self.bounds, x) + COUNTS] += 1
        if x < p[1]:
            p[1] = x
        if x > p[2]:
            p[2] = x

    def to_metric(self) -> Metric | None:
        """The cumulative histogram so far (``None`` before the first value)."""
        # No lock: the loop thread is the only writer, and dict/list copies are atomic.
        # A copy taken mid-record may hold the new sum and not yet the new count
        # (or the reverse); the count is derived from the buckets, so +Inf == count.
        snapshot = [(k, p.copy()) for k, p in self._points.copy().items()]
        now = time.time_ns()
        points = []
        for k, p in snapshot:
            counts = [int(c) for c in p[COUNTS:]]
            total = sum(counts)
            if total:
                points.append(
                    HistogramDataPoint(
                        attributes=self.labels(k),
                        start_time_unix_nano=self._start_ns,
                        time_unix_nano=now,
                        count=total,
                        sum=p[0],
                        bucket_counts=counts,
                        explicit_bounds=list(self.bounds),
                        min=p[1],
                        max=p[2],
                        exemplars=[],
                    )
                )
        if not points:
            return None
        data = HistogramData(points, AggregationTemporality.CUMULATIVE)
        return Metric(self.spec.name, self.spec.description, self.spec.unit, data)
