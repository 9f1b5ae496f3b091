"""Run a :class:`~jobqueue.JobQueueService` as a worker process, with signals.

``python -m jobqueue worker module:attr`` loads the service with
:func:`load_service`, points it at ``--db`` with :func:`prepare_service` and
runs it with :func:`run_worker` until it is told to stop:

* first SIGINT/SIGTERM: drain. No new job is claimed; running jobs get
  ``drain_timeout`` seconds to finish, then are cancelled and put back to
  ``pending`` (they run again at the next start). Exit code 0.
* second SIGINT/SIGTERM: cancel running jobs now; they go back to
  ``pending`` the same way, and the process exits as soon as they ended.
* third SIGINT/SIGTERM: exit at once, killed by the signal. Jobs still
  running are recovered by the next process that opens the file.
* SIGUSR1: write a memory snapshot summary (RagFlow's task executor does the
  same): ``stats()``, this process's running jobs, resident memory and, once
  :mod:`tracemalloc` is tracing (the first SIGUSR1 starts it), the top
  allocation sites and what grew since the previous snapshot. It goes to a
  JSON file in ``<db>.snapshots/`` and one line to the log.
* SIGUSR2: stop :mod:`tracemalloc` again.

Every ``report_interval`` seconds the worker logs a status report (RagFlow's
heartbeat report): the counts of :meth:`~jobqueue.JobQueueService.stats`.

At INFO the worker logs one line per run that ends, on the logger
``jobqueue.worker.jobs``: the job's short id, its handler, how it ended, the
attempt (``attempt 2 of 3``), how long it ran and, for a failure, the error
(failures and retries at WARNING).

With ``metrics_port`` the worker serves its live Prometheus metrics (those of
the jobs it runs: finished, errors, wait and run time histograms, running and
pending counts) at ``http://metrics_addr:metrics_port/metrics`` while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobqueue.cli.render import fmt_attempt, fmt_duration
from jobqueue.errors import JobQueueError, ServiceClosedError, WorkerAppError
from jobqueue.hooks import HookKind, Lifecycle
from jobqueue.ids import short_id
from jobqueue.service import JobQueueService
from jobqueue.store.connection import MEMORY
from jobqueue.worker.snapshot import MemoryTracer, write_json

if TYPE_CHECKING:
    from jobqueue.telemetry import MetricsServer

__all__ = ["Worker", "job_line", "run_worker"]

log = logging.getLogger("jobqueue.worker")
#: One line per run that ends (see :func:`job_line`).
job_log = logging.getLogger("jobqueue.worker.jobs")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Worker:
    """Runs one service until told to stop; see the module docstring.

    Args:
        service: a service with handlers registered, not started yet.
        drain_timeout: seconds running jobs get to finish after the first stop
            request; ``None`` uses the service's own ``drain_timeout``.
        report_interval: seconds between status reports in the log; 0 turns them off.
        snapshot_dir: where SIGUSR1 writes snapshots; ``None`` means
            ``<db>.snapshots/`` (only the log for an in-memory service).
        metrics_port: serve the live Prometheus metrics on this port while
            running (0: a free one, logged); ``None``: no endpoint.
        metrics_addr: the address the endpoint binds (loopback by default).
    """

    def __init__(
        self,
        service: JobQueueService,
        *,
        drain_timeout: float | None = None,
        report_interval: float = 60.0,
        snapshot_dir: str | os.PathLike[str] | None = None,
        metrics_port: int | None = None,
        metrics_addr: str = "127.0.0.1",
    ) -> None:
        self.service = service
        self.metrics_port = metrics_port
        self.metrics_addr = metrics_addr
        #: The metrics endpoint while the worker runs (``metrics_port`` given).
        self.metrics_server: MetricsServer | None = None
        self.drain_timeout = drain_timeout
        self.report_interval = report_interval
        if snapshot_dir is None and service.path != MEMORY:
            snapshot_dir = service.path + ".snapshots"
        self.snapshot_dir = None if snapshot_dir is None else Path(snapshot_dir)
        #: Set once the service is open and jobs are being claimed.
        self.ready = asyncio.Event()
        #: How many stop requests arrived (1: draining, 2: cancelling).
        self.stop_requests = 0
        self.tracer = MemoryTracer()
        self._stop = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- requests ----------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: drain. Second call: cancel running jobs now (back to pending)."""
        self.stop_requests += 1
        if self.stop_requests == 1:
            timeout = (
                self.service.drain_timeout if self.drain_timeout is None else self.drain_timeout
            )
            log.warning(
                "draining: no new jobs are claimed; running jobs get %.1fs to finish "
                "(signal again to cancel them now)",
                timeout,
            )
            self._stop.set()
        elif self.stop_requests == 2:
            log.warning(
                "cancelling running jobs now; they go back to pending and run at the next "
                "start (a third signal exits at once)"
            )
            self._spawn(self._cancel_until_closed())

    def request_snapshot(self) -> None:
        """Write a memory snapshot summary in the background (SIGUSR1)."""
        self._spawn(self.write_snapshot())

    def stop_tracing(self) -> None:
        """Stop :mod:`tracemalloc` (SIGUSR2)."""
        log.info("tracemalloc %s", "stopped" if self.tracer.stop() else "was not running")

    # -- running -----------------------------------------------------------------------

    async def run(self, *, install_signals: bool = True) -> None:
        """Open the service, run jobs until a stop request, drain and close.

        Raises:
            JobQueueError: the database could not be opened.
        """
        loop = asyncio.get_running_loop()
        release = self._serve_metrics() if self.metrics_port is not None else None
        unsubscribe = self.service.hooks.subscribe(_log_job, (HookKind.FINISHED, HookKind.RETRYING))
        installed = self._install_signals(loop) if install_signals else []
        try:
            await self._serve()
        finally:
            unsubscribe()
            if release is not None:
                release()
            for sig in installed:
                loop.remove_signal_handler(sig)
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _serve(self) -> None:
        service = self.service
        opening = asyncio.ensure_future(service.__aenter__())
        stopped = asyncio.ensure_future(self._stop.wait())
        reporter: asyncio.Task[None] | None = None
        try:
            await asyncio.wait([opening, stopped], return_when=asyncio.FIRST_COMPLETED)
            if opening.done():
                opening.result()  # an open that failed raises here
                self._announce()
                self.ready.set()
                if self.report_interval > 0:
                    reporter = asyncio.ensure_future(self._report_loop())
                await stopped
        finally:
            stopped.cancel()
            if reporter is not None:
                reporter.cancel()
            self._closing = asyncio.ensure_future(service.close(self.drain_timeout))
            try:
                await asyncio.shield(self._closing)
            finally:
                if not opening.done():
                    opening.cancel()
                await asyncio.gather(opening, stopped, return_exceptions=True)
                if reporter is not None:
                    await asyncio.gather(reporter, return_exceptions=True)
        log.info("worker stopped; the database is closed")

    def _serve_metrics(self) -> Callable[[], None]:
        """Start the metrics endpoint; returns what stops it.

        The service's own :class:`~jobqueue.telemetry.JobMetrics` is served when
        it has one (``metrics=True``); otherwise one is attached to its hooks
        now, before any job runs, and shut down with the endpoint.

        Raises:
            MetricsServerError: the port is taken (or not allowed).
            WorkerAppError: the service's metrics go to a meter provider of its own.
        """
        from prometheus_client import CollectorRegistry

        from jobqueue.telemetry import JobMetrics, serve_metrics

        service, own = self.service, None
        metrics = service.metrics
        if metrics is None:
            own = metrics = JobMetrics(prometheus_registry=CollectorRegistry())
            metrics.attach(
                service.hooks, queue_lengths=service.queue_lengths, active=service.active_counts
            )
        elif metrics.prometheus_registry is None:
            raise WorkerAppError(
                "the service",
                "the service's metrics go to a meter provider of its own, not to Prometheus; "
                "export them from there, or create the service with metrics=True",
            )
        try:
            server = serve_metrics(
                self.metrics_port or 0, self.metrics_addr, registry=metrics.prometheus_registry
            )
        except BaseException:
            if own is not None:
                own.shutdown()
            raise
        self.metrics_server = server
        log.info("serving metrics at %s", server.url)

        def release() -> None:
            server.close()
            if own is not None:
                own.shutdown()

        return release

    def _announce(self) -> None:
        s = self.service
        log.info(
            "worker %s ready: db=%s handlers=%s concurrency=%d; SIGINT/SIGTERM drains "
            "(twice: cancels now), SIGUSR1 writes a memory snapshot",
            s.owner,
            s.path,
            ",".join(s.handler_names),
            s.concurrency,
        )

    async def _cancel_until_closed(self) -> None:
        # A second close with no drain time cuts the first one's drain short: running
        # jobs are cancelled as "shutdown" and go back to pending.
        await self.service.close(drain_timeout=0)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        handlers: dict[int, Callable[[], None]] = {
            sig: partial(self._on_stop_signal, sig) for sig in STOP_SIGNALS
        }
        for name, fn in (("SIGUSR1", self.request_snapshot), ("SIGUSR2", self.stop_tracing)):
            if hasattr(signal, name):
                handlers[getattr(signal, name)] = fn
        installed: list[int] = []
        for sig, fn in handlers.items():
            try:
                loop.add_signal_handler(sig, fn)
            except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
                log.warning("cannot handle %s here; it keeps its default action", sig)
                continue
            installed.append(sig)
        return installed

    def _on_stop_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.stop_requests >= 2:
            log.error(
                "%s again: exiting now; jobs still running are recovered by the next "
                "process that opens the database",
                name,
            )
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            return
        log.info("received %s", name)
        self.request_stop()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- reports and snapshots -------------------------------------------------------

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval)
            try:
                await self.service.refresh_stats()
            except JobQueueError as exc:
                log.warning("status report: could not read counts: %s", exc)
                continue
            log.info("status report: %s", json.dumps(self.report()))

    def report(self) -> dict[str, Any]:
        """RagFlow's heartbeat report: ``stats()`` plus the time and owner."""
        return {
            "owner": self.service.owner,
            "now": time.time(),
            "stop_requests": self.stop_requests,
            **self.service.stats(),
        }

    async def write_snapshot(self) -> Path | None:
        """Write a memory snapshot summary; returns the file (``None``: logged only).

        The summary holds :meth:`report`, this process's running jobs, and
        :func:`jobqueue.worker.snapshot.memory_summary`. Taking it runs in a thread.
        """
        if self.ready.is_set() and self._closing is None:  # else: the counts as they are
            with contextlib.suppress(JobQueueError):
                await self.service.refresh_stats()
        data: dict[str, Any] = {"pid": os.getpid(), **self.report()}
        data["running_jobs"] = await self._running_jobs()
        data["asyncio_tasks"] = len(asyncio.all_tasks())
        data["memory"] = await asyncio.to_thread(self.tracer.summary)
        mem = data["memory"]
        traced = mem["tracemalloc"]
        path = None
        if self.snapshot_dir is not None:
            now = data["now"]
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
            stamp += f".{int(now * 1000) % 1000:03d}"
            path = self.snapshot_dir / f"snapshot-{os.getpid()}-{stamp}.json"
            try:
                await asyncio.to_thread(write_json, path, data)
            except OSError as exc:
                log.error("memory snapshot: cannot write %s: %s; logging it instead", path, exc)
                path = None
        top = traced.get("top") or [{}]
        log.warning(
            "memory snapshot%s: rss=%s traced=%s peak=%s top=%s running=%d pending=%d%s",
            f" written to {path}" if path else "",
            _mib(mem["rss_bytes"]),
            _mib(traced.get("traced_bytes")),
            _mib(traced.get("peak_bytes")),
            top[0].get("where", "-"),
            data["running"],
            data["pending"],
            " (tracemalloc started now: send SIGUSR1 again later to see what grew)"
            if traced.get("started_now")
            else "",
        )
        if path is None:
            log.info("memory snapshot: %s", json.dumps(data, default=str))
        return path

    async def _running_jobs(self) -> list[dict[str, Any]]:
        now = time.time()
        try:
            jobs = await self.service.list(status="running", limit=1000)
        except (ServiceClosedError, JobQueueError):
            return []
        return [
            {
                "id": j.id,
                "handler": j.handler,
                "attempt": j.attempt,
                "running_s": None if j.started_at is None else round(now - j.started_at, 3),
            }
            for j in jobs
            if j.owner == self.service.owner
        ]


