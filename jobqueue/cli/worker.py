"""``python -m jobqueue worker module:attr``: run a service's handlers until signalled.

See :mod:`jobqueue.worker` for what each signal does. Exit codes: 0 after a
clean shutdown, 1 the worker failed while running, 2 a bad ``module:attr``,
bad options or an unusable database.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from jobqueue.cli.metrics import port_taken
from jobqueue.cli.render import log_to_stderr, safe_text
from jobqueue.errors import JobQueueError, MetricsServerError, StoreError, WorkerAppError
from jobqueue.worker.loader import load_service, prepare_service
from jobqueue.worker.process import run_worker

__all__ = ["add_worker_parser", "port_number", "run_worker_command"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0..65535 (0: any free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free one), got {value}")
    return value


def add_worker_parser(sub: Any, parents: list[argparse.ArgumentParser] | None = None) -> None:
    """Add the ``worker`` subcommand to the parser's subcommands ``sub``.

    ``parents`` give the options every subcommand shares (``--db``, ``--plain``).
    """
    w = sub.add_parser(
        "worker",
        parents=parents or [],
        help="run the handlers of a JobQueueService until SIGINT/SIGTERM",
        description=(
            "Run the JobQueueService named by MODULE:ATTR (an instance, or a function "
            "of your code taking no arguments that returns one; nothing else is called), "
            "importable from the current directory. First SIGINT/SIGTERM: drain (no new "
            "jobs; running ones get --drain-timeout seconds, then go back to pending). "
            "Second: cancel running jobs now (back to pending). Third: exit at once. "
            "SIGUSR1: write a memory snapshot to <db>.snapshots/. SIGUSR2: stop tracemalloc."
        ),
    )
    w.add_argument("app", metavar="MODULE:ATTR", help="e.g. myapp.jobs:service")
    w.add_argument("--concurrency", type=int, help="jobs run at once (default: the service's)")
    w.add_argument(
        "--drain-timeout",
        type=float,
        help="seconds running jobs get to finish after SIGINT/SIGTERM (default: the service's)",
    )
    w.add_argument(
        "--report-interval",
        type=float,
        default=60.0,
        help="seconds between status reports in the log; 0 turns them off (default 60)",
    )
    w.add_argument("--snapshot-dir", help="where SIGUSR1 snapshots go (default <db>.snapshots)")
    w.add_argument(
        "--metrics-port",
        type=port_number,
        metavar="PORT",
        help="serve this worker's live Prometheus metrics at http://ADDR:PORT/metrics "
        "(0: a free port, logged)",
    )
    w.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        metavar="ADDR",
        help="address of the metrics endpoint (default: 127.0.0.1)",
    )
    w.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the messages on stderr (default INFO: one line per job that ends)",
    )
    w.add_argument(
        "--log-sqlite",
        action="store_true",
        help="with --log-level DEBUG, also log aiosqlite's message for every SQLite call "
        "(very verbose; left out otherwise)",
    )


def run_worker_command(args: argparse.Namespace) -> int:
    """Run the ``worker`` subcommand; returns the exit code."""
    log_to_stderr(args.log_level, LOG_FORMAT)
    if not args.log_sqlite:  # aiosqlite logs every call at DEBUG: only when asked for
        logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    if args.drain_timeout is not None and args.drain_timeout < 0:
        print("jobqueue: --drain-timeout must be >= 0", file=sys.stderr)
        return 2
    try:
        service = load_service(args.app)
        path = getattr(args, "db", None)
        prepare_service(service, path=path, concurrency=args.concurrency, target=args.app)
    except WorkerAppError as exc:
        logging.getLogger("jobqueue.worker").debug("cannot load %s", args.app, exc_info=True)
        print(f"jobqueue: {safe_text(exc)}", file=sys.stderr)
        return 2
    try:
        _run(
            run_worker(
                service,
                drain_timeout=args.drain_timeout,
                report_interval=args.report_interval,
                snapshot_dir=args.snapshot_dir,
                metrics_port=args.metrics_port,
                metrics_addr=args.metrics_addr,
            ),
            grace=service.cancel_grace,
        )
    except KeyboardInterrupt:  # SIGINT before the worker's own handlers were installed
        return 130
    except MetricsServerError as exc:
        taken = port_taken(exc, args.metrics_addr, args.metrics_port, "--metrics-port")
        print(f"jobqueue: {safe_text(taken)}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"jobqueue: {safe_text(exc)}", file=sys.stderr)
        return 2
    except JobQueueError as exc:
        print(f"jobqueue: {safe_text(exc)}", file=sys.stderr)
        return 1
    return 0


def _run(main: Coroutine[Any, Any, None], *, grace: float) -> None:
    """``asyncio.run(main)``, except that tasks ignoring cancellation cannot hold the exit.

    ``asyncio.run`` waits for every task left when ``main`` returns. A handler
    that ignores cancellation was already abandoned by the service (its job is
    recorded ``failed``, reason ``unresponsive``, the database is closed), so
    after ``grace`` more seconds the process leaves without it.
    """
    loop = asyncio.new_event_loop()
    stuck: set[asyncio.Task[Any]] = set()
    try:
        loop.run_until_complete(main)
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in left:
            task.cancel()
        if left:
            _, stuck = loop.run_until_complete(asyncio.wait(left, timeout=grace))
        if not stuck:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        if not stuck:
            loop.close()
    if stuck:
        names = ", ".join(sorted(t.get_name() for t in stuck))
        logging.getLogger("jobqueue.worker").error(
            "exiting without waiting for %d task(s) that ignore cancellation: %s", len(stuck), names
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
