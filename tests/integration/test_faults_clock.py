"""Wall-clock jumps (time-machine): ±1 h steals no live job and bends no duration.

Liveness is the owner's pid plus its process start time (see
jobqueue/store/recovery.py), never a wall-clock lease, so a process whose
clock is an hour off must not take a running job. Durations and waits are
figures that must come from a monotonic clock. Wall-clock times (run_at,
created_at, delay and retry schedules) are persisted and follow the wall
clock by design; they are not checked here.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import time_machine
from _fault_util import python, report

from jobqueue import TaskStatus
from jobqueue.errors import JobFailedError
from jobqueue.hooks import HookKind, Lifecycle

HOUR = 3600.0


@pytest.mark.slow
@pytest.mark.parametrize("offset", [HOUR, -HOUR], ids=["+1h", "-1h"])
async def test_process_with_a_jumped_clock_steals_no_live_job(
    make_service, db_path: Path, offset: float
) -> None:
    svc = await make_service(poll_interval=0.05)
    release = asyncio.Event()
    runs: list[str] = []
    started = asyncio.Event()

    @svc.handler("long")
    async def long(ctx, payload):
        runs.append(ctx.job_id)
        started.set()
        await release.wait()
        return "done"

    job = await svc.submit("long", {}, job_id="live")
    await asyncio.wait_for(started.wait(), 10)
    other = asyncio.create_task(
        asyncio.to_thread(python, "_fault_clock.py", str(db_path), str(offset), "2.5")
    )
    # Our own clock jumps too, both ways, while the other process sweeps.
    with time_machine.travel(time.time(), tick=True) as clock:
        for shift in (offset, -offset, offset):
            clock.shift(shift)
            await asyncio.sleep(0.3)
        done = await other
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    current = await svc.get(job.id)
    assert current.status is TaskStatus.RUNNING
    assert current.owner == svc.owner
    assert current.attempt == 0
    assert seen["recovered_at_open"] == 0
    assert seen["ran"] == []
    assert seen["pending_now"] == []
    release.set()
    assert await svc.wait(job.id, timeout=10) == "done"
    assert runs == ["live"]  # ran exactly once
    report(f"clock_steal{'+' if offset > 0 else '-'}1h", stolen=0, runs=len(runs))


@pytest.mark.slow
@pytest.mark.parametrize("shift", [HOUR, -HOUR], ids=["+1h", "-1h"])
async def test_job_timeout_follows_the_monotonic_clock(make_service, shift: float) -> None:
    svc = await make_service(poll_interval=0.05)
    started = asyncio.Event()

    @svc.handler("slow")
    async def slow(ctx, payload):
        started.set()
        await asyncio.sleep(30)

    job = await svc.submit("slow", {}, timeout=1.0)
    await asyncio.wait_for(started.wait(), 10)
    t0 = time.monotonic()
    with time_machine.travel(time.time(), tick=True) as clock:
        clock.shift(shift)
        with pytest.raises(JobFailedError) as ei:
            await svc.wait(job.id, timeout=10)
    elapsed = time.monotonic() - t0
    assert ei.value.reason == "timeout"
    assert 0.5 < elapsed < 5.0, elapsed  # neither at once nor an hour late


@pytest.mark.parametrize("shift", [HOUR, -HOUR], ids=["+1h", "-1h"])
async def test_durations_ignore_wall_clock_jumps(make_service, shift: float) -> None:
    svc = await make_service(poll_interval=0.05)
    records: list[Lifecycle] = []
    svc.hooks.subscribe(records.append, [HookKind.FINISHED, HookKind.EVENT_CONSUMED])
    sent = asyncio.Event()
    jumped = asyncio.Event()

    @svc.handler("timed")
    async def timed(ctx, payload):
        ctx.events.on_progress(data={"step": 1})
        sent.set()
        await jumped.wait()
        await asyncio.sleep(0.2)
        return "ok"

    t0 = time.perf_counter()
    job = await svc.submit("timed", {})
    await asyncio.wait_for(sent.wait(), 10)
    with time_machine.travel(time.time(), tick=True) as clock:
        clock.shift(shift)
        jumped.set()
        async for event in svc.events(job.id):  # consumed after the jump
            if event.type == "end":
                break
        assert await svc.wait(job.id, timeout=10) == "ok"
    real = time.perf_counter() - t0
    run_s = [r.run_s for r in records if r.kind is HookKind.FINISHED]
    waits = [r.wait_s for r in records if r.kind is HookKind.EVENT_CONSUMED]
    assert run_s, records
    assert all(w is not None and 0.0 <= w <= real for w in waits), (waits, real)
    assert 0.15 <= run_s[0] <= real, (run_s, real)
