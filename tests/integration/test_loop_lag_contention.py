"""The loop keeps its pace while four other processes write the same file.

Small transactions commit on the event loop's thread (store/writer.py,
``Writer.now``) only while no other connection writes the file: another
process's lock, or its checkpoint syncing the log, would stall them there.
While others write, everything goes to the database thread, which waits for
them instead of the loop. Here four processes submit and run jobs on one file
while this process submits one job at a time, submits and waits in bursts,
and runs its own jobs; a 5 ms ticker's lateness (the loop lag) must stay
under 10 ms at p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import pytest
from _fault_util import ROOT, TESTS, report
from _ticker import Ticker

PROCESSES = 4
SECONDS = 6.0


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_loop_lag_p99_under_10ms_while_four_processes_write(
    make_service, db_path: Path
) -> None:
    svc = await make_service(concurrency=16, poll_interval=0.05)
    done = 0

    @svc.handler("mine")
    async def mine(ctx, payload):
        nonlocal done
        done += 1
        return payload

    svc.declare("work")  # the other processes' handler: not run here
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start_at = time.time() + 2.5  # after every interpreter has imported jobqueue
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(TESTS / "_lag_writer.py"),
            str(db_path),
            str(i),
            str(start_at),
            str(SECONDS),
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for i in range(PROCESSES)
    ]
    try:
        figures, outs = await _measure(svc, procs, start_at)
    finally:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
    report("loop_lag_contention", **figures)
    assert not [e for o in outs for e in o["errors"]]
    assert all(o["writes"] > 50 for o in outs), outs
    assert done >= figures["submitted"]
    assert figures["ticks"] >= 200
    # The others' writes were seen: this process left the file to its database thread.
    assert figures["file_seen_shared"] > 0, figures
    assert figures["p99_ms"] < 10, figures


async def _measure(
    svc, procs: list[asyncio.subprocess.Process], start_at: float
) -> tuple[dict[str, float], list[dict[str, object]]]:
    await asyncio.sleep(max(0.0, start_at - time.time()) + 0.3)  # they are writing now

    writer, db = svc.runtime.writer, svc.runtime.db
    assert writer is not None
    assert db is not None
    inline0, batches0, busy0 = writer.inline_batches, writer.batches, writer.lock_waits
    shared0 = db.shared_seen
    ticker = Ticker()
    ticker.start()
    deadline = time.monotonic() + SECONDS - 1.0
    submitted = waited = 0
    while time.monotonic() < deadline:
        for i in range(50):  # one at a time
            await svc.submit("mine", {"i": i})
            submitted += 1
        burst = await asyncio.gather(*(svc.submit("mine", {"b": i}) for i in range(100)))
        results = await asyncio.gather(*(svc.wait(j.id, timeout=30) for j in burst))
        assert results == [{"b": i} for i in range(100)]
        submitted += 100
        waited += 100
    await ticker.stop()
    outs = []
    for p in procs:
        async with asyncio.timeout(60):
            out, _ = await p.communicate()
        assert p.returncode == 0
        outs.append(json.loads(out.decode().strip().splitlines()[-1]))
    await svc.run_until_idle(timeout=30)

    lags = sorted(ticker.lags)
    p99 = lags[int(len(lags) * 0.99) - 1]
    figures = {
        "p99_ms": round(p99 * 1e3, 2),
        "max_ms": round(lags[-1] * 1e3, 2),
        "ticks": len(lags),
        "submitted": submitted,
        "waited": waited,
        "batches": writer.batches - batches0,
        "batches_on_loop": writer.inline_batches - inline0,
        "lock_busy_handed_to_thread": writer.lock_waits - busy0,
        "file_seen_shared": db.shared_seen - shared0,
        "other_writes": sum(o["writes"] for o in outs),
    }
    return figures, outs
