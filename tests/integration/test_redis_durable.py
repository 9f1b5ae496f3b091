"""A durable JobQueueService on the Redis bus (RedisBus) and RemoteJobs, on a real redis-server.

The event log is published with its seqs as stream ids (republishing is
idempotent, ``after=seq`` resumes), records follow every change, a Redis
restart (empty) is followed by a republish from the log, and controls sent
from RemoteJobs are applied by the job's service, also in another process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService
from jobqueue.errors import (
    ControlNotConfirmedError,
    InvalidArgumentError,
    JobCancelledError,
    JobNotFoundError,
)
from tests.redis_server import RedisServer, redis_server

pytest.importorskip("redis.asyncio")
from jobqueue.redis import RedisBus, RemoteJobs

__all__ = ["redis_server"]

ROOT = Path(__file__).resolve().parents[2]


def register(service: JobQueueService) -> None:
    @service.handler("words")
    async def words(ctx: JobContext, payload: dict[str, Any]) -> dict[str, int]:
        for i in range(payload["n"]):
            await ctx.emit("log", {"i": i})
            if payload.get("pause"):
                await asyncio.sleep(payload["pause"])
        return {"sent": payload["n"]}

    @service.handler("loop")
    async def loop(ctx: JobContext, payload: Any) -> str:
        i = 0
        while True:
            await ctx.checkpoint()
            await ctx.emit("log", {"i": i})
            i += 1
            await asyncio.sleep(0.02)


@pytest.fixture
async def node(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Any]:
    """A durable service with a RedisBus, and a RemoteJobs on the same Redis."""
    service = JobQueueService(str(tmp_path / "a.db"), persist_events=True)
    register(service)
    async with service:
        bus = RedisBus(service, redis_server.url)
        await bus.start()
        remote = RemoteJobs(redis_server.url, lease_s=1.0)
        try:
            yield service, bus, remote
        finally:
            await remote.aclose()
            await bus.close()


async def collect(reader: Any, timeout: float = 10.0) -> list[Any]:
    async def go() -> list[Any]:
        return [e async for e in reader]

    return await asyncio.wait_for(go(), timeout)


def numbers(events: list[Any]) -> list[int]:
    return [e.decoded()["data"]["i"] for e in events if e.type == "log"]


async def test_the_log_and_the_record_reach_a_remote_reader(node: Any) -> None:
    service, _bus, remote = node
    job = await service.submit("words", {"n": 50, "pause": 0.001})
    events = await collect(remote.events(job.id))
    assert numbers(events) == list(range(50))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # the log's seqs
    assert events[-2].type == "end"
    assert events[-1].kind == "end"
    assert events[-1].outcome == "completed"
    assert await remote.wait(job.id, timeout=5) == {"sent": 50}
    record = await remote.get(job.id)
    assert record.status == "completed"
    assert record.handler == "words"
    rest = await collect(remote.events(job.id, after=45))
    assert numbers(rest) == [45, 46, 47, 48, 49]


async def test_republishing_is_idempotent(node: Any, redis_server: RedisServer) -> None:
    service, bus, remote = node
    job = await service.submit("words", {"n": 30})
    await remote.wait(job.id, timeout=5)
    await _until(lambda: bus.published(job.id) == 32)  # 30 logs, end, the end entry
    length = await remote._client.xlen(f"langflow:queue:{job.id}")
    bus._republish()  # as after a restart: every recent job again from seq 0
    await _until(lambda: bus.published(job.id) == 32)
    assert await remote._client.xlen(f"langflow:queue:{job.id}") == length == 32


async def test_after_an_empty_restart_the_log_is_republished(
    node: Any, redis_server: RedisServer
) -> None:
    service, bus, remote = node
    job = await service.submit("words", {"n": 200, "pause": 0.005})
    await asyncio.sleep(0.3)
    redis_server.restart()  # everything Redis held is gone
    assert await service.wait(job.id, timeout=20) == {"sent": 200}
    events = await collect(remote.events(job.id), timeout=20)
    assert numbers(events) == list(range(200))  # from the log, nothing lost or doubled
    assert events[-1].outcome == "completed"
    assert bus.stats["republished"] >= 1
    assert (await remote.get(job.id)).status == "completed"


async def test_remote_controls_are_applied_by_the_jobs_service(node: Any) -> None:
    service, _bus, remote = node
    job = await service.submit("loop", None)
    await _until_async(lambda: _status(service, job.id, "running"))
    assert await remote.pause(job.id) == "paused"
    assert await remote.resume(job.id) in ("paused", "pending", "running")  # due now
    await _until_async(lambda: _status(service, job.id, "running"))
    assert await remote.cancel(job.id) == "cancelled"
    with pytest.raises(JobCancelledError):
        await remote.wait(job.id, timeout=5)
    events = await collect(remote.events(job.id))
    assert events[-1].outcome == "cancelled"
    with pytest.raises(InvalidArgumentError, match="refused"):
        await remote.resume(job.id)  # a cancelled job cannot be resumed


async def test_a_control_nobody_answers_is_a_typed_error(node: Any) -> None:
    _service, _bus, remote = node
    with pytest.raises(ControlNotConfirmedError, match="RedisBus"):
        await remote.cancel(str(uuid.uuid4()), timeout=0.5)
    with pytest.raises(JobNotFoundError):
        await remote.get(str(uuid.uuid4()))


async def test_a_bus_needs_the_persisted_log(tmp_path: Path, redis_server: RedisServer) -> None:
    async with JobQueueService(str(tmp_path / "b.db")) as service:
        with pytest.raises(InvalidArgumentError, match="persist_events=True"):
            RedisBus(service, redis_server.url)
    with pytest.raises(InvalidArgumentError, match="persist_events=True"):
        JobQueueService(str(tmp_path / "b.db"), bus=redis_server.url)


async def test_the_bus_option_of_the_service(tmp_path: Path, redis_server: RedisServer) -> None:
    service = JobQueueService(str(tmp_path / "f.db"), persist_events=True, bus=redis_server.url)
    register(service)
    async with service, RemoteJobs(redis_server.url) as remote:
        assert service.bus is not None
        job = await service.submit("words", {"n": 3})
        events = await collect(remote.events(job.id))
        assert numbers(events) == [0, 1, 2]
        assert await remote.wait(job.id, timeout=5) == {"sent": 3}
        late = await service.submit("words", {"n": 2, "pause": 0.2})
    # It ended in the drain, when the closing service no longer reads its file: the
    # bus of the next service on the file publishes it.
    again = JobQueueService(str(tmp_path / "f.db"), persist_events=True, bus=redis_server.url)
    async with again, RemoteJobs(redis_server.url) as remote:
        events = await collect(remote.events(late.id))
        assert numbers(events) == [0, 1]
        assert events[-1].outcome == "completed"
        assert (await remote.get(late.id)).status == "completed"


async def test_remote_jobs_of_a_service_in_another_process(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = ROOT / "tests" / "procs" / "_redis_durable.py"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        redis_server.url,
        str(tmp_path / "c.db"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        if not line.startswith("JOB "):  # it exited: say why
            assert proc.stderr is not None
            raise AssertionError((await proc.stderr.read()).decode()[-2000:])
        job_id = line.split()[1]
        async with RemoteJobs(redis_server.url) as remote:
            seen = []
            async for event in remote.events(job_id):
                seen.append(event)
                if len(seen) == 10:
                    assert await remote.cancel(job_id) == "cancelled"
            assert seen[-1].outcome == "cancelled"
            assert numbers(seen) == list(range(len(numbers(seen))))
            assert (await remote.get(job_id)).status == "cancelled"
        out = (await asyncio.wait_for(proc.stdout.read(), 20)).decode()
        assert "DONE cancelled" in out
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_stream_goes_on_where_the_job_runs_again(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The owner is SIGKILLed; the service that reopens the file reruns the job on the bus."""
    path = str(tmp_path / "d.db")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = ROOT / "tests" / "procs" / "_redis_durable.py"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), redis_server.url, path, stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("JOB "), line
        job_id = line.split()[1]
        async with RemoteJobs(redis_server.url) as remote:
            reader = remote.events(job_id)
            seen = []
            async for event in reader:
                seen.append(event)
                if len(seen) == 10:
                    break
            proc.kill()  # SIGKILL: no end is written
            await proc.wait()
            again = JobQueueService(path, persist_events=True)

            @again.handler("loop")
            async def finish(ctx: JobContext, payload: Any) -> str:
                for i in range(5):
                    await ctx.emit("log", {"i": i})
                return "finished"

            async with again, RedisBus(again, redis_server.url):
                seen += await collect(reader, timeout=20)
                assert await remote.wait(job_id, timeout=10) == "finished"
        assert seen[-1].kind == "end"
        assert seen[-1].outcome == "completed"
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))  # one stream, no gap
        assert [e.decoded()["data"]["i"] for e in seen if e.type == "log"][-5:] == [0, 1, 2, 3, 4]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_job_that_ended_with_no_bus_is_published_by_the_next(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    path = str(tmp_path / "e.db")
    first = JobQueueService(path, persist_events=True)
    register(first)
    async with first:  # no bus attached: nothing published
        job = await first.submit("words", {"n": 5})
        assert await first.wait(job.id, timeout=5) == {"sent": 5}
    later = JobQueueService(path, persist_events=True)  # opened after the job ended
    async with later, RedisBus(later, redis_server.url), RemoteJobs(redis_server.url) as remote:
        events = await collect(remote.events(job.id))
        assert numbers(events) == [0, 1, 2, 3, 4]
        assert events[-1].outcome == "completed"
        assert (await remote.get(job.id)).result == {"sent": 5}


async def _status(service: JobQueueService, job_id: str, status: str) -> bool:
    return (await service.get(job_id)).status == status


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _until_async(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
