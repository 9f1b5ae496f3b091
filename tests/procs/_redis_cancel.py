"""Cancels a job from another process and prints the confirmed outcome.

``python _redis_cancel.py URL JOB``: prints ``CONFIRMED <outcome>``.
"""

from __future__ import annotations

import asyncio
import sys

from jobqueue.redis import RedisJobQueueService


async def main(url: str, job: str) -> None:
    svc = RedisJobQueueService(url=url)
    svc.start()
    outcome = await svc.cancel_job(job, confirm=10)
    print(f"CONFIRMED {outcome}", flush=True)
    await svc.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
