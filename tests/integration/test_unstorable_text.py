"""Text SQLite cannot store (lone surrogates) never leaves a job stuck ``running``."""

from __future__ import annotations

import asyncio
from typing import Any

from jobqueue import Cancel, JobContext, JobQueueService


async def test_lone_surrogates_in_errors_and_events_are_stored_escaped(make_service: Any) -> None:
    svc: JobQueueService = await make_service(persist_events=True, poll_interval=0.02)

    async def raises(ctx: JobContext, payload: Any) -> None:
        raise ValueError("bad \ud800 text")

    async def cancels(ctx: JobContext, payload: Any) -> None:
        raise Cancel("no \udfff thanks")

    async def emits(ctx: JobContext, payload: Any) -> str:
        await ctx.emit("token", {"chunk": "half \ud83d of an emoji"})
        return "done"

    for fn in (raises, cancels, emits):
        svc.register(fn.__name__, fn)
    jobs = [await svc.submit(name) for name in ("raises", "cancels", "emits")]
    await asyncio.wait_for(svc.run_until_idle(), 10)
    failed, cancelled, emitted = [await svc.get(j.id) for j in jobs]
    assert failed.status == "failed"
    assert "\\ud800" in (failed.error or "")
    assert cancelled.status == "cancelled"
    assert "\\udfff" in (cancelled.error or "")
    assert emitted.status == "completed"
    events = [e async for e in svc.events(emitted.id)]
    assert events[0].data == {"chunk": "half \ud83d of an emoji"}  # JSON keeps it escaped
