"""Langflow 1.13's own RedisJobQueueService in a process, for the interop test.

Runs under an interpreter where langflow-base 1.13.0 imports (not jobqueue's).
``python _redis_langflow.py URL JOB produce N``: a job that sends N log events
with Langflow's EventManager, then the end sentinel; waits until the key
``done:JOB`` exists before stopping (its stop() deletes the stream).
``python _redis_langflow.py URL JOB read``: reads the job's queue to the
sentinel with Langflow's wrapper, prints each event's data as one JSON line,
``END`` last, then sets ``done:JOB``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def produce(url: str, job: str, n: int) -> None:
    from langflow.services.job_queue.service import RedisJobQueueService

    svc = RedisJobQueueService(url=url)
    svc.start()
    queue, manager = svc.create_queue(job)

    async def body() -> None:
        for i in range(n):
            manager.on_log(data={"i": i})
            await asyncio.sleep(0)
        await queue.put((None, None, time.time()))

    svc.start_job(job, body())
    for _ in range(600):
        if await svc._client.exists(f"done:{job}"):
            break
        await asyncio.sleep(0.05)
    await svc.stop()


async def read(url: str, job: str) -> None:
    from langflow.services.job_queue.service import RedisJobQueueService

    svc = RedisJobQueueService(url=url)
    svc.start()
    queue = svc.get_queue_data(job)[0]
    while True:
        event_id, data, _ts = await queue.get()
        if event_id is None:
            break
        print(json.dumps(json.loads(data)["data"]), flush=True)
    print("END", flush=True)
    await svc._client.set(f"done:{job}", 1, ex=60)
    await queue.cancel()
    await svc.stop()


if __name__ == "__main__":
    url, job, role = sys.argv[1:4]
    if role == "produce":
        asyncio.run(produce(url, job, int(sys.argv[4])))
    else:
        asyncio.run(read(url, job))
