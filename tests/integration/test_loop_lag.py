"""Nothing blocks the event loop: a ticker keeps its pace while thousands of jobs run."""

from __future__ import annotations

import asyncio
import time

from _ticker import Ticker


async def test_loop_lag_under_load(make_service) -> None:
    svc = await make_service(concurrency=64)
    done = 0

    @svc.handler("noop")
    async def noop(ctx, payload):
        nonlocal done
        done += 1

    ticker = Ticker()
    ticker.start()
    await asyncio.sleep(0.02)
    t0 = time.perf_counter()
    jobs = await svc.submit_many("noop", [None] * 5000)
    await svc.run_until_idle(timeout=40)
    elapsed = time.perf_counter() - t0
    await ticker.stop()
    lags = ticker.lags
    assert len(jobs) == 5000
    assert done == 5000
    assert len(await svc.list(status="completed", limit=10_000)) == 5000
    assert len(lags) >= 10
    # A blocking call (sync SQLite, a file lock) shows as lag on many ticks; one
    # scheduler hiccup on a busy 2-core machine should not fail the test.
    lags.sort()
    p99 = lags[int(len(lags) * 0.99) - 1]
    assert p99 < 0.05, (p99, max(lags), elapsed)
    assert max(lags) < 0.25, (max(lags), elapsed)
