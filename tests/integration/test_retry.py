"""``service.retry()``, ``retry_where()`` and ``cancel_where()`` on real files.

A retried job runs again under its id as a new attempt: its history (attempts,
the ended run's error, completed workflow steps, persisted events) is kept,
``wait()`` and ``events()`` follow the new run, and the counts stay right.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService, TaskStatus
from jobqueue.errors import (
    InvalidArgumentError,
    InvalidTransition,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    NotRetryableError,
)

S = TaskStatus


async def _status(svc: JobQueueService, job_id: str, status: TaskStatus) -> None:
    for _ in range(1000):
        if (await svc.get(job_id)).status is status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{job_id} is {(await svc.get(job_id)).status}, not {status}")


def _flaky(seen: list[int], fails: int = 1) -> Any:
    """A handler that fails its first ``fails`` runs, then returns its attempt."""

    async def handler(ctx: JobContext, payload: Any) -> dict[str, int]:
        seen.append(ctx.attempt)
        if len(seen) <= fails:
            raise ValueError(f"boom {len(seen)}")
        return {"attempt": ctx.attempt}

    return handler


def _retry_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        n = conn.execute("SELECT count(*) FROM retries").fetchone()[0]
    conn.close()
    return int(n)


# -- one job ---------------------------------------------------------------------------------


async def test_a_failed_job_runs_again_keeping_its_history(make_service) -> None:
    svc = await make_service()
    seen: list[int] = []
    svc.register("flaky", _flaky(seen))
    job = await svc.submit("flaky", {"n": 1})
    with pytest.raises(JobFailedError, match="boom 1"):
        await svc.wait(job.id)
    failed = await svc.get(job.id)
    assert (failed.status, failed.attempt, failed.max_retries) == (S.FAILED, 0, 0)

    again = await svc.retry(job.id)
    assert again.id == job.id
    assert again.status is S.PENDING
    assert (again.attempt, again.max_retries) == (1, 1)  # attempt 2 of 2
    assert again.reason == "retried"
    assert again.error == "ValueError: boom 1"  # readable until the new run ends
    assert again.completed_at is None
    assert again.result is None

    assert await svc.wait(job.id) == {"attempt": 1}
    assert seen == [0, 1]
    done = await svc.get(job.id)
    assert (done.status, done.attempt, done.error) == (S.COMPLETED, 1, None)
    (record,) = await svc.get_retries(job.id)
    assert (record.seq, record.attempt, record.status) == (1, 0, "failed")
    assert (record.error, record.error_type, record.reason) == (
        "ValueError: boom 1",
        "ValueError",
        "error",
    )
    assert "boom 1" in (record.traceback or "")
    assert record.retried_at >= (record.completed_at or 0) > 0
    assert record.started_at == failed.started_at


async def test_cancelled_and_stopped_jobs_run_again(make_service) -> None:
    svc = await make_service(stop_timeout=5.0)
    release = asyncio.Event()
    runs: list[int] = []

    @svc.handler("steps")
    async def steps(ctx: JobContext, payload: Any) -> int:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            while True:  # the first run is stopped at a checkpoint
                await asyncio.sleep(0.01)
                await ctx.checkpoint()
        await release.wait()
        return ctx.attempt

    # Cancelled before it ever ran: it makes its first attempt.
    never = await svc.submit("steps", delay=3600)
    assert (await svc.cancel(never.id)).status is S.CANCELLED
    stopped = await svc.submit("steps")
    await _status(svc, stopped.id, S.RUNNING)
    assert (await svc.stop(stopped.id)).status is S.STOPPED

    again = await svc.retry(never.id)
    assert (again.status, again.attempt, again.max_retries) == (S.PENDING, 0, 0)
    again = await svc.retry(stopped.id)
    assert (again.status, again.attempt, again.max_retries) == (S.PENDING, 1, 1)
    release.set()
    assert await svc.wait(never.id) == 0
    assert await svc.wait(stopped.id) == 1
    statuses = [r.status for r in await svc.get_retries(never.id)]
    assert statuses == ["cancelled"]
    assert [r.status for r in await svc.get_retries(stopped.id)] == ["stopped"]


async def test_jobs_that_have_not_ended_or_completed_are_refused(
    make_service, db_path: Path
) -> None:
    svc = await make_service(stop_timeout=5.0)
    gate = asyncio.Event()

    @svc.handler("slow")
    async def slow(ctx: JobContext, payload: Any) -> str:
        while not gate.is_set():
            await asyncio.sleep(0.01)
            await ctx.checkpoint()
        return "ok"

    pending = await svc.submit("slow", delay=3600)
    running = await svc.submit("slow")
    paused = await svc.submit("slow")
    await _status(svc, running.id, S.RUNNING)
    await _status(svc, paused.id, S.RUNNING)
    assert (await svc.pause(paused.id)).status is S.PAUSED
    expected = {
        pending.id: "cancel it first",
        running.id: "wait for it to finish or cancel it first",
        paused.id: "resume it",
    }
    for job_id, advice in expected.items():
        before = await svc.get(job_id)
        with pytest.raises(NotRetryableError, match=advice) as err:
            await svc.retry(job_id)
        assert isinstance(err.value, InvalidTransition)  # except clauses for controls catch it
        assert (err.value.job_id, err.value.current) == (job_id, before.status.value)
        assert "nothing was changed" in str(err.value)
        after = await svc.get(job_id)
        assert (after.status, after.attempt) == (before.status, before.attempt)
    gate.set()
    await svc.wait(running.id)
    with pytest.raises(NotRetryableError, match=r"completed.*submit a new job"):
        await svc.retry(running.id)
    assert (await svc.get(running.id)).status is S.COMPLETED
    with pytest.raises(JobNotFoundError):
        await svc.retry("no-such-job")
    assert _retry_rows(db_path) == 0


async def test_a_unique_part_of_the_id_names_the_job(make_service) -> None:
    svc = await make_service()
    svc.register("flaky", _flaky([]))
    job = await svc.submit("flaky", job_id="invoice-2024-0042")
    with pytest.raises(JobFailedError):
        await svc.wait(job.id)
    assert (await svc.retry("0042")).id == job.id  # a suffix, as the command line takes
    assert await svc.wait(job.id) == {"attempt": 1}


async def test_attempts_count_on_and_a_used_up_budget_gets_one_more_run(make_service) -> None:
    svc = await make_service(retry_backoff=0.01)
    seen: list[int] = []
    svc.register("always", _flaky(seen, fails=10))
    job = await svc.submit("always", max_retries=1)
    with pytest.raises(JobFailedError, match="boom 2"):
        await svc.wait(job.id)
    assert (await svc.get(job.id)).attempt == 1  # attempt 2 of 2: no retry left
    again = await svc.retry(job.id)
    assert (again.attempt, again.max_retries) == (2, 2)
    with pytest.raises(JobFailedError, match="boom 3"):
        await svc.wait(job.id)  # one more run, no automatic retry after it
    assert seen == [0, 1, 2]
    assert (await svc.get(job.id)).attempt == 2
    again = await svc.retry(job.id)
    assert (again.attempt, again.max_retries) == (3, 3)
    with pytest.raises(JobFailedError, match="boom 4"):
        await svc.wait(job.id)
    records = await svc.get_retries(job.id)
    assert [(r.seq, r.attempt, r.error) for r in records] == [
        (1, 1, "ValueError: boom 2"),
        (2, 2, "ValueError: boom 3"),
    ]


async def test_retries_left_are_kept(make_service) -> None:
    svc = await make_service(retry_backoff=0.01)
    seen: list[int] = []
    block = asyncio.Event()

    @svc.handler("h")
    async def h(ctx: JobContext, payload: Any) -> None:
        seen.append(ctx.attempt)
        if len(seen) == 1:
            await block.wait()  # cancelled here
        raise ValueError("still broken")

    job = await svc.submit("h", max_retries=3)
    await _status(svc, job.id, S.RUNNING)
    await svc.cancel(job.id)
    again = await svc.retry(job.id)
    assert (again.attempt, again.max_retries) == (1, 3)
    with pytest.raises(JobFailedError):
        await svc.wait(job.id)
    assert seen == [0, 1, 2, 3]  # four attempts in all, as submitted


async def test_wait_after_a_retry_waits_for_the_new_run(make_service) -> None:
    svc = await make_service()
    gate = asyncio.Event()
    runs: list[int] = []

    @svc.handler("h")
    async def h(ctx: JobContext, payload: Any) -> str:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            raise ValueError("first")
        await gate.wait()
        return "second"

    job = await svc.submit("h")
    with pytest.raises(JobFailedError):
        await svc.wait(job.id)  # its outcome is kept in memory for late waits
    await svc.retry(job.id)
    waiting = asyncio.ensure_future(svc.wait(job.id))
    await _status(svc, job.id, S.RUNNING)
    await asyncio.sleep(0.05)
    assert not waiting.done()  # not answered by the first run's failure
    gate.set()
    assert await waiting == "second"
    assert await svc.wait(job.id) == "second"


async def test_persisted_events_continue_after_a_retry(make_service) -> None:
    svc = await make_service(persist_events=True)
    runs: list[int] = []

    @svc.handler("talk")
    async def talk(ctx: JobContext, payload: Any) -> str:
        runs.append(ctx.attempt)
        await ctx.emit("token", {"chunk": f"run {len(runs)}"})
        await ctx.emit("token", {"chunk": "more"})
        if len(runs) == 1:
            raise ValueError("first run fails")
        return "fine"

    job = await svc.submit("talk")
    with pytest.raises(JobFailedError):
        await svc.wait(job.id)
    first = [e async for e in svc.events(job.id)]
    assert [e.type for e in first] == ["token", "token", "error"]
    last = first[-1].seq
    await svc.retry(job.id)
    second = [e async for e in svc.events(job.id, after=last)]
    assert [e.type for e in second] == ["token", "token", "end"]
    assert second[0].data == {"chunk": "run 2"}
    seqs = [e.seq for e in first + second]
    assert seqs == sorted(set(seqs))  # in order, no seq reused
    assert second[0].seq == last + 1
    assert await svc.wait(job.id) == "fine"
    # Read from the start: both runs' events, and one end, the last run's.
    whole = [e async for e in svc.events(job.id)]
    assert [e.type for e in whole] == ["token", "token", "token", "token", "end"]
    assert [e.seq for e in whole] == [e.seq for e in first[:2] + second]


async def test_a_reader_from_the_start_follows_a_retried_job_to_its_last_end(
    make_service,
) -> None:
    svc = await make_service(persist_events=True)
    gate = asyncio.Event()

    @svc.handler("talk")
    async def talk(ctx: JobContext, payload: Any) -> str:
        await ctx.emit("token", {"chunk": f"attempt {ctx.attempt}"})
        if ctx.attempt == 0:
            raise ValueError("first run fails")
        await gate.wait()
        return "fine"

    job = await svc.submit("talk")
    with pytest.raises(JobFailedError):
        await svc.wait(job.id)
    await svc.retry(job.id)
    reader = asyncio.ensure_future(_collect(svc, job.id))
    await asyncio.sleep(0.3)
    assert not reader.done()  # the first run's error is not the end: the job runs again
    gate.set()
    events = await asyncio.wait_for(reader, 10)
    assert [e.type for e in events] == ["token", "token", "end"]
    assert [e.data for e in events[:2]] == [{"chunk": "attempt 0"}, {"chunk": "attempt 1"}]


async def test_in_memory_events_follow_the_new_run(make_service) -> None:
    svc = await make_service()
    gate = asyncio.Event()
    runs: list[int] = []

    @svc.handler("talk")
    async def talk(ctx: JobContext, payload: Any) -> str:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            raise ValueError("first run fails")
        await gate.wait()
        await ctx.emit("token", {"chunk": "second run"})
        return "fine"

    job = await svc.submit("talk")
    with pytest.raises(JobFailedError):
        await svc.wait(job.id)
    assert [e.type async for e in svc.events(job.id)] == ["error"]
    await svc.retry(job.id)

    async def collect() -> list[Any]:
        return [e async for e in svc.events(job.id)]

    reader = asyncio.ensure_future(collect())
    await asyncio.sleep(0.05)
    gate.set()
    events = await asyncio.wait_for(reader, 10)
    assert [e.type for e in events] == ["token", "end"]
    assert events[0].data == {"chunk": "second run"}


async def test_workflow_steps_completed_before_are_not_run_again(make_service) -> None:
    svc = await make_service()
    calls: list[str] = []

    @svc.handler("order")
    async def order(ctx: JobContext, payload: Any) -> dict[str, Any]:
        async def charge() -> str:
            calls.append("charge")
            return "ch_1"

        async def ship() -> str:
            calls.append("ship")
            if calls.count("ship") == 1:
                raise ConnectionError("carrier down")
            return "parcel_1"

        charged = await ctx.step("charge", charge)
        shipped = await ctx.step("ship", ship)
        return {"charge": charged, "ship": shipped}

    job = await svc.submit("order")
    with pytest.raises(JobFailedError, match="carrier down"):
        await svc.wait(job.id)
    await svc.retry(job.id)
    assert await svc.wait(job.id) == {"charge": "ch_1", "ship": "parcel_1"}
    assert calls == ["charge", "ship", "ship"]  # the charge was not made twice
    steps = {s.name: s for s in await svc.get_steps(job.id)}
    assert (steps["charge"].attempts, steps["ship"].status) == (1, "completed")


async def test_counts_and_hooks_follow_a_retry(make_service) -> None:
    svc = await make_service()
    svc.register("flaky", _flaky([]))
    seen: list[tuple[str, str | None, str | None]] = []
    svc.hooks.subscribe(lambda rec: seen.append((rec.kind.value, rec.status, rec.reason)))
    job = await svc.submit("flaky")
    with pytest.raises(JobFailedError):
        await svc.wait(job.id)
    assert (svc.stats()["failed"], svc.stats()["pending"]) == (1, 0)
    seen.clear()
    await svc.retry(job.id)
    assert svc.stats()["failed"] == 0
    await svc.wait(job.id)
    stats = svc.stats()
    assert (stats["failed"], stats["completed"], stats["pending"]) == (0, 1, 0)
    await svc.refresh_stats()
    assert (svc.stats()["failed"], svc.stats()["completed"]) == (0, 1)
    assert ("submitted", "pending", "retried") in seen
    assert seen[-1][:2] == ("finished", "completed")


async def test_a_retry_made_by_another_service_on_the_file(make_service, db_path: Path) -> None:
    worker = await make_service(poll_interval=0.05)
    seen: list[int] = []
    worker.register("flaky", _flaky(seen))
    job = await worker.submit("flaky")
    with pytest.raises(JobFailedError):
        await worker.wait(job.id)  # kept in the worker's memory
    other = await make_service(path=db_path)
    assert (await other.retry(job.id)).status is S.PENDING
    assert await other.wait(job.id) == {"attempt": 1}  # the worker claimed and ran it
    # The worker saw the retry when it claimed the job: its late wait() gets the new
    # outcome, not the failure it kept in memory.
    assert await worker.wait(job.id) == {"attempt": 1}
    assert seen == [0, 1]


# -- bulk ------------------------------------------------------------------------------------


async def _ended_jobs(svc: JobQueueService) -> dict[str, str]:
    """Jobs of two handlers and two sessions in each ended status: ``{id: label}``."""
    gate = asyncio.Event()

    async def fail(ctx: JobContext, payload: Any) -> None:
        if payload.get("block"):
            await gate.wait()
        if payload.get("ok"):
            return
        raise ValueError("nope")

    svc.register("a", fail)
    svc.register("b", fail)
    made: dict[str, str] = {}
    for handler in ("a", "b"):
        for session in ("s1", "s2"):
            failed = await svc.submit(handler, {}, session_id=session)
            ok = await svc.submit(handler, {"ok": True}, session_id=session)
            cancelled = await svc.submit(handler, {}, session_id=session, delay=3600)
            await svc.cancel(cancelled.id)
            made[failed.id] = f"{handler}/{session}/failed"
            made[ok.id] = f"{handler}/{session}/completed"
            made[cancelled.id] = f"{handler}/{session}/cancelled"
    await svc.run_until_idle()
    return made


async def test_retry_where_retries_the_matching_jobs_in_one_go(make_service) -> None:
    svc = await make_service()
    made = await _ended_jobs(svc)
    ids = await svc.retry_where(status="failed", handler="a")
    assert sorted(made[i] for i in ids) == ["a/s1/failed", "a/s2/failed"]
    assert list(ids) == [i for i in made if i in ids]  # oldest first
    ids = await svc.retry_where(status=["failed", "cancelled"], session_id="s2")
    assert sorted(made[i] for i in ids) == ["a/s2/cancelled", "b/s2/cancelled", "b/s2/failed"]
    ids = await svc.retry_where(handler="b")  # every status that can be retried
    assert sorted(made[i] for i in ids) == ["b/s1/cancelled", "b/s1/failed"]
    assert await svc.retry_where(handler="nobody") == []
    await svc.run_until_idle()
    for job_id, label in made.items():
        job = await svc.get(job_id)
        expect = S.COMPLETED if label.endswith("completed") else S.FAILED
        if label.endswith("cancelled"):  # retried ones ran and failed; a/s1's stayed
            expect = S.CANCELLED if label == "a/s1/cancelled" else S.FAILED
        assert job.status is expect, label


async def test_bulk_calls_refuse_bad_filters(make_service) -> None:
    svc = await make_service()
    with pytest.raises(InvalidArgumentError, match="at least one of status=, handler="):
        await svc.retry_where()
    with pytest.raises(InvalidArgumentError, match="at least one of status=, handler="):
        await svc.cancel_where()
    with pytest.raises(InvalidArgumentError, match="failed, cancelled, stopped"):
        await svc.retry_where(status="running")
    with pytest.raises(InvalidArgumentError, match="failed, cancelled, stopped"):
        await svc.retry_where(status=["failed", "completed"])
    with pytest.raises(InvalidArgumentError, match="pending, running, paused"):
        await svc.cancel_where(status="failed")
    with pytest.raises(InvalidArgumentError, match="unknown status"):
        await svc.cancel_where(status="waiting")
    with pytest.raises(InvalidArgumentError, match="empty"):
        await svc.retry_where(status=[])


async def test_cancel_where_cancels_waiting_and_running_jobs(make_service) -> None:
    svc = await make_service(stop_timeout=5.0)
    gate = asyncio.Event()

    @svc.handler("work")
    async def work(ctx: JobContext, payload: Any) -> str:
        while not gate.is_set():
            await asyncio.sleep(0.01)
            await ctx.checkpoint()
        return "done"

    svc.register("other", work)

    @svc.handler("quick")
    async def quick(ctx: JobContext, payload: Any) -> str:
        return "done"

    running = await svc.submit("work")
    paused = await svc.submit("work")
    pending = await svc.submit("work", delay=3600)
    other = await svc.submit("other", delay=3600)
    completed = await svc.submit("quick")
    await svc.wait(completed.id)
    await _status(svc, running.id, S.RUNNING)
    await _status(svc, paused.id, S.RUNNING)
    await svc.pause(paused.id)

    assert await svc.cancel_where(status="pending", handler="work") == [pending.id]
    ids = await svc.cancel_where(handler="work")
    assert ids == [running.id, paused.id]
    for job_id in (running.id, paused.id, pending.id):
        assert (await svc.get(job_id)).status is S.CANCELLED
        with pytest.raises(JobCancelledError):
            await svc.wait(job_id)
    assert (await svc.get(other.id)).status is S.PENDING
    assert (await svc.get(completed.id)).status is S.COMPLETED
    assert await svc.cancel_where(handler="quick") == []
    assert svc.stats()["cancelled"] == 3
    await svc.refresh_stats()
    assert svc.stats()["cancelled"] == 3
    # ... and they can be retried in one go
    gate.set()
    assert sorted(await svc.retry_where(status="cancelled")) == sorted(
        [running.id, paused.id, pending.id]
    )
    for job_id in (running.id, paused.id, pending.id):
        assert await svc.wait(job_id) == "done"


# -- races -----------------------------------------------------------------------------------


async def test_a_retry_racing_a_finishing_job(make_service) -> None:
    svc = await make_service()
    runs: dict[str, int] = {}

    @svc.handler("quick")
    async def quick(ctx: JobContext, payload: Any) -> int:
        runs[ctx.job_id] = runs.get(ctx.job_id, 0) + 1
        await asyncio.sleep(0.001 * payload)
        if runs[ctx.job_id] == 1:
            raise ValueError("first run")
        return ctx.attempt

    refused: set[str] = set()
    for n in range(20):
        job = await svc.submit("quick", n % 5)
        while True:  # retry it the moment it has ended, however soon that is
            try:
                again = await svc.retry(job.id)
                break
            except NotRetryableError as exc:
                refused.add(exc.current)
                await asyncio.sleep(0)
        assert (again.status, again.attempt) == (S.PENDING, 1)
        assert await svc.wait(job.id) == 1
        assert runs[job.id] == 2
        assert [r.status for r in await svc.get_retries(job.id)] == ["failed"]
    assert "running" in refused
    assert refused <= {"pending", "running"}
    live = svc.stats()
    await svc.refresh_stats()
    assert (live["completed"], live["failed"]) == (svc.stats()["completed"], 0) == (20, 0)


async def test_retry_where_while_jobs_finish_leaves_every_job_whole(
    make_service, db_path: Path
) -> None:
    svc = await make_service(concurrency=16)
    runs: dict[str, int] = {}

    @svc.handler("shaky")
    async def shaky(ctx: JobContext, payload: Any) -> int:
        runs[ctx.job_id] = runs.get(ctx.job_id, 0) + 1
        await asyncio.sleep(0.002 * (payload % 7))
        if runs[ctx.job_id] == 1:
            raise ValueError("first run")
        return runs[ctx.job_id]

    jobs = await svc.submit_many("shaky", list(range(60)))
    retried: list[str] = []
    for _ in range(40):  # while they run and fail
        retried += await svc.retry_where(status="failed", handler="shaky")
        await asyncio.sleep(0.005)
    await svc.run_until_idle()
    retried += await svc.retry_where(status="failed", handler="shaky")
    await svc.run_until_idle()
    assert sorted(retried) == sorted(j.id for j in jobs)  # each one retried exactly once
    for job in jobs:
        got = await svc.get(job.id)
        assert got.status is S.COMPLETED, got
        assert got.attempt == 1
        assert runs[job.id] == 2
        assert len(await svc.get_retries(job.id)) == 1
    assert _retry_rows(db_path) == len(jobs)
    live = svc.stats()
    await svc.refresh_stats()
    stored = svc.stats()
    for key in ("pending", "failed", "completed", "cancelled"):
        assert live[key] == stored[key], key


def _family(registry: Any, name: str) -> dict[str, float]:
    """``{handler/status: value}`` of one metric family, scraped as Prometheus does."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(registry).decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for s in family.samples:
                if not s.name.endswith("_created"):
                    out["/".join(s.labels[k] for k in sorted(s.labels))] = s.value
    return out


