"""Prometheus export: a reader for pre-aggregated metrics (the endpoint: :mod:`.server`)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import Metric, MetricsData, ResourceMetrics, ScopeMetrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import REGISTRY, CollectorRegistry

__all__ = ["PrometheusReader"]


class PrometheusReader(PrometheusMetricReader):
    """A ``PrometheusMetricReader`` that also exports metrics aggregated outside the SDK.

    Args:
        extra: Called on each collection; returns finished OpenTelemetry ``Metric``
            objects (e.g. from :class:`~jobqueue.telemetry.registry.HistogramTally`),
            exported under the instrumentation scope ``scope``.
        scope: Instrumentation scope of the extra metrics.
        registry: The ``prometheus_client`` registry to register with.
    """

    _live: ClassVar[weakref.WeakSet[PrometheusReader]] = weakref.WeakSet()

    def __init__(
        self,
        extra: Callable[[], Iterable[Metric | None]],
        *,
        scope: InstrumentationScope,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        if any(other._registry is registry for other in list(self._live)):
            raise ValueError(
                "another jobqueue metrics reader is registered in this prometheus_client "
                "registry, so every series would be exported twice; shutdown() the other "
                "JobMetrics first, or pass prometheus_registry=CollectorRegistry()"
            )
        super().__init__(scope_info_enabled=False, registry=registry)
        self._extra = extra
        self._scope = scope
        self._live.add(self)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Unregister from the ``prometheus_client`` registry."""
        self._live.discard(self)
        super().shutdown(timeout_millis, **kwargs)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        extra = [m for m in self._extra() if m is not None]
        if extra:
            scope = ScopeMetrics(self._scope, extra, "")
            resources = list(metrics_data.resource_metrics) if metrics_data else []
            if resources:
                first = resources[0]
                scopes = [*first.scope_metrics, scope]
                resources[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
            else:
                resources = [ResourceMetrics(Resource.get_empty(), [scope], "")]
            metrics_data = MetricsData(resources)
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)
