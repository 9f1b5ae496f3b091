"""Two services on one file in one process: each is an owner of its own.

One service runs a long job; the other (which does not have the handler)
controls it, as a web app and a worker sharing a process would. The request
goes through the file and the owner's watch loop applies it, as it would
between processes. Neither sweeps the other's jobs: they share a live process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService, TaskStatus
from jobqueue.errors import Interrupt

S = TaskStatus


@asynccontextmanager
async def pair(db: Path, seen: list[str]) -> AsyncIterator[tuple[JobQueueService, JobQueueService]]:
    """``(runner, other)``: ``runner`` has the ``long`` handler, ``other`` only declares it."""

    async def long(ctx: JobContext, payload: Any) -> str:
        seen.append("start")
        deadline = time.monotonic() + payload["seconds"]
        try:
            while time.monotonic() < deadline:
                await ctx.checkpoint()
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        except Interrupt as exc:
            seen.append(exc.kind)
            raise
        seen.append("done")
        return "done"

    opts: dict[str, Any] = {"poll_interval": 0.05, "stop_timeout": 5.0, "cancel_grace": 2.0}
    async with JobQueueService(db, **opts) as runner, JobQueueService(db, **opts) as other:
        runner.register("long", long)
        other.declare("long")
        yield runner, other


async def _running(svc: JobQueueService, job_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (await svc.get(job_id)).status is not S.RUNNING:
        assert time.monotonic() < deadline, await svc.get(job_id)
        await asyncio.sleep(0.01)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("kind", "status", "seen"),
    [
        ("stop", S.STOPPED, "stop"),
        ("cancel", S.CANCELLED, "cancelled"),
        ("pause", S.PAUSED, "pause"),
    ],
)
async def test_a_second_service_in_this_process_controls_the_first_ones_job(
    db_path: Path, kind: str, status: TaskStatus, seen: str
) -> None:
    events: list[str] = []
    async with pair(db_path, events) as (runner, other):
        job = await other.submit("long", {"seconds": 30})
        await _running(other, job.id)
        assert (await other.get(job.id)).owner == runner.owner
        t0 = time.monotonic()
        out = await asyncio.wait_for(getattr(other, kind)(job.id), 20)
        took = time.monotonic() - t0
        assert (out.status, out.owner, out.control) == (status, None, None), (out, took)
        assert events == ["start", seen]
        assert took < 5.0  # applied by the owner's watch loop, not by a timeout
        assert (await runner.get(job.id)).status is status
    assert runner.owner != other.owner


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_two_services_in_this_process_never_sweep_each_others_jobs(db_path: Path) -> None:
    events: list[str] = []
    async with pair(db_path, events) as (runner, other):
        job = await runner.submit("long", {"seconds": 30}, max_retries=3)
        await _running(runner, job.id)
        # A third service opening now sweeps at open; the other two sweep every second.
        async with JobQueueService(db_path, poll_interval=0.05) as third:
            assert third.recovered.total == 0
            end = time.monotonic() + 2.5
            while time.monotonic() < end:
                got = await other.get(job.id)
                assert (got.status, got.owner, got.attempt) == (S.RUNNING, runner.owner, 0)
                await asyncio.sleep(0.05)
        assert (await other.cancel(job.id)).status is S.CANCELLED
    assert events == ["start", "cancelled"]
