"""Helper for test_store: open a (new) database at a given moment and submit one job.

Usage: python tests/procs/_open_worker.py DB_PATH START_AT JOB_ID
"""

from __future__ import annotations

import asyncio
import sys
import time

from jobqueue import JobQueueService


async def main(path: str, start_at: float, job_id: str) -> None:
    delay = start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)  # a barrier: every process opens the file at the same moment
    async with JobQueueService(path, poll_interval=60) as svc:

        @svc.handler("noop")
        async def noop(ctx, payload):
            return None

        # Delayed so that no process runs another's job; we only check it is stored.
        await svc.submit("noop", {"by": job_id}, job_id=job_id, delay=3600)
    print("ok", job_id)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3]))
