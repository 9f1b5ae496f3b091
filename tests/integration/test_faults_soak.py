"""Long runs: memory stays flat over 100,000 jobs, and the event loop stays responsive.

See also tests/integration/test_loop_lag.py (max lag under 5,000 jobs).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from _fault_util import python, report
from _ticker import Ticker

CHUNK = 1_000
LAG_ATTEMPTS = 3


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_100k_jobs_memory_flat_registry_empty(tmp_path: Path) -> None:
    """100,000 short jobs with events, reaper on: nothing kept after warm-up, registry empties.

    Runs in a fresh process (tests/procs/_fault_soak.py). The first 20,000 jobs are the
    warm-up: SQLite's page caches (2 MiB for each of the two connections) and the
    allocators' arenas fill once, then stay. Memory kept is what the allocators
    count as live: Python's (tracemalloc, started after the warm-up) and
    SQLite's own (``sqlite3_memory_used``). Growth is the rise of the floor from
    the first to the last 20,000 of the other 80,000 jobs, per 1,000 jobs.

    The limit of 8 KiB per 1,000 jobs is 8 bytes a job, less than the smallest
    Python object: a job that leaves anything behind fails it. RSS is reported
    but only bounded loosely (256 KiB per 1,000 jobs, about 20 MiB over the run):
    it also counts pages that glibc has not handed back yet, which depends on
    timing, and on a loaded 2-core machine its floor rose 3.5 MiB over a run that
    kept nothing.
    """
    done = python("_fault_soak.py", str(tmp_path / "soak.db"), timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    report("soak", **out)
    assert out["jobs"] == out["completed"] == 100_000
    assert out["python_floor_growth_per_1k_jobs_kib"] < 8, out
    if out["sqlite_floor_growth_per_1k_jobs_kib"] is not None:  # the library's symbol reachable
        assert out["sqlite_floor_growth_per_1k_jobs_kib"] < 8, out
    assert out["rss_floor_growth_per_1k_jobs_kib"] < 256, out
    assert out["registry_after_each_step_max"] == 0  # the registry returns to empty
    assert out["waiters_after"] == 0


async def _lag_run(svc, name: str) -> dict[str, float]:
    """Store 10,000 jobs, then measure the loop's lateness while they all run."""
    svc.declare(name)
    for start in range(0, 10_000, CHUNK):
        await svc.submit_many(name, list(range(start, start + CHUNK)))

    async def noop(ctx, payload):
        return None

    ticker = Ticker()
    ticker.start()
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    svc.register(name, noop)  # now they run
    await svc.run_until_idle(timeout=120)
    elapsed = time.perf_counter() - t0
    await ticker.stop()
    lags = sorted(ticker.lags)
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
