"""Durable workflows (SPEC §10, issue 7): memoised steps, durable sleep, parallel steps.

Every test uses a real database file. Side effects are counted in lists (or,
for the worker-process test, in a file written with one ``write(2)`` per
execution), so "not run again" is measured, not assumed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jobqueue import (
    DuplicateStepError,
    Failure,
    JobContext,
    JobNotFoundError,
    JobQueueService,
    Retry,
    StepError,
    StepResultError,
    StepTimeoutError,
    TaskStatus,
)
from jobqueue.errors import InvalidArgumentError, InvalidTransition
from jobqueue.store.claim import ClaimRequest, claim
from jobqueue.store.recovery import sweep
from jobqueue.store.schema import apply_migrations
from jobqueue.testing import TestClock

S = TaskStatus
FAST = {"poll_interval": 0.05, "retry_backoff": 0.01}


async def _until(svc: JobQueueService, job_id: str, *statuses: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = await svc.get(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"{job_id} is {job.status}, expected {statuses}"
        await asyncio.sleep(0.01)


async def _step_status(svc: JobQueueService, job_id: str, name: str, status: str) -> None:
    for _ in range(1000):
        got = {s.name: s.status for s in await svc.get_steps(job_id)}
        if got.get(name) == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"step {name!r} never {status}: {got}")


# -- ctx.step: memoised ------------------------------------------------------------------


async def test_finished_steps_are_not_run_again_on_a_retry(make_service) -> None:
    svc = await make_service(**FAST)
    calls: Counter[str] = Counter()

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> Any:
        a = await ctx.step("a", lambda: calls.update(["a"]) or {"n": 1})
        b = await ctx.step("b", lambda: calls.update(["b"]) or (1, 2))  # a tuple comes back a list
        if ctx.attempt == 0:
            raise Retry(delay=0)
        c = await ctx.step("c", lambda: calls.update(["c"]) or "c")
        return [a, b, c]

    job = await svc.submit("wf", max_retries=1)
    assert await svc.wait(job.id, timeout=10) == [{"n": 1}, [1, 2], "c"]
    assert calls == {"a": 1, "b": 1, "c": 1}
    steps = await svc.get_steps(job.id)
    assert [(s.name, s.seq, s.status, s.attempts) for s in steps] == [
        ("a", 0, "completed", 1),
        ("b", 1, "completed", 1),
        ("c", 2, "completed", 1),
    ]
    assert steps[1].result == [1, 2]
    assert all(s.duration is not None and s.duration >= 0 for s in steps)


async def test_first_run_returns_the_stored_json_not_the_object(make_service) -> None:
    svc = await make_service(**FAST)
    seen: list[Any] = []

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> None:
        seen.append(await ctx.step("t", lambda: {"k": (1, 2)}))

        async def coro() -> int:
            await asyncio.sleep(0)
            return 7

        seen.append(await ctx.step("async", coro))  # an async fn works the same

    job = await svc.submit("wf")
    await svc.wait(job.id, timeout=10)
    assert seen == [{"k": [1, 2]}, 7]


async def test_a_duplicate_step_name_is_a_typed_error(make_service) -> None:
    svc = await make_service(**FAST)
    ran: list[str] = []
    caught: list[BaseException] = []

    @svc.handler("dup")
    async def dup(ctx: JobContext, payload: Any) -> None:
        await ctx.step("x", lambda: ran.append("first"))
        try:
            await ctx.step("x", lambda: ran.append("second"))
        except DuplicateStepError as exc:
            caught.append(exc)
            raise

    job = await svc.submit("dup", max_retries=3)
    done = await _until(svc, job.id, "failed")
    assert (done.reason, done.error_type, done.attempt) == (
        "duplicate_step",
        "DuplicateStepError",
        0,
    )
    assert ran == ["first"]
    (exc,) = caught
    assert isinstance(exc, StepError)
    assert isinstance(exc, ValueError)
    assert exc.step == "x"
    assert exc.job_id == job.id
    assert "already used in this run" in str(exc)
    assert "f'fetch[{i}]'" in str(exc)


async def test_map_names_collide_like_any_other_step(make_service) -> None:
    svc = await make_service(**FAST)

    @svc.handler("dup_map")
    async def dup_map(ctx: JobContext, payload: Any) -> None:
        await ctx.step("m[1]", lambda: 0)
        await ctx.map("m", [1, 2, 3], lambda i: i)

    job = await svc.submit("dup_map")
    done = await _until(svc, job.id, "failed")
    assert done.reason == "duplicate_step"
    assert "'m[1]'" in (done.error or "")


@pytest.mark.parametrize(
    ("value", "cause"), [(object(), "must be JSON"), (float("nan"), "NaN"), ("x" * 2000, "cap")]
)
async def test_a_non_json_step_result_is_a_typed_error(make_service, value, cause) -> None:
    svc = await make_service(max_payload_bytes=1000, **FAST)
    calls: list[int] = []
    caught: list[BaseException] = []

    @svc.handler("bad")
    async def bad(ctx: JobContext, payload: Any) -> None:
        try:
            await ctx.step("bad", lambda: calls.append(1) or value, retries=3)
        except StepResultError as exc:
            caught.append(exc)
            raise

    job = await svc.submit("bad", max_retries=2)
    done = await _until(svc, job.id, "failed")
    assert (done.reason, done.error_type, done.attempt) == ("invalid_result", "StepResultError", 0)
    assert calls == [1]  # not retried: the same code returns the same kind of value
    assert cause in str(caught[0])
    assert "Return plain JSON" in str(caught[0])
    (step,) = await svc.get_steps(job.id)
    assert step.status == "failed"
    assert step.result is None
    assert step.error is not None
    assert step.error.startswith("StepResultError")


async def test_bad_step_arguments(make_service) -> None:
    svc = await make_service(**FAST)
    errors: list[str] = []

    @svc.handler("args")
    async def args(ctx: JobContext, payload: Any) -> None:
        for call in (
            lambda: ctx.step("", lambda: 1),
            lambda: ctx.step("a", "not callable"),  # type: ignore[arg-type]
            lambda: ctx.step("b", lambda: 1, retries=-1),
            lambda: ctx.step("c", lambda: 1, timeout=0),
            lambda: ctx.sleep("d", -1),
            lambda: ctx.sleep("e", float("inf")),
            lambda: ctx.gather(ctx.step("f", lambda: 1), limit=0),
            lambda: ctx.gather(ctx.step("g", lambda: 1), 42),  # type: ignore[arg-type]
        ):
            try:
                await call()
            except InvalidArgumentError as exc:
                errors.append(str(exc).split(",")[0])

    job = await svc.submit("args")
    await svc.wait(job.id, timeout=10)  # no "coroutine was never awaited" warning either
    assert len(errors) == 8, errors


# -- retries and timeouts per step --------------------------------------------------------


async def test_step_retries_in_place_then_succeeds(make_service) -> None:
    svc = await make_service(**FAST)
    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return "ok"

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> Any:
        return await ctx.step("flaky", flaky, retries=2, backoff=0.05)

    job = await svc.submit("wf")
    assert await svc.wait(job.id, timeout=10) == "ok"
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.045
    assert calls[2] - calls[1] >= 0.095
    (step,) = await svc.get_steps(job.id)
    assert (step.status, step.attempts, step.error) == ("completed", 3, None)
    assert (await svc.get(job.id)).attempt == 0  # retried in place, not as a job retry


async def test_step_retries_exhausted_raise_the_last_error(make_service) -> None:
    svc = await make_service(**FAST)
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise KeyError(f"missing {len(calls)}")

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> None:
        await ctx.step("broken", broken, retries=1, backoff=0)

    job = await svc.submit("wf")
    done = await _until(svc, job.id, "failed")
    assert (done.reason, done.error_type) == ("error", "KeyError")
    assert "missing 2" in (done.error or "")
    assert len(calls) == 2
    (step,) = await svc.get_steps(job.id)
    assert (step.status, step.attempts, step.error) == ("failed", 2, "KeyError: 'missing 2'")
    assert step.completed_at is not None


async def test_step_timeout_per_attempt(make_service) -> None:
    svc = await make_service(**FAST)
    starts: list[float] = []
    caught: list[BaseException] = []

    async def slow() -> None:
        starts.append(time.monotonic())
        await asyncio.sleep(5)

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> None:
        try:
            await ctx.step("slow", slow, timeout=0.1, retries=1, backoff=0)
        except TimeoutError as exc:  # StepTimeoutError is a TimeoutError
            caught.append(exc)
            raise

    t0 = time.monotonic()
    job = await svc.submit("wf")
    done = await _until(svc, job.id, "failed")
    assert time.monotonic() - t0 < 2
    assert (done.reason, done.error_type) == ("step_timeout", "StepTimeoutError")
    assert len(starts) == 2
    (exc,) = caught
    assert isinstance(exc, StepTimeoutError)
    assert exc.timeout == 0.1
    assert exc.attempts == 2
    assert "raise timeout= or retries=" in str(exc)
    (step,) = await svc.get_steps(job.id)
    assert (step.status, step.attempts) == ("failed", 2)
    assert step.error is not None
    assert step.error.startswith("StepTimeoutError")


async def test_a_step_timeout_leaves_the_job_retry_to_max_retries(make_service) -> None:
    svc = await make_service(**FAST)
    calls: Counter[str] = Counter()

    async def slow_first_time() -> str:
        calls["slow"] += 1
        if calls["slow"] == 1:
            await asyncio.sleep(5)
        return "fast now"

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> Any:
        await ctx.step("before", lambda: calls.update(["before"]))
        return await ctx.step("slow", slow_first_time, timeout=0.1)

    job = await svc.submit("wf", max_retries=1)
    assert await svc.wait(job.id, timeout=10) == "fast now"
    assert calls == {"before": 1, "slow": 2}
    assert (await svc.get(job.id)).attempt == 1


# -- durable sleep -----------------------------------------------------------------------


async def test_a_long_sleep_gives_the_slot_back_and_wakes_at_its_deadline(make_service) -> None:
    clock = TestClock()
    svc = await make_service(concurrency=1, clock=clock, **FAST)
    calls: Counter[str] = Counter()
    woke: list[float] = []
    other_ran: list[float] = []

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> str:
        await ctx.step("before", lambda: calls.update(["before"]))
        await ctx.sleep("nap", 3600)
        woke.append(clock.time())
        return await ctx.step("after", lambda: calls.update(["after"]) or "done")

    @svc.handler("other")
    async def other(ctx: JobContext, payload: Any) -> None:
        other_ran.append(clock.time())

    job = await svc.submit("wf")
    sleeping = await _until(svc, job.id, "pending")
    assert (sleeping.reason, sleeping.attempt) == ("sleeping", 0)
    nap = {s.name: s for s in await svc.get_steps(job.id)}["nap"]
    assert nap.kind == "sleep"
    assert nap.status == "sleeping"
    assert nap.wake_at is not None
    assert sleeping.run_at == pytest.approx(nap.wake_at)
    o = await svc.submit("other")  # the only slot is free while the workflow sleeps
    await svc.wait(o.id, timeout=5)
    assert other_ran[0] < nap.wake_at
    await clock.advance(3599)
    assert (await svc.get(job.id)).status == "pending"  # not a second early
    await svc.run_until_idle(timeout=5)  # moves the clock to the deadline
    assert await svc.wait(job.id, timeout=5) == "done"
    assert calls == {"before": 1, "after": 1}
    assert woke == [nap.wake_at]
    done = await svc.get(job.id)
    assert (done.attempt, done.reason) == (0, None)
    nap = {s.name: s for s in await svc.get_steps(job.id)}["nap"]
    assert nap.status == "completed"


async def test_a_short_sleep_waits_in_place(make_service) -> None:
    svc = await make_service(**FAST)
    runs: list[int] = []

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> float:
        runs.append(1)
        t0 = time.monotonic()
        await ctx.sleep("short", 0.3)
        await ctx.sleep("zero", 0)
        return time.monotonic() - t0

    job = await svc.submit("wf")
    assert 0.29 <= await svc.wait(job.id, timeout=10) < 1.0
    assert runs == [1]  # one run: it never went back to pending
    assert [s.status for s in await svc.get_steps(job.id)] == ["completed", "completed"]


async def test_a_sleep_survives_a_restart_and_ends_at_the_original_deadline(db_path) -> None:
    calls: Counter[str] = Counter()
    woke: list[float] = []
    clock = TestClock()

    def make() -> JobQueueService:
        svc = JobQueueService(db_path, clock=clock, **FAST)

        @svc.handler("wf")
        async def wf(ctx: JobContext, payload: Any) -> str:
            await ctx.step("before", lambda: calls.update(["before"]))
            await ctx.sleep("nap", 7200)
            woke.append(clock.time())
            return "done"

        return svc

    async with make() as svc:
        job = await svc.submit("wf")
        await _until(svc, job.id, "pending")
        wake_at = (await svc.get_steps(job.id))[1].wake_at
    await clock.advance(1800)  # down for half an hour: the deadline does not move
    async with make() as svc:
        await clock.advance(5399)
        assert (await svc.get(job.id)).status == "pending"
        await svc.run_until_idle(timeout=5)
        assert await svc.wait(job.id, timeout=5) == "done"
    assert calls == {"before": 1}
    assert wake_at is not None
    assert woke == [wake_at]


async def test_a_sleep_whose_deadline_passed_while_down_ends_at_once(db_path) -> None:
    clock = TestClock()

    def make() -> JobQueueService:
        svc = JobQueueService(db_path, clock=clock, **FAST)

        @svc.handler("wf")
        async def wf(ctx: JobContext, payload: Any) -> str:
            await ctx.sleep("nap", 3600)
            return "done"

        return svc

    async with make() as svc:
        job = await svc.submit("wf")
        await _until(svc, job.id, "pending")
    await clock.advance(7200)  # down past the deadline
    async with make() as svc:
        # wait() does not move the clock: it ends because the job is due now.
        assert await svc.wait(job.id, timeout=5) == "done"


async def test_sleep_and_step_names_share_one_namespace(make_service) -> None:
    svc = await make_service(**FAST)

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> None:
        if ctx.attempt == 0:
            await ctx.sleep("x", 0)
            raise Retry(delay=0)
        await ctx.step("x", lambda: 1)  # the code changed between runs

    job = await svc.submit("wf", max_retries=1)
    done = await _until(svc, job.id, "failed")
    assert (done.reason, done.error_type) == ("invalid_workflow", "StepError")
    assert "keep step names and kinds stable" in (done.error or "")


async def test_effects_before_a_long_sleep_are_written_once(make_service, db_path) -> None:
    svc = await make_service(clock=TestClock(), **FAST)

    def ledger(conn: sqlite3.Connection, job_id: str) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS ledger (job_id TEXT)")
        conn.execute("INSERT INTO ledger VALUES (?)", (job_id,))

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> None:
        ctx.effect(ledger, ctx.job_id)  # every run adds it; only the completing run commits it
        await ctx.sleep("nap", 3600)

    job = await svc.submit("wf")
    await svc.run_until_idle(timeout=5)
    await svc.wait(job.id, timeout=5)
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 1


# -- gather and map ------------------------------------------------------------------------


class _Gauge:
    """Counts concurrent executions."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.calls: Counter[Any] = Counter()

    async def run(self, key: Any, seconds: float = 0.05) -> Any:
        self.calls[key] += 1
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.now -= 1
        return key


