"""jobqueue.testing: a TestClock moves delays, backoffs, timeouts, rate windows and durable
sleeps without real waiting; the pytest plugin runs async tests with no configuration."""

from __future__ import annotations

import asyncio
import itertools
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService, Retry
from jobqueue.errors import InvalidArgumentError
from jobqueue.testing import TestClock, assert_events, assert_status, collect_events

HOUR = 3600.0


# -- the clock alone ---------------------------------------------------------------------


async def test_advance_fires_deadlines_in_order_and_not_before_time() -> None:
    clock = TestClock(start=1000.0)
    fired: list[tuple[str, float]] = []
    clock.call_later(30, lambda: fired.append(("b", clock.time())))
    clock.call_later(10, lambda: fired.append(("a", clock.time())))
    cancelled = clock.call_later(20, lambda: fired.append(("x", clock.time())))
    cancelled.cancel()
    await clock.advance(29.5)
    assert fired == [("a", 1010.0)]
    assert clock.time() == 1029.5
    assert clock.next_deadline == 1030.0
    await clock.advance(0.5)
    assert fired == [("a", 1010.0), ("b", 1030.0)]
    assert clock.pending == 0
    assert await clock.jump() is None


async def test_sleep_ends_at_its_deadline_or_when_woken() -> None:
    clock = TestClock(start=0)
    sleeper = asyncio.ensure_future(clock.sleep(60))
    await asyncio.sleep(0)
    assert clock.sleepers == 1
    await clock.advance(59)
    assert not sleeper.done()
    await clock.advance(1)
    await sleeper
    wake = asyncio.Event()
    woken = asyncio.ensure_future(clock.sleep(HOUR, wake))
    await asyncio.sleep(0)
    wake.set()
    await asyncio.wait_for(woken, 1)
    assert clock.time() == 60
    assert clock.sleepers == 0


@pytest.mark.parametrize("bad", [-1, math.inf, math.nan, "10", True, None])
async def test_advance_refuses_what_is_not_a_time_span(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="advance"):
        await TestClock().advance(bad)


def test_a_service_refuses_a_clock_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="TestClock"):
        JobQueueService(tmp_path / "j.db", clock=time)  # type: ignore[arg-type]


# -- a service on the clock ---------------------------------------------------------------


@pytest.fixture
async def on_clock(tmp_path: Path) -> Any:
    clock = TestClock()
    async with JobQueueService(tmp_path / "jobs.db", clock=clock, poll_interval=0.05) as svc:
        yield svc, clock


async def test_an_hour_delay_runs_on_the_hour_and_not_before(on_clock: Any) -> None:
    svc, clock = on_clock
    ran_at: list[float] = []

    @svc.handler("later")
    async def later(ctx: JobContext, payload: Any) -> None:
        ran_at.append(clock.time())

    job = await svc.submit("later", delay=HOUR)
    await clock.advance(HOUR - 1)
    await assert_status(svc, job.id, "pending")
    await clock.advance(1)  # advance() lets the service run what came due
    await assert_status(svc, job.id, "completed")
    assert ran_at == [job.run_at]


async def test_run_until_idle_moves_the_clock_through_backoffs(on_clock: Any) -> None:
    svc, clock = on_clock
    attempts: list[float] = []

    @svc.handler("flaky")
    async def flaky(ctx: JobContext, payload: Any) -> str:
        attempts.append(clock.time())
        if ctx.attempt < 3:
            raise ConnectionError("down")
        return "up"

    start = clock.time()
    job = await svc.submit("flaky", max_retries=3)
    real = time.monotonic()
    # Without the clock this takes the default backoffs: about 1 + 2 + 4 s of real time.
    await svc.run_until_idle(timeout=5)
    assert time.monotonic() - real < 5
    assert await svc.wait(job.id) == "up"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert [round(g / base, 1) >= 0.5 for g, base in zip(gaps, (1, 2, 4), strict=True)] == [
        True
    ] * 3  # each gap is the backoff with its jitter (x0.5 to x1.5)
    assert clock.time() - start == pytest.approx(sum(gaps), abs=1e-6)


async def test_a_timeout_fires_on_the_clock(on_clock: Any) -> None:
    svc, _clock = on_clock

    @svc.handler("stuck")
    async def stuck(ctx: JobContext, payload: Any) -> None:
        await ctx.nap(HOUR)  # waits on the clock

    job = await svc.submit("stuck", timeout=60)
    await svc.run_until_idle(timeout=5)
    failed = await assert_status(svc, job.id, "failed", reason="timeout")
    assert "60s" in (failed.error or "")
    assert failed.completed_at == pytest.approx(failed.started_at + 60, abs=1e-3)


