"""Cancellation at every await: submit, claim, status changes and close.

:class:`CancelAt` runs a coroutine and cancels the task running it at its
n-th suspension, exactly as ``task.cancel()`` would while the task waits
there. Each test sweeps n = 0, 1, 2, ... until the operation completes
before reaching its n-th await, so every await point is hit once. After
each cancellation the store must be consistent (no half-written job, every
job in a valid status and not stuck), the write lock must be free, and the
service must keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from _fault_util import integrity, report, rows, write_lock_free

from jobqueue import JobQueueService, TaskStatus
from jobqueue.errors import JobQueueError, ServiceClosedError
from jobqueue.store.claim import ClaimRequest, claim
from jobqueue.store.connection import Database
from jobqueue.store.jobs import NewJob, insert_jobs
from jobqueue.store.schema import apply_migrations
from jobqueue.store.writer import Writer

MAX_POINTS = 200


class CancelAt:
    """Await ``coro``; cancel the awaiting task at its ``at``-th suspension (0-based)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], at: int, delay: float | None = None) -> None:
        self.coro = coro
        self.at = at
        self.delay = delay  # None: at once; else that many seconds into the wait
        self.steps = 0
        self.fired = False

    def __await__(self) -> Generator[Any, Any, Any]:
        value: Any = None
        exc: BaseException | None = None
        while True:
            try:
                yielded = self.coro.throw(exc) if exc is not None else self.coro.send(value)
            except StopIteration as stop:
                return stop.value
            if self.steps == self.at:
                self.fired = True
                task = asyncio.current_task()
                assert task is not None
                if self.delay is None:
                    task.cancel()  # the task cancels the future it is about to wait on
                else:  # later, e.g. while the batch is on the database thread
                    asyncio.get_running_loop().call_later(self.delay, task.cancel)
            self.steps += 1
            try:
                value, exc = (yield yielded), None
            except BaseException as e:  # forwarded into the coroutine, as a Task would
                value, exc = None, e


async def _drive(awaitable: CancelAt) -> Any:
    return await awaitable


#: When to cancel once the n-th await is reached: at once, on the next loop pass, and
#: twice more while a database hop is likely in flight.
DELAYS = (None, 0.0, 0.0005, 0.002)


async def sweep(
    make: Callable[[str], Coroutine[Any, Any, Any]],
    check: Callable[[str, bool], Awaitable[None]],
) -> int:
    """Cancel ``make(key)`` at its n-th await for every n and delay; ``check`` after each.

    Returns the number of await points found.
    """
    points = 0
    for delay in DELAYS:
        for at in range(MAX_POINTS):
            key = f"{at}-{DELAYS.index(delay)}"
            op = CancelAt(make(key), at, delay)
            task = asyncio.create_task(_drive(op))
            await asyncio.wait([task])
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                # a typed error is an acceptable answer to a cancellation race; nothing else
                assert isinstance(exc, JobQueueError), exc
            await check(key, not task.cancelled() and exc is None)
            if not op.fired:
                points = max(points, at)
                break
        else:
            raise AssertionError(f"more than {MAX_POINTS} await points")
    return points


