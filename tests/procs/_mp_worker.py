"""A worker process for integration/test_multiprocess.py (run as a script, not collected).

``python tests/procs/_mp_worker.py --db FILE --dir DIR [options]`` opens a
:class:`~jobqueue.JobQueueService` on ``FILE`` with the handlers below and runs
until SIGTERM (drain, exit 0), SIGKILL, or its parent's exit. Everything
it does that a test wants to see goes into ``DIR``, one file per process, so
no two processes write to the same file:

* ``ready-<pid>.json``: written once the service is open (and any ``--bare``
  job started): ``{"pid": ..., "owner": ...}``. Tests wait for it.
* ``events-<pid>.log``: one JSON line per thing a handler saw, with the wall
  time ``t``: ``start`` (job, attempt), ``done``, ``cancelled``, ``interrupt``
  (kind: stop/pause). Written with ``O_APPEND`` at once, so a SIGKILL loses
  nothing already written.

Handlers:

* ``record``: logs ``start``, sleeps ``payload["pace"]`` seconds, then
  writes ``(job_id, pid)`` into the ``ledger`` table through ``ctx.effect``
  (committed with the job's completion) and returns the pid.
* ``long``: loops ``await ctx.checkpoint(); await asyncio.sleep(0.05)`` until
  ``payload["seconds"]`` passed or the file ``DIR/release-<job_id>`` exists.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jobqueue import JobContext, JobQueueService  # noqa: E402
from jobqueue.errors import Interrupt  # noqa: E402

PID = os.getpid()


class Log:
    """Append-only JSON lines, one ``os.write`` each (O_APPEND: nothing buffered)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, ev: str, job: str, **extra: Any) -> None:
        line = json.dumps({"t": time.time(), "ev": ev, "job": job, "pid": PID, **extra})
        os.write(self.fd, (line + "\n").encode())


def _ledger(conn: sqlite3.Connection, job_id: str, pid: int) -> None:
    conn.execute("INSERT INTO ledger (job_id, pid) VALUES (?, ?)", (job_id, pid))


def make_handlers(log: Log, workdir: Path) -> dict[str, Any]:
    async def record(ctx: JobContext, payload: Any) -> int:
        log.write("start", ctx.job_id, attempt=ctx.attempt)
        await asyncio.sleep(float((payload or {}).get("pace", 0.0)))
        ctx.effect(_ledger, ctx.job_id, PID)
        return PID

    async def long(ctx: JobContext, payload: Any) -> int:
        log.write("start", ctx.job_id, attempt=ctx.attempt)
        release = workdir / f"release-{ctx.job_id}"
        deadline = time.monotonic() + float((payload or {}).get("seconds", 60.0))
        try:
            while time.monotonic() < deadline and not release.exists():
                await ctx.checkpoint()
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            log.write("cancelled", ctx.job_id)
            raise
        except Interrupt as exc:
            log.write("interrupt", ctx.job_id, kind=exc.kind)
            raise
        log.write("done", ctx.job_id)
        return PID

    return {"record": record, "long": long}


async def _forever() -> None:
    await asyncio.sleep(3600)


async def _orphan_guard(stop: asyncio.Event) -> None:
    """Leave (draining) if the test process died without killing us."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 (no event tells us)
        await asyncio.sleep(1.0)
    stop.set()


async def main(args: argparse.Namespace) -> None:
    workdir = Path(args.dir)
    log = Log(workdir / f"events-{PID}.log")
    svc = JobQueueService(
        args.db,
        concurrency=args.concurrency,
        poll_interval=args.poll,
        stop_timeout=args.stop_timeout,
        cancel_grace=args.cancel_grace,
        drain_timeout=1.0,
    )
    for name, fn in make_handlers(log, workdir).items():
        svc.register(name, fn)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    guard = loop.create_task(_orphan_guard(stop))
    async with svc:
        for job_id in args.bare:  # Langflow's start_job: a bare coroutine, no handler
            svc.create_queue(job_id)
            svc.start_job(job_id, _forever())
        ready = workdir / f"ready-{PID}.json"
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": PID, "owner": svc.owner}))
        tmp.rename(ready)
        await stop.wait()
    guard.cancel()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--poll", type=float, default=0.1)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--stop-timeout", type=float, default=5.0)
    p.add_argument("--cancel-grace", type=float, default=2.0)
    p.add_argument("--bare", action="append", default=[])
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(main(p.parse_args()))
