"""Helper for test_loop_lag_contention: one of several processes writing one database file.

Usage: python tests/procs/_lag_writer.py DB_PATH INDEX START_AT SECONDS

From START_AT (a wall-clock barrier shared by all processes) for SECONDS, it
submits jobs one at a time and 50 at a time and runs the jobs it claims
(handler ``work``, concurrency 8), so the file's write lock changes hands all
the time. Prints one JSON object: its writes, runs and errors.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from jobqueue import JobQueueService


async def main(path: str, index: int, start_at: float, seconds: float) -> dict[str, object]:
    errors: list[str] = []
    runs = 0
    writes = 0
    await asyncio.sleep(max(0.0, start_at - time.time()))
    async with JobQueueService(path, concurrency=8, poll_interval=0.05) as svc:

        @svc.handler("work")
        async def work(ctx, payload):
            nonlocal runs
            runs += 1

        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            try:
                if n % 10 == 9:
                    await svc.submit_many("work", [{"n": n + i} for i in range(50)])
                else:
                    await svc.submit("work", {"n": n})
                writes += 1
            except Exception as exc:  # reported: the test fails on any
                errors.append(f"{type(exc).__name__}: {exc}")
            n += 1
            if n % 20 == 0:
                await asyncio.sleep(0.001)  # let its jobs run and finish too
    return {"index": index, "writes": writes, "runs": runs, "errors": errors}


if __name__ == "__main__":
    path, index, start_at, seconds = sys.argv[1:5]
    print(json.dumps(asyncio.run(main(path, int(index), float(start_at), float(seconds)))))