async def lock_frees(path: Path, within: float = 3.0) -> None:
    """The write lock is free at some moment within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not write_lock_free(path):  # timeout=0: never blocks
        assert loop.time() < deadline, "the write lock stayed held"
        await asyncio.sleep(0.02)


# -- submit -----------------------------------------------------------------------------------


@pytest.mark.parametrize("inline", [True, False], ids=["at-once", "queued"])
async def test_cancel_submit_at_every_await(make_service, db_path: Path, inline: bool) -> None:
    svc = await make_service(poll_interval=0.05)
    svc.declare("later")  # stored, not run: in-memory counts must match the file
    assert svc.runtime.db is not None
    # At once, a lone submit commits on the loop's thread (usually no await at all);
    # queued, it waits for the writer's batch on the database thread.
    svc.runtime.db.inline = inline

    async def check(key: str, completed: bool) -> None:
        await lock_frees(db_path)
        stored = rows(db_path)
        job_id = f"s{key}"
        if completed:
            assert job_id in stored
        # All or nothing: the job is there whole, or not at all; retrying with its
        # idempotency key never makes a second one.
        again = await svc.submit("later", {"k": key}, job_id=job_id, idempotency_key=job_id)
        assert again.id == job_id
        assert rows(db_path)[job_id] == ("pending", f'{{"k":"{key}"}}')

    points = await sweep(
        lambda key: svc.submit("later", {"k": key}, job_id=f"s{key}", idempotency_key=f"s{key}"),
        check,
    )
    assert inline or points >= 1
    assert integrity(db_path) == ["ok"]
    report("cancel_submit_inline" if inline else "cancel_submit", await_points=points)

    @svc.handler("later")
    async def later(ctx, payload):
        return payload["k"]

    await svc.run_until_idle(timeout=20)
    assert {s for s, _ in rows(db_path).values()} == {"completed"}


async def test_cancelled_submit_keeps_pending_count_exact(make_service, db_path: Path) -> None:
    svc = await make_service(poll_interval=60, cleanup_interval=3600)
    svc.declare("later")

    async def check(key: str, completed: bool) -> None:
        await lock_frees(db_path)
        on_file = sum(1 for s, _ in rows(db_path).values() if s == "pending")
        # The commit's callbacks run on the loop a moment after the db thread commits;
        # the count must agree then (the reaper's refresh is an hour away here).
        for _ in range(50):
            if svc.stats()["pending"] == on_file:
                break
            await asyncio.sleep(0.01)
        assert svc.stats()["pending"] == on_file, (key, svc.stats()["pending"], on_file)

    await sweep(lambda key: svc.submit("later", {}, job_id=f"s{key}"), check)


# -- claim ------------------------------------------------------------------------------------


class _OneClaim:
    """A claim planner that claims every due job once, for owner ``test-owner``."""

    def __init__(self) -> None:
        self.wanted = True
        self.result: Any = None
        self.failed: BaseException | None = None

    def plan_claim(self, most: int | None = None) -> Callable[[sqlite3.Connection], Any] | None:
        if not self.wanted:
            return None
        self.wanted = False
        req = ClaimRequest(handlers=["h"], limit=100, owner="test-owner", now=1e12)
        return partial(claim, req=req)

    def claimed(self, result: Any) -> None:
        self.result = result

    def claim_failed(self, exc: BaseException) -> None:
        self.failed = exc


def _job(job_id: str) -> NewJob:
    return NewJob(job_id, "h", "{}", TaskStatus.PENDING, 0.0, 0.0)


async def test_cancel_the_writer_at_every_await_of_a_claim(db_path: Path) -> None:
    """The claim runs inside the writer's batch: cancel the writer task at each of its awaits.

    Whatever point it is cancelled at, the batch (an insert plus the claim) commits
    whole or not at all, every caller's future resolves (none hangs), later writes
    fail fast with ServiceClosedError, and the write lock is free.
    """
    db = await Database.open(db_path)
    try:
        await db.run(apply_migrations, str(db_path))
        at = 0
        while True:
            await db.run(insert_jobs, [_job(f"p{at}-{i}") for i in range(3)])
            writer = Writer(db)
            planner = writer.planner = _OneClaim()
            op = CancelAt(writer._loop(), at)
            writer._task = asyncio.create_task(_drive(op))
            fut = writer.enqueue(insert_jobs, [_job(f"w{at}")])
            writer.kick()
            done, _ = await asyncio.wait([fut], timeout=5)
            assert done, f"a write queued before the writer was cancelled hangs (at={at})"
            await lock_frees(db_path)
            stored = rows(db_path)
            claimed = {k for k, (s, _) in stored.items() if k.startswith(f"p{at}-")}
            running = {k for k in claimed if stored[k][0] == "running"}
            assert running in (set(), claimed), running  # the claim is atomic
            assert (f"w{at}" in stored) == (not fut.cancelled() and fut.exception() is None)
            if op.fired:
                with pytest.raises(ServiceClosedError):
                    await asyncio.wait_for(writer.write(insert_jobs, [_job(f"late{at}")]), 5)
            await asyncio.wait_for(writer.close(), 5)
            if not op.fired:
                break
            assert planner.result is None or planner.failed is None
            at += 1
            assert at < MAX_POINTS
    finally:
        await db.close()
    assert integrity(db_path) == ["ok"]
    report("cancel_claim_writer", await_points=at)


# -- status changes ---------------------------------------------------------------------------


async def _settled(svc: JobQueueService, job_id: str) -> TaskStatus:
    """The job's stored status once this process is done acting on it."""
    runner = svc.runtime.runner
    for _ in range(300):
        job = await svc.get(job_id)
        active = runner is not None and job_id in runner.active
        if job.status is TaskStatus.RUNNING and active:
            return job.status  # still running here, and known to be
        if job.status is not TaskStatus.RUNNING and not active:
            return job.status
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} stuck: stored {job.status}, active here: {active}")