def _took(seconds: float) -> str:
    return f"{seconds:.3f}s" if seconds < 1 else fmt_duration(seconds)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_line(rec: Lifecycle) -> tuple[int, str]:
    """The log level and line of a run that ended (a ``FINISHED`` or ``RETRYING`` record).

    ``job 5e6d4c81 summarize completed (attempt 1 of 3) in 0.052s``; a failure
    ends with its error, a retried run says so, a run cut short by a shutdown
    says it goes back to pending.
    """
    job = short_id(rec.job_id) if rec.job_id else "?"
    head = f"job {job} {rec.handler or '(coroutine)'}"
    attempt = (
        ""
        if rec.attempt is None
        else f" (attempt {fmt_attempt(rec.attempt, rec.max_retries or 0)})"
    )
    why = f"{rec.reason}: " if rec.reason not in (None, "error", "handler") else ""
    error = _one_line(rec.error or rec.error_type or "") if (rec.error or rec.error_type) else ""
    if rec.kind is HookKind.RETRYING:
        took = "" if rec.run_s is None else f" after {_took(rec.run_s)}"
        if rec.reason == "shutdown":
            return logging.INFO, (
                f"{head} interrupted by the shutdown{attempt}{took}; back to pending, it "
                "runs again at the next start (this attempt is not counted)"
            )
        detail = f": {why}{error}" if error or why else ""
        return logging.WARNING, f"{head} failed{attempt}{took}, will be retried{detail}"
    status = rec.status or "finished"
    took = "" if rec.run_s is None else f" in {_took(rec.run_s)}"
    if status == "failed":
        return logging.WARNING, f"{head} failed{attempt}{took}: {why}{error or 'no error message'}"
    if status == "completed":
        return logging.INFO, f"{head} completed{attempt}{took}"
    reason = f" ({rec.reason})" if rec.reason not in (None, "handler", status) else ""
    took = "" if rec.run_s is None else f" after {_took(rec.run_s)}"
    return logging.INFO, f"{head} {status}{reason}{attempt}{took}"


