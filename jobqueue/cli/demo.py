"""``python -m jobqueue demo``: a short showcase of the durable queue.

Submits a handful of jobs, streams their events to the terminal, cancels one,
and prints the final statuses read back from the database file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from jobqueue.context import JobContext
from jobqueue.service import JobQueueService

__all__ = ["run_demo"]

WORDS = [
    "jobs",
    "survive",
    "crashes",
    "because",
    "every",
    "status",
    "change",
    "is",
    "committed",
    "to",
    "SQLite",
]


async def _demo(db: Path, out: TextIO) -> int:
    start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - start:5.2f}s] {msg}", file=out, flush=True)

    async with JobQueueService(db, concurrency=4) as svc:

        @svc.handler("summarize")
        async def summarize(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
            words = WORDS[: payload["words"]]
            for i, word in enumerate(words, 1):
                ctx.events.on_token(data={"chunk": word + " "})
                ctx.progress(i, len(words))
                await asyncio.sleep(payload["pace"])
            return {"summary": " ".join(words), "words": len(words)}

        @svc.handler("flaky")
        async def flaky(ctx: JobContext, payload: dict[str, Any]) -> str:
            if ctx.attempt < 1:
                raise ConnectionError("upstream hiccup (retried automatically)")
            return "ok on attempt " + str(ctx.attempt + 1)

        say(f"database: {db}")
        jobs = [
            await svc.submit("summarize", {"words": n, "pace": 0.05}, priority=p)
            for n, p in ((6, 0), (10, 5), (4, 1))
        ]
        slow = await svc.submit("summarize", {"words": 11, "pace": 0.5})
        retry = await svc.submit("flaky", {}, max_retries=2)
        say(f"submitted {len(jobs) + 2} jobs")

        async def stream(job_id: str, label: str) -> None:
            text = ""
            async for ev in svc.events(job_id):
                if ev.type == "token":
                    text += ev.data["chunk"]
                    say(f"{label} token  {text.strip()!r}")
                elif ev.type == "progress":
                    pass  # tokens already show progress in this demo
                else:
                    say(f"{label} {ev.type:6} {ev.data}")

        streams = [asyncio.create_task(stream(j.id, f"job{i}")) for i, j in enumerate(jobs, 1)]
        streams.append(asyncio.create_task(stream(slow.id, "slow")))
        await asyncio.sleep(1.0)
        say(f"cancelling the slow job {slow.id[:8]}...")
        await svc.cancel(slow.id)
        await asyncio.gather(*streams)
        say(f"flaky job: {await svc.wait(retry.id)!r}")
        await svc.run_until_idle()

    # Read the final statuses straight from the file, with the standard library.
    say("final statuses read back from the database file:")
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT id, handler, status, attempt, coalesce(result, error_message, reason, '') "
            "FROM jobs ORDER BY seq"
        ).fetchall()
    conn.close()
    for job_id, handler, status, attempt, detail in rows:
        print(
            f"  {job_id[:8]}  {handler:10} {status:10} attempt={attempt}  {detail[:60]}", file=out
        )
    return 0


def run_demo(db: str | None = None, out: TextIO = sys.stdout) -> int:
    """Run the showcase; returns the exit code."""
    if db is not None:
        return asyncio.run(_demo(Path(db), out))
    with tempfile.TemporaryDirectory(prefix="jobqueue-demo-") as tmp:
        return asyncio.run(_demo(Path(tmp) / "demo.db", out))
