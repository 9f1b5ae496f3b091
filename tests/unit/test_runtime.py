"""Runtime alone (Settings, HandlerTable, QueueRegistry, Hooks; jobs through a Submitter)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _parts import WAIT, fetch, insert, new_job

from jobqueue.errors import Retry, ServiceClosedError, StoreError
from jobqueue.events.registry import QueueRegistry
from jobqueue.handlers import HandlerTable
from jobqueue.hooks import HookKind, Hooks, Lifecycle
from jobqueue.runtime.engine import Runtime
from jobqueue.runtime.owner import here
from jobqueue.settings import Settings
from jobqueue.status import TaskStatus
from jobqueue.store import jobs, overview
from jobqueue.store.connection import Database
from jobqueue.store.jobs import Job
from jobqueue.store.schema import apply_migrations
from jobqueue.store.writer import Writer
from jobqueue.submission import Submitter

S = TaskStatus


@dataclass
class Parts:
    runtime: Runtime
    handlers: HandlerTable
    registry: QueueRegistry
    hooks: Hooks
    submitter: Submitter
    records: list[Lifecycle] = field(default_factory=list)

    async def submit(self, handler: str, payload: Any = None, **opts: Any) -> Job:
        row = self.submitter.row(handler, payload, now=time.time(), **opts)
        (job,) = await self.submitter.insert([row], [payload])
        return job

    async def get(self, job_id: str) -> Job:
        return await self.runtime.read(jobs.fetch, job_id)

    async def idle(self) -> None:
        async with asyncio.timeout(WAIT):
            await self.runtime.until_idle()


MakeRuntime = Callable[..., Parts]


@pytest.fixture
async def make(db_path: Path) -> AsyncIterator[MakeRuntime]:
    made: list[Runtime] = []

    def build(path: Any = db_path, **opts: Any) -> Parts:
        settings = Settings.make(path, **{"poll_interval": 0.05, **opts})
        handlers = HandlerTable(settings.path)
        registry = QueueRegistry(
            queue_size=settings.queue_size,
            retention=settings.retention,
            strict_events=settings.strict_events,
        )
        hooks = Hooks()
        runtime = Runtime(settings, handlers=handlers, registry=registry, hooks=hooks)
        parts = Parts(runtime, handlers, registry, hooks, Submitter(runtime, handlers))
        hooks.subscribe(parts.records.append)
        made.append(runtime)
        return parts

    yield build
    for runtime in made:
        async with asyncio.timeout(WAIT):
            await runtime.close(drain_timeout=0)


async def echo(ctx: Any, payload: Any) -> Any:
    return {"echo": payload}


async def test_state_transitions(make: MakeRuntime) -> None:
    p = make()
    rt = p.runtime
    assert rt.state == "new"
    assert rt.db is None
    assert rt.writer is None
    rt.start()
    assert rt.state == "starting"
    rt.start()  # idempotent
    async with asyncio.timeout(WAIT):
        writer = await rt.ready()
    assert rt.state == "open"
    assert rt.writer is writer
    assert rt.db is not None
    assert rt.owner.split(":")[0] == str(here().pid)
    assert rt.boot_at is not None
    closing = asyncio.ensure_future(rt.close())
    await asyncio.sleep(0)
    assert rt.state == "closing"
    with pytest.raises(ServiceClosedError):
        rt.start()
    async with asyncio.timeout(WAIT):
        await closing
    assert rt.state == "closed"
    assert rt.closed.is_set()
    assert rt.db is None
    assert rt.writer is None
    assert rt.runner is None


async def test_runs_a_submitted_job(make: MakeRuntime) -> None:
    p = make()
    p.handlers.register("echo", echo)
    job = await p.submit("echo", [1, 2])  # opens the store on first use
    assert job.status is S.PENDING
    woken = p.runtime.waiters.add(job.id)
    await p.idle()
    async with asyncio.timeout(WAIT):
        await woken  # callers waiting on the job were told
    done = await p.get(job.id)
    assert (done.status, done.result) == (S.COMPLETED, {"echo": [1, 2]})
    assert done.owner is None
    assert p.runtime.counts["completed"] == 1
    assert p.runtime.counts["pending"] == 0
    assert p.runtime.counts["running"] == 0
    assert [r.kind for r in p.records] == [
        HookKind.SUBMITTED,
        HookKind.STARTED,
        HookKind.FINISHED,
    ]
    assert p.runtime.running == 0


async def test_until_idle_waits_for_retries(make: MakeRuntime) -> None:
    p = make()
    runs: list[int] = []

    async def flaky(ctx: Any, payload: Any) -> str:
        runs.append(ctx.attempt)
        if ctx.attempt == 0:
            raise Retry(delay=0.05)
        return "second time"

    p.handlers.register("flaky", flaky)
    job = await p.submit("flaky", max_retries=1)
    await p.idle()
    assert runs == [0, 1]
    done = await p.get(job.id)
    assert (done.status, done.result, done.attempt) == (S.COMPLETED, "second time", 1)


async def test_until_idle_with_nothing_to_do(make: MakeRuntime) -> None:
    p = make()
    p.handlers.register("echo", echo)
    await p.idle()
    p.handlers.declare("elsewhere")
    await p.submit("elsewhere")  # another process runs it: not this runtime's work
    await p.idle()


async def test_handler_registered_after_open_claims_stored_jobs(make: MakeRuntime) -> None:
    p = make(poll_interval=30.0)  # no poll would find it in time
    p.handlers.declare("late")
    job = await p.submit("late", "x")
    await asyncio.sleep(0.05)
    assert (await p.get(job.id)).status is S.PENDING
    p.handlers.register("late", echo)
    await p.idle()
    assert (await p.get(job.id)).status is S.COMPLETED


async def test_close_is_idempotent(make: MakeRuntime) -> None:
    p = make()
    await p.runtime.ready()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(p.runtime.close(), p.runtime.close(), p.runtime.close(0))
        await p.runtime.close()
    assert p.runtime.state == "closed"


async def test_ready_after_close_raises(make: MakeRuntime) -> None:
    p = make()
    p.handlers.register("echo", echo)
    await p.runtime.ready()
    await p.runtime.close()
    with pytest.raises(ServiceClosedError):
        await p.runtime.ready()
    with pytest.raises(ServiceClosedError):
        p.runtime.check_usable()
    with pytest.raises(ServiceClosedError):
        await p.runtime.read(overview.count_by_status)
    with pytest.raises(ServiceClosedError):
        await p.submit("echo")
    with pytest.raises(ServiceClosedError):
        await p.runtime.until_idle()


async def test_close_before_start(make: MakeRuntime, db_path: Path) -> None:
    p = make()
    await p.runtime.close()
    assert p.runtime.state == "closed"
    with pytest.raises(ServiceClosedError):
        await p.runtime.ready()
    assert not db_path.exists()  # noqa: ASYNC240 - nothing was opened


async def test_start_again_after_close(make: MakeRuntime) -> None:
    p = make()
    p.handlers.register("echo", echo)
    first = await p.submit("echo", 1)
    await p.idle()
    await p.runtime.close()
    p.runtime.start()
    async with asyncio.timeout(WAIT):
        await p.runtime.ready()
    assert p.runtime.state == "open"
    assert (await p.get(first.id)).status is S.COMPLETED
    second = await p.submit("echo", 2)
    await p.idle()
    assert (await p.get(second.id)).result == {"echo": 2}


async def test_close_past_drain_timeout_puts_jobs_back(make: MakeRuntime, db_path: Path) -> None:
    p = make()
    started = asyncio.Event()

    async def long(ctx: Any, payload: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    p.handlers.register("long", long)
    job = await p.submit("long")
    async with asyncio.timeout(WAIT):
        await started.wait()
        await p.runtime.close(drain_timeout=0.05)
    db = await Database.open(db_path)
    try:
        stored = await fetch(db, job.id)
    finally:
        await db.close()
    assert (stored.status, stored.reason, stored.attempt) == (S.PENDING, "shutdown", 0)
    assert stored.owner is None


async def test_close_lets_running_jobs_finish(make: MakeRuntime) -> None:
    p = make()
    started = asyncio.Event()

    async def short(ctx: Any, payload: Any) -> str:
        started.set()
        await asyncio.sleep(0.05)
        return "finished"

    p.handlers.register("short", short)
    job = await p.submit("short")
    async with asyncio.timeout(WAIT):
        await started.wait()
        await p.runtime.close(drain_timeout=5)
    p.runtime.start()
    assert (await p.get(job.id)).result == "finished"


async def test_recovers_a_dead_owners_job_at_open(make: MakeRuntime, db_path: Path) -> None:
    me = here()
    dead = f"{2**22 + 1}:{me.start}:{me.pidns}:{me.boot}:1"  # above any pid_max
    db = await Database.open(db_path)
    writer = Writer(db)
    writer.start()
    try:
        await db.run(apply_migrations, str(db_path))
        await insert(
            writer, new_job("orphan", "echo", 7, status=S.RUNNING, owner=dead, max_retries=1)
        )
    finally:
        await writer.close()
        await db.close()
    p = make()
    p.handlers.register("echo", echo)
    await p.runtime.ready()
    assert p.runtime.recovered.requeued == 1
    await p.idle()
    done = await p.get("orphan")
    assert (done.status, done.result, done.attempt) == (S.COMPLETED, {"echo": 7}, 1)


async def test_open_failure_is_raised_by_ready(make: MakeRuntime, tmp_path: Path) -> None:
    p = make(path=tmp_path)  # a directory
    with pytest.raises(StoreError, match="directory"):
        await p.runtime.ready()
    assert p.runtime.state == "closed"
    with pytest.raises(StoreError):
        await p.runtime.ready()  # the reason, again
    await p.runtime.close()


async def test_event_queue_ends_with_the_job(make: MakeRuntime) -> None:
    p = make()

    async def talks(ctx: Any, payload: Any) -> str:
        ctx.events.on_token(data="hi")
        return "bye"

    p.handlers.register("talks", talks)
    job = await p.submit("talks")
    await p.idle()
    entry = p.registry.get(job.id)
    assert entry is not None
    assert entry.finished
    items = []
    while not entry.queue.empty():
        items.append(entry.queue.get_nowait()[0])
    assert items[0].startswith("token-")
    assert items[1].startswith("end-")
    assert items[2] is None
