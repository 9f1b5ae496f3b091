"""``handler(..., lock_key=...)``: runs sharing a key take turns; others run in parallel."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobFailedError, JobQueueService
from jobqueue.errors import InvalidLockKey
from jobqueue.locks import KeyedWorkerLockManager


async def test_same_key_runs_take_turns(tmp_path: Path) -> None:
    inside: dict[str, int] = {}
    peak: dict[str, int] = {}
    async with JobQueueService(tmp_path / "jobs.db", concurrency=6) as svc:

        @svc.handler("browse", lock_key=lambda p: f"profile-{p['profile']}")
        async def browse(ctx: JobContext, payload: dict[str, Any]) -> None:
            key = payload["profile"]
            inside[key] = inside.get(key, 0) + 1
            peak[key] = max(peak.get(key, 0), inside[key])
            await asyncio.sleep(0.02)
            inside[key] -= 1

        await svc.submit_many("browse", [{"profile": p} for p in "ab" * 3])
        await svc.run_until_idle(timeout=20)
        assert isinstance(svc.locks, KeyedWorkerLockManager)
        assert (tmp_path / "jobs.db.locks").is_dir()
        done = await svc.list(status="completed")
    assert peak == {"a": 1, "b": 1}  # one run per profile at a time
    assert len(done) == 6


async def test_lock_timeout_fails_the_run(tmp_path: Path) -> None:
    async with JobQueueService(tmp_path / "jobs.db", concurrency=2) as svc:
        release = asyncio.Event()

        @svc.handler("hold", lock_key="shared")
        async def hold(ctx: JobContext, payload: Any) -> None:
            await release.wait()

        @svc.handler("try", lock_key="shared", lock_timeout=0.1)
        async def try_(ctx: JobContext, payload: Any) -> None:
            raise AssertionError("must not run while the lock is held")

        holder = await svc.submit("hold")
        await asyncio.sleep(0.1)
        waiter = await svc.submit("try")
        with pytest.raises(JobFailedError, match="LockTimeout"):
            await svc.wait(waiter.id, timeout=10)
        release.set()
        await svc.wait(holder.id, timeout=10)


async def test_bad_fixed_key_is_refused_at_registration() -> None:
    async with JobQueueService() as svc:

        async def h(ctx: JobContext, payload: Any) -> None:
            return None

        with pytest.raises(InvalidLockKey):
            svc.register("h", h, lock_key="")
        assert isinstance(svc.locks, object)