async def test_gather_runs_steps_concurrently_within_the_limit(make_service) -> None:
    svc = await make_service(**FAST)
    g = _Gauge()

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> Any:
        return await ctx.gather(
            *(ctx.step(f"s{i}", lambda i=i: g.run(i)) for i in range(6)), limit=2
        )

    job = await svc.submit("wf")
    assert await svc.wait(job.id, timeout=10) == list(range(6))
    assert g.peak == 2
    assert sum(g.calls.values()) == 6


async def test_map_twenty_items_limit_four(make_service) -> None:
    svc = await make_service(**FAST)
    g = _Gauge()

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> Any:
        doubled = await ctx.map("double", range(20), lambda x: g.run(x * 2, 0.02), limit=4)
        if ctx.attempt == 0:
            raise Retry(delay=0)
        return doubled

    job = await svc.submit("wf", max_retries=1)
    assert await svc.wait(job.id, timeout=10) == [x * 2 for x in range(20)]
    assert g.peak == 4
    assert set(g.calls.values()) == {1}  # the retry replayed all 20
    names = [s.name for s in await svc.get_steps(job.id)]
    assert sorted(names) == sorted(f"double[{i}]" for i in range(20))


@pytest.mark.slow
async def test_gather_failure_cancels_siblings_and_the_retry_reruns_only_unfinished(
    make_service,
) -> None:
    svc = await make_service(**FAST)
    g = _Gauge()

    async def fails_once() -> str:
        g.calls["bad"] += 1
        await asyncio.sleep(0.05)
        if g.calls["bad"] == 1:
            raise ValueError("boom")
        return "bad ok"

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> Any:
        return await ctx.gather(
            ctx.step("quick", lambda: g.run("quick", 0.01)),
            ctx.step("bad", fails_once),
            ctx.step("slow", lambda: g.run("slow", 2.0)),
            ctx.step("queued", lambda: g.run("queued", 0.01)),
            limit=3,
        )

    job = await svc.submit("wf", max_retries=1)
    t0 = time.monotonic()
    assert await svc.wait(job.id, timeout=10) == ["quick", "bad ok", "slow", "queued"]
    assert time.monotonic() - t0 < 4.5  # "slow" was cancelled at the failure, not awaited
    # "quick" finished in run 1 and was replayed; "slow" was cancelled and re-run;
    # "queued" started once the quick one freed a slot.
    assert g.calls == {"quick": 1, "bad": 2, "slow": 2, "queued": 1}


