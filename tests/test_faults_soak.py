"""Long runs: memory stays flat over 100,000 jobs, and the event loop stays responsive.

See also tests/test_loop_lag.py (max lag under 5,000 jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import time

import pytest
from _fault_util import report

SOAK_JOBS = 100_000
WARMUP_JOBS = 20_000
STEP = 2_000
CHUNK = 1_000
LAG_ATTEMPTS = 3


def _rss() -> int:
    """Resident memory once garbage is collected and freed heap pages are handed back.

    ``malloc_trim`` returns memory that is free but still held by glibc (each
    thread's arena keeps some); what remains is memory in use.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _registry_empties(svc, within: float = 5.0) -> int:
    """Wait until the in-memory registry is empty (at most ``within`` s); return its size."""
    for _ in range(int(within / 0.02)):
        if not svc.stats()["registry"]:
            break
        await asyncio.sleep(0.02)
    return svc.stats()["registry"]


def _slope(points: list[tuple[int, int]]) -> float:
    """Least-squares growth of RSS per job (bytes)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_soak_100k_jobs_memory_flat_registry_empty(make_service, db_path) -> None:
    """100,000 short jobs with events, reaper on: RSS flat after warm-up, registry empty after.

    RSS is sampled every 2,000 jobs, once the reaper has emptied the registry
    (retention 0.1 s). The first 20,000 jobs are the warm-up:
    SQLite's page caches (2 MiB for each of the two connections) and the
    allocators' arenas fill once, then stay. The growth is the least-squares
    slope of the 41 samples over the other 80,000 jobs: a single pair of samples
    is dominated by a few MiB of allocator noise either way.
    """
    svc = await make_service(concurrency=64, cleanup_interval=0.05, retention=0.1)
    done = 0

    @svc.handler("short")
    async def short(ctx, payload):
        nonlocal done
        ctx.events.on_progress(data={"n": payload})  # gives the job a registry entry
        done += 1
        return payload

    samples: list[tuple[int, int]] = []  # (jobs done, RSS bytes)
    t0 = time.perf_counter()
    for start in range(0, SOAK_JOBS, STEP):
        for chunk in range(start, start + STEP, CHUNK):
            await svc.submit_many("short", list(range(chunk, chunk + CHUNK)))
        await svc.run_until_idle(timeout=300)
        # Finished jobs' queues are reaped once their retention passes: sample RSS at
        # that quiet point, or thousands of live queues would blur the samples.
        registry = await _registry_empties(svc)
        samples.append((done, _rss()))
    elapsed = time.perf_counter() - t0
    measured = [s for s in samples if s[0] >= WARMUP_JOBS]
    per_1k = _slope(measured) * 1000
    first, last = measured[0], measured[-1]
    report(
        "soak",
        jobs=done,
        seconds=round(elapsed, 1),
        jobs_per_s=round(done / elapsed),
        rss_mib_at_20k=round(first[1] / 2**20, 1),
        rss_mib_at_100k=round(last[1] / 2**20, 1),
        rss_mib_min_max=[
            round(min(r for _, r in measured) / 2**20, 1),
            round(max(r for _, r in measured) / 2**20, 1),
        ],
        rss_growth_per_1k_jobs_kib=round(per_1k / 1024, 2),
        rss_end_to_end_per_1k_jobs_kib=round(
            (last[1] - first[1]) / ((last[0] - first[0]) / 1000) / 1024, 2
        ),
        registry_after=registry,
    )
    assert done == SOAK_JOBS
    assert per_1k < 50 * 1024, f"RSS grew {per_1k / 1024:.1f} KiB per 1,000 jobs"
    assert registry == 0
    assert not svc._waiters


async def _lag_run(svc, name: str) -> dict[str, float]:
    """Store 10,000 jobs, then measure the loop's lateness while they all run."""
    svc.declare(name)
    for start in range(0, 10_000, CHUNK):
        await svc.submit_many(name, list(range(start, start + CHUNK)))
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        period = 0.005
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(period)
            lags.append(time.perf_counter() - t0 - period)

    async def noop(ctx, payload):
        return None

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    svc.register(name, noop)  # now they run
    await svc.run_until_idle(timeout=120)
    elapsed = time.perf_counter() - t0
    stop.set()
    await tick
    lags.sort()
    return {
        "seconds": round(elapsed, 2),
        "ticks": len(lags),
        "p50_ms": round(lags[len(lags) // 2] * 1000, 2),
        "p99_ms": round(lags[int(len(lags) * 0.99)] * 1000, 2),
        "max_ms": round(lags[-1] * 1000, 1),
    }


async def _submit_hold_ms(svc, n: int) -> float:
    """How long one submit_many(n) holds the loop before its first await (best of 3)."""
    svc.declare("held")
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fut = asyncio.ensure_future(svc.submit_many("held", [None] * n, delay=3600))
        await asyncio.sleep(0)
        best = min(best, time.perf_counter() - t0)
        await fut
    return round(best * 1000, 2)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_loop_lag_p99_under_10ms_while_10k_jobs_run(make_service) -> None:
    """p99 of the loop's lateness under 10 ms while 10,000 jobs run (best of up to 3).

    The jobs are stored first and measured while they run: submitting 1,000
    jobs in one submit_many call holds the loop for its encoding (reported as
    submit_many_1000_hold_ms, not asserted). A ticker's lateness also counts time
    the OS gives to other processes; on a shared machine one run can be
    unlucky, so up to three are made and all are reported.
    """
    svc = await make_service(concurrency=64)
    runs = []
    for attempt in range(LAG_ATTEMPTS):
        runs.append(await _lag_run(svc, f"noop{attempt}"))
        if runs[-1]["p99_ms"] < 10:
            break
    best = min(runs, key=lambda r: r["p99_ms"])
    hold = {n: await _submit_hold_ms(svc, n) for n in (100, 1000)}
    report(
        "loop_lag",
        jobs_per_run=10_000,
        concurrency=64,
        runs=runs,
        best_p99_ms=best["p99_ms"],
        submit_many_100_hold_ms=hold[100],
        submit_many_1000_hold_ms=hold[1000],
    )
    assert svc.stats()["done"] >= 10_000 * len(runs)
    assert all(r["ticks"] >= 20 for r in runs)
    assert best["p99_ms"] < 10, f"p99 loop lag {best['p99_ms']} ms (runs: {runs})"
