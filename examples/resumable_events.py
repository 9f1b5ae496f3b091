"""Resumable event streams: a consumer reconnects after the producer restarted.

The first service runs a job and is closed halfway (as a deploy would), so
the job goes back to pending. The consumer keeps only the last event id it
saw. A second service runs the job again, and the consumer resumes after
that id: no event is missed or repeated, and the ids run on across the restart.

Run: python examples/resumable_events.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from jobqueue import JobContext, JobQueueService


def make_service(path: Path, run: str) -> JobQueueService:
    service = JobQueueService(path, persist_events=True, poll_interval=0.05, drain_timeout=0.1)

    @service.handler("count")
    async def count(ctx: JobContext, payload: Any) -> str:
        for i in range(payload["n"]):
            await ctx.emit("token", {"chunk": f"{run}:{i} "})
            await asyncio.sleep(0.05 if run == "first" else 0)
        return f"counted by the {run} run"

    return service


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jobs.db"
        seen = []
        async with make_service(path, "first") as first:
            job = await first.submit("count", {"n": 8})
            async for event in first.events(job.id):
                print(event.id, event.data)
                seen.append(event)
                if len(seen) == 3:
                    break  # the consumer goes away; it keeps seen[-1].id
            await asyncio.sleep(0.1)  # ... the job goes on without it, then the process stops
        print(f"-- restart; resuming after {seen[-1].id}")
        async with make_service(path, "second") as second:
            async for event in second.events(job.id, after=seen[-1].id):
                print(event.id, event.data)
                seen.append(event)
        seqs = [event.seq for event in seen]
        assert seqs == list(range(1, len(seen) + 1)), seqs  # no gap, no duplicate
        print(f"{len(seen)} events, ids 1..{seqs[-1]} without gap or repeat")


if __name__ == "__main__":
    asyncio.run(main())