async def test_gather_outside_cancel_leaves_no_step_running(make_service) -> None:
    svc = await make_service(**FAST)

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> None:
        await ctx.map("m", range(6), lambda i: asyncio.sleep(30), limit=2)

    job = await svc.submit("wf")
    await _step_status(svc, job.id, "m[1]", "running")
    assert (await svc.cancel(job.id)).status is S.CANCELLED
    steps = {s.name: s.status for s in await svc.get_steps(job.id)}
    assert steps == {"m[0]": "pending", "m[1]": "pending"}  # interrupted, will run again


# -- pause / stop / cancel between steps ---------------------------------------------------


def _five_steps(svc: JobQueueService, calls: Counter[str], seconds: float = 0.15) -> None:
    @svc.handler("five")
    async def five(ctx: JobContext, payload: Any) -> list[int]:
        out = []
        for i in range(5):

            async def work(i: int = i) -> int:
                calls[f"s{i}"] += 1
                await asyncio.sleep(seconds)
                return i

            out.append(await ctx.step(f"s{i}", work))
        return out


@pytest.mark.slow
async def test_pause_between_steps_and_resume_after_the_last_finished(make_service) -> None:
    svc = await make_service(stop_timeout=5.0, **FAST)
    calls: Counter[str] = Counter()
    _five_steps(svc, calls)
    job = await svc.submit("five")
    await _step_status(svc, job.id, "s1", "running")
    paused = await svc.pause(job.id)
    assert paused.status is S.PAUSED
    steps = {s.name: s.status for s in await svc.get_steps(job.id)}
    assert steps == {"s0": "completed", "s1": "completed"}  # the current step finished
    await asyncio.sleep(0.3)
    assert calls == {"s0": 1, "s1": 1}  # and no new one started
    await svc.resume(job.id)
    assert await svc.wait(job.id, timeout=10) == [0, 1, 2, 3, 4]
    assert calls == {f"s{i}": 1 for i in range(5)}


