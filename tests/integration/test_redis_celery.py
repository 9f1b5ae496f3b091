"""Celery tasks on the Redis bus: a real worker subprocess (threads pool), a real redis-server.

A handler running on the worker publishes its events to the task's stream;
``TaskService.events`` streams them in this process or in another one, in
order, each once, ending with the task's outcome: ``completed``, ``failed``,
``cancelled`` after a revoke (written by the worker, or by the client when the
task never ran). Seqs go on across a Celery retry.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from _redis_celery import HERE, ROOT, BusWorker, make_backend

from jobqueue.errors import InvalidArgumentError, TaskNotFoundError
from jobqueue.events.manager import Event
from jobqueue.status import TaskStatus
from jobqueue.tasks import TaskService
from tests.redis_server import RedisServer, free_port, redis_server

pytest.importorskip("celery", reason="Celery is not installed: pip install -e '.[celery]'")
import redis

from jobqueue.redis import Keys, RemoteJobs
from jobqueue.redis.tasks import TaskEvents, end_task_stream

__all__ = ["redis_server"]


# Slow (a Celery worker process and a redis-server): in the whole suite (3.11), not the quick one.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Celery worker (threads pool) for the module, on the module's redis-server."""
    proc = BusWorker(redis_server.url, tmp_path_factory.mktemp("bus-celery") / "worker.log")
    backend = make_backend(redis_server.url)
    try:
        proc.wait_ready(backend)
        yield proc
    finally:
        proc.stop()
        backend._close()


@pytest.fixture
async def tasks(redis_server: RedisServer, worker: Any) -> AsyncIterator[TaskService]:
    async with TaskService(make_backend(redis_server.url)) as service:
        yield service


async def read_all(tasks: TaskService, task_id: str, after: int | None = None) -> list[Event]:
    async with asyncio.timeout(60):
        return [event async for event in tasks.events(task_id, after=after)]


def assert_contiguous(events: list[Event], first: int = 1) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(first, first + len(events))), seqs
    assert [e.id for e in events] == [f"{e.type}-{e.seq}" for e in events]


async def test_worker_streams_progress_in_order_exactly_once(tasks: TaskService) -> None:
    n = 200
    task_id = await tasks.launch_task("count", {"n": n, "pause": 0.002})
    events = await read_all(tasks, task_id)
    assert_contiguous(events)
    body, end = events[:-1], events[-1]
    assert len(body) == n
    assert [e.type for e in body] == ["log" if i % 2 else "progress" for i in range(n)]
    assert [e.data.get("i", e.data.get("done")) for e in body] == list(range(n))
    assert body[0].data == {"done": 0, "total": n, "message": "step 0"}
    assert (end.type, end.data) == ("end", {"status": "completed", "result": {"n": n}})
    assert await tasks.wait_task(task_id, 10) == {"n": n}
    # A second reader, resuming after seq 150, gets the rest, the same ids.
    rest = await read_all(tasks, task_id, after=150)
    assert [e.id for e in rest] == [e.id for e in events[150:]]


async def test_reader_in_another_process(tasks: TaskService, redis_server: RedisServer) -> None:
    task_id = uuid.uuid4().hex
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "_redis_celery_reader.py"),
        redis_server.url,
        task_id,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        # The reader starts before the task exists: it waits for it, it does not say "missing".
        await tasks.launch_task("count", {"n": 100, "pause": 0.005}, task_id=task_id)
        async with asyncio.timeout(60):
            out, err = await reader.communicate()
    finally:
        if reader.returncode is None:
            reader.kill()
            await reader.wait()
    assert reader.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "READY"
    got = [json.loads(line) for line in lines[1:]]
    assert [g["seq"] for g in got] == list(range(1, 102))
    assert [g["data"].get("i", g["data"].get("done")) for g in got[:-1]] == list(range(100))
    assert got[-1] == {
        "seq": 101,
        "type": "end",
        "data": {"status": "completed", "result": {"n": 100}},
    }


async def test_bus_readers_see_the_task_as_a_job(
    tasks: TaskService, redis_server: RedisServer
) -> None:
    """The stream is RedisBus's format: RemoteJobs reads it, ending with the outcome."""
    task_id = await tasks.launch_task("count", {"n": 10})
    async with RemoteJobs(redis_server.url) as remote:
        async with asyncio.timeout(30):
            items = [item async for item in remote.events(task_id)]
    assert [i.kind for i in items] == ["event"] * 11 + ["end"]
    assert [i.seq for i in items] == list(range(1, 13))
    assert [i.type for i in items[:3]] == ["progress", "log", "progress"]
    assert items[-2].decoded()["data"]["status"] == "completed"
    assert items[-1].outcome == "completed"


