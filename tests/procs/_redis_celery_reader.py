"""Streams one Celery task's events from the Redis bus, one JSON line each.

``python _redis_celery_reader.py URL TASK_ID``: a ``TaskService`` on a
``CeleryBackend`` with no handlers (a machine that only reads) prints
``READY``, then ``{"seq", "type", "data"}`` per event, the last one being the
task's ``end`` or ``error``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from _redis_celery import PREFIX

from jobqueue.tasks import CeleryBackend, TaskService


async def main(url: str, task_id: str) -> None:
    backend = CeleryBackend(broker=url, key_prefix=PREFIX, queue=f"{PREFIX}queue", bus=True)
    async with TaskService(backend) as tasks:
        print("READY", flush=True)
        async for event in tasks.events(task_id):
            print(
                json.dumps({"seq": event.seq, "type": event.type, "data": event.data}), flush=True
            )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