async def test_stop_lets_the_current_step_finish(make_service) -> None:
    svc = await make_service(stop_timeout=5.0, **FAST)
    calls: Counter[str] = Counter()
    _five_steps(svc, calls)
    job = await svc.submit("five")
    await _step_status(svc, job.id, "s2", "running")
    stopped = await svc.stop(job.id)
    assert (stopped.status, stopped.reason) == (S.STOPPED, "stopped")
    steps = {s.name: s.status for s in await svc.get_steps(job.id)}
    assert steps == {"s0": "completed", "s1": "completed", "s2": "completed"}
    assert calls == {"s0": 1, "s1": 1, "s2": 1}


async def test_stop_during_a_map_lets_running_items_finish_and_starts_no_new_one(
    make_service,
) -> None:
    svc = await make_service(stop_timeout=5.0, **FAST)
    g = _Gauge()

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> Any:
        return await ctx.map("m", range(6), lambda i: g.run(i, 0.3), limit=2)

    job = await svc.submit("wf")
    await _step_status(svc, job.id, "m[1]", "running")
    assert (await svc.stop(job.id)).status is S.STOPPED
    steps = {s.name: s.status for s in await svc.get_steps(job.id)}
    assert steps == {"m[0]": "completed", "m[1]": "completed"}
    await asyncio.sleep(0.4)
    assert g.calls == {0: 1, 1: 1}


