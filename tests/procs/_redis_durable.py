"""A durable service on the Redis bus in its own process, for test_redis_durable.py.

``python _redis_durable.py URL DB``: submits a job that emits log events until it is
cancelled; prints ``JOB <id>``, then ``DONE <status>`` once it ended.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from jobqueue import JobContext, JobQueueService
from jobqueue.redis import RedisBus


async def main(url: str, path: str) -> None:
    service = JobQueueService(path, persist_events=True)

    @service.handler("loop")
    async def loop(ctx: JobContext, payload: Any) -> None:
        i = 0
        while True:
            await ctx.emit("log", {"i": i})
            i += 1
            await asyncio.sleep(0.01)

    async with service, RedisBus(service, url):
        job = await service.submit("loop", None, max_retries=1)
        print(f"JOB {job.id}", flush=True)
        for _ in range(3000):
            if (await service.get(job.id)).done:
                break
            await asyncio.sleep(0.01)
        print(f"DONE {(await service.get(job.id)).status}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
