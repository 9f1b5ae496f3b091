"""A pause after a resume holds, in both orders of events; found by tests/integration/test_crash.py.

``resume()`` of a paused job only marks it (``control = 'resume'``); a worker
claims it later. A ``pause()`` in between used to return ``paused`` and leave
that mark, so the job ran anyway. And a pause of the run that the resume
started must be applied by its owner like the first one was.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService
from jobqueue.status import TaskStatus


class Starts(list[int]):
    """The attempts the handler started at; ``await until(n)`` waits for the n-th start."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def add(self, attempt: int) -> None:
        self.append(attempt)
        self.changed.set()

    async def until(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self) < n:
                self.changed.clear()
                await self.changed.wait()


def _runner(db: Path, starts: Starts, poll_interval: float = 0.02) -> JobQueueService:
    async def hold(ctx: JobContext, payload: Any) -> None:
        starts.add(ctx.attempt)
        await asyncio.sleep(30)

    svc = JobQueueService(db, poll_interval=poll_interval, drain_timeout=0.5)
    svc.register("hold", hold)
    return svc


async def _paused_job(db: Path, starts: Starts) -> str:
    """A job that ran once and is paused, with no service left running it."""
    async with _runner(db, starts) as svc:
        job = await svc.submit("hold")
        await starts.until(1)
        assert (await svc.pause(job.id)).status is TaskStatus.PAUSED
    return job.id


@pytest.mark.parametrize("pause_again", [True, False])
async def test_pause_withdraws_a_resume_not_yet_claimed(tmp_path: Path, pause_again: bool) -> None:
    db = tmp_path / "jobs.db"
    starts = Starts()
    job_id = await _paused_job(db, starts)
    admin = JobQueueService(db)
    admin.declare("hold")  # runs nothing: the resume waits for a worker
    async with admin:
        resumed = await admin.resume(job_id)
        assert (resumed.status, resumed.control) == (TaskStatus.PAUSED, "resume")
        if pause_again:
            paused = await admin.pause(job_id)
            assert (paused.status, paused.control) == (TaskStatus.PAUSED, None)
    async with _runner(db, starts) as svc:
        if pause_again:
            await svc.run_until_idle(timeout=5)
            assert (await svc.get(job_id)).status is TaskStatus.PAUSED
            assert starts == [0]  # not run again after the pause returned
        else:  # the resume alone runs it again
            await starts.until(2)
            assert (await svc.get(job_id)).status is TaskStatus.RUNNING
            await svc.cancel(job_id)


async def test_pause_of_a_job_claimed_after_its_resume_pauses_the_run(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    starts = Starts()
    job_id = await _paused_job(db, starts)
    async with _runner(db, starts) as svc:
        await svc.resume(job_id)
        await starts.until(2)
        assert (await svc.pause(job_id)).status is TaskStatus.PAUSED
        await asyncio.sleep(0.2)
        assert len(starts) == 2


async def _requested(svc: JobQueueService, job_id: str, kind: str) -> None:
    """Wait until ``kind`` is written into the job's row for its owner."""
    async with asyncio.timeout(5):
        while (await svc.get(job_id)).control != kind:  # noqa: ASYNC110 (a row, no event)
            await asyncio.sleep(0.005)


async def test_owner_applies_a_pause_again_on_a_later_run(tmp_path: Path) -> None:
    """pause, resume, pause from another service: the owner pauses the second run too.

    The owner's control checks are driven by hand (its own poll never comes), so the
    second request is seen at the very next check, as happens in a real run when
    pause, resume, claim and pause all fall within one ``poll_interval``. The owner
    used to remember applied requests by job and kind only, took the second one for
    the first and never applied it: the pause waited out its time and returned
    ``running``, and the run went on to the end.
    """
    db = tmp_path / "jobs.db"
    starts = Starts()
    owner = _runner(db, starts, poll_interval=3600.0)
    admin = JobQueueService(db, poll_interval=0.02, cancel_grace=0.5, stop_timeout=0.5)
    admin.declare("hold")
    async with owner, admin:
        supervisor = owner.runtime.supervisor
        assert supervisor is not None
        job = await owner.submit("hold")
        await starts.until(1)
        for run in (1, 2):
            pause = asyncio.create_task(admin.pause(job.id))
            await _requested(admin, job.id, "pause")
            await supervisor._check_controls()
            got = await asyncio.wait_for(pause, 10)
            assert got.status is TaskStatus.PAUSED, f"run {run}: {got.status}"
            if run == 1:
                await admin.resume(job.id)
                owner.runtime.want_claim()
                await starts.until(2)