async def test_pause_during_an_in_place_sleep_keeps_its_deadline(make_service) -> None:
    svc = await make_service(**FAST)
    woke: list[float] = []

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> None:
        await ctx.sleep("nap", 0.9)
        woke.append(time.time())

    job = await svc.submit("wf")
    await _step_status(svc, job.id, "nap", "sleeping")
    t0 = time.monotonic()
    assert (await svc.pause(job.id)).status is S.PAUSED
    assert time.monotonic() - t0 < 0.5  # the nap noticed the request at once
    (nap,) = await svc.get_steps(job.id)
    assert nap.wake_at is not None
    await svc.resume(job.id)
    await svc.wait(job.id, timeout=10)
    assert nap.wake_at <= woke[0] < nap.wake_at + 0.5


async def test_a_sleeping_workflow_can_be_stopped_not_paused(make_service) -> None:
    svc = await make_service(**FAST)

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> None:
        await ctx.sleep("nap", 30)

    job = await svc.submit("wf")
    await _until(svc, job.id, "pending")
    with pytest.raises(InvalidTransition, match="'pending' to 'paused'"):
        await svc.pause(job.id)
    assert (await svc.stop(job.id)).status is S.STOPPED


# -- on_failure (GoTick's Fail) -------------------------------------------------------------


