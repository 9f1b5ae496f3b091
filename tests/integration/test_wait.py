"""wait(): answered from the outcomes of jobs finished here; one read for the other waiters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from jobqueue import JobQueueService
from jobqueue.errors import JobCancelledError, JobFailedError, JobNotFoundError
from jobqueue.runtime import waiters as waiters_mod
from jobqueue.runtime.waiters import Waiters
from jobqueue.status import TaskStatus
from jobqueue.store import jobs
from jobqueue.store.jobs import Finished
from jobqueue.tasks import InProcessBackend, TaskService


def _count_reads(svc: JobQueueService) -> list[Any]:
    """Every store function the service runs from now on (either thread), but its batches."""
    db = svc.runtime.db
    assert db is not None
    seen: list[Any] = []
    run = db.run

    async def counting(fn: Callable[..., Any], *args: Any) -> Any:
        if getattr(fn, "__name__", "") != "_run_batch":
            seen.append(fn)
        return await run(fn, *args)

    def counting_now(fn: Callable[..., Any], *args: Any) -> Any:
        if getattr(fn, "__name__", "") != "_run_batch":
            seen.append(fn)
        return run_now(fn, *args)

    run_now = db.run_now
    db.run = counting  # type: ignore[method-assign]
    db.run_now = counting_now  # type: ignore[method-assign]
    return seen


async def test_a_job_running_here_is_waited_for_without_a_read(make_service) -> None:
    svc = await make_service()
    gate = asyncio.Event()
    started = asyncio.Event()

    @svc.handler("work")
    async def work(ctx, payload):
        started.set()
        await gate.wait()
        return {"n": payload["n"] * 2}

    ok = await svc.submit("work", {"n": 21})
    await asyncio.wait_for(started.wait(), 5)
    reads = _count_reads(svc)
    waiting = asyncio.ensure_future(svc.wait(ok.id, timeout=5))
    await asyncio.sleep(0.05)
    gate.set()
    assert await waiting == {"n": 42}
    assert jobs.fetch not in reads
    assert jobs.finished_or_status not in reads
    assert await svc.wait(ok.id) == {"n": 42}  # finished lately: still no read
    assert jobs.fetch not in reads
    assert jobs.finished_or_status not in reads
    assert (await svc.get(ok.id)).result == {"n": 42}


async def test_outcomes_from_memory_match_the_stored_record(make_service) -> None:
    svc = await make_service()

    @svc.handler("fail")
    async def fail(ctx, payload):
        raise ValueError("bad input")

    @svc.handler("ok")
    async def ok(ctx, payload):
        return [1, "two", None]

    bad, good = await svc.submit("fail"), await svc.submit("ok")
    with pytest.raises(JobFailedError) as failed:
        await svc.wait(bad.id, timeout=5)
    stored = await svc.get(bad.id)
    assert (failed.value.error, failed.value.reason) == (stored.error, stored.reason)
    assert await svc.wait(good.id, timeout=5) == (await svc.get(good.id)).result
    # The task backend describes it from the same record, traceback included.
    info = await TaskService(InProcessBackend(svc)).backend.wait_task(bad.id, 5)
    assert info.status is TaskStatus.FAILED
    assert info.failure is not None
    assert info.failure.traceback == stored.traceback
    assert info.failure.error_type == "ValueError"


async def test_wait_for_an_unknown_job_raises(make_service) -> None:
    svc = await make_service()
    with pytest.raises(JobNotFoundError):
        await svc.wait("no-such-job", timeout=5)


async def test_a_job_cancelled_before_it_ran(make_service) -> None:
    svc = await make_service()
    svc.declare("elsewhere")
    job = await svc.submit("elsewhere")
    waiting = asyncio.ensure_future(svc.wait(job.id, timeout=5))
    await asyncio.sleep(0.02)
    await svc.cancel(job.id)
    with pytest.raises(JobCancelledError):
        await waiting


async def test_waiters_of_jobs_run_elsewhere_share_one_read(make_service, db_path) -> None:
    producer = await make_service(poll_interval=0.05)
    producer.declare("slow")
    worker = await make_service(path=db_path, poll_interval=0.05, concurrency=32)

    @worker.handler("slow")
    async def slow(ctx, payload):
        await asyncio.sleep(0.3)
        return payload

    submitted = [await producer.submit("slow", i) for i in range(20)]
    reads = _count_reads(producer)
    got = await asyncio.wait_for(
        asyncio.gather(*(producer.wait(j.id) for j in submitted)), timeout=15
    )
    assert got == list(range(20))
    batched = [fn for fn in reads if fn is jobs.finished_or_status]
    assert jobs.fetch not in reads  # nothing read job by job
    # One read as the 20 waits start, then one per poll (0.2 s) while the jobs run.
    assert 1 <= len(batched) <= 8, len(batched)


async def test_kept_outcomes_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(waiters_mod, "KEEP_COUNT", 3)
    monkeypatch.setattr(waiters_mod, "KEEP_BYTES", 100)
    w = Waiters()

    def fin(job_id: str, result: str = "1") -> Finished:
        return Finished(job_id, "h", TaskStatus.COMPLETED, result, None, None, None, None)

    for i in range(5):
        w.finished(fin(f"j{i}"))
    assert [w.recent(f"j{i}") is not None for i in range(5)] == [False, False, True, True, True]
    w.finished(fin("big", "x" * 99))  # j2 goes for the count, j3 for the bytes (101 > 100)
    assert w.recent("big") is not None
    assert w.recent("j4") is not None
    assert w.recent("j2") is None
    assert w.recent("j3") is None
    monkeypatch.setattr(waiters_mod, "KEEP_COUNT", 1000)
    monkeypatch.setattr(waiters_mod, "KEEP_BYTES", 10_000)
    monkeypatch.setattr(waiters_mod, "KEEP_SECONDS", 0.0)
    await asyncio.sleep(0.001)
    for i in range(64):  # the age bound is looked at every 64 outcomes
        w.finished(fin(f"n{i}"))
    assert w.recent("big") is None
    assert w.recent("j4") is None
    assert w.recent("n63") is not None
