"""A registry of metric declarations that validates the labels of every recording.

As in Langflow's ``OpenTelemetry`` class, each metric declares its name,
description, unit, instrument type and mandatory/optional labels; recording
with a missing or unknown label raises :class:`~jobqueue.errors.MetricLabelError`.
Labels stay bounded: per-job labels (job id, payload, lock key) are refused at
declaration, and :class:`LabelValueCap` folds values past a limit into ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    Meter,
    Observation,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from jobqueue.errors import MetricLabelError

__all__ = ["BoundMetrics", "LabelValueCap", "MetricRegistry", "MetricSpec", "MetricType"]

#: Label names that would give one time series per job (unbounded cardinality).
FORBIDDEN_LABELS = frozenset(
    {"id", "job_id", "job.id", "payload", "key", "lock_key", "idempotency_key", "session_id"}
)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_UNIT_SUFFIXES = ("_total", "_seconds", "_bytes", "_ms", "_count", "_ratio")

#: An observable metric's source: returns ``(value, labels)`` pairs when collected.
ObserveFn = Callable[[], Iterable[tuple[float, Mapping[str, str]]]]
_Sync = Counter | UpDownCounter | Histogram


class MetricType(StrEnum):
    """The OpenTelemetry instrument behind a metric."""

    COUNTER = "counter"
    UP_DOWN_COUNTER = "up_down_counter"
    HISTOGRAM = "histogram"
    OBSERVABLE_GAUGE = "observable_gauge"
    OBSERVABLE_COUNTER = "observable_counter"
    OBSERVABLE_UP_DOWN_COUNTER = "observable_up_down_counter"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """The declaration of one metric.

    Attributes:
        name: OpenTelemetry instrument name: dotted, lowercase, without a unit or
            ``_total`` suffix (the Prometheus exporter adds those).
        description: One line for the Prometheus ``# HELP`` text.
        unit: UCUM unit, e.g. ``"s"``, ``"By"`` or an annotation such as ``"{job}"``.
        type: The instrument type.
        mandatory: Labels every recording must carry.
        optional: Labels a recording may carry in addition.
        buckets: Explicit histogram bucket boundaries (histograms only).
    """

    name: str
    description: str
    unit: str
    type: MetricType
    mandatory: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    buckets: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name) or self.name.endswith(_UNIT_SUFFIXES):
            raise ValueError(
                f"metric name {self.name!r} must be dotted lowercase (e.g. "
                "'jobqueue.job.duration') without a unit or '_total' suffix; put the unit in `unit`"
            )
        if not self.unit:
            raise ValueError(f"metric {self.name!r} needs a unit (use '1' or '{{item}}' if none)")
        if both := self.mandatory & self.optional:
            raise ValueError(
                f"metric {self.name!r}: labels {sorted(both)} are both mandatory and optional"
            )
        if bad := (self.mandatory | self.optional) & FORBIDDEN_LABELS:
            raise ValueError(
                f"metric {self.name!r}: labels {sorted(bad)} would create one series per job; "
                "use bounded labels such as handler, status or error_type"
            )
        if self.buckets is not None:
            if self.type is not MetricType.HISTOGRAM:
                raise ValueError(f"metric {self.name!r}: only histograms take buckets")
            if list(self.buckets) != sorted(set(self.buckets)):
                raise ValueError(f"metric {self.name!r}: buckets must be strictly increasing")

    @property
    def labels(self) -> frozenset[str]:
        """Every label this metric accepts (mandatory and optional)."""
        return self.mandatory | self.optional

    def check(self, labels: Mapping[str, object]) -> None:
        """Raise if ``labels`` lacks a mandatory label or carries an unknown one.

        Args:
            labels: Label names and values of one recording.

        Raises:
            MetricLabelError: Naming the metric, the offending and the expected labels.
        """
        found = 0
        for key in labels:
            if key in self.mandatory:
                found += 1
            elif key not in self.optional:
                break
        else:
            if found == len(self.mandatory):
                return
        missing = sorted(self.mandatory.difference(labels))
        unknown = sorted(set(labels).difference(self.labels))
        problems = [f"missing label(s) {missing}"] if missing else []
        problems += [f"unknown label(s) {unknown}"] if unknown else []
        raise MetricLabelError(
            f"metric {self.name!r}: {' and '.join(problems)}; expected mandatory labels "
            f"{sorted(self.mandatory)} and optional labels {sorted(self.optional)}"
        )


class LabelValueCap:
    """Bounds the distinct values of one label: past ``limit`` new values become ``other``.

    Args:
        limit: How many distinct values are kept as they are.
        other: The value that stands for every value past the limit.
    """

    __slots__ = ("_limit", "_other", "seen")

    def __init__(self, limit: int, other: str = "other") -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self._limit = limit
        self._other = other
        #: The values kept so far (read-only; a membership test is the fast path).
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        """Return ``value`` if it is known or there is room for it, else the overflow value."""
        if value in self.seen:
            return value
        if len(self.seen) < self._limit:
            self.seen.add(value)
            return value
        return self._other


class MetricRegistry:
    """The set of declared metrics, by name.

    Args:
        specs: Metrics to declare at once.
    """

    def __init__(self, specs: Iterable[MetricSpec] = ()) -> None:
        self._specs: dict[str, MetricSpec] = {}
        for spec in specs:
            self.define(spec)

    def define(self, spec: MetricSpec) -> MetricSpec:
        """Declare a metric; ``ValueError`` if its name is taken."""
        if spec.name in self._specs:
            raise ValueError(f"metric {spec.name!r} is already defined")
        self._specs[spec.name] = spec
        return spec

    def __getitem__(self, name: str) -> MetricSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"no metric {name!r}; defined: {', '.join(self._specs)}") from None

    def __iter__(self) -> Iterator[MetricSpec]:
        return iter(self._specs.values())

    def views(self, meter_name: str | None = None) -> list[View]:
        """OpenTelemetry Views for a ``MeterProvider``: bucket boundaries and label allow-lists.

        Args:
            meter_name: Restrict the views to instruments of this meter.
        """
        return [
            View(
                instrument_name=spec.name,
                meter_name=meter_name,
                attribute_keys=set(spec.labels),
                aggregation=None
                if spec.buckets is None
                else ExplicitBucketHistogramAggregation(boundaries=spec.buckets),
            )
            for spec in self
        ]

    def bind(
        self,
        meter: Meter,
        observers: Mapping[str, ObserveFn] | None = None,
        exclude: Iterable[str] = (),
    ) -> BoundMetrics:
        """Create the declared instruments on ``meter``.

        Args:
            meter: Where the instruments are created.
            observers: Value sources of the observable metrics, by metric name; an
                observable metric without one is not created.
            exclude: Metrics not to create (e.g. exported by a
                :class:`~jobqueue.telemetry.aggregates.HistogramTally`).
        """
        return BoundMetrics(self, meter, observers or {}, frozenset(exclude))


class BoundMetrics:
    """A registry's instruments created on one ``Meter``; every recording is validated."""

    def __init__(
        self,
        registry: MetricRegistry,
        meter: Meter,
        observers: Mapping[str, ObserveFn],
        exclude: frozenset[str] = frozenset(),
    ) -> None:
        self.registry = registry
        self._sync: dict[str, tuple[MetricSpec, _Sync]] = {}
        for spec in registry:
            if spec.name in exclude:
                continue
            args = (spec.name, spec.unit, spec.description)
            if spec.type is MetricType.COUNTER:
                inst: _Sync = meter.create_counter(*args)
            elif spec.type is MetricType.UP_DOWN_COUNTER:
                inst = meter.create_up_down_counter(*args)
            elif spec.type is MetricType.HISTOGRAM:
                inst = meter.create_histogram(
                    *args, explicit_bucket_boundaries_advisory=spec.buckets
                )
            else:
                if spec.name in observers:
                    self._create_observable(meter, spec, observers[spec.name])
                continue
            self._sync[spec.name] = (spec, inst)

    @staticmethod
    def _create_observable(meter: Meter, spec: MetricSpec, observe: ObserveFn) -> None:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for value, labels in observe():
                spec.check(labels)
                out.append(Observation(value, dict(labels)))
            return out

        create = {
            MetricType.OBSERVABLE_GAUGE: meter.create_observable_gauge,
            MetricType.OBSERVABLE_COUNTER: meter.create_observable_counter,
            MetricType.OBSERVABLE_UP_DOWN_COUNTER: meter.create_observable_up_down_counter,
        }[spec.type]
        create(spec.name, [callback], spec.unit, spec.description)

    def _get(self, name: str, labels: Mapping[str, str]) -> tuple[MetricSpec, _Sync]:
        try:
            entry = self._sync[name]
        except KeyError:
            raise KeyError(f"no synchronous metric {name!r}") from None
        entry[0].check(labels)
        return entry

    def histogram(self, name: str, labels: Mapping[str, str]) -> Histogram:
        """The histogram ``name``, once ``labels`` passed its declaration.

        For hot paths that record many values with label mappings of one fixed
        shape: check the shape once here, then call ``record`` on the instrument.

        Raises:
            KeyError: If ``name`` is not a synchronous metric of this registry.
            MetricLabelError: If the labels do not match the declaration.
            TypeError: If ``name`` is not a histogram.
        """
        spec, inst = self._get(name, labels)
        if not isinstance(inst, Histogram):
            raise TypeError(f"metric {name!r} is a {spec.type}, not a histogram")
        return inst

    def add(self, name: str, amount: float, labels: Mapping[str, str]) -> None:
        """Add to a counter or up-down counter.

        Raises:
            MetricLabelError: If the labels do not match the declaration.
            TypeError: If ``name`` is a histogram.
        """
        _, inst = self._get(name, labels)
        if isinstance(inst, Histogram):
            raise TypeError(f"metric {name!r} is a histogram: use record()")
        inst.add(amount, labels)

    def record(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        """Record one value in a histogram.

        Raises:
            MetricLabelError: If the labels do not match the declaration.
            TypeError: If ``name`` is not a histogram.
        """
        spec, inst = self._get(name, labels)
        if not isinstance(inst, Histogram):
            raise TypeError(f"metric {name!r} is a {spec.type}, not a histogram: use add()")
        inst.record(value, labels)