def _log_job(rec: Lifecycle) -> None:
    level, line = job_line(rec)
    if job_log.isEnabledFor(level):
        job_log.log(level, "%s", line)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}MiB"


async def run_worker(
    service: JobQueueService,
    *,
    drain_timeout: float | None = None,
    install_signals: bool = True,
    report_interval: float = 60.0,
    snapshot_dir: str | os.PathLike[str] | None = None,
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
) -> None:
    """Run ``service`` until SIGINT/SIGTERM (see the module docstring), then close it.

    Args:
        service: a service with handlers registered, not started yet.
        drain_timeout: seconds running jobs get to finish after the first signal;
            ``None`` uses the service's ``drain_timeout``.
        install_signals: handle SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 (main thread only).
            Without them, use :class:`Worker` and call ``request_stop()`` yourself.
        report_interval: seconds between status reports in the log (0: off).
        snapshot_dir: where SIGUSR1 snapshots go (default ``<db>.snapshots/``).
        metrics_port: serve the live Prometheus metrics on this port (0: a free one).
        metrics_addr: the address of the metrics endpoint (default 127.0.0.1).
    """
    worker = Worker(
        service,
        drain_timeout=drain_timeout,
        report_interval=report_interval,
        snapshot_dir=snapshot_dir,
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
    )
    await worker.run(install_signals=install_signals)
