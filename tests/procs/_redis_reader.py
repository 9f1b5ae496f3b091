"""Streams one job's events from the Redis bus, one JSON line each, for the process tests.

``python _redis_reader.py URL JOB LEASE``: prints ``{"kind", "seq", "i", "t"}`` per
event (``i`` from a log event's data) and ``{"kind": "end", "outcome", "t"}`` last;
``t`` is the wall-clock time it was read.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from jobqueue.redis import RedisJobQueueService


async def main(url: str, job: str, lease: float) -> None:
    svc = RedisJobQueueService(url=url, lease_s=lease, socket_timeout=2.0)
    svc.start()
    print("READY", flush=True)
    async for event in svc.events(job):
        out = {"kind": event.kind, "seq": event.seq, "t": time.time()}
        if event.kind == "event":
            out["i"] = event.decoded()["data"]["i"]
        elif event.kind == "gap":
            out["missed"] = event.missed
        else:
            out["outcome"] = event.outcome
        print(json.dumps(out), flush=True)
    await svc.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
