"""A worker process for tests/integration/test_crash.py, meant to be SIGKILLed at random moments.

Run as ``python tests/procs/_crash_worker.py --db FILE --runs FILE [--final]``. It
opens a :class:`~jobqueue.JobQueueService` on ``FILE`` (crash recovery runs
there), prints one JSON line ``{"event": "opening"}`` just before and one
``{"event": "ready", ...}`` once the service is open, then runs jobs until it
is killed. With ``--final`` it runs until no job is left to run, prints
``{"event": "idle", ...}``, closes the service and exits 0.

The handlers (names in :data:`HANDLERS`) are a mix: quick no-ops, effects
written through the job's own transaction (``ctx.effect``) into the
``ledger`` table, sleeps, a ``Retry`` on the first attempt, failures that are
retried, and a parent that submits a child job. Every handler start and
end is appended to the ``--runs`` file (``job_id attempt pid time start|end``,
wall clock), outside any transaction, so the test can count executions as
well as effects, and tell when each one ran. ``sleep`` calls
``ctx.checkpoint()`` between slices, so a stop or pause ends it there. So are
the control requests of other processes its supervisor reads and applies
(``job_id started_at pid time seen:KIND|applied:KIND``).

Imported by the test (and ``_chaos_controller.py``) for :data:`HANDLERS` and
:data:`LEDGER_SQL` only.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from jobqueue import JobContext, JobQueueService, Retry
from jobqueue.runtime import supervisor
from jobqueue.store.recovery import ControlRequest, control_requests

__all__ = ["HANDLERS", "LEDGER_SQL"]

#: The effect table. No UNIQUE constraint: a duplicate effect must show up as a second row.
LEDGER_SQL: Final = (
    "CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY, job_id TEXT NOT NULL, "
    "attempt INTEGER NOT NULL, pid INTEGER NOT NULL)"
)
#: Handlers that write one ledger row per completion through ``ctx.effect``.
EFFECT_HANDLERS: Final = ("effect", "retry_once", "flaky")
HANDLERS: Final = ("noop", "sleep", "spawn", *EFFECT_HANDLERS)

_PID: Final = os.getpid()
Handler = Callable[[JobContext, Any], Awaitable[Any]]
_runs_fd = -1
_service: JobQueueService | None = None


def _note(job_id: str, field: object, what: str) -> None:
    """Append to the runs file (one write(2): atomic, survives SIGKILL)."""
    os.write(_runs_fd, f"{job_id} {field!r} {_PID} {time.time():.6f} {what}\n".encode())


def _mark(ctx: JobContext, what: str) -> None:
    _note(ctx.job_id, ctx.attempt, what)


def _ran(ctx: JobContext) -> None:
    """Record a handler start."""
    _mark(ctx, "start")


def _watch_controls(svc: JobQueueService) -> None:
    """Record each control request this worker's supervisor reads, and each it applies.

    White-box: wraps the supervisor's read of the requests and the runtime's apply
    hook, so that the test can check that every request read on a run of a job
    (``started_at`` tells the runs apart) was applied to that run.
    """
    runs_of: dict[tuple[str, str], float | None] = {}  # the run each request was read on

    def seen(conn: sqlite3.Connection, owner: str) -> list[ControlRequest]:
        found = control_requests(conn, owner)
        for req in found:
            runs_of[req.job_id, req.kind] = req.started_at
            _note(req.job_id, req.started_at, f"seen:{req.kind}")
        return found

    apply = svc.runtime.apply_control

    def applied(job_id: str, kind: str) -> None:
        _note(job_id, runs_of.get((job_id, kind)), f"applied:{kind}")
        apply(job_id, kind)

    supervisor.control_requests = seen  # type: ignore[attr-defined]  # what it calls
    svc.runtime.apply_control = applied


def _tracked(fn: Handler) -> Handler:
    """Record the end of each run of ``fn`` too, however it ends (but a SIGKILL)."""

    @functools.wraps(fn)
    async def run(ctx: JobContext, payload: dict[str, Any]) -> Any:
        try:
            return await fn(ctx, payload)
        finally:
            _mark(ctx, "end")

    return run


def _ledger(conn: sqlite3.Connection, job_id: str, attempt: int) -> None:
    """The effect: runs on the database thread inside the transaction recording completion."""
    conn.execute(
        "INSERT INTO ledger (job_id, attempt, pid) VALUES (?, ?, ?)", (job_id, attempt, _PID)
    )


async def noop(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    _ran(ctx)
    return {"n": payload["n"]}


async def sleep(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleeps in slices with a checkpoint after each: where a stop or pause takes effect."""
    _ran(ctx)
    left = payload["seconds"]
    while left > 0:
        await asyncio.sleep(min(left, 0.05))
        left -= 0.05
        await ctx.checkpoint()
    return {"n": payload["n"]}


