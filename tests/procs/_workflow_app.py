"""A worker app for the workflow kill test in tests/integration/test_workflows.py (not collected).

Run as ``python -m jobqueue worker tests.procs._workflow_app:service --db FILE``.
Every execution of a step function appends one line ``job_id what pid time``
to ``FILE.runs`` with a single ``write(2)`` (atomic with ``O_APPEND``, and on
disk even if the process is SIGKILLed a moment later), so the test counts
side effects, not stored rows.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from jobqueue import JobContext, JobQueueService

__all__ = ["read_runs", "service"]

service = JobQueueService(poll_interval=0.05, concurrency=4, cancel_grace=1.0)


def _ran(ctx: JobContext, what: str) -> None:
    fd = os.open(service.path + ".runs", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.job_id} {what} {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


@service.handler("sleeper")
async def sleeper(ctx: JobContext, payload: dict[str, Any]) -> float:
    """A step, a durable sleep of ``payload["seconds"]``, a step returning when it woke."""
    await ctx.step("before", lambda: _ran(ctx, "before"))
    await ctx.sleep("nap", payload["seconds"])

    def after() -> float:
        _ran(ctx, "after")
        return time.time()

    return float(await ctx.step("after", after))


@service.handler("mapper")
async def mapper(ctx: JobContext, payload: dict[str, Any]) -> int:
    """``map`` over ``payload["n"]`` items, ``payload["limit"]`` at a time, then a total."""

    async def square(i: int) -> int:
        _ran(ctx, f"items[{i}]")
        await asyncio.sleep(payload["pace"])
        return i * i

    squares = await ctx.map("items", range(payload["n"]), square, limit=payload["limit"])
    return int(await ctx.step("total", lambda: _ran(ctx, "total") or sum(squares)))


def read_runs(db: str) -> list[tuple[str, str, int, float]]:
    """The runs file of ``db``: ``(job_id, what, pid, time)`` per step execution."""
    try:
        with open(db + ".runs") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        job, what, pid, at = line.split()
        out.append((job, what, int(pid), float(at)))
    return out