async def test_failure_ends_the_stream_failed(
    tasks: TaskService, redis_server: RedisServer
) -> None:
    task_id = await tasks.launch_task("count_then_boom", {"n": 5})
    events = await read_all(tasks, task_id)
    assert_contiguous(events)
    assert [e.data["i"] for e in events[:-1]] == list(range(5))
    assert events[-1].type == "error"
    assert events[-1].data == {
        "status": "failed",
        "error": "ValueError: boom after 5",
        "reason": "error",
    }
    async with RemoteJobs(redis_server.url) as remote:
        ends = [i async for i in remote.events(task_id, after=6)]
    assert [(i.kind, i.outcome) for i in ends] == [("end", "failed")]


async def test_revoke_ends_the_stream_cancelled(
    tasks: TaskService, redis_server: RedisServer
) -> None:
    task_id = await tasks.launch_task("count_forever", None)
    events: list[Event] = []
    async with asyncio.timeout(60):
        async for event in tasks.events(task_id):
            events.append(event)
            if len(events) == 20:
                info = await tasks.revoke_task(task_id)
                assert info.status.value == "cancelled"
    assert_contiguous(events)
    assert [e.data["i"] for e in events[:-1]] == list(range(len(events) - 1))
    assert events[-1].type == "end"
    assert events[-1].data == {"status": "cancelled", "reason": "cancelled"}
    async with RemoteJobs(redis_server.url) as remote:
        ends = [i async for i in remote.events(task_id, after=events[-1].seq)]
    assert [(i.kind, i.outcome) for i in ends] == [("end", "cancelled")]


async def test_revoke_of_a_task_no_worker_took(redis_server: RedisServer, worker: Any) -> None:
    """Nobody consumes this queue: the client records the revoke and ends the stream."""
    async with TaskService(make_backend(redis_server.url, queue="nobody")) as tasks:
        task_id = await tasks.launch_task("count", {"n": 3})
        await tasks.revoke_task(task_id)
        events = await read_all(tasks, task_id)
    assert [(e.seq, e.type, e.data) for e in events] == [
        (1, "end", {"status": "cancelled", "reason": "cancelled"})
    ]
    async with RemoteJobs(redis_server.url) as remote:  # written to the bus, not made up
        items = [i async for i in remote.events(task_id)]
    assert [(i.kind, i.seq, i.outcome) for i in items] == [
        ("event", 1, None),
        ("end", 2, "cancelled"),
    ]


async def test_a_task_revoked_by_celery_itself(redis_server: RedisServer, worker: Any) -> None:
    """Celery's own revoke: the worker records REVOKED; ``revoke_task`` then ends the stream."""
    async with TaskService(make_backend(redis_server.url, queue="nobody")) as tasks:
        task_id = await tasks.launch_task("count", {"n": 3})
        backend: Any = tasks.backend
        await asyncio.to_thread(backend.app.control.revoke, task_id)
        # The worker hears the broadcast and records REVOKED.
        assert (await backend.wait_task(task_id, 30)).state == "REVOKED"
        assert (await tasks.revoke_task(task_id)).status.value == "cancelled"
    async with RemoteJobs(redis_server.url) as remote:
        items = [i async for i in remote.events(task_id)]
    assert [(i.kind, i.seq, i.outcome) for i in items] == [
        ("event", 1, None),
        ("end", 2, "cancelled"),
    ]


async def test_a_revoke_the_worker_is_late_for_ends_the_stream_once(
    redis_server: RedisServer, worker: Any
) -> None:
    """The client records the revoke and ends the stream; the worker's later events are refused."""
    async with TaskService(make_backend(redis_server.url, revoke_wait=0.2)) as tasks:
        task_id = await tasks.launch_task("stubborn", None)
        events: list[Event] = []
        async with asyncio.timeout(60):
            async for event in tasks.events(task_id):
                events.append(event)
                if len(events) == 10:
                    assert (await tasks.revoke_task(task_id)).status.value == "cancelled"
        assert_contiguous(events)
        assert events[-1].data == {"status": "cancelled", "reason": "cancelled"}
        assert [e.data["i"] for e in events[:-1]] == list(range(len(events) - 1))
        await asyncio.sleep(1.5)  # the worker's 100 late events are sent and refused meanwhile
        async with RemoteJobs(redis_server.url) as remote:
            items = [i async for i in remote.events(task_id)]
        assert [i.seq for i in items] == [e.seq for e in events] + [events[-1].seq + 1]
        assert (items[-1].kind, items[-1].outcome) == ("end", "cancelled")


