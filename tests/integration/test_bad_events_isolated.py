"""One job's bad event cannot hurt another job: it is refused at emit, in that job."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService
from jobqueue.errors import EventError

BAD_TYPES = [None, "", "\ud800", "a\x1bb", 42, "x" * 201]


@pytest.mark.parametrize("bad", BAD_TYPES, ids=repr)
async def test_a_bad_event_type_fails_only_its_own_job(make_service: Any, bad: Any) -> None:
    svc: JobQueueService = await make_service(persist_events=True, poll_interval=0.02)
    refused: list[BaseException] = []

    async def emits_bad(ctx: JobContext, payload: Any) -> str:
        try:
            await ctx.emit(bad, {"x": 1})
        except EventError as exc:
            refused.append(exc)
            raise
        return "emit accepted"

    async def chatty(ctx: JobContext, payload: int) -> int:
        for i in range(20):
            await ctx.emit("token", {"chunk": str(i)})
            await asyncio.sleep(0)
        return payload

    svc.register("bad", emits_bad)
    svc.register("chatty", chatty)
    bad_jobs = [await svc.submit("bad") for _ in range(3)]
    good = await asyncio.gather(*(svc.submit("chatty", i) for i in range(15)))
    await svc.run_until_idle(timeout=20)
    for job in bad_jobs:
        stored = await svc.get(job.id)
        assert stored.status == "failed", stored
        assert stored.error_type == "EventError"
    assert refused
    assert "event type" in str(refused[0])
    for i, job in enumerate(good):
        assert await svc.wait(job.id, timeout=5) == i
        seqs = [e.seq async for e in svc.events(job.id)]
        assert seqs == list(range(1, len(seqs) + 1)), "a gap in another job's events"
        assert len(seqs) == 21  # 20 tokens and the end


def test_send_event_refuses_a_bad_type_in_the_callers_thread() -> None:
    from jobqueue.events import EventManager

    manager = EventManager(asyncio.Queue())
    with pytest.raises(EventError, match="must be a string"):
        manager.send_event(event_type=None, data={})  # type: ignore[arg-type]
