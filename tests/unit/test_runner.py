"""Runner alone, with a real Writer: how a handler ends becomes a stored outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _parts import WAIT, claim_now, eventually, fetch, insert, new_job

from jobqueue.context import JobContext
from jobqueue.errors import Cancel, Retry
from jobqueue.events.registry import QueueRegistry
from jobqueue.hooks import HookKind, Hooks, Lifecycle
from jobqueue.runtime.runner import Handler, Runner
from jobqueue.status import TaskStatus
from jobqueue.store.connection import Database
from jobqueue.store.jobs import Claimed, Job
from jobqueue.store.outcomes import Outcome
from jobqueue.store.writer import Writer

OWNER = "runner-test-owner"
S = TaskStatus


class Harness:
    """A Runner with recording callbacks, over the real writer and database."""

    def __init__(self, db: Database, writer: Writer, cancel_grace: float) -> None:
        self.db = db
        self.writer = writer
        self.handlers: dict[str, Handler] = {}
        self.hooks = Hooks()
        self.records: list[Lifecycle] = []
        self.hooks.subscribe(self.records.append)
        self.registry = QueueRegistry(queue_size=100, retention=1.0)
        self.released: list[str] = []
        self.finished: dict[str, tuple[Outcome, Any]] = {}
        self.retried: list[tuple[float, str]] = []
        self.paused: list[tuple[str, str]] = []
        self.runner = Runner(
            writer,
            handlers=self.handlers,
            hooks=self.hooks,
            manager_for=lambda job_id: self.registry.ensure(job_id).manager,
            release=self.released.append,
            finished=lambda job_id, out, value, handler: self.finished.__setitem__(
                job_id, (out, value)
            ),
            retried=lambda run_at, handler: self.retried.append((run_at, handler)),
            paused=lambda job_id, handler: self.paused.append((job_id, handler)),
            max_result_bytes=1024,
            backoff=1.0,
            backoff_max=300.0,
            cancel_grace=cancel_grace,
        )

    async def start(self, job_id: str, handler: str = "h", **opts: Any) -> Claimed:
        """Store a job, claim it as this owner, and hand it to the runner."""
        await insert(self.writer, new_job(job_id, handler, **opts))
        (claimed,) = await claim_now(self.writer, OWNER, [handler])
        self.runner.start(claimed)
        return claimed

    async def ended(self, job_id: str) -> Job:
        """Wait until the runner is done with the job (its outcome committed); read it."""
        await eventually(lambda: job_id not in self.runner.active)
        return await fetch(self.db, job_id)


@pytest.fixture
async def h(db: Database, writer: Writer) -> AsyncIterator[Harness]:
    harness = Harness(db, writer, cancel_grace=0.1)
    yield harness
    tasks = [r.task for r in harness.runner.active.values() if r.task is not None]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=WAIT)


async def test_completed_with_result(h: Harness) -> None:
    async def ok(ctx: JobContext, payload: Any) -> Any:
        assert ctx.job_id == "j"
        assert ctx.attempt == 0
        return {"echo": payload}

    h.handlers["h"] = ok
    await h.start("j", payload=[1, 2])
    job = await h.ended("j")
    assert job.status is S.COMPLETED
    assert job.result == {"echo": [1, 2]}
    assert job.owner is None
    assert job.completed_at is not None
    out, value = h.finished["j"]
    assert out.status is S.COMPLETED
    assert value == {"echo": [1, 2]}
    assert h.released == ["h"]
    assert h.runner.drained.is_set()
    kinds = [(r.kind, r.status) for r in h.records]
    assert kinds == [(HookKind.STARTED, None), (HookKind.FINISHED, "completed")]


async def test_raising_handler_fails_with_reason_error(h: Harness) -> None:
    async def broken(ctx: JobContext, payload: Any) -> None:
        raise ValueError("bad input")

    h.handlers["h"] = broken
    await h.start("j")
    job = await h.ended("j")
    assert job.status is S.FAILED
    assert job.reason == "error"
    assert job.error == "ValueError: bad input"
    assert job.error_type == "ValueError"
    assert job.traceback is not None
    assert "bad input" in job.traceback
    assert h.finished["j"][0].status is S.FAILED
    assert h.retried == []


async def test_retry_goes_back_to_pending_later(h: Harness) -> None:
    async def again(ctx: JobContext, payload: Any) -> None:
        raise Retry(delay=30)

    h.handlers["h"] = again
    before = time.time()
    await h.start("j", max_retries=2)
    job = await h.ended("j")
    assert job.status is S.PENDING
    assert job.reason == "retry"
    assert job.attempt == 1
    assert job.run_at >= before + 30
    assert job.owner is None
    ((run_at, handler),) = h.retried
    assert handler == "h"
    assert run_at == pytest.approx(job.run_at)
    assert "j" not in h.finished
    assert [r.kind for r in h.records] == [HookKind.STARTED, HookKind.RETRYING]


async def test_error_with_retries_left_backs_off(h: Harness) -> None:
    async def flaky(ctx: JobContext, payload: Any) -> None:
        raise OSError("try later")

    h.handlers["h"] = flaky
    before = time.time()
    await h.start("j", max_retries=1)
    job = await h.ended("j")
    assert job.status is S.PENDING
    assert job.reason == "error"
    assert before + 0.5 <= job.run_at <= time.time() + 1.5  # backoff 1 s, jitter 0.5..1.5


async def test_retry_with_no_retries_left_fails(h: Harness) -> None:
    async def again(ctx: JobContext, payload: Any) -> None:
        raise Retry(delay=0)

    h.handlers["h"] = again
    await h.start("j", max_retries=0)
    job = await h.ended("j")
    assert (job.status, job.reason) == (S.FAILED, "retries_exhausted")


async def test_cancel_records_cancelled(h: Harness) -> None:
    started = asyncio.Event()

    async def long(ctx: JobContext, payload: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    h.handlers["h"] = long
    await h.start("j")
    async with asyncio.timeout(WAIT):
        await started.wait()
    task = h.runner.cancel("j", "cancel")
    assert task is not None
    job = await h.ended("j")
    assert (job.status, job.reason) == (S.CANCELLED, "cancelled")
    assert h.finished["j"][0].status is S.CANCELLED
    assert h.runner.cancel("j", "cancel") is None  # not running here any more


async def test_handler_raising_cancel(h: Harness) -> None:
    async def gives_up(ctx: JobContext, payload: Any) -> None:
        raise Cancel("no point")

    h.handlers["h"] = gives_up
    await h.start("j")
    job = await h.ended("j")
    assert (job.status, job.reason, job.error) == (S.CANCELLED, "handler", "no point")


async def test_timeout(h: Harness) -> None:
    async def slow(ctx: JobContext, payload: Any) -> None:
        await asyncio.sleep(30)

    h.handlers["h"] = slow
    await h.start("j", timeout=0.05)
    job = await h.ended("j")
    assert (job.status, job.reason, job.error_type) == (S.FAILED, "timeout", "TimeoutError")
    assert "timeout of 0.05s" in (job.error or "")


async def test_pause_request_at_a_checkpoint(h: Harness) -> None:
    looping = asyncio.Event()

    async def cooperative(ctx: JobContext, payload: Any) -> None:
        while True:
            await ctx.checkpoint()
            looping.set()
            await ctx.nap(0.01)

    h.handlers["h"] = cooperative
    await h.start("j")
    async with asyncio.timeout(WAIT):
        await looping.wait()
    assert h.runner.request("j", "pause") is not None
    job = await h.ended("j")
    assert (job.status, job.reason) == (S.PAUSED, "paused")
    assert h.paused == [("j", "h")]
    assert "j" not in h.finished


async def test_result_that_is_not_json_fails(h: Harness) -> None:
    async def odd(ctx: JobContext, payload: Any) -> Any:
        return object()

    h.handlers["h"] = odd
    await h.start("j")
    job = await h.ended("j")
    assert (job.status, job.reason) == (S.FAILED, "invalid_result")


async def test_handler_gone_between_claim_and_start(h: Harness) -> None:
    await h.start("j", handler="vanished")
    job = await h.ended("j")
    assert (job.status, job.reason) == (S.FAILED, "unknown_handler")


async def test_ignoring_cancellation_is_abandoned(h: Harness) -> None:
    started = asyncio.Event()

    async def stubborn(ctx: JobContext, payload: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # past cancel_grace (0.1 s)

    h.handlers["h"] = stubborn
    await h.start("j")
    async with asyncio.timeout(WAIT):
        await started.wait()
    task = h.runner.cancel("j", "cancel")
    assert task is not None
    job = await h.ended("j")
    assert (job.status, job.reason) == (S.FAILED, "unresponsive")
    assert h.runner.unresponsive == 1
    assert h.released == ["h"]  # its slot is free although its task still runs
    async with asyncio.timeout(WAIT):
        await task  # it ends by itself; nothing more is recorded
    assert (await fetch(h.db, "j")).status is S.FAILED


async def test_many_jobs_share_batches(h: Harness) -> None:
    async def ok(ctx: JobContext, payload: Any) -> Any:
        await asyncio.sleep(0)
        return payload

    h.handlers["h"] = ok
    await insert(h.writer, *(new_job(f"j{i}", payload=i) for i in range(20)))
    claimed = await claim_now(h.writer, OWNER, ["h"], limit=20)
    batches = h.writer.batches
    for c in claimed:
        h.runner.start(c)
    await eventually(lambda: len(h.finished) == 20)
    assert h.writer.batches - batches < 20  # outcomes were grouped
    assert len(h.released) == 20