async def test_on_failure_runs_once_when_the_workflow_times_out(make_service) -> None:
    svc = await make_service(**FAST)
    failures: list[Failure] = []

    async def notify(f: Failure) -> None:
        await asyncio.sleep(0)
        failures.append(f)

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> None:
        ctx.on_failure(notify)
        await ctx.step("forever", lambda: asyncio.sleep(30))

    job = await svc.submit("wf", timeout=0.3)
    done = await _until(svc, job.id, "failed")
    assert done.reason == "timeout"
    (f,) = failures
    assert (f.job_id, f.handler, f.reason, f.error_type) == (
        job.id,
        "wf",
        "timeout",
        "TimeoutError",
    )


async def test_on_failure_runs_only_when_the_job_fails_for_good(make_service) -> None:
    svc = await make_service(**FAST)
    failures: list[Failure] = []

    def broken_callback(f: Failure) -> None:
        raise RuntimeError("a broken callback is logged, nothing more")

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> None:
        ctx.on_failure(broken_callback)
        ctx.on_failure(failures.append)
        await ctx.step("broken", lambda: 1 / 0)

    @svc.handler("ok")
    async def ok(ctx: JobContext, payload: Any) -> None:
        ctx.on_failure(failures.append)
        if ctx.attempt == 0:
            raise Retry(delay=0)

    job = await svc.submit("wf", max_retries=2)
    fine = await svc.submit("ok", max_retries=1)
    done = await _until(svc, job.id, "failed")
    await svc.wait(fine.id, timeout=10)
    assert done.attempt == 2
    assert [(f.job_id, f.reason, f.error_type) for f in failures] == [
        (job.id, "error", "ZeroDivisionError")
    ]


# -- get_steps and recovery ----------------------------------------------------------------


async def test_get_steps_of_unknown_and_plain_jobs(make_service) -> None:
    svc = await make_service(**FAST)

    @svc.handler("plain")
    async def plain(ctx: JobContext, payload: Any) -> int:
        return 1

    job = await svc.submit("plain")
    await svc.wait(job.id, timeout=10)
    assert await svc.get_steps(job.id) == []
    with pytest.raises(JobNotFoundError):
        await svc.get_steps("nope")


def _store(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn, str(path))
    return conn