@pytest.mark.parametrize("action", ["cancel", "stop", "pause", "resume", "cancel-pending"])
async def test_cancel_status_change_at_every_await(
    make_service, db_path: Path, action: str
) -> None:
    svc = await make_service(poll_interval=0.05, stop_timeout=2, cancel_grace=1)
    gates: dict[str, asyncio.Event] = {}
    started: dict[str, asyncio.Event] = {}

    @svc.handler("long")
    async def long(ctx, payload):
        started.setdefault(ctx.job_id, asyncio.Event()).set()
        gate = gates.setdefault(ctx.job_id, asyncio.Event())
        while not gate.is_set():
            await ctx.checkpoint()
            await asyncio.sleep(0.01)
        return "done"

    async def prepare(at: int) -> str:
        job_id = f"{action}{at}"
        if action == "cancel-pending":
            await svc.submit("long", {}, job_id=job_id, delay=3600)
            return job_id
        await svc.submit("long", {}, job_id=job_id)
        await asyncio.wait_for(started.setdefault(job_id, asyncio.Event()).wait(), 10)
        if action == "resume":
            await svc.pause(job_id)
        return job_id

    ids: list[str] = []

    def make(at: int) -> Coroutine[Any, Any, Any]:
        async def op() -> Any:
            job_id = ids[at]
            call = {"cancel-pending": "cancel"}.get(action, action)
            return await getattr(svc, call)(job_id)

        return op()

    async def run_sweep() -> int:
        for at in range(MAX_POINTS):
            ids.append(await prepare(at))
            cancel_at = CancelAt(make(at), at)
            task = asyncio.create_task(_drive(cancel_at))
            await asyncio.wait([task])
            status = await _settled(svc, ids[at])
            await lock_frees(db_path)
            assert status in set(TaskStatus)
            # Leave no job behind: finish it whatever state it is in.
            gates.setdefault(ids[at], asyncio.Event()).set()
            if status is TaskStatus.PAUSED:
                await svc.resume(ids[at])
            elif status is TaskStatus.PENDING:  # a delayed job the cancel never reached
                await svc.cancel(ids[at])
            with contextlib.suppress(JobQueueError):
                await svc.wait(ids[at], timeout=10)
            assert (await svc.get(ids[at])).done
            if not cancel_at.fired:
                return at
        raise AssertionError("too many await points")

    points = await run_sweep()
    assert svc.runtime.runner is not None
    assert not svc.runtime.runner.active
    assert integrity(db_path) == ["ok"]
    report(f"cancel_{action}", await_points=points)


# -- close ------------------------------------------------------------------------------------


async def _force_close(svc: JobQueueService) -> None:
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("jobqueue-")]
    for t in tasks:
        t.cancel()
    await asyncio.wait(tasks, timeout=5) if tasks else None
    for db in (svc.runtime.checkpointer._db if svc.runtime.checkpointer else None, svc.runtime.db):
        if db is not None:
            with contextlib.suppress(Exception):
                await db.close()
    svc.runtime.state = "closed"


def _threads() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.ident is not None}


async def test_cancel_close_at_every_await(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"

    async def check_closes(svc: JobQueueService, before: set[int]) -> None:
        await lock_frees(path)
        await asyncio.wait_for(svc.close(), 10)  # a second close finishes the job
        assert svc.runtime.db is None
        await asyncio.sleep(0.05)
        assert _threads() <= before, "a database thread was left running"

    at = 0
    while True:
        before = _threads()
        svc = JobQueueService(str(path), poll_interval=0.05, drain_timeout=1)
        await svc.__aenter__()

        @svc.handler("h")
        async def h(ctx, payload):
            await asyncio.sleep(0.05)
            return payload

        for i in range(3):
            await svc.submit("h", {"i": i}, job_id=f"c{at}-{i}")
        op = CancelAt(svc.close(), at)
        task = asyncio.create_task(_drive(op))
        await asyncio.wait([task])
        try:
            await check_closes(svc, before)
        finally:
            if svc.runtime.db is not None:  # a failed close: leak nothing into later tests
                await _force_close(svc)
        if not op.fired:
            break
        at += 1
        assert at < MAX_POINTS
    stored = rows(path)
    assert all(s in {"pending", "completed"} for s, _ in stored.values()), stored
    assert integrity(path) == ["ok"]
    report("cancel_close", await_points=at)
