"""Each control (cancel, stop, pause, resume) in each state; timeouts; the unresponsive window."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobqueue import JobQueueService, Retry, TaskStatus
from jobqueue.errors import InvalidTransition

S = TaskStatus


def _steps(started: list[str], steps: int = 1000, pause: float = 0.01) -> Any:
    """A cooperative handler: many short steps with a checkpoint between them."""

    async def handler(ctx: Any, payload: Any) -> int:
        started.append(ctx.job_id)
        done = 0
        for _ in range(steps):
            await asyncio.sleep(pause)
            done += 1
            await ctx.checkpoint()
        return done

    return handler


async def _running(svc: JobQueueService, job_id: str) -> None:
    for _ in range(500):
        if (await svc.get(job_id)).status is S.RUNNING:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{job_id} never started")


async def _status(svc: JobQueueService, job_id: str, status: TaskStatus) -> None:
    for _ in range(500):
        if (await svc.get(job_id)).status is status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{job_id} is {(await svc.get(job_id)).status}, not {status}")


# -- stop ------------------------------------------------------------------------------


async def test_stop_running_cooperative_ends_stopped(make_service) -> None:
    svc = await make_service()
    started: list[str] = []
    svc.register("steps", _steps(started))
    job = await svc.submit("steps")
    await _running(svc, job.id)
    stopped = await svc.stop(job.id)
    assert stopped.status is S.STOPPED
    assert stopped.reason == "stopped"
    assert svc.stats()["running"] == 0


async def test_stop_lets_the_current_step_finish(make_service) -> None:
    svc = await make_service(stop_timeout=5.0)
    finished: list[str] = []

    @svc.handler("one_step")
    async def one_step(ctx: Any, payload: Any) -> str:
        await asyncio.sleep(0.2)  # the current step: not interrupted by stop()
        finished.append("step")
        await ctx.checkpoint()
        finished.append("next step")  # never reached
        return "done"

    job = await svc.submit("one_step")
    await _running(svc, job.id)
    stopped = await svc.stop(job.id)
    assert stopped.status is S.STOPPED
    assert finished == ["step"]


async def test_stop_past_stop_timeout_cancels(make_service) -> None:
    svc = await make_service(stop_timeout=0.1)

    @svc.handler("sleepy")
    async def sleepy(ctx: Any, payload: Any) -> None:
        await asyncio.sleep(30)

    job = await svc.submit("sleepy")
    await _running(svc, job.id)
    out = await svc.stop(job.id)
    assert out.status is S.CANCELLED
    assert out.reason == "stop_timeout"


async def test_stop_pending_and_during_retry_backoff(make_service) -> None:
    svc = await make_service()
    runs: list[int] = []

    @svc.handler("flaky")
    async def flaky(ctx: Any, payload: Any) -> None:
        runs.append(ctx.attempt)
        raise Retry(delay=60)  # long backoff: the job waits as pending

    job = await svc.submit("flaky", max_retries=5)
    for _ in range(500):
        j = await svc.get(job.id)
        if j.status is S.PENDING and j.attempt == 1:
            break
        await asyncio.sleep(0.01)
    out = await svc.stop(job.id)
    assert out.status is S.STOPPED
    assert runs == [0]

    later = await svc.submit("flaky", delay=60)
    assert (await svc.stop(later.id)).status is S.STOPPED
    await svc.run_until_idle(timeout=5)
    assert runs == [0]


async def test_stop_paused_and_finished(make_service) -> None:
    svc = await make_service()
    svc.register("steps", _steps([]))
    job = await svc.submit("steps")
    await _running(svc, job.id)
    assert (await svc.pause(job.id)).status is S.PAUSED
    assert (await svc.stop(job.id)).status is S.STOPPED
    with pytest.raises(InvalidTransition):
        await svc.stop(job.id)


# -- pause / resume --------------------------------------------------------------------


async def test_pause_cooperative_holds_no_task_and_resume_runs_again(make_service) -> None:
    svc = await make_service()
    started: list[str] = []
    svc.register("steps", _steps(started, steps=20))
    job = await svc.submit("steps")
    await _running(svc, job.id)
    paused = await svc.pause(job.id)
    assert paused.status is S.PAUSED
    assert paused.owner is None
    assert svc.stats()["running"] == 0
    assert not [t for t in asyncio.all_tasks() if t.get_name() == f"jobqueue-job-{job.id}"]
    assert (await svc.pause(job.id)).status is S.PAUSED  # idempotent

    resumed = await svc.resume(job.id)
    assert resumed.status in (S.PAUSED, S.RUNNING)  # claimed moments later
    assert await svc.wait(job.id, timeout=10) == 20
    assert started == [job.id, job.id]  # plain handlers start again from the beginning


async def test_pause_non_cooperative_cancels_at_once(make_service) -> None:
    svc = await make_service(stop_timeout=30)

    @svc.handler("sleepy")
    async def sleepy(ctx: Any, payload: Any) -> str:
        await asyncio.sleep(30 if ctx.attempt == 0 and payload == "first" else 0)
        return "ok"

    job = await svc.submit("sleepy", "first")
    await _running(svc, job.id)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert (await svc.pause(job.id)).status is S.PAUSED
    assert loop.time() - t0 < 5  # did not wait stop_timeout: it never checkpoints


async def test_pause_pending_is_refused(make_service) -> None:
    svc = await make_service()

    @svc.handler("noop")
    async def noop(ctx: Any, payload: Any) -> None:
        return None

    job = await svc.submit("noop", delay=60)
    with pytest.raises(InvalidTransition) as ei:
        await svc.pause(job.id)
    assert "pending" in str(ei.value)
    assert (await svc.get(job.id)).status is S.PENDING


async def test_cancel_during_pause(make_service) -> None:
    svc = await make_service()
    svc.register("steps", _steps([]))
    job = await svc.submit("steps")
    await _running(svc, job.id)
    await svc.pause(job.id)
    out = await svc.cancel(job.id)
    assert out.status is S.CANCELLED
    with pytest.raises(InvalidTransition):
        await svc.resume(job.id)


async def test_pause_survives_restart(db_path) -> None:
    started: list[str] = []
    async with JobQueueService(db_path) as svc:
        svc.register("steps", _steps(started, steps=10))
        job = await svc.submit("steps")
        await _running(svc, job.id)
        await svc.pause(job.id)
    async with JobQueueService(db_path, poll_interval=0.05) as svc:
        svc.register("steps", _steps(started, steps=10))
        await asyncio.sleep(0.3)  # a restart must not run it
        assert (await svc.get(job.id)).status is S.PAUSED
        await svc.resume(job.id)
        assert await svc.wait(job.id, timeout=10) == 10
    assert started == [job.id, job.id]


# -- cancel, timeout, unresponsive --------------------------------------------------------


async def test_cancel_pending_running_and_finished(make_service) -> None:
    svc = await make_service()
    svc.register("steps", _steps([]))
    pending = await svc.submit("steps", delay=60)
    assert (await svc.cancel(pending.id)).status is S.CANCELLED
    running = await svc.submit("steps")
    await _running(svc, running.id)
    out = await svc.cancel(running.id)
    assert (out.status, out.reason) == (S.CANCELLED, "cancelled")
    with pytest.raises(InvalidTransition):
        await svc.cancel(running.id)


async def test_timeout_fails_with_reason(make_service) -> None:
    svc = await make_service()

    @svc.handler("slow")
    async def slow(ctx: Any, payload: Any) -> None:
        await asyncio.sleep(30)

    job = await svc.submit("slow", timeout=0.1)
    await _status(svc, job.id, S.FAILED)
    done = await svc.get(job.id)
    assert done.reason == "timeout"
    assert done.error_type == "TimeoutError"


async def _stubborn_service(make_service: Any) -> tuple[Any, asyncio.Event]:
    """A service (``cancel_grace=0.2``) whose ``stubborn`` handler runs until the returned
    event is set, ignoring cancellation: the bug cancel_grace guards against."""
    svc = await make_service(cancel_grace=0.2)
    release = asyncio.Event()

    @svc.handler("stubborn")
    async def stubborn(ctx: Any, payload: Any) -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    return svc, release


async def test_unresponsive_job_is_abandoned(make_service) -> None:
    svc, release = await _stubborn_service(make_service)
    job = await svc.submit("stubborn")
    await _running(svc, job.id)
    out = await svc.cancel(job.id)
    assert (out.status, out.reason) == (S.FAILED, "unresponsive")
    assert svc.stats()["unresponsive"] == 1
    assert svc.stats()["running"] == 0
    # The slot is free again: another job runs while the stubborn task lingers.
    other = await svc.submit("stubborn")
    await _running(svc, other.id)
    release.set()
    assert (await svc.get(job.id)).status is S.FAILED  # its late end changes nothing
    await svc.wait(other.id, timeout=5)


async def test_timeout_of_unresponsive_job(make_service) -> None:
    svc, release = await _stubborn_service(make_service)
    job = await svc.submit("stubborn", timeout=0.1)
    await _status(svc, job.id, S.FAILED)
    assert (await svc.get(job.id)).reason == "unresponsive"
    release.set()


# -- close -----------------------------------------------------------------------------


async def test_second_close_with_zero_drain_cuts_the_first_short(make_service) -> None:
    svc = await make_service(drain_timeout=30.0)
    started: list[str] = []
    svc.register("steps", _steps(started, steps=100_000))
    job = await svc.submit("steps")
    await _running(svc, job.id)
    first = asyncio.ensure_future(svc.close())  # would wait up to 30 s
    await asyncio.sleep(0.1)
    assert not first.done()
    await asyncio.wait_for(svc.close(drain_timeout=0), 5.0)
    assert first.done()
    assert first.exception() is None
    assert svc.state == "closed"
    again = await make_service()
    stored = await again.get(job.id)
    assert stored.status is S.PENDING  # cancelled by shutdown: runs again, attempt not counted
    assert stored.attempt == 0


async def test_second_close_waits_for_the_first(make_service) -> None:
    svc = await make_service()
    release = asyncio.Event()

    async def slow(ctx: Any, payload: Any) -> str:
        await release.wait()
        return "done"

    svc.register("slow", slow)
    job = await svc.submit("slow")
    await _running(svc, job.id)
    first = asyncio.ensure_future(svc.close())
    second = asyncio.ensure_future(svc.close())
    await asyncio.sleep(0.05)
    assert not second.done()  # it does not return while the first still drains
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5.0)
    again = await make_service()
    assert (await again.get(job.id)).status is S.COMPLETED


async def test_stats_never_negative_when_another_process_submits(make_service) -> None:
    worker = await make_service()
    done: list[str] = []

    async def quick(ctx: Any, payload: Any) -> None:
        done.append(ctx.job_id)

    worker.register("quick", quick)
    producer = await make_service()  # a second service on the file, as another process
    producer.declare("quick")
    jobs = await producer.submit_many("quick", [{}] * 20)
    # Wait for the committed outcomes, not just for the handlers to have run: a handler
    # returns before the writer commits its job's result.
    async with asyncio.timeout(10):
        for job in jobs:
            await worker.wait(job.id)
    assert sorted(done) == sorted(job.id for job in jobs)
    stats = worker.stats()
    assert stats["pending"] == 0
    assert worker.queue_lengths().get("quick", 0) == 0
    await worker.refresh_stats()
    assert worker.stats()["done"] == 20


async def test_undeclared_handler_still_refused(make_service) -> None:
    from jobqueue.errors import UnknownHandlerError

    producer = await make_service()
    producer.declare("resize")
    job = await producer.submit("resize", {"w": 1})
    assert (await producer.get(job.id)).status is S.PENDING  # never claimed here
    with pytest.raises(UnknownHandlerError, match="declare"):
        await producer.submit("resise", {})


async def test_public_accessors(make_service) -> None:
    svc = await make_service(concurrency=3, cancel_grace=2.0, drain_timeout=4.0)

    async def quick(ctx: Any, payload: Any) -> None:
        return None

    svc.register("quick", quick)
    assert svc.handlers["quick"] is quick
    with pytest.raises(TypeError):
        svc.handlers["other"] = quick  # type: ignore[index]
    assert svc.handler_names == ("quick",)
    assert (svc.concurrency, svc.cancel_grace, svc.drain_timeout) == (3, 2.0, 4.0)
    assert svc.state == "open"
