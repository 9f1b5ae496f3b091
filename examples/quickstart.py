"""Durable jobs: register a handler, submit, stream events, wait for the result.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from jobqueue import JobContext, JobFailedError, JobQueueService


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with JobQueueService(Path(tmp) / "jobs.db", concurrency=4) as service:

            @service.handler("summarize")
            async def summarize(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
                words = payload["text"].split()
                for i, word in enumerate(words, 1):
                    ctx.events.on_token(data={"chunk": word})
                    ctx.progress(i, len(words))
                    await ctx.checkpoint()
                return {"words": len(words)}

            @service.handler("explode")
            async def explode(ctx: JobContext, payload: Any) -> None:
                raise ValueError("bad input")

            job = await service.submit("summarize", {"text": "persisted jobs survive crashes"})
            async for event in service.events(job.id):
                print(event.type, event.data)
            print("result:", await service.wait(job.id))

            bad = await service.submit("explode", None, max_retries=1)
            try:
                await service.wait(bad.id)
            except JobFailedError as exc:
                print("failed as expected:", exc)
            print("stats:", {k: v for k, v in service.stats().items() if k != "path"})


if __name__ == "__main__":
    asyncio.run(main())
