"""A control call always takes effect: not lost to a retry, not overridden by a weaker one.

A run that ends in a retry while a cancel, stop or pause is pending ends
with that control instead; a pause sent after a cancel does not replace it.
Both in this process and from another process (a real worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService
from tests.procs._worker_procs import WorkerProcess, row, wait_status

KINDS = [("cancel", "cancelled"), ("stop", "stopped"), ("pause", "paused")]


@pytest.mark.parametrize(("kind", "final"), KINDS)
async def test_local_control_wins_over_a_retry(make_service: Any, kind: str, final: str) -> None:
    runs = 0
    started = asyncio.Event()

    async def fails(ctx: JobContext, payload: Any) -> None:
        nonlocal runs
        runs += 1
        started.set()
        # No checkpoint, so a stop or pause cannot land here; and a badly behaved
        # handler swallows the cancellation ...
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.2)
        raise RuntimeError("boom")  # ... and fails, which would be retried

    svc: JobQueueService = await make_service(poll_interval=0.02, stop_timeout=5.0)
    svc.register("fails", fails)
    job = await svc.submit("fails", max_retries=3, timeout=None)
    await asyncio.wait_for(started.wait(), 5)
    got = await asyncio.wait_for(getattr(svc, kind)(job.id), 10)
    assert got.status == final, got
    await asyncio.sleep(0.3)  # a lost control would show as a second run by now
    assert runs == 1
    assert (await svc.get(job.id)).status == final
    assert (await svc.get(job.id)).control is None


@pytest.mark.parametrize(("kind", "final"), KINDS)
async def test_remote_control_wins_over_a_retry(tmp_path: Path, kind: str, final: str) -> None:
    db = tmp_path / "jobs.db"
    admin = JobQueueService(db, poll_interval=0.05)
    admin.declare("fails_slowly")
    async with admin:
        worker = WorkerProcess(db, "--report-interval", "0")
        try:
            await asyncio.to_thread(worker.wait_log, " ready: ")
            job = await admin.submit("fails_slowly", {"seconds": 0.4}, max_retries=3)
            await asyncio.to_thread(wait_status, db, job.id, "running")
            got = await asyncio.wait_for(getattr(admin, kind)(job.id), 15)
            assert got.status == final, got
            await asyncio.sleep(0.6)  # time for a retry to have started, if one were due
            r = row(db, job.id)
            assert r["status"] == final, r
            assert r["attempt"] <= 1, r
        finally:
            worker.proc.kill()
            worker.proc.wait(10)


async def test_a_pause_after_a_cancel_does_not_replace_it(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    admin = JobQueueService(db, poll_interval=0.05, cancel_grace=0.2)
    admin.declare("steps")
    async with admin:
        worker = WorkerProcess(db, "--report-interval", "0")
        try:
            await asyncio.to_thread(worker.wait_log, " ready: ")
            job = await admin.submit("steps", {"steps": 400, "pace": 0.02})
            await asyncio.to_thread(wait_status, db, job.id, "running")
            worker.send(signal.SIGSTOP)  # the owner cannot act on either request yet
            cancel = asyncio.create_task(admin.cancel(job.id))
            await asyncio.sleep(0.2)
            pause = asyncio.create_task(admin.pause(job.id))
            stop = asyncio.create_task(admin.stop(job.id))
            await asyncio.sleep(0.2)
            assert (await admin.get(job.id)).control == "cancel"
            worker.send(signal.SIGCONT)
            await asyncio.wait_for(asyncio.gather(cancel, pause, stop), 20)
            final = await asyncio.to_thread(
                wait_status, db, job.id, "cancelled", "paused", "stopped", "completed"
            )
            assert final["status"] == "cancelled", final
        finally:
            worker.send(signal.SIGCONT)
            worker.proc.kill()
            worker.proc.wait(10)
