"""The metrics subscriber: one callback on the lifecycle bus records every instrument.

:class:`JobMetrics` turns :class:`~jobqueue.hooks.Lifecycle` records into
OpenTelemetry measurements; nothing else in jobqueue records metrics. Live
state (pending jobs per handler, process CPU and memory) is read by
observable instruments when the exporter collects, e.g. on a Prometheus scrape
(which runs on the HTTP server's thread).

The callback runs on every job's hot path, so it is one closure that updates
plain containers in place (a few dict and list operations per record);
exporting them is left to collection time.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

from opentelemetry.metrics import Histogram
from opentelemetry.metrics import MeterProvider as APIMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import REGISTRY, CollectorRegistry

from jobqueue.hooks import HookKind, Hooks, Lifecycle
from jobqueue.telemetry.aggregates import COUNTS, HistogramTally, Tally
from jobqueue.telemetry.prometheus import PrometheusReader
from jobqueue.telemetry.registry import LabelValueCap, MetricRegistry, MetricSpec, MetricType

__all__ = ["EVENT_BUCKETS", "JOBQUEUE_METRICS", "JOB_BUCKETS", "JobMetrics"]

#: Histogram boundaries (seconds) for job wait and run times: 5 ms .. 5 min, x4-6 apart.
JOB_BUCKETS = (0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0, 300.0)
#: Histogram boundaries (seconds) for an event's time in its job's queue: 1 ms .. 10 s.
EVENT_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)

_M, _H, _HS = MetricType, frozenset({"handler"}), frozenset({"handler", "status"})

#: Every metric jobqueue exports.
JOBQUEUE_METRICS = MetricRegistry([
    MetricSpec("jobqueue.queue.length", "Pending jobs", "{job}", _M.OBSERVABLE_GAUGE, _H),
    MetricSpec("jobqueue.jobs.active", "Running jobs", "{job}", _M.OBSERVABLE_UP_DOWN_COUNTER, _H),
    MetricSpec("jobqueue.job.wait_time", "Time from submit or run_at to start", "s",
               _M.HISTOGRAM, _H, buckets=JOB_BUCKETS),
    MetricSpec("jobqueue.job.duration", "Handler run time", "s", _M.HISTOGRAM, _H,
               buckets=JOB_BUCKETS),
    MetricSpec("jobqueue.jobs.finished", "Finished jobs", "{job}", _M.OBSERVABLE_COUNTER, _HS),
    MetricSpec("jobqueue.job.errors", "Failed attempts", "{error}", _M.OBSERVABLE_COUNTER,
               frozenset({"handler", "error_type"})),
    MetricSpec("jobqueue.event.queue_time", "Time events spent queued", "s", _M.HISTOGRAM,
               buckets=EVENT_BUCKETS),
    MetricSpec("jobqueue.jobs", "Jobs in the database file", "{job}", _M.OBSERVABLE_GAUGE, _HS),
    MetricSpec("jobqueue.queue.oldest_age", "Time the oldest due pending job has waited", "s",
               _M.OBSERVABLE_GAUGE, _H),
    MetricSpec("process.cpu.time", "Process CPU time", "s", _M.OBSERVABLE_COUNTER,
               frozenset({"cpu.mode"})),
    MetricSpec("process.memory.usage", "Process resident memory", "By", _M.OBSERVABLE_GAUGE),
])  # fmt: skip

_WAIT, _DURATION, _EVENT = (
    "jobqueue.job.wait_time",
    "jobqueue.job.duration",
    "jobqueue.event.queue_time",
)
_STATUSES = frozenset({"completed", "failed", "cancelled", "stopped"})
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_Observed = list[tuple[float, Mapping[str, str]]]


def _version() -> str | None:
    # not importlib.metadata: it loads the email and zipfile packages, and every
    # module object lengthens each full garbage collection for the process's life
    from jobqueue.version import __version__

    return __version__


def _cpu() -> _Observed:
    t = os.times()
    return [(t.user, {"cpu.mode": "user"}), (t.system, {"cpu.mode": "system"})]


def _memory() -> _Observed:
    try:  # Linux; elsewhere the gauge reports nothing rather than a wrong figure
        with open("/proc/self/statm", "rb") as f:
            return [(int(f.read().split()[1]) * _PAGE_SIZE, {})]
    except (OSError, IndexError, ValueError):
        return []


class _Handler:
    """What the subscriber keeps for one ``handler`` label value."""

    __slots__ = ("attrs", "duration", "finished", "label", "pending", "wait")

    def __init__(self, label: str, wait: list[float], duration: list[float]) -> None:
        self.label = label
        self.attrs = {"handler": label}  # never modified: SDK instruments may keep it
        self.wait = wait  # HistogramTally points, updated in place
        self.duration = duration
        self.finished: dict[str, int] = {}  # status -> jobs
        self.pending = 0  # tallied from records when there is no live source


class JobMetrics:
    """Records jobqueue's OpenTelemetry metrics from lifecycle records.

    Args:
        meter_provider: Where the instruments are created. If ``None``, a
            ``MeterProvider`` with a Prometheus reader is built and owned (and shut
            down by :meth:`shutdown`); its histograms are pre-aggregated in this
            process, which costs far less per job than synchronous instruments.
            A given provider gets synchronous histograms and is left alone.
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
        reg = JOBQUEUE_METRICS
        version = _version()
        self._wait = HistogramTally(reg[_WAIT], ("handler",))
        self._duration = HistogramTally(reg[_DURATION], ("handler",))
        self._event_time = HistogramTally(reg[_EVENT])
        self._errors = Tally(reg["jobqueue.job.errors"], ("handler", "error_type"))
        self._owned: MeterProvider | None = None
        self.prometheus_registry: CollectorRegistry | None = None
        if meter_provider is None:  # ours: histograms are pre-aggregated and injected
            self.prometheus_registry = prometheus_registry or REGISTRY
            tallies = (self._wait, self._duration, self._event_time)
            reader = PrometheusReader(
                lambda: [t.to_metric() for t in tallies],
                scope=InstrumentationScope("jobqueue", version),
                registry=self.prometheus_registry,
            )
            meter_provider = self._owned = MeterProvider(
                metric_readers=[reader], views=reg.views("jobqueue"), shutdown_on_exit=False
            )
        self.meter_provider = meter_provider
        self._queue_lengths = queue_lengths
        self._active: Callable[[], Mapping[str, int]] | None = None
        self._handler_cap = LabelValueCap(max_handlers)
        self._error_cap = LabelValueCap(max_error_types)
        self._handlers: dict[str | None, _Handler] = {}  # by the records' handler value
        self._by_label: dict[str, _Handler] = {}
        self._running: dict[str, _Handler] = {}  # jobs started here and not finished yet
        self._unsubscribe: Callable[[], None] | None = None
        self._lock = threading.Lock()  # the handler cap is used from two threads
        #: The file's jobs by (handler, status) and oldest due run_at per handler, as
        #: last given to record_stored(); None: this process reads no file counts.
        self._stored: tuple[dict[tuple[str, str], int], dict[str, float | None]] | None = None
        self._closed = False
        self.instruments = reg.bind(
            meter_provider.get_meter("jobqueue", version),
            {
                "jobqueue.queue.length": self._observe_queue,
                "jobqueue.jobs.active": self._observe_active,
                "jobqueue.jobs.finished": self._observe_finished,
                "jobqueue.job.errors": self._errors.observe,
                "jobqueue.jobs": self._observe_stored,
                "jobqueue.queue.oldest_age": self._observe_oldest,
                "process.cpu.time": _cpu,
                "process.memory.usage": _memory,
            },
            exclude=(_WAIT, _DURATION, _EVENT) if self._owned is not None else (),
        )
        self._sdk: tuple[Histogram, Histogram, Histogram] | None = None
        if self._owned is None:  # a given provider: the SDK aggregates the histograms
            h = {"handler": ""}
            bound = self.instruments
            self._sdk = (bound.histogram(_WAIT, h), bound.histogram(_DURATION, h),
                         bound.histogram(_EVENT, {}))  # fmt: skip

    # --- wiring ---------------------------------------------------------------

    def attach(
        self,
        hooks: Hooks,
        *,
        queue_lengths: Callable[[], Mapping[str, int]] | None = None,
        active: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        """Subscribe to ``hooks``; a previous subscription is dropped first.

        Args:
            hooks: The service's lifecycle bus (``service.hooks``).
            queue_lengths: Replaces the constructor's live pending-count source.
            active: Returns running jobs per handler from live state (cheap,
                thread-safe). With it and a pending-count source, one record per
                run is enough: wait times come from the end-of-run records and
                ``started`` records are not asked for.

        Raises:
            RuntimeError: If :meth:`shutdown` was called.
        """
        if self._closed:
            raise RuntimeError("JobMetrics was shut down; create a new one")
        self.detach()
        if queue_lengths is not None:
            self._queue_lengths = queue_lengths
        self._active = active
        kinds = {HookKind.FINISHED, HookKind.RETRYING, HookKind.EVENT_CONSUMED}
        tally = self._queue_lengths is None  # no live state: count submissions too
        live = not tally and active is not None
        if tally:
            kinds.add(HookKind.SUBMITTED)
        if not live:
            kinds.add(HookKind.STARTED)
        self._unsubscribe = hooks.subscribe(self._subscriber(tally, live), kinds)

    def detach(self) -> None:
        """Stop receiving lifecycle records (idempotent); what was recorded is kept."""
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

    def _subscriber(self, tally: bool, live: bool = False) -> Callable[[Lifecycle], None]:
        """The bus callback; ``tally``: count pending jobs from the records.

        ``live``: active jobs are read from live state, so no ``started``
        records come; each run's wait time is taken from its end-of-run record.

        One closure over local names (no attribute lookups, no method calls on
        the common path); histogram points are updated in place, as
        :meth:`HistogramTally.record` does. Durations and waits below zero (a
        clock step) count as zero.
        """
        handlers, running, resolve = self._handlers, self._running, self._resolve
        new_status, error, pend = self._new_status, self._error, self._pend
        job_bounds, event_bounds = self._wait.bounds, self._event_time.bounds
        event = self._event_time.point(())
        started, finished, retrying = HookKind.STARTED, HookKind.FINISHED, HookKind.RETRYING
        consumed = HookKind.EVENT_CONSUMED

        def add(p: list[float], bounds: Sequence[float], x: float) -> None:
            """One value into a histogram point, in place (below zero: a clock step)."""
            if x < 0.0:
                x = 0.0
            p[0] += x
            p[bisect_left(bounds, x) + COUNTS] += 1
            if x < p[1]:
                p[1] = x
            if x > p[2]:
                p[2] = x

        def on_record(rec: Lifecycle) -> None:
            kind = rec.kind
            if kind is consumed:
                if rec.wait_s is not None:
                    add(event, event_bounds, rec.wait_s)
                return
            h = handlers.get(rec.handler) or resolve(rec.handler)
            if kind is started:
                if rec.wait_s is not None:
                    add(h.wait, job_bounds, rec.wait_s)
                job_id = rec.job_id
                if tally and (job_id is None or job_id not in running):
                    pend(h, -1)
                if job_id is not None:
                    running[job_id] = h
            elif kind is finished:
                if live and rec.wait_s is not None:
                    add(h.wait, job_bounds, rec.wait_s)
                status = rec.status
                try:
                    h.finished[status] += 1  # type: ignore[index]
                except KeyError:
                    new_status(h, status)
                x = rec.run_s
                if x is not None:
                    add(h.duration, job_bounds, x)
                if status == "failed":
                    error(h, rec.error_type or rec.reason or "unknown")
                ran = running.pop(rec.job_id, None) is not None  # type: ignore[arg-type]
                if tally and not ran and (rec.job_id is not None or x is None):
                    pend(h, -1)  # it finished without running here: it was pending
            elif kind is retrying:
                if live and rec.wait_s is not None:
                    add(h.wait, job_bounds, rec.wait_s)
                if rec.error_type is not None:
                    error(h, rec.error_type)
                running.pop(rec.job_id, None)  # type: ignore[arg-type]
                if tally:
                    pend(h, 1)
            elif tally:  # submitted
                pend(h, 1)

        if self._sdk is None:
            return on_record
        return self._sdk_subscriber(on_record, live, *self._sdk)

    def _sdk_subscriber(
        self,
        tally: Callable[[Lifecycle], None],
        live: bool,
        wait: Histogram,
        duration: Histogram,
        event: Histogram,
    ) -> Callable[[Lifecycle], None]:
        """For a given provider: the SDK's synchronous histograms get the values too.

        The in-process histograms are still kept (and not exported); the few list
        updates are nothing next to an SDK recording.
        """
        handlers, resolve = self._handlers, self._resolve

        def on_record(rec: Lifecycle) -> None:
            tally(rec)
            kind = rec.kind
            if kind is HookKind.EVENT_CONSUMED:
                if rec.wait_s is not None:
                    event.record(max(rec.wait_s, 0.0))
                return
            attrs = (handlers.get(rec.handler) or resolve(rec.handler)).attrs
            # live: waits come on the end-of-run records, otherwise on ``started``
            takes_wait = kind is not HookKind.STARTED if live else kind is HookKind.STARTED
            if takes_wait and rec.wait_s is not None:
                wait.record(max(rec.wait_s, 0.0), attrs)
            if kind is HookKind.FINISHED and rec.run_s is not None:
                duration.record(max(rec.run_s, 0.0), attrs)

        return on_record

    def _resolve(self, handler: str | None) -> _Handler:
        """The state of a handler not seen yet (or past the cap: ``other``)."""
        name = handler or "unnamed"
        with self._lock:  # a collection may be capping the live state's handler names
            label = self._handler_cap(name)
        h = self._by_label.get(label)
        if h is None:
            key = (label,)
            h = _Handler(label, self._wait.point(key), self._duration.point(key))
            self._by_label[label] = h
        if label == name or handler is None:  # names past the cap are not kept
            self._handlers[handler] = h
        return h

    @staticmethod
    def _new_status(h: _Handler, status: str | None) -> None:
        s = status if status in _STATUSES else "other"
        h.finished[s] = h.finished.get(s, 0) + 1

    def _error(self, h: _Handler, error_type: str) -> None:
        self._errors.add_known((h.label, self._error_cap(error_type)))

    @staticmethod
    def _pend(h: _Handler, delta: int) -> None:
        n = h.pending + delta
        h.pending = n if n > 0 else 0

    def record_stored(
        self,
        by_handler_status: Mapping[tuple[str, str], int],
        oldest_due: Mapping[str, float | None],
    ) -> None:
        """What the database file holds, for ``jobqueue_jobs`` and the oldest-age gauge.

        Args:
            by_handler_status: jobs per ``(handler, status)`` (``""``: no handler).
            oldest_due: per handler with pending jobs, ``run_at`` of its oldest
                due one (``None``: none is due); the gauge reports how long ago that was.

        Called by whoever reads the file (``jobqueue metrics``); a process that
        only runs jobs does not, and exports neither metric. Thread-safe: the
        snapshot is replaced whole.
        """
        self._stored = (dict(by_handler_status), dict(oldest_due))

    # --- observation (collecting thread) ---------------------------------------

    def _label(self, handler: str) -> str:
        with self._lock:  # the loop thread caps new handler names too
            return self._handler_cap(handler or "unnamed")

    def _observe_stored(self) -> _Observed:
        stored = self._stored
        if stored is None:
            return []
        counts: dict[tuple[str, str], int] = {}
        for (handler, status), n in stored[0].items():
            key = (self._label(handler), status)
            counts[key] = counts.get(key, 0) + n
        return [(n, {"handler": h, "status": s}) for (h, s), n in counts.items()]

    def _observe_oldest(self) -> _Observed:
        stored = self._stored
        if stored is None:
            return []
        now = time.time()
        ages: dict[str, float] = {}
        for handler, run_at in stored[1].items():
            label = self._label(handler)
            age = 0.0 if run_at is None else max(0.0, now - run_at)
            ages[label] = max(ages.get(label, 0.0), age)
        return [(age, {"handler": h}) for h, age in ages.items()]

    # The loop thread may add entries meanwhile: read copies (atomic under the GIL).

    def _observe_queue(self) -> _Observed:
        if self._queue_lengths is None:
            return [(h.pending, h.attrs) for h in self._by_label.copy().values()]
        counts: dict[str, int] = {}
        lengths = self._queue_lengths()
        with self._lock:  # the loop thread caps new handler names too
            for name, n in lengths.items():
                label = self._handler_cap(name or "unnamed")
                counts[label] = counts.get(label, 0) + n
        return [(n, {"handler": h}) for h, n in counts.items()]

    def _observe_active(self) -> _Observed:
        counts = dict.fromkeys(self._by_label.copy(), 0)
        if self._active is not None:
            live = self._active()
            with self._lock:  # the loop thread caps new handler names too
                for name, n in live.items():
                    label = self._handler_cap(name or "unnamed")
                    counts[label] = counts.get(label, 0) + n
            return [(n, {"handler": label}) for label, n in counts.items()]
        for h in self._running.copy().values():
            counts[h.label] = counts.get(h.label, 0) + 1
        return [(n, {"handler": label}) for label, n in counts.items()]

    def _observe_finished(self) -> _Observed:
        return [
            (n, {"handler": h.label, "status": status})
            for h in self._by_label.copy().values()
            for status, n in h.finished.copy().items()
        ]