async def test_a_rate_window_opens_on_the_clock(on_clock: Any) -> None:
    svc, clock = on_clock
    starts: list[float] = []

    @svc.handler("api", rate_limit=(2, 60))
    async def api(ctx: JobContext, payload: Any) -> None:
        starts.append(clock.time())

    start = clock.time()
    await svc.submit_many("api", [1, 2, 3, 4, 5])
    await svc.run_until_idle(timeout=5)
    windows = sorted(int((t - start) // 60) for t in starts)
    assert windows == [0, 0, 1, 1, 2]  # two starts per minute of clock time


async def test_workflow_step_backoff_and_durable_sleep_on_the_clock(on_clock: Any) -> None:
    svc, clock = on_clock
    tries: list[float] = []

    def fragile() -> str:
        tries.append(clock.time())
        if len(tries) < 3:
            raise OSError("flaky disk")
        return "written"

    @svc.handler("wf")
    async def wf(ctx: JobContext, payload: Any) -> str:
        await ctx.sleep("cool-off", 2 * HOUR)
        return str(await ctx.step("write", fragile, retries=2, backoff=5))

    start = clock.time()
    job = await svc.submit("wf")
    await svc.run_until_idle(timeout=5)
    assert await svc.wait(job.id) == "written"
    assert tries[0] - start == pytest.approx(2 * HOUR)
    assert [round(b - a) for a, b in itertools.pairwise(tries)] == [5, 10]


async def test_retry_with_a_delay_and_the_events_of_each_run(on_clock: Any) -> None:
    svc, _clock = on_clock

    @svc.handler("poll")
    async def poll(ctx: JobContext, payload: Any) -> str:
        await ctx.emit("message", {"attempt": ctx.attempt})
        if ctx.attempt == 0:
            raise Retry(delay=HOUR, message="not ready")
        return "ready"

    job = await svc.submit("poll", max_retries=1)
    await svc.run_until_idle(timeout=5)
    await assert_status(svc, job.id, "completed", attempt=1)
    events = await collect_events(svc, job.id)
    assert [e.data for e in events if e.type == "message"][-1] == {"attempt": 1}
    # Nothing logged (persist_events=False): a second reader is told how the job ended.
    again = await assert_events(svc, job.id, ["end"])
    assert again[0].data == events[-1].data  # the same end the first reader got
    with pytest.raises(AssertionError, match=r"event types \['end'\], expected \['message'"):
        await assert_events(svc, job.id, ["message", "end"])


async def test_assert_status_says_what_differs_and_why(on_clock: Any) -> None:
    svc, _ = on_clock

    @svc.handler("bad")
    async def bad(ctx: JobContext, payload: Any) -> None:
        raise ValueError("no such user")

    job = await svc.submit("bad")
    await svc.run_until_idle(timeout=5)
    with pytest.raises(AssertionError, match=r"status 'failed', expected 'completed'.*no such"):
        await assert_status(svc, job.id, "completed")


# -- the pytest plugin, in a pytest of its own --------------------------------------------

PLUGIN_SUITE = """
from jobqueue.testing import assert_status

async def test_an_hour_later(jobqueue_service, jobqueue_clock):
    @jobqueue_service.handler("later")
    async def later(ctx, payload):
        return payload * 2

    job = await jobqueue_service.submit("later", 21, delay=3600)
    await jobqueue_service.run_until_idle()
    assert (await assert_status(jobqueue_service, job.id, "completed")).result == 42

async def test_a_day_of_durable_sleep(jobqueue_service, jobqueue_clock):
    @jobqueue_service.handler("nap")
    async def nap(ctx, payload):
        await ctx.sleep("day", 86400)

    start = jobqueue_clock.time()
    job = await jobqueue_service.submit("nap")
    await jobqueue_service.run_until_idle()
    await assert_status(jobqueue_service, job.id, "completed")
    assert jobqueue_clock.time() - start == 86400
"""


@pytest.mark.parametrize(
    ("mode", "args"),
    [
        ("no pytest-asyncio", ["-p", "no:asyncio"]),
        ("pytest-asyncio strict, unmarked tests", []),
        ("pytest-asyncio auto", ["-o", "asyncio_mode=auto"]),
    ],
)
def test_the_plugin_needs_no_configuration(tmp_path: Path, mode: str, args: list[str]) -> None:
    # pytest-asyncio, when loaded, warns unless its fixture loop scope is set.
    scope = "" if "no:asyncio" in args else "asyncio_default_fixture_loop_scope = function\n"
    (tmp_path / "pytest.ini").write_text(f"[pytest]\n{scope}")
    (tmp_path / "test_jobs.py").write_text(textwrap.dedent(PLUGIN_SUITE))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"{mode}:\n{out.stdout}\n{out.stderr}"
    assert "2 passed" in out.stdout, out.stdout
    assert "warning" not in out.stdout, out.stdout
