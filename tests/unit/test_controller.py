"""Controller over a real Runtime: cancel/stop/pause/resume here, not running, and elsewhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from _parts import WAIT, eventually

from jobqueue.controls import Controller
from jobqueue.errors import InvalidTransition, JobNotFoundError
from jobqueue.events.registry import QueueRegistry
from jobqueue.handlers import HandlerTable
from jobqueue.hooks import Hooks
from jobqueue.runtime.engine import Runtime
from jobqueue.settings import Settings
from jobqueue.status import TaskStatus
from jobqueue.store.jobs import Job
from jobqueue.submission import Submitter

S = TaskStatus


class Parts:
    def __init__(self, path: Path, **opts: Any) -> None:
        settings = Settings.make(
            path, **{"poll_interval": 0.02, "cancel_grace": 1.0, "stop_timeout": 2.0, **opts}
        )
        self.handlers = HandlerTable(settings.path)
        self.registry = QueueRegistry(queue_size=100, retention=10.0)
        self.runtime = Runtime(
            settings, handlers=self.handlers, registry=self.registry, hooks=Hooks()
        )
        self.controller = Controller(self.runtime, self.registry)
        self.submitter = Submitter(self.runtime, self.handlers)

    async def submit(self, handler: str, payload: Any = None, **opts: Any) -> Job:
        row = self.submitter.row(handler, payload, now=time.time(), **opts)
        (job,) = await self.submitter.insert([row], [payload])
        return job

    async def status_becomes(self, job_id: str, status: TaskStatus) -> Job:
        async def check() -> bool:
            return (await self.controller.get(job_id)).status is status

        await eventually(check)
        return await self.controller.get(job_id)


MakeParts = Callable[..., Parts]


@pytest.fixture
async def make(db_path: Path) -> AsyncIterator[MakeParts]:
    made: list[Parts] = []

    def build(**opts: Any) -> Parts:
        parts = Parts(db_path, **opts)
        made.append(parts)
        return parts

    yield build
    for parts in made:
        async with asyncio.timeout(WAIT):
            await parts.runtime.close(drain_timeout=0)


class Cooperative:
    """A handler that loops over checkpoints on its first run and returns on later runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.looping = asyncio.Event()

    async def run(self, ctx: Any, payload: Any) -> str:
        self.runs += 1
        if self.runs > 1:
            return f"run {self.runs}"
        while True:
            await ctx.checkpoint()
            self.looping.set()
            await ctx.nap(0.01)


def _register_cooperative(p: Parts) -> Cooperative:
    coop = Cooperative()
    p.handlers.register("coop", coop.run)
    return coop


async def test_cancel_a_pending_job(make: MakeParts) -> None:
    p = make()
    p.handlers.declare("elsewhere")  # never claimed here: it stays pending
    job = await p.submit("elsewhere")
    woken = p.runtime.waiters.add(job.id)
    done = await p.controller.cancel(job.id)
    assert (done.status, done.reason) == (S.CANCELLED, "cancelled")
    assert woken.done()
    assert p.runtime.counts["cancelled"] == 1
    assert p.runtime.counts["pending"] == 0
    entry = p.registry.get(job.id)
    assert entry is None or entry.queue.ended


async def test_stop_a_pending_job(make: MakeParts) -> None:
    p = make()
    p.handlers.declare("elsewhere")
    job = await p.submit("elsewhere")
    done = await p.controller.stop(job.id)
    assert (done.status, done.reason) == (S.STOPPED, "stopped")


async def test_pause_a_running_cooperative_job_then_resume(make: MakeParts) -> None:
    p = make()
    coop = _register_cooperative(p)
    job = await p.submit("coop")
    async with asyncio.timeout(WAIT):
        await coop.looping.wait()
    assert (await p.controller.get(job.id)).status is S.RUNNING
    paused = await p.controller.pause(job.id)
    assert (paused.status, paused.reason) == (S.PAUSED, "paused")
    assert p.runtime.running == 0
    again = await p.controller.pause(job.id)  # already paused: unchanged
    assert again.status is S.PAUSED
    resumed = await p.controller.resume(job.id)
    assert resumed.status in (S.PAUSED, S.RUNNING, S.COMPLETED)  # due now; claimed soon
    async with asyncio.timeout(WAIT):
        await p.runtime.until_idle()
    done = await p.controller.get(job.id)
    assert (done.status, done.result) == (S.COMPLETED, "run 2")
    assert done.attempt == 0  # a pause is not a failed attempt


async def test_stop_a_running_cooperative_job(make: MakeParts) -> None:
    p = make()
    coop = _register_cooperative(p)
    job = await p.submit("coop")
    async with asyncio.timeout(WAIT):
        await coop.looping.wait()
    done = await p.controller.stop(job.id)
    assert (done.status, done.reason) == (S.STOPPED, "stopped")


async def test_cancel_a_running_job(make: MakeParts) -> None:
    p = make()
    started = asyncio.Event()

    async def long(ctx: Any, payload: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    p.handlers.register("long", long)
    job = await p.submit("long")
    async with asyncio.timeout(WAIT):
        await started.wait()
    done = await p.controller.cancel(job.id)
    assert (done.status, done.reason) == (S.CANCELLED, "cancelled")
    assert p.runtime.counts["running"] == 0


async def test_cancel_a_finished_job_raises(make: MakeParts) -> None:
    p = make()

    async def quick(ctx: Any, payload: Any) -> int:
        return 1

    p.handlers.register("quick", quick)
    job = await p.submit("quick")
    async with asyncio.timeout(WAIT):
        await p.runtime.until_idle()
    for control in (p.controller.cancel, p.controller.stop, p.controller.pause):
        with pytest.raises(InvalidTransition, match="completed"):
            await control(job.id)
    with pytest.raises(InvalidTransition):
        await p.controller.resume(job.id)
    assert (await p.controller.get(job.id)).status is S.COMPLETED


async def test_resume_of_a_pending_job_changes_nothing(make: MakeParts) -> None:
    p = make()
    p.handlers.declare("elsewhere")
    job = await p.submit("elsewhere")
    assert (await p.controller.resume(job.id)).status is S.PENDING


async def test_unknown_job(make: MakeParts) -> None:
    p = make()
    with pytest.raises(JobNotFoundError):
        await p.controller.cancel("no-such-job")


async def test_cancel_a_job_running_in_another_runtime(make: MakeParts) -> None:
    owner = make()  # runs the job; its supervisor applies requests from others
    caller = make()  # same file, another service: it only writes the request
    started = asyncio.Event()

    async def long(ctx: Any, payload: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    owner.handlers.register("long", long)
    job = await owner.submit("long")
    async with asyncio.timeout(WAIT):
        await started.wait()
    await caller.runtime.ready()
    assert caller.runtime.owner != owner.runtime.owner
    done = await caller.controller.cancel(job.id)
    assert (done.status, done.reason) == (S.CANCELLED, "cancelled")
    assert owner.runtime.running == 0


async def test_pause_a_job_running_in_another_runtime(make: MakeParts) -> None:
    owner = make()
    caller = make()
    coop = _register_cooperative(owner)
    job = await owner.submit("coop")
    async with asyncio.timeout(WAIT):
        await coop.looping.wait()
    await caller.runtime.ready()
    done = await caller.controller.pause(job.id)
    assert done.status is S.PAUSED
    await caller.controller.resume(job.id)  # the owner's runtime runs it again
    done = await owner.status_becomes(job.id, S.COMPLETED)
    assert done.result == "run 2"
