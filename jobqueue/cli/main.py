"""``python -m jobqueue``: demo, worker, list, show, cancel, pause, resume, stop, stats, ...

Data goes to stdout, diagnostics to stderr. Exit codes: 0 ok, 1 the command
failed (unknown job, illegal transition), 2 bad usage or an unusable database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jobqueue.cli.worker import add_worker_parser
from jobqueue.errors import JobNotFoundError, JobQueueError, StoreError
from jobqueue.service import JobQueueService
from jobqueue.store.jobs import Job

__all__ = ["entrypoint", "main"]

#: The control commands and their help; each calls the service method of that name.
CONTROLS = {
    "cancel": "cancel a job now (a running one is interrupted)",
    "pause": "pause a job (a running one stops at its next checkpoint)",
    "resume": "resume a paused job",
    "stop": "stop a job gracefully (its current step finishes, then it ends stopped)",
}
#: What a control request does when the job still shows as running in another process.
_PENDING_NOTE = {
    "cancel": "it is cancelled",
    "pause": "it is paused",
    "stop": "it stops after its current step",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobqueue", description="Embedded crash-safe job queue.")
    sub = p.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="run a short showcase (about 5 s)")
    demo.add_argument("--db", help="database file to use (default: a temporary file)")
    add_worker_parser(sub)

    def with_db(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--db", required=True, help="the jobqueue database file")
        return sp

    ls = with_db("list", "list jobs, newest first")
    ls.add_argument("--status", help="only this status")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = with_db("show", "show one job")
    show.add_argument("job")
    for name, help_ in CONTROLS.items():
        with_db(name, help_).add_argument("job")
    with_db("stats", "job counts and lag")
    with_db("check", "integrity check and schema version")
    met = with_db("metrics", "serve Prometheus metrics until SIGINT/SIGTERM")
    met.add_argument("--port", type=int, required=True, help="TCP port (0: a free one)")
    met.add_argument("--addr", default="127.0.0.1", help="bind address (default: loopback)")
    met.add_argument("--interval", type=float, default=5.0, help="stats refresh, seconds")
    return p


async def _serve_metrics(args: argparse.Namespace) -> int:
    from jobqueue.telemetry import serve_metrics

    async with JobQueueService(args.db, metrics=True) as svc:
        metrics = svc.metrics
        assert metrics is not None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with serve_metrics(args.port, args.addr, registry=metrics.prometheus_registry) as srv:
            print(f"serving metrics at {srv.url}", flush=True)
            while not stop.is_set():
                await svc.refresh_stats()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.interval)
    return 0


def _job_dict(job: Job) -> dict[str, Any]:
    d = asdict(job)
    d["status"] = job.status.value
    return d


async def _run(args: argparse.Namespace) -> int:
    async with JobQueueService(args.db, check_on_open=args.cmd == "check") as svc:
        if args.cmd == "list":
            for job in await svc.list(status=args.status, limit=args.limit):
                if args.json:
                    print(json.dumps(_job_dict(job)))
                else:
                    print(
                        f"{job.id}  {job.handler or '-':16} {job.status:10} attempt={job.attempt}"
                    )
        elif args.cmd == "show":
            print(json.dumps(_job_dict(await svc.get(args.job)), indent=2))
        elif args.cmd in CONTROLS:
            job = await _control(svc, args.cmd, args.job)
            print(_control_line(svc, args.cmd, job))
        elif args.cmd == "stats":
            await svc.refresh_stats()
            print(json.dumps(svc.stats(), indent=2))
        elif args.cmd == "check":
            from jobqueue.store.schema import latest_version

            print(
                json.dumps({"integrity": "ok", "schema_version": latest_version(), "path": args.db})
            )
    return 0


async def _control(svc: JobQueueService, cmd: str, job_id: str) -> Job:
    """Call ``svc.<cmd>(job_id)``; ``stop`` needs the id (without one it closes the service)."""
    method = getattr(svc, cmd)
    job: Job = await method(job_id)
    return job


def _control_line(svc: JobQueueService, cmd: str, job: Job) -> str:
    """``"<id> <status>"``, plus what happens next when the request is not applied yet."""
    line = f"{job.id} {job.status}"
    if cmd == "resume" and job.status == "paused":
        return line + (
            " (resume requested: a worker with its handler claims it like a due pending job "
            f"within its poll interval; `show {job.id}` tells when)"
        )
    owner = job.owner
    if job.status == "running" and owner is not None and owner != svc.owner:
        pid = owner.split(":", 1)[0]
        line += (
            f" ({cmd} requested: the worker running it, pid {pid}, applies it within its "
            f"poll interval, then {_PENDING_NOTE[cmd]}; `show {job.id}` tells when)"
        )
    return line


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv``; returns the exit code (tests call this)."""
    args = _parser().parse_args(argv)
    if args.cmd == "demo":
        from jobqueue.cli.demo import run_demo

        return run_demo(args.db)
    if args.cmd == "worker":
        from jobqueue.cli.worker import run_worker_command

        return run_worker_command(args)
    if not Path(args.db).exists():
        print(f"jobqueue: no database file at {args.db}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve_metrics(args) if args.cmd == "metrics" else _run(args))
    except JobNotFoundError as exc:
        print(f"jobqueue: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"jobqueue: {exc}", file=sys.stderr)
        return 2
    except JobQueueError as exc:
        print(f"jobqueue: {exc}", file=sys.stderr)
        return 1


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())
