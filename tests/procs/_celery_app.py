"""Handlers for the TaskService contract tests, and the Celery app a test worker runs.

The worker subprocess runs ``celery -A _celery_app:celery_app worker`` with this
directory on ``PYTHONPATH``. Its Redis keys and queue carry a prefix unique to
the test run (``JOBQUEUE_TEST_CELERY_PREFIX``, set on first import and
inherited by the worker), so parallel runs on one Redis never meet.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from jobqueue import JobContext, JobQueueService

REDIS_URL = os.environ.get("JOBQUEUE_TEST_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.setdefault("JOBQUEUE_TEST_CELERY_PREFIX", f"jqtest-{uuid.uuid4().hex[:12]}:")


async def add(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"sum": payload["a"] + payload["b"], "task_id": ctx.job_id, "attempt": ctx.attempt}


async def boom(ctx: JobContext, payload: Any) -> None:
    raise ValueError(f"bad input: {payload!r}")


async def sleepy(ctx: JobContext, payload: dict[str, Any]) -> str:
    for _ in range(int(payload["seconds"] * 100)):
        await asyncio.sleep(0.01)
        await ctx.checkpoint()
    return "slept"


async def slow_until(ctx: JobContext, payload: dict[str, Any]) -> dict[str, int]:
    """Overruns any short time limit until try number ``payload["fast_on"]`` (0-based)."""
    if ctx.attempt < payload["fast_on"]:
        await asyncio.sleep(30)
    return {"attempt": ctx.attempt}


async def uses_effect(ctx: JobContext, payload: Any) -> None:
    ctx.effect(lambda conn: None)


HANDLERS = {
    "add": add,
    "boom": boom,
    "sleepy": sleepy,
    "slow_until": slow_until,
    "uses_effect": uses_effect,
}

#: Never opened: on a Celery worker it is only the handler registry.
service = JobQueueService()
for _name, _fn in HANDLERS.items():
    service.register(_name, _fn)


def make_backend() -> Any:
    """The CeleryBackend of this test run (imports Celery)."""
    from jobqueue.tasks import CeleryBackend

    return CeleryBackend(
        service,
        broker=REDIS_URL,
        queue=f"{PREFIX}queue",
        key_prefix=PREFIX,
        retry_countdown=0.0,
        revoke_poll=0.05,
        result_expires=600,
    )


celery_app: Any = None
if os.environ.get("JOBQUEUE_TEST_CELERY_WORKER"):  # set for the worker subprocess only
    celery_app = make_backend().app
