"""The metrics subscriber: one callback on the lifecycle bus records every instrument.

:class:`JobMetrics` turns :class:`~jobqueue.hooks.Lifecycle` records into
OpenTelemetry measurements; nothing else in jobqueue records metrics. Live
state (pending jobs per handler, process CPU and memory) is read by
observable instruments when the exporter collects, e.g. on a Prometheus scrape
(which runs on the HTTP server's thread).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from importlib import metadata
from types import TracebackType
from typing import Protocol

from opentelemetry.metrics import MeterProvider as APIMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import REGISTRY, CollectorRegistry

from jobqueue.hooks import HookKind, Hooks, Lifecycle
from jobqueue.telemetry.prometheus import PrometheusReader
from jobqueue.telemetry.registry import (
    BoundMetrics,
    HistogramTally,
    LabelValueCap,
    MetricRegistry,
    MetricSpec,
    MetricType,
    Tally,
)

__all__ = ["EVENT_BUCKETS", "JOBQUEUE_METRICS", "JOB_BUCKETS", "JobMetrics"]

#: Histogram boundaries (seconds) for job wait and run times: 1 ms .. 10 min.
JOB_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0, 600.0)
#: Histogram boundaries (seconds) for an event's time in its job's queue: 0.1 ms .. 30 s.
EVENT_BUCKETS = (0.0001, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 30.0)

_M, _H, _HS = MetricType, frozenset({"handler"}), frozenset({"handler", "status"})

#: Every metric jobqueue exports.
JOBQUEUE_METRICS = MetricRegistry([
    MetricSpec("jobqueue.queue.length", "Pending jobs", "{job}", _M.OBSERVABLE_GAUGE, _H),
    MetricSpec("jobqueue.jobs.active", "Running jobs", "{job}", _M.OBSERVABLE_UP_DOWN_COUNTER, _H),
    MetricSpec("jobqueue.job.wait_time", "Time from submit (or run_at) to start", "s",
               _M.HISTOGRAM, _H, buckets=JOB_BUCKETS),
    MetricSpec("jobqueue.job.duration", "Handler run time", "s", _M.HISTOGRAM, _HS,
               buckets=JOB_BUCKETS),
    MetricSpec("jobqueue.jobs.finished", "Jobs finished", "{job}", _M.OBSERVABLE_COUNTER, _HS),
    MetricSpec("jobqueue.job.errors", "Failed attempts by error type", "{error}",
               _M.OBSERVABLE_COUNTER, frozenset({"handler", "error_type"})),
    MetricSpec("jobqueue.event.queue_time", "Time an event spent in its job's queue", "s",
               _M.HISTOGRAM, buckets=EVENT_BUCKETS),
    MetricSpec("process.cpu.time", "CPU time of this process", "s", _M.OBSERVABLE_COUNTER,
               frozenset({"cpu.mode"})),
    MetricSpec("process.memory.usage", "Resident memory of this process", "By",
               _M.OBSERVABLE_GAUGE),
])  # fmt: skip

_HISTOGRAMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("jobqueue.job.wait_time", ("handler",)),
    ("jobqueue.job.duration", ("handler", "status")),
    ("jobqueue.event.queue_time", ()),
)
_STATUSES = frozenset({"completed", "failed", "cancelled", "stopped"})
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _version() -> str | None:
    try:
        return metadata.version("jobqueue")
    except metadata.PackageNotFoundError:
        return None


def _cpu() -> list[tuple[float, Mapping[str, str]]]:
    t = os.times()
    return [(t.user, {"cpu.mode": "user"}), (t.system, {"cpu.mode": "system"})]


def _memory() -> list[tuple[float, Mapping[str, str]]]:
    try:  # Linux; elsewhere the gauge reports nothing rather than a wrong figure
        with open("/proc/self/statm", "rb") as f:
            return [(int(f.read().split()[1]) * _PAGE_SIZE, {})]
    except (OSError, IndexError, ValueError):
        return []


class _Recorder(Protocol):
    def record_known(self, values: tuple[str, ...], x: float) -> None: ...


class _SyncHistogram:
    """A synchronous OpenTelemetry histogram, for a provider given by the caller."""

    def __init__(self, bound: BoundMetrics, name: str, labels: tuple[str, ...]) -> None:
        bound.registry[name].check(dict.fromkeys(labels, ""))
        self._record = bound.record
        self._name = name
        self._labels = labels

    def record_known(self, values: tuple[str, ...], x: float) -> None:
        self._record(self._name, x, dict(zip(self._labels, values, strict=True)))


class JobMetrics:
    """Records jobqueue's OpenTelemetry metrics from lifecycle records.

    Args:
        meter_provider: Where the instruments are created. If ``None``, a
            ``MeterProvider`` with a Prometheus reader is built and owned (and shut
            down by :meth:`shutdown`); its histograms are pre-aggregated in this
            process, which costs far less per job than synchronous instruments.
            A given provider gets synchronous instruments and is left alone.
        queue_lengths: Returns pending jobs per handler from live state; called on
            each collection, possibly from another thread, so it must be cheap and
            thread-safe. If ``None``, pending counts are tallied from the records
            of the attached bus (jobs submitted by another process are not seen).
        prometheus_registry: The ``prometheus_client`` registry the built reader
            registers with (default: the global ``REGISTRY``). Ignored when a
            provider is given.
        max_handlers: Distinct handler labels kept; later ones become ``other``.
        max_error_types: Distinct error-type labels kept; later ones become ``other``.
    """

    def __init__(
        self,
        meter_provider: APIMeterProvider | None = None,
        *,
        queue_lengths: Callable[[], Mapping[str, int]] | None = None,
        prometheus_registry: CollectorRegistry | None = None,
        max_handlers: int = 100,
        max_error_types: int = 50,
    ) -> None:
        self._owned: MeterProvider | None = None
        self.prometheus_registry: CollectorRegistry | None = None
        reg = JOBQUEUE_METRICS
        version = _version()
        fast: dict[str, HistogramTally] = {}
        if meter_provider is None:  # ours: histograms are pre-aggregated and injected
            fast = {name: HistogramTally(reg[name], labels) for name, labels in _HISTOGRAMS}
            self.prometheus_registry = prometheus_registry or REGISTRY
            reader = PrometheusReader(
                lambda: [h.to_metric() for h in fast.values()],
                scope=InstrumentationScope("jobqueue", version),
                registry=self.prometheus_registry,
            )
            meter_provider = self._owned = MeterProvider(
                metric_readers=[reader], views=reg.views("jobqueue"), shutdown_on_exit=False
            )
        self.meter_provider = meter_provider
        self._queue_lengths = queue_lengths
        self._handler = LabelValueCap(max_handlers)
        self._handlers_seen = self._handler.seen
        self._error_type = LabelValueCap(max_error_types)
        self._finished = Tally(reg["jobqueue.jobs.finished"], ("handler", "status"))
        self._errors = Tally(reg["jobqueue.job.errors"], ("handler", "error_type"))
        self._active = Tally(reg["jobqueue.jobs.active"], ("handler",))
        self._pending: dict[str, int] = {}  # fallback tally, used without queue_lengths
        self._running: set[str] = set()  # ids of jobs started here and not finished yet
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False
        self._dispatch: dict[HookKind, Callable[[Lifecycle, str], None]] = {
            HookKind.SUBMITTED: self._submitted,
            HookKind.STARTED: self._started,
            HookKind.FINISHED: self._finished_job,
            HookKind.RETRYING: self._retrying,
            HookKind.EVENT_CONSUMED: self._event_consumed,
        }
        self.instruments = reg.bind(
            meter_provider.get_meter("jobqueue", version),
            {
                "jobqueue.queue.length": self._observe_queue,
                "jobqueue.jobs.active": self._active.observe,
                "jobqueue.jobs.finished": self._finished.observe,
                "jobqueue.job.errors": self._errors.observe,
                "process.cpu.time": _cpu,
                "process.memory.usage": _memory,
            },
            exclude=fast,
        )
        hist: Mapping[str, _Recorder] = fast or {
            name: _SyncHistogram(self.instruments, name, labels) for name, labels in _HISTOGRAMS
        }
        self._wait = hist["jobqueue.job.wait_time"]
        self._duration = hist["jobqueue.job.duration"]
        self._event_time = hist["jobqueue.event.queue_time"]

    # --- wiring ---------------------------------------------------------------

    def attach(
        self, hooks: Hooks, *, queue_lengths: Callable[[], Mapping[str, int]] | None = None
    ) -> None:
        """Subscribe to ``hooks``; a previous subscription is dropped first.

        Args:
            hooks: The service's lifecycle bus (``service.hooks``).
            queue_lengths: Replaces the constructor's live pending-count source.

        Raises:
            RuntimeError: If :meth:`shutdown` was called.
        """
        if self._closed:
            raise RuntimeError("JobMetrics was shut down; create a new one")
        self.detach()
        if queue_lengths is not None:
            self._queue_lengths = queue_lengths
        kinds = set(self._dispatch)
        if self._queue_lengths is not None:  # live state: submissions need no record
            kinds.discard(HookKind.SUBMITTED)
        self._unsubscribe = hooks.subscribe(self._on_record, kinds)

    def detach(self) -> None:
        """Stop receiving lifecycle records (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def shutdown(self) -> None:
        """Detach and, if the provider is ours, shut it down (idempotent).

        This unregisters the Prometheus collector from its ``prometheus_client``
        registry, so several services (or tests) in one process do not collide.
        """
        self.detach()
        if not self._closed:
            self._closed = True
            if self._owned is not None:
                self._owned.shutdown()

    def __enter__(self) -> JobMetrics:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # --- recording (event-loop thread) -----------------------------------------

    def _on_record(self, rec: Lifecycle) -> None:
        handle = self._dispatch.get(rec.kind)
        if handle is not None:
            handler = rec.handler
            if handler not in self._handlers_seen:  # fast path: a known handler
                handler = self._handler(handler or "unnamed")
            handle(rec, handler)

    def _started(self, rec: Lifecycle, handler: str) -> None:
        if rec.wait_s is not None:
            self._wait.record_known((handler,), rec.wait_s if rec.wait_s > 0.0 else 0.0)
        job_id = rec.job_id
        if job_id is None or job_id not in self._running:
            if job_id is not None:
                self._running.add(job_id)
            self._active.add_known((handler,), 1)
            self._tally(handler, -1)

    def _finished_job(self, rec: Lifecycle, handler: str) -> None:
        status = rec.status if rec.status in _STATUSES else "other"
        self._finished.add_known((handler, status))
        if rec.run_s is not None:
            self._duration.record_known((handler, status), rec.run_s if rec.run_s > 0.0 else 0.0)
        if status == "failed":
            self._error(handler, rec.error_type or rec.reason or "unknown")
        if not self._stop_running(handler, rec):
            self._tally(handler, -1)  # it finished without running here: it was pending

    def _retrying(self, rec: Lifecycle, handler: str) -> None:
        if rec.error_type is not None:
            self._error(handler, rec.error_type)
        self._stop_running(handler, rec)
        self._tally(handler, 1)

    def _submitted(self, rec: Lifecycle, handler: str) -> None:
        self._tally(handler, 1)

    def _event_consumed(self, rec: Lifecycle, handler: str) -> None:
        if rec.wait_s is not None:
            self._event_time.record_known((), rec.wait_s if rec.wait_s > 0.0 else 0.0)

    def _error(self, handler: str, error_type: str) -> None:
        self._errors.add_known((handler, self._error_type(error_type)))

    def _stop_running(self, handler: str, rec: Lifecycle) -> bool:
        """Count the job out of ``jobs.active`` if it was running; True if it was."""
        if rec.job_id is not None:
            if rec.job_id not in self._running:
                return False
            self._running.discard(rec.job_id)
        elif rec.run_s is None:
            return False
        self._active.add_known((handler,), -1)
        return True

    def _tally(self, handler: str, delta: int) -> None:
        if self._queue_lengths is None:
            n = self._pending.get(handler, 0) + delta
            self._pending[handler] = n if n > 0 else 0

    # --- observation (collecting thread) ---------------------------------------

    def _observe_queue(self) -> list[tuple[float, Mapping[str, str]]]:
        if self._queue_lengths is None:
            counts = self._pending.copy()
        else:
            counts = {}
            for name, n in self._queue_lengths().items():
                label = self._handler(name or "unnamed")
                counts[label] = counts.get(label, 0) + n
        return [(n, {"handler": h}) for h, n in counts.items()]
