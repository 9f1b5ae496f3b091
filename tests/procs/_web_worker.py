"""A worker for the dashboard's browser tests and bench/web.py (run as a script).

``python tests/procs/_web_worker.py DB`` runs these handlers until SIGTERM,
with the persisted event log, so a dashboard in another process follows
their events:

- ``ticker``: emits ``payload["n"]`` ``tick`` events, one every
  ``payload["pace"]`` seconds, with a checkpoint after each;
- ``fail``: raises ``RuntimeError(payload["message"])``;
- ``hold``: waits ``payload["seconds"]`` with a checkpoint every 50 ms.

It prints ``ready`` on stdout once it runs.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from jobqueue import JobContext, JobQueueService


async def ticker(ctx: JobContext, payload: dict[str, Any]) -> int:
    for i in range(payload["n"]):
        await ctx.emit("tick", {"i": i, "note": payload.get("note", "")})
        await asyncio.sleep(payload.get("pace", 0.05))
        await ctx.checkpoint()
    return int(payload["n"])


async def fail(ctx: JobContext, payload: dict[str, Any]) -> None:
    raise RuntimeError(payload["message"])


async def hold(ctx: JobContext, payload: dict[str, Any]) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + payload["seconds"]
    while loop.time() < deadline:
        await asyncio.sleep(0.05)
        await ctx.checkpoint()
    return "held"


async def main(path: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = JobQueueService(
        path, persist_events=True, poll_interval=0.05, concurrency=16, stop_timeout=2.0
    )
    for fn in (ticker, fail, hold):
        service.register(fn.__name__, fn)
    async with service:
        print("ready", flush=True)
        await stop.wait()
        await service.close(drain_timeout=0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
