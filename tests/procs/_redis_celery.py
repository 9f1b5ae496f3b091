"""Handlers whose events go to the Redis bus, the Celery app a test worker runs, and the worker.

The worker subprocess runs ``celery -A _redis_celery:celery_app worker`` (threads
pool) with this directory on ``PYTHONPATH``. The bus, broker and results are one
real redis-server whose URL is ``JOBQUEUE_TEST_BUS`` (set by the test before the
worker starts); keys and the queue carry a prefix unique to the test run.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

from _celery_worker import CeleryWorker

from jobqueue import JobContext, JobQueueService

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PREFIX = os.environ.setdefault("JOBQUEUE_TEST_BUS_PREFIX", f"jqbus-{uuid.uuid4().hex[:12]}:")


async def add(ctx: JobContext, payload: dict[str, Any]) -> int:
    return int(payload["a"]) + int(payload["b"])


async def count(ctx: JobContext, payload: dict[str, Any]) -> dict[str, int]:
    """``n`` events, alternately ``progress`` and ``log``, ``pause`` seconds apart."""
    n = int(payload["n"])
    for i in range(n):
        if i % 2:
            await ctx.emit("log", {"i": i, "attempt": ctx.attempt})
        else:
            ctx.progress(i, n, f"step {i}")
        if payload.get("pause"):
            await asyncio.sleep(payload["pause"])
        await ctx.checkpoint()
    return {"n": n}


async def count_then_boom(ctx: JobContext, payload: dict[str, Any]) -> None:
    for i in range(int(payload["n"])):
        await ctx.emit("log", {"i": i, "attempt": ctx.attempt})
    raise ValueError(f"boom after {payload['n']}")


async def count_forever(ctx: JobContext, payload: Any) -> None:
    """Sends a ``log`` event every 10 ms until cancelled (a revoke), for 60 s at most."""
    for i in range(6000):
        await ctx.emit("log", {"i": i, "attempt": ctx.attempt})
        await asyncio.sleep(0.01)


async def count_slow_until(ctx: JobContext, payload: dict[str, Any]) -> dict[str, int]:
    """``n`` events per try; tries before ``fast_on`` then overrun any short time limit."""
    for i in range(int(payload["n"])):
        await ctx.emit("log", {"i": i, "attempt": ctx.attempt})
    if ctx.attempt < payload["fast_on"]:
        await asyncio.sleep(30)
    return {"attempt": ctx.attempt}


async def stubborn(ctx: JobContext, payload: Any) -> None:
    """Ignores the first cancel: sends 100 more events (for a revoke the worker is late for)."""
    i = 0
    try:
        while True:
            await ctx.emit("log", {"i": i, "attempt": ctx.attempt})
            i += 1
            await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        for _ in range(100):
            await ctx.emit("log", {"i": i, "attempt": ctx.attempt})
            i += 1
            await asyncio.sleep(0.005)


HANDLERS = {
    "add": add,
    "count": count,
    "count_then_boom": count_then_boom,
    "count_forever": count_forever,
    "count_slow_until": count_slow_until,
    "stubborn": stubborn,
}

#: Never opened: on a Celery worker it is only the handler registry.
service = JobQueueService()
for _name, _fn in HANDLERS.items():
    service.register(_name, _fn)


def make_backend(
    url: str, *, queue: str = "queue", bus: str | bool | None = True, **opts: Any
) -> Any:
    """The CeleryBackend of this test run on ``url`` (broker, results and bus)."""
    from jobqueue.tasks import CeleryBackend

    return CeleryBackend(
        service,
        broker=url,
        queue=f"{PREFIX}{queue}",
        key_prefix=PREFIX,
        retry_countdown=0.0,
        revoke_poll=0.05,
        result_expires=600,
        bus=bus,
        **opts,
    )


celery_app: Any = None
if os.environ.get("JOBQUEUE_TEST_BUS_WORKER"):  # set for the worker subprocess only
    celery_app = make_backend(os.environ["JOBQUEUE_TEST_BUS"]).app


class BusWorker(CeleryWorker):
    """``celery -A _redis_celery:celery_app worker --pool=threads`` as a subprocess."""

    def __init__(self, url: str, log_path: Path, concurrency: int = 4) -> None:
        super().__init__(
            log_path,
            concurrency,
            app="_redis_celery:celery_app",
            env={"JOBQUEUE_TEST_BUS": url, "JOBQUEUE_TEST_BUS_WORKER": "1"},
            name="jqbus",
        )
