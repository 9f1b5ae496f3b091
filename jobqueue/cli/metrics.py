"""``metrics --port N``: serve a database file's Prometheus metrics until SIGINT/SIGTERM.

The file is read on a read-only connection (never written) every
``--interval`` seconds; see :mod:`jobqueue.telemetry.stored` for what is exported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

from jobqueue.cli.render import Output
from jobqueue.errors import MetricsServerError
from jobqueue.store.readonly import ReadOnlyStore

if TYPE_CHECKING:
    from jobqueue.telemetry import JobMetrics

__all__ = ["metrics_command", "port_taken"]


def port_taken(exc: MetricsServerError, addr: str, port: int, flag: str) -> MetricsServerError:
    """The error of a port that cannot be served, saying the command line's ``flag 0``."""
    from jobqueue.telemetry.server import bind_message

    return MetricsServerError(exc.errno or 0, bind_message(exc, addr, port, any_port=f"{flag} 0"))


async def metrics_command(args: argparse.Namespace, out: Output) -> int:
    """Serve until SIGINT/SIGTERM (exit 0); the URL is the one line on stdout."""
    from prometheus_client import CollectorRegistry

    from jobqueue.telemetry import JobMetrics

    with ReadOnlyStore(args.db, command="metrics") as store:
        # A registry of its own (not prometheus_client's global one), shut down even when
        # serving fails: main() may run several times in one process (tests).
        metrics = JobMetrics(prometheus_registry=CollectorRegistry())
        try:
            return await _serve(args, out, store, metrics)
        finally:
            metrics.shutdown()


async def _serve(
    args: argparse.Namespace, out: Output, store: ReadOnlyStore, metrics: JobMetrics
) -> int:
    from jobqueue.telemetry import serve_metrics
    from jobqueue.telemetry.stored import StoredMetrics

    feed = StoredMetrics(store.read, metrics, history=args.history)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        if not store.empty:
            feed.refresh()  # the first scrape already has the file's figures
        try:
            server = serve_metrics(args.port, args.addr, registry=metrics.prometheus_registry)
        except MetricsServerError as exc:
            raise port_taken(exc, args.addr, args.port, "--port") from exc
        with server:
            out.line(f"serving metrics at {server.url}")
            out.note(f"reading {args.db} every {args.interval:g}s; Ctrl-C or SIGTERM stops")
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.interval)
                if not stop.is_set() and not store.empty:
                    feed.refresh()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return 0
