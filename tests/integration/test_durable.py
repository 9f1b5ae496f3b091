"""The durable layer end to end: handlers, submit/wait/get/list, failures, retries,
cancellation, timeouts, priority, delay, idempotency, concurrency and events."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from jobqueue import (
    Cancel,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobQueueService,
    Retry,
    TaskStatus,
)
from jobqueue.errors import (
    DuplicateJobError,
    InvalidHandlerError,
    JobQueueError,
    ServiceClosedError,
    UnknownHandlerError,
)
from jobqueue.testing import TestClock

S = TaskStatus


async def test_submit_wait_get_list(make_service, db_path) -> None:
    svc = await make_service()

    @svc.handler("double")
    async def double(ctx, payload):
        assert ctx.job_id
        assert ctx.attempt == 0
        return {"out": payload["x"] * 2}

    job = await svc.submit("double", {"x": 21}, session_id="s1")
    assert job.status is S.PENDING
    assert job.payload == {"x": 21}
    assert await svc.wait(job.id, timeout=10) == {"out": 42}
    rec = await svc.get(job.id)
    assert rec.status is S.COMPLETED
    assert rec.result == {"out": 42}
    assert rec.handler == "double"
    assert rec.session_id == "s1"
    assert rec.created_at <= rec.started_at <= rec.completed_at
    listed = await svc.list(status="completed")
    assert [j.id for j in listed] == [job.id]
    assert await svc.list(status=[S.FAILED, S.PENDING]) == []
    assert [j.id for j in await svc.list(session_id="s1")] == [job.id]
    conn = sqlite3.connect(str(db_path))
    try:
        row = conn.execute("SELECT status, result FROM jobs WHERE id = ?", (job.id,)).fetchone()
    finally:
        conn.close()
    assert row == ("completed", '{"out":42}')
    with pytest.raises(JobNotFoundError):
        await svc.get("missing")


async def test_failure_is_recorded(make_service) -> None:
    svc = await make_service()

    @svc.handler("bad")
    async def bad(ctx, payload):
        raise ValueError("no good: " + payload)

    job = await svc.submit("bad", "x")
    with pytest.raises(JobFailedError) as ei:
        await svc.wait(job.id, timeout=10)
    assert "no good: x" in str(ei.value)
    assert "no good: x" in ei.value.error
    rec = await svc.get(job.id)
    assert rec.status is S.FAILED
    assert "no good: x" in rec.error
    assert rec.error_type == "ValueError"
    assert "Traceback" in rec.traceback
    assert "raise ValueError" in rec.traceback
    assert rec.completed_at is not None


async def test_retries_then_success(make_service) -> None:
    svc = await make_service(retry_backoff=0.01, retry_backoff_max=0.02)
    attempts = []

    @svc.handler("flaky")
    async def flaky(ctx, payload):
        attempts.append(ctx.attempt)
        if len(attempts) < 3:
            raise OSError("transient")
        return "ok"

    job = await svc.submit("flaky", None, max_retries=2)
    assert await svc.wait(job.id, timeout=10) == "ok"
    assert attempts == [0, 1, 2]
    assert (await svc.get(job.id)).attempt == 2


async def test_retries_exhausted(make_service) -> None:
    svc = await make_service(retry_backoff=0.01, retry_backoff_max=0.02)
    calls = []

    @svc.handler("never")
    async def never(ctx, payload):
        calls.append(ctx.attempt)
        raise OSError("still down")

    job = await svc.submit("never", None, max_retries=2)
    with pytest.raises(JobFailedError, match="still down"):
        await svc.wait(job.id, timeout=10)
    assert calls == [0, 1, 2]
    rec = await svc.get(job.id)
    assert rec.status is S.FAILED
    assert rec.attempt == 2


async def test_retry_exception(make_service) -> None:
    svc = await make_service()
    calls = []

    @svc.handler("again")
    async def again(ctx, payload):
        calls.append(ctx.attempt)
        if ctx.attempt == 0:
            raise Retry(delay=0)
        return ctx.attempt

    job = await svc.submit("again", None, max_retries=1)
    assert await svc.wait(job.id, timeout=10) == 1
    assert calls == [0, 1]


async def test_cancel_raised_by_handler(make_service) -> None:
    svc = await make_service()

    @svc.handler("quit")
    async def quit_(ctx, payload):
        raise Cancel("changed my mind")

    job = await svc.submit("quit", None, max_retries=3)
    with pytest.raises(JobCancelledError):
        await svc.wait(job.id, timeout=10)
    rec = await svc.get(job.id)
    assert rec.status is S.CANCELLED
    assert rec.attempt == 0  # not retried


async def test_timeout(make_service) -> None:
    svc = await make_service()

    @svc.handler("slow")
    async def slow(ctx, payload):
        await asyncio.sleep(3600)

    job = await svc.submit("slow", None, timeout=0.1)
    t0 = time.monotonic()
    with pytest.raises(JobFailedError) as ei:
        await svc.wait(job.id, timeout=10)
    assert time.monotonic() - t0 < 5
    assert ei.value.reason == "timeout"
    rec = await svc.get(job.id)
    assert rec.status is S.FAILED
    assert rec.reason == "timeout"


async def test_cancel_running(make_service) -> None:
    svc = await make_service()
    started = asyncio.Event()
    cleaned = []

    @svc.handler("wait")
    async def wait_(ctx, payload):
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(True)

    job = await svc.submit("wait", None)
    await asyncio.wait_for(started.wait(), 5)
    assert (await svc.get(job.id)).status is S.RUNNING
    rec = await svc.cancel(job.id)
    assert rec.status is S.CANCELLED
    assert cleaned == [True]
    with pytest.raises(JobCancelledError):
        await svc.wait(job.id, timeout=5)
    assert (await svc.get(job.id)).completed_at is not None


async def test_cancel_pending(make_service) -> None:
    svc = await make_service(concurrency=1)
    gate = asyncio.Event()
    ran = []

    @svc.handler("h")
    async def h(ctx, payload):
        ran.append(payload)
        if payload == "blocker":
            await gate.wait()

    await svc.submit("h", "blocker")
    queued = await svc.submit("h", "queued")
    await asyncio.sleep(0.05)
    assert (await svc.get(queued.id)).status is S.PENDING
    rec = await svc.cancel(queued.id)
    assert rec.status is S.CANCELLED
    gate.set()
    await svc.run_until_idle(timeout=10)
    assert ran == ["blocker"]
    with pytest.raises(JobCancelledError):
        await svc.wait(queued.id, timeout=5)


async def test_priority_order(make_service) -> None:
    svc = await make_service(concurrency=1)
    gate = asyncio.Event()
    order = []

    @svc.handler("h")
    async def h(ctx, payload):
        if payload == "blocker":
            await gate.wait()
        order.append(payload)

    await svc.submit("h", "blocker")
    await asyncio.sleep(0.05)
    for name, prio in [("low", -5), ("mid1", 0), ("high", 10), ("mid2", 0)]:
        await svc.submit("h", name, priority=prio)
    gate.set()
    await svc.run_until_idle(timeout=10)
    assert order == ["blocker", "high", "mid1", "mid2", "low"]


async def test_delay(make_service) -> None:
    clock = TestClock()
    svc = await make_service(clock=clock)
    started = []

    @svc.handler("later")
    async def later(ctx, payload):
        started.append(clock.time())

    t0 = clock.time()
    job = await svc.submit("later", None, delay=3600)
    assert job.run_at == t0 + 3600
    await clock.advance(3599.9)
    assert started == []
    assert (await svc.get(job.id)).status is S.PENDING
    await clock.advance(0.1)
    await svc.wait(job.id, timeout=10)
    assert started == [t0 + 3600]


async def test_idempotency_key(make_service) -> None:
    svc = await make_service(poll_interval=60)

    @svc.handler("h")
    async def h(ctx, payload):
        return payload

    a = await svc.submit("h", 1, idempotency_key="k", delay=3600)
    b = await svc.submit("h", 2, idempotency_key="k", delay=3600)
    assert b.id == a.id
    assert b.payload == 1
    assert len(await svc.list()) == 1


async def test_duplicate_job_id(make_service) -> None:
    svc = await make_service(poll_interval=60)

    @svc.handler("h")
    async def h(ctx, payload):
        return payload

    await svc.submit("h", 1, job_id="same", delay=3600)
    with pytest.raises(DuplicateJobError) as ei:
        await svc.submit("h", 2, job_id="same")
    assert "same" in str(ei.value)
    rec = await svc.get("same")
    assert rec.payload == 1
    assert len(await svc.list()) == 1


async def test_unknown_handler(make_service) -> None:
    svc = await make_service()

    @svc.handler("alpha")
    async def alpha(ctx, payload):
        return None

    @svc.handler("beta")
    async def beta(ctx, payload):
        return None

    with pytest.raises(UnknownHandlerError) as ei:
        await svc.submit("gamma", None)
    assert "gamma" in str(ei.value)
    assert "alpha" in str(ei.value)
    assert "beta" in str(ei.value)
    assert await svc.list() == []


async def test_non_async_handler(make_service) -> None:
    svc = await make_service()

    def sync(ctx, payload):
        return None

    with pytest.raises(InvalidHandlerError):
        svc.handler("sync")(sync)
    with pytest.raises(TypeError):
        svc.register("sync2", lambda ctx, p: None)
    with pytest.raises(UnknownHandlerError):
        await svc.submit("sync", None)


async def test_concurrency_limit(make_service) -> None:
    svc = await make_service(concurrency=3)
    running = 0
    peak = 0

    @svc.handler("h")
    async def h(ctx, payload):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    await svc.submit_many("h", list(range(20)))
    await svc.run_until_idle(timeout=20)
    assert peak == 3
    assert len(await svc.list(status="completed", limit=100)) == 20


async def test_submit_many_gives_every_job_the_same_options(make_service, db_path) -> None:
    svc = await make_service()

    @svc.handler("h")
    async def h(ctx, payload):
        return payload

    jobs = await svc.submit_many(
        "h", [{"i": i} for i in range(50)], priority=3, max_retries=2, delay=3600,
        session_id="s1", description="batch", concurrency_key="k", timeout=9.5,
    )  # fmt: skip
    assert len({j.id for j in jobs}) == 50
    assert [j.payload for j in jobs] == [{"i": i} for i in range(50)]
    for job in jobs:
        stored = await svc.get(job.id)
        assert stored == job  # what submit_many returned is what was stored
        assert (stored.priority, stored.max_retries, stored.session_id) == (3, 2, "s1")
        assert (stored.description, stored.concurrency_key, stored.timeout) == ("batch", "k", 9.5)
        assert stored.concurrency_limit == 1
        assert stored.status is TaskStatus.PENDING
    assert svc.stats()["pending"] == 50
    assert svc.queue_lengths() == {"h": 50}
    assert await svc.submit_many("h", []) == []


@pytest.mark.parametrize(
    ("payloads", "options", "match"),
    [
        ("abc", {}, "list"),
        ({"a": 1}, {}, "list"),
        (iter([1, 2]), {}, "list"),
        ([1], {"priority": "high"}, "priority"),
        ([1, 2], {"max_retries": -1}, "max_retries"),
        ([1, 2], {"concurrency_limit": 2}, "concurrency_key"),
        ([1, 2], {"colour": "red"}, "unknown option"),
        ([1, float("nan")], {}, "NaN"),
    ],
    ids=str,
)
async def test_submit_many_refuses_bad_input_and_keeps_nothing(
    make_service, payloads, options, match
) -> None:
    svc = await make_service()

    @svc.handler("h")
    async def h(ctx, payload):
        return payload

    with pytest.raises(JobQueueError, match=match):
        await svc.submit_many("h", payloads, **options)
    assert await svc.list(limit=10) == []


async def test_events_stream(make_service) -> None:
    svc = await make_service()
    go = asyncio.Event()

    @svc.handler("talk")
    async def talk(ctx, payload):
        await go.wait()
        for c in "abc":
            ctx.events.on_token(data={"chunk": c})
        await ctx.emit("custom", {"n": 1})
        ctx.progress(1, 1)
        return "said"

    job = await svc.submit("talk", None)
    events = []

    async def consume():
        async for ev in svc.events(job.id):
            events.append(ev)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    go.set()
    await asyncio.wait_for(consumer, 10)
    types = [e.type for e in events]
    assert types == ["token", "token", "token", "custom", "progress", "end"]
    assert events[-1].data == {"status": "completed", "result": "said"}
    assert all(e.time_in_queue >= 0 for e in events)
    assert len({e.id for e in events}) == len(events)


async def test_events_of_finished_job(make_service) -> None:
    svc = await make_service()

    @svc.handler("h")
    async def h(ctx, payload):
        if payload == "fail":
            raise RuntimeError("nope")
        return 7

    ok = await svc.submit("h", "ok")
    bad = await svc.submit("h", "fail")
    await svc.run_until_idle(timeout=10)
    got = [e async for e in svc.events(ok.id)]
    assert [(e.type, e.data) for e in got] == [("end", {"status": "completed", "result": 7})]
    got = [e async for e in svc.events(bad.id)]
    assert len(got) == 1
    assert got[0].type == "error"
    assert "nope" in got[0].data["error"]
    with pytest.raises(JobNotFoundError):
        async for _ in svc.events("missing"):
            pass


async def test_stats(make_service) -> None:
    svc = await make_service()

    @svc.handler("h")
    async def h(ctx, payload):
        if payload < 0:
            raise ValueError("neg")
        return payload

    await svc.submit_many("h", [1, 2, 3, -1])
    await svc.run_until_idle(timeout=10)
    await svc.submit("h", 5, delay=3600)
    st = svc.stats()
    assert st["done"] == 3
    assert st["failed"] == 1
    assert st["pending"] == 1
    assert st["running"] == 0
    assert st["boot_at"] is not None


async def test_in_memory_service(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with JobQueueService(concurrency=2) as svc:

        @svc.handler("h")
        async def h(ctx, payload):
            return payload + 1

        job = await svc.submit("h", 1)
        assert await svc.wait(job.id, timeout=10) == 2
        assert (await svc.get(job.id)).status is S.COMPLETED
    assert list(tmp_path.iterdir()) == []
    async with JobQueueService() as svc2:
        assert await svc2.list() == []  # nothing survived


async def test_submit_after_close(make_service) -> None:
    svc = await make_service()

    @svc.handler("h")
    async def h(ctx, payload):
        return None

    await svc.close()
    with pytest.raises(ServiceClosedError):
        await svc.submit("h", None)
    with pytest.raises(RuntimeError):
        await svc.get("x")


async def test_jobs_survive_reopen(db_path) -> None:
    async with JobQueueService(str(db_path), poll_interval=60) as svc:

        @svc.handler("h")
        async def h(ctx, payload):
            return payload

        done = await svc.submit("h", "now")
        await svc.wait(done.id, timeout=10)
        later = await svc.submit("h", "later", delay=0.2)
    async with JobQueueService(str(db_path)) as svc:

        @svc.handler("h")
        async def h2(ctx, payload):
            return payload.upper()

        assert (await svc.get(done.id)).result == "now"
        assert await svc.wait(later.id, timeout=10) == "LATER"
