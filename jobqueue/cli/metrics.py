"""``metrics --port N``: serve a database's Prometheus metrics until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

from jobqueue.cli.render import Output
from jobqueue.service import JobQueueService

if TYPE_CHECKING:
    from jobqueue.telemetry import JobMetrics

__all__ = ["metrics_command"]


async def metrics_command(args: argparse.Namespace, out: Output) -> int:
    """Serve until SIGINT/SIGTERM (exit 0); the URL is the one line on stdout.

    Counts of jobs by status and the queue lengths are re-read from the file
    every ``--interval`` seconds, so they include other processes' jobs.
    """
    from prometheus_client import CollectorRegistry

    from jobqueue.telemetry import JobMetrics

    # A registry of its own (not prometheus_client's global one), shut down even when
    # the file cannot be opened: main() may run several times in one process (tests).
    metrics = JobMetrics(prometheus_registry=CollectorRegistry())
    try:
        return await _serve(args, out, metrics)
    finally:
        metrics.shutdown()


async def _serve(args: argparse.Namespace, out: Output, metrics: JobMetrics) -> int:
    from jobqueue.telemetry import serve_metrics

    async with JobQueueService(args.db, metrics=metrics) as svc:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
        try:
            with serve_metrics(args.port, args.addr, registry=metrics.prometheus_registry) as srv:
                out.line(f"serving metrics at {srv.url}")
                out.note(f"refreshing every {args.interval:g}s; Ctrl-C or SIGTERM stops")
                while not stop.is_set():
                    await svc.refresh_stats()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), args.interval)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
    return 0