async def test_metrics_count_each_run_and_the_queue_comes_back_to_zero(make_service) -> None:
    from prometheus_client import CollectorRegistry

    from jobqueue.telemetry import JobMetrics

    live_registry, records_registry = CollectorRegistry(), CollectorRegistry()
    live = JobMetrics(prometheus_registry=live_registry)  # pending read from the counts
    records = JobMetrics(prometheus_registry=records_registry)  # pending tallied from hooks
    try:
        svc = await make_service(metrics=live)
        records.attach(svc.hooks)
        gate = asyncio.Event()
        failures: list[str] = []

        @svc.handler("h", concurrency=1)  # one slot: a blocker holds it while we look
        async def h(ctx: JobContext, payload: Any) -> str:
            if payload == "block":
                await gate.wait()
            elif not failures:
                failures.append(ctx.job_id)
                raise ValueError("first")
            return "ok"

        job = await svc.submit("h", "flaky")
        with pytest.raises(JobFailedError):
            await svc.wait(job.id)
        blocker = await svc.submit("h", "block")
        await _status(svc, blocker.id, S.RUNNING)
        await svc.retry(job.id)
        for registry in (live_registry, records_registry):
            assert _family(registry, "jobqueue_queue_length") == {"h": 1}  # the retried job
            assert _family(registry, "jobqueue_jobs_active") == {"h": 1}  # the blocker
        gate.set()
        assert await svc.wait(job.id) == "ok"
        await svc.wait(blocker.id)
        for registry in (live_registry, records_registry):
            assert _family(registry, "jobqueue_jobs_finished") == {
                "h/failed": 1,
                "h/completed": 2,
            }
            assert _family(registry, "jobqueue_queue_length") == {"h": 0}
            assert _family(registry, "jobqueue_jobs_active") == {"h": 0}
    finally:
        records.shutdown()
        live.shutdown()


