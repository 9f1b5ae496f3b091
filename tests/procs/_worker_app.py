"""A worker app for integration/test_worker.py (imported by the worker, not collected).

Run as ``python -m jobqueue worker tests.procs._worker_app:service --db FILE``. The
service has no path of its own: ``--db`` gives it one. ``make_service`` is the
same as a factory; the other names are deliberately unusable targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from jobqueue import JobContext, JobQueueService

__all__ = ["empty", "make_service", "not_a_service", "service"]


async def sleep(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``payload["seconds"]``; cancellable at any moment."""
    await asyncio.sleep(payload["seconds"])
    return {"slept": payload["seconds"]}


async def steps(ctx: JobContext, payload: dict[str, Any]) -> int:
    """``payload["steps"]`` short steps with a checkpoint after each (pause/stop cooperate)."""
    done = 0
    for _ in range(payload["steps"]):
        await asyncio.sleep(payload.get("pace", 0.05))
        done += 1
        await ctx.checkpoint()
    return done


async def stubborn(ctx: JobContext, payload: dict[str, Any]) -> str:
    """Ignores cancellation for ``payload["seconds"]`` (a badly written handler)."""
    deadline = time.monotonic() + payload["seconds"]
    while time.monotonic() < deadline:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)
    return "done"


async def fails_slowly(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Runs ``payload["seconds"]`` without a checkpoint, then raises (so it is retried)."""
    await asyncio.sleep(payload["seconds"])
    raise RuntimeError("failed after a while")


def make_service() -> JobQueueService:
    """A service with the handlers above, for quick polling in tests."""
    svc = JobQueueService(
        poll_interval=0.05, concurrency=4, cancel_grace=1.0, drain_timeout=10.0, stop_timeout=2.0
    )
    for fn in (sleep, steps, stubborn, fails_slowly):
        svc.register(fn.__name__, fn)
    return svc


service = make_service()
not_a_service = 42
empty = JobQueueService()  # no handlers registered