def _insert(conn: sqlite3.Connection, job_id: str, **cols: Any) -> None:
    now = time.time()
    row = {"id": job_id, "handler": "h", "status": "pending", "created_at": now,
           "updated_at": now, "run_at": now, **cols}  # fmt: skip
    conn.execute(
        f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        tuple(row.values()),
    )


def test_crash_sweep_makes_steps_left_running_pending(db_path) -> None:
    with closing(_store(db_path)) as conn:
        _insert(conn, "dead", status="running", owner="1:1", max_retries=3)
        _insert(conn, "alive", status="running", owner="2:2")
        for job in ("dead", "alive"):
            conn.execute(
                "INSERT INTO steps (job_id, name, seq, status, started_at) "
                "VALUES (?, 'done', 0, 'completed', 0), (?, 'mid', 1, 'running', 0)",
                (job, job),
            )
        result = sweep(conn, ["1:1"], time.time())
        assert result.requeued == 1
        rows = conn.execute("SELECT job_id, name, status FROM steps ORDER BY 1, 2").fetchall()
    assert rows == [
        ("alive", "done", "completed"),
        ("alive", "mid", "running"),  # a live owner's step is left alone
        ("dead", "done", "completed"),
        ("dead", "mid", "pending"),
    ]


def test_started_jobs_are_claimed_before_new_ones(db_path) -> None:
    with closing(_store(db_path)) as conn:
        now = time.time()
        _insert(conn, "new-early", run_at=now - 60)
        _insert(conn, "woke-up", run_at=now - 1, started_at=now - 10, attempt=0)
        _insert(conn, "retry", run_at=now - 2, started_at=now - 20, attempt=1)
        _insert(conn, "urgent", run_at=now, priority=5)
        req = ClaimRequest(handlers=["h"], limit=10, owner="me:1", now=now)
        claimed, _ = claim(conn, req)
        assert [c.id for c in claimed] == ["urgent", "retry", "woke-up", "new-early"]
        # The claim reads one (priority, started) group at a time: a range of jobs_pending
        # that stops at the group's first job not yet due, in claim order (no sort step).
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM jobs WHERE status = 'pending' AND priority = ? "
            "AND (started_at IS NOT NULL) = ? AND run_at <= ? AND handler IN (?) "
            "ORDER BY run_at, seq LIMIT ?",  # a bound limit, as claim() passes it
            (0, 0, now, "h", 10),
        ).fetchall()
    details = " ".join(r[3] for r in plan)
    assert "USING INDEX jobs_pending (priority=? AND <expr>=? AND run_at<?)" in details
    assert "TEMP B-TREE" not in details


@pytest.mark.slow
async def test_a_woken_workflow_runs_before_new_jobs(make_service) -> None:
    svc = await make_service(concurrency=1, **FAST)
    order: list[str] = []

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> None:
        await ctx.sleep("nap", 1.2)
        order.append("wf")

    @svc.handler("work")
    async def work(ctx: JobContext, payload: Any) -> None:
        order.append(payload)
        await asyncio.sleep(0.5)

    job = await svc.submit("wf")
    await _until(svc, job.id, "pending")
    for name in "BCDEF":
        await svc.submit("work", name)
    await svc.run_until_idle(timeout=20)
    # B 0-0.5, C 0.5-1.0, D 1.0-1.5; the workflow woke at 1.2 and goes before E and F,
    # although they were due (run_at) long before it.
    assert order == ["B", "C", "D", "wf", "E", "F"]


def test_schema_has_the_steps_table(db_path) -> None:
    with closing(_store(db_path)) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(steps)")]
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 4
        conn.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):  # a step needs its job
            conn.execute("INSERT INTO steps (job_id, name, seq, status) VALUES ('x', 'a', 0, 'x')")
    assert cols[:5] == ["job_id", "name", "seq", "kind", "status"]
    assert {"result", "error", "attempts", "started_at", "completed_at", "wake_at"} <= set(cols)


# -- a real worker process killed mid-workflow -----------------------------------------------

WORKFLOW_APP = "tests.procs._workflow_app:service"


def _rows(db: Path, sql: str, *params: Any) -> list[Any]:
    with closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute(sql, params).fetchall()