async def test_retry_and_resume_are_due_on_the_services_clock(make_service) -> None:
    from jobqueue.testing import TestClock

    clock = TestClock(start=1_000_000.0)  # long before the machine's time
    svc = await make_service(clock=clock, stop_timeout=5.0)
    runs: list[int] = []
    gate = asyncio.Event()

    @svc.handler("h")
    async def h(ctx: JobContext, payload: Any) -> str:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            raise ValueError("first")
        while not gate.is_set():
            await asyncio.sleep(0.01)
            await ctx.checkpoint()
        return "ok"

    job = await svc.submit("h")
    with pytest.raises(JobFailedError):
        await svc.wait(job.id)
    again = await svc.retry(job.id)
    assert again.run_at == pytest.approx(clock.time())  # due now on the service's clock
    await _status(svc, job.id, S.RUNNING)
    await svc.pause(job.id)
    resumed = await svc.resume(job.id)
    assert resumed.run_at == pytest.approx(clock.time())
    gate.set()
    await svc.run_until_idle(timeout=10)
    assert await svc.wait(job.id) == "ok"
    assert clock.time() < 1_000_001.0  # nothing had to wait for the machine's time


async def _collect(svc: JobQueueService, job_id: str) -> list[Any]:
    return [e async for e in svc.events(job_id)]