async def test_seqs_go_on_across_a_celery_retry(tasks: TaskService) -> None:
    # Try 0 sends 4 events then overruns its 1 s soft limit; Celery retries; try 1 finishes.
    task_id = await tasks.launch_task("count_slow_until", {"n": 4, "fast_on": 1}, time_limit=1.0)
    events = await read_all(tasks, task_id)
    assert_contiguous(events)
    assert [(e.data["attempt"], e.data["i"]) for e in events[:-1]] == [
        (a, i) for a in (0, 1) for i in range(4)
    ]
    assert events[-1].data == {"status": "completed", "result": {"attempt": 1}}
    # The stream ends just before Celery stores the result: wait for that.
    assert await tasks.wait_task(task_id, 10) == {"attempt": 1}


async def test_time_limit_on_every_try_fails_with_reason_timeout(tasks: TaskService) -> None:
    task_id = await tasks.launch_task("count_slow_until", {"n": 2, "fast_on": 9}, time_limit=0.5)
    events = await read_all(tasks, task_id)
    assert_contiguous(events)
    assert [e.data["attempt"] for e in events[:-1]] == [0, 0, 1, 1, 2, 2]
    end = events[-1]
    assert (end.type, end.data["status"], end.data["reason"]) == ("error", "failed", "timeout")
    assert end.data["error"].startswith("SoftTimeLimitExceeded: ")


async def test_events_need_a_bus_and_a_known_task(redis_server: RedisServer) -> None:
    async with TaskService(make_backend(redis_server.url, bus=None)) as tasks:
        with pytest.raises(InvalidArgumentError, match="bus="):
            await anext(tasks.events(uuid.uuid4().hex))
    async with TaskService(make_backend(redis_server.url)) as tasks:
        with pytest.raises(TaskNotFoundError):
            await anext(tasks.events(uuid.uuid4().hex))
        with pytest.raises(InvalidArgumentError, match="after"):
            tasks.events("x", after=-1)
    with pytest.raises(InvalidArgumentError, match="Redis URL"):
        make_backend(redis_server.url, bus="http://example.com")


async def test_publisher_numbers_on_and_stops_at_the_end(redis_server: RedisServer) -> None:
    """The worker side alone: tries number on from the stream; nothing goes after the end."""
    task_id = uuid.uuid4().hex
    for attempt in range(2):
        async with TaskEvents(redis_server.url, task_id) as events:
            manager = events.manager(task_id)
            assert events.first_seq == 3 * attempt
            for i in range(3):
                await manager.asend("log", {"i": i, "attempt": attempt})
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert end_task_stream(client, task_id, TaskStatus.COMPLETED, result=7)
        assert not end_task_stream(client, task_id, TaskStatus.FAILED, error="late")
        async with TaskEvents(redis_server.url, task_id) as late:  # a try after the end
            late.manager(task_id).on_log(data={"i": 99})
        assert late.ended
        assert late.stats["dropped"] == 1
        ids = [raw.decode() for raw, _ in client.xrange(Keys(task_id).stream)]
        assert ids == [f"0-{n}" for n in range(1, 9)]
    finally:
        client.close()
    async with RemoteJobs(redis_server.url) as remote:
        items = [i async for i in remote.events(task_id)]
    assert [i.decoded()["data"].get("attempt") for i in items[:6]] == [0, 0, 0, 1, 1, 1]
    assert items[6].decoded() == {"event": "end", "data": {"status": "completed", "result": 7}}
    assert (items[7].kind, items[7].outcome) == ("end", "completed")


async def test_publisher_without_redis_drops_events_not_the_run() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    async with TaskEvents(url, "t", outage_s=1.0) as events:
        manager = events.manager("t")
        await manager.asend("log", {"i": 0})
        manager.on_progress(data={"done": 1})
    assert events.ended
    assert events.stats["dropped"] == 2


async def test_taskservice_events_in_process(make_service: Any) -> None:
    service = await make_service(persist_events=True)

    @service.handler("two")
    async def two(ctx: Any, payload: Any) -> str:
        await ctx.emit("log", {"i": 0})
        await ctx.emit("log", {"i": 1})
        return "ok"

    tasks = TaskService(service)
    task_id = await tasks.launch_task("two")
    events = await read_all(tasks, task_id)
    assert [(e.seq, e.type) for e in events] == [(1, "log"), (2, "log"), (3, "end")]
    assert [e.id for e in await read_all(tasks, task_id, after=1)] == ["log-2", "end-3"]