async def effect(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Work, register the effect, work some more: a kill can land on either side."""
    _ran(ctx)
    await asyncio.sleep(payload["before"])
    ctx.effect(_ledger, ctx.job_id, ctx.attempt)
    await asyncio.sleep(payload["after"])
    return {"n": payload["n"]}


async def retry_once(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Registers its effect, then asks for a retry on attempt 0: that effect must be dropped."""
    _ran(ctx)
    ctx.effect(_ledger, ctx.job_id, ctx.attempt)
    await asyncio.sleep(payload["seconds"])
    if ctx.attempt == 0:
        raise Retry(delay=payload["delay"])
    return {"n": payload["n"]}


async def flaky(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Registers its effect, then fails while ``attempt < fails`` (retried up to max_retries)."""
    _ran(ctx)
    ctx.effect(_ledger, ctx.job_id, ctx.attempt)
    await asyncio.sleep(payload["seconds"])
    if ctx.attempt < payload["fails"]:
        raise RuntimeError(f"flaky failure at attempt {ctx.attempt}")
    return {"n": payload["n"]}


async def spawn(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Submits one child ``effect`` job (idempotent across re-runs), then works a little."""
    _ran(ctx)
    assert _service is not None
    child = await _service.submit(
        "effect",
        {"n": payload["n"], "before": 0.01, "after": 0.01, "parent": ctx.job_id},
        idempotency_key=f"child-{ctx.job_id}",
        max_retries=payload["child_retries"],
        delay=payload["child_delay"],
    )
    await asyncio.sleep(payload["seconds"])
    return {"n": payload["n"], "child": child.id}


def _say(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "pid": _PID, **data}) + "\n")
    sys.stdout.flush()


async def _orphan_guard() -> None:
    """Exit if the test process died (a killed pytest must not leave workers behind)."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


async def main(argv: list[str]) -> int:
    global _runs_fd, _service
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--runs", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--final", action="store_true")
    parser.add_argument("--idle-timeout", type=float, default=150.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format=f"[{_PID}] %(levelname)s %(name)s: %(message)s"
    )
    _runs_fd = os.open(args.runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    guard = asyncio.get_running_loop().create_task(_orphan_guard())
    svc = _service = JobQueueService(
        args.db,
        concurrency=args.concurrency,
        poll_interval=0.05,
        retry_backoff=0.02,
        retry_backoff_max=0.2,
        drain_timeout=5.0,
        cancel_grace=2.0,
        busy_timeout=30.0,
    )
    for fn in (noop, sleep, effect, retry_once, flaky, spawn):
        svc.register(fn.__name__, _tracked(fn))
    _watch_controls(svc)
    _say("opening")
    async with svc:
        r = svc.recovered
        _say("ready", requeued=r.requeued, crashed=r.crashed, owners=r.owners)
        if not args.final:
            await asyncio.Event().wait()  # until SIGKILL
        await svc.run_until_idle(timeout=args.idle_timeout)
        _say("idle", stats={k: v for k, v in svc.stats().items() if isinstance(v, int)})
    guard.cancel()
    os.close(_runs_fd)
    _say("closed")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