def _wait_for(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


async def _submit_workflows(db: Path) -> tuple[str, str]:
    async with JobQueueService(db, poll_interval=0.05) as producer:
        producer.declare("sleeper", "mapper")  # the worker process runs them
        sleeper = await producer.submit("sleeper", {"seconds": 6.0})
        mapper = await producer.submit("mapper", {"n": 20, "limit": 4, "pace": 0.3}, max_retries=3)
    return sleeper.id, mapper.id


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_during_a_sleep_and_a_map_reruns_no_finished_step(db_path: Path) -> None:
    from _worker_procs import WorkerProcess
    from _workflow_app import read_runs

    made: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        w = WorkerProcess(db_path, "--report-interval", "0", app=WORKFLOW_APP)
        made.append(w)
        w.wait_log(" ready: ", timeout=60)
        return w

    def statuses(job_id: str) -> dict[str, str]:
        return dict(_rows(db_path, "SELECT name, status FROM steps WHERE job_id = ?", job_id))

    def job(job_id: str) -> tuple[str, str | None, int]:
        return _rows(db_path, "SELECT status, reason, attempt FROM jobs WHERE id = ?", job_id)[0]

    try:
        w1 = start()
        sleeper, mapper = asyncio.run(_submit_workflows(db_path))

        def mid_map_and_asleep() -> bool:
            done = [s for n, s in statuses(mapper).items() if n.startswith("items[")]
            return (
                statuses(sleeper).get("nap") == "sleeping"
                and job(sleeper)[:2] == ("pending", "sleeping")
                and 8 <= done.count("completed") < 20
            )

        _wait_for(mid_map_and_asleep, "the map half done and the sleeper asleep")
        w1.proc.kill()
        w1.wait(10)
        killed_at = time.time()
        at_kill = statuses(mapper)
        finished = {n for n, s in at_kill.items() if s == "completed"}
        in_flight = {n for n, s in at_kill.items() if s == "running"}
        (wake_at,) = _rows(db_path, "SELECT wake_at FROM steps WHERE name = 'nap'")[0]
        assert job(mapper)[0] == "running"  # its owner is dead; the next worker sweeps it
        assert wake_at - killed_at > 2.0  # the sleep outlives the kill and the restart

        w2 = start()
        _wait_for(
            lambda: job(sleeper)[0] == "completed" and job(mapper)[0] == "completed",
            "both workflows to complete",
            timeout=60,
        )
    finally:
        for w in made:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(10)

    runs = read_runs(str(db_path))
    count = Counter((j, what) for j, what, _, _ in runs)
    items = {f"items[{i}]" for i in range(20)}
    rerun_finished = sum(count[mapper, n] - 1 for n in finished)
    rerun_unfinished = sorted(n for n in items - finished if count[mapper, n] > 1)
    assert rerun_finished == 0, {n: count[mapper, n] for n in finished}
    assert all(count[mapper, n] >= 1 for n in items)
    assert set(rerun_unfinished) <= in_flight  # only the steps cut off by the kill ran twice
    assert len(in_flight) <= 4
    assert count[mapper, "total"] == 1
    assert job(mapper) == ("completed", None, 1)  # one crash counted against max_retries
    assert set(statuses(mapper).values()) == {"completed"}
    result = _rows(db_path, "SELECT result FROM jobs WHERE id = ?", mapper)[0][0]
    assert result == str(sum(i * i for i in range(20)))

    assert count[sleeper, "before"] == 1
    assert count[sleeper, "after"] == 1
    (after,) = [(pid, at) for j, what, pid, at in runs if (j, what) == (sleeper, "after")]
    assert after[0] == w2.proc.pid
    assert _rows(db_path, "SELECT wake_at FROM steps WHERE name = 'nap'")[0][0] == wake_at
    wake_error = after[1] - wake_at
    assert 0.0 <= wake_error < 1.0, wake_error
    assert job(sleeper)[1:] == (None, 0)  # sleeping never counts as an attempt
    print(
        f"\nworkflow kill test: map items finished before the kill {len(finished)}/20, "
        f"in flight {len(in_flight)}, finished steps re-run {rerun_finished}, unfinished "
        f"re-run {len(rerun_unfinished)}; sleep woke {wake_error * 1000:.1f} ms after its "
        f"original deadline (kill {wake_at - killed_at:.2f} s before it)"
    )
