"""Helper for test_faults_clock: a second process whose wall clock is off by OFFSET seconds.

Usage: python tests/procs/_fault_clock.py DB_PATH OFFSET SECONDS

Under time-machine (the wall clock moved by OFFSET, still ticking), it opens
the database with the same handler registered, so it would claim or recover
any job it thought was abandoned, and keeps its watch loop (heartbeats and
dead-owner sweeps) running for SECONDS. Prints one JSON object: what its
sweeps recovered and which jobs it ran.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import time_machine

from jobqueue import JobQueueService


async def main(path: str, offset: float, seconds: float) -> dict[str, object]:
    ran: list[str] = []
    with time_machine.travel(time.time() + offset, tick=True):
        async with JobQueueService(path, poll_interval=0.05) as svc:

            @svc.handler("long")
            async def long(ctx, payload):
                ran.append(ctx.job_id)

            # The watch loop sweeps dead owners every heartbeat interval (1 s here).
            await asyncio.sleep(seconds)
            recovered = svc.recovered.total
            swept = await svc.list(status="pending", limit=100)
    return {
        "recovered_at_open": recovered,
        "pending_now": [j.id for j in swept],
        "ran": ran,
    }


if __name__ == "__main__":
    out = asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))
    print(json.dumps(out))
