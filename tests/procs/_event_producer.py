"""Helper for test_eventlog: a producer process writing a job's events to the persisted log.

Usage: python tests/procs/_event_producer.py DB JOB_ID LABEL N PAUSE MODE

Submits job JOB_ID (handler ``emit``) unless it exists, and runs it: the
handler sends N ``token`` events ``{"run": LABEL, "i": i}``, PAUSE seconds
apart, and returns ``{"run": LABEL}``.

MODE ``hold``: print ``ready`` once the job runs, then keep running until a
line (or EOF) on stdin, then close gracefully (the job goes back to pending);
the test may SIGKILL it instead. MODE ``finish``: wait for the job to end,
print ``done``, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

from jobqueue import JobContext, JobQueueService
from jobqueue.errors import DuplicateJobError


async def main(path: str, job_id: str, label: str, n: int, pause: float, mode: str) -> None:
    started = asyncio.Event()
    async with JobQueueService(
        path, persist_events=True, poll_interval=0.05, drain_timeout=0.1, cancel_grace=2.0
    ) as svc:

        @svc.handler("emit")
        async def emit(ctx: JobContext, payload: Any) -> Any:
            started.set()
            for i in range(n):
                await ctx.emit("token", {"run": label, "i": i})
                await asyncio.sleep(pause)
            return {"run": label}

        with contextlib.suppress(DuplicateJobError):  # a later producer: the job is there
            await svc.submit("emit", None, job_id=job_id, max_retries=5)
        if mode == "finish":
            await svc.wait(job_id, timeout=40)
            print("done", flush=True)
            return
        await started.wait()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)


if __name__ == "__main__":
    db, job, label, count, pause, mode = sys.argv[1:7]
    asyncio.run(main(db, job, label, int(count), float(pause), mode))
