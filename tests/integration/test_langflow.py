"""The Langflow-compatible layer, end to end on a real database file."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jobqueue import JobQueueNotFoundError, JobQueueService, TaskStatus
from jobqueue.errors import QueueExistsError, ServiceClosedError

ROOT = Path(__file__).resolve().parents[2]


async def _drain(queue: asyncio.Queue, timeout: float = 5.0) -> list[tuple]:
    """Read items up to and including the end sentinel."""
    items = []
    while True:
        item = await asyncio.wait_for(queue.get(), timeout)
        items.append(item)
        if item[0] is None:
            return items


def _events(items: list[tuple]) -> list[dict]:
    return [json.loads(raw) for _, raw, _ in items if raw is not None]


async def test_whole_flow(make_service) -> None:
    svc = await make_service()
    queue, em = svc.create_queue("flow")

    async def producer() -> str:
        for word in ("hello", " ", "world"):
            em.on_token(data={"chunk": word})
            await asyncio.sleep(0.01)
        em.on_end(data={"text": "hello world"})
        return "done"

    svc.start_job("flow", producer())
    q2, em2, task, cleanup_at = svc.get_queue_data("flow")
    assert q2 is queue
    assert em2 is em
    assert isinstance(task, asyncio.Task)
    assert cleanup_at is None

    received = []
    waits = []
    while True:
        event_id, raw, put_time = await asyncio.wait_for(queue.get(), 5)
        get_time = time.time()
        if event_id is None:
            assert raw is None
            break
        waits.append(get_time - put_time)
        received.append(json.loads(raw.decode()))
    assert [e["event"] for e in received] == ["token", "token", "token", "end"]
    assert "".join(e["data"]["chunk"] for e in received[:3]) == "hello world"
    assert received[-1]["data"] == {"text": "hello world"}
    assert all(0 <= w < 5 for w in waits)
    assert await task == "done"

    rec = await svc.get("flow")
    assert rec.status is TaskStatus.COMPLETED
    assert rec.handler is None
    assert rec.started_at is not None
    assert rec.completed_at is not None
    assert rec.completed_at >= rec.started_at
    await svc.cleanup_job("flow")
    with pytest.raises(JobQueueNotFoundError):
        svc.get_queue_data("flow")


async def test_cleanup_cancels_midway(make_service) -> None:
    svc = await make_service()
    _queue, em = svc.create_queue("forever")
    started = asyncio.Event()

    async def producer() -> None:
        em.on_token(data={"chunk": "a"})
        started.set()
        await asyncio.sleep(3600)

    svc.start_job("forever", producer())
    await asyncio.wait_for(started.wait(), 5)
    _, _, task, _ = svc.get_queue_data("forever")
    await svc.cleanup_job("forever")  # must not raise CancelledError
    assert task.done()
    assert task.cancelled()
    with pytest.raises(JobQueueNotFoundError):
        svc.get_queue_data("forever")
    rec = await svc.get("forever")
    assert rec.status is TaskStatus.CANCELLED
    # the caller itself is not cancelled: it keeps running
    await asyncio.sleep(0)


async def test_blocked_consumer_gets_sentinel_on_cleanup(make_service) -> None:
    svc = await make_service()
    queue, _em = svc.create_queue("quiet")
    svc.start_job("quiet", asyncio.sleep(3600))
    consumer = asyncio.create_task(queue.get())
    await asyncio.sleep(0.05)
    assert not consumer.done()
    await svc.cleanup_job("quiet")
    item = await asyncio.wait_for(consumer, 2)
    assert item[:2] == (None, None)


async def test_unknown_ids(make_service) -> None:
    svc = await make_service()
    with pytest.raises(JobQueueNotFoundError) as ei:
        svc.get_queue_data("ghost")
    assert "ghost" in str(ei.value)
    coro = asyncio.sleep(0)
    with pytest.raises(ValueError, match="ghost"):
        svc.start_job("ghost", coro)
    assert coro.cr_frame is None  # closed, so no "never awaited" warning
    await svc.cleanup_job("ghost")  # no error
    assert await svc.list() == []


async def test_duplicate_create_queue(make_service) -> None:
    svc = await make_service()
    q, _ = svc.create_queue("dup")
    with pytest.raises(QueueExistsError) as ei:
        svc.create_queue("dup")
    assert isinstance(ei.value, ValueError)
    assert svc.get_queue_data("dup")[0] is q  # the first one is untouched


async def test_restart_job(make_service) -> None:
    svc = await make_service()
    queue, em = svc.create_queue("re")
    first_finished = []
    first_started = asyncio.Event()

    async def first() -> None:
        em.on_token(data={"chunk": "first"})
        first_started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)  # slow to die: the second must still wait
            first_finished.append(time.monotonic())
            em.on_message(data="first-finally")

    async def second() -> str:
        em.on_token(data={"chunk": "second", "at": time.monotonic()})
        em.on_end(data={"ok": True})
        return "second"

    svc.start_job("re", first())
    await asyncio.wait_for(first_started.wait(), 5)
    first_task = svc.get_queue_data("re")[2]
    rec1 = await svc.get("re")
    svc.start_job("re", second())
    second_task = svc.get_queue_data("re")[2]
    assert second_task is not first_task
    assert await asyncio.wait_for(second_task, 5) == "second"
    assert first_task.cancelled()

    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    bodies = _events(items)
    order = [b["data"] if b["event"] == "add_message" else b["data"].get("chunk") for b in bodies]
    assert order[:3] == ["first", "first-finally", "second"], order
    second_at = bodies[2]["data"]["at"]
    assert first_finished[0] <= second_at
    assert bodies[-1] == {"event": "end", "data": {"ok": True}}
    rec2 = await svc.get("re")
    assert rec2.status is TaskStatus.COMPLETED
    assert rec2.attempt == rec1.attempt + 1


async def test_restart_keeps_one_stream(make_service) -> None:
    """A consumer reading across a restart sees the second run's events before the end."""
    svc = await make_service()
    queue, em = svc.create_queue("re2")
    go = asyncio.Event()

    async def first() -> None:
        em.on_token(data={"chunk": "1"})
        go.set()
        await asyncio.sleep(3600)

    async def second() -> None:
        em.on_token(data={"chunk": "2"})
        em.on_end(data={})

    svc.start_job("re2", first())
    await go.wait()
    svc.start_job("re2", second())
    items = await _drain(queue)
    assert [b["data"].get("chunk") for b in _events(items)] == ["1", "2", None]


async def test_closed_service(make_service) -> None:
    svc = await make_service()
    svc.create_queue("before")
    await svc.stop()
    with pytest.raises(RuntimeError):
        svc.create_queue("after")
    with pytest.raises(ServiceClosedError):
        svc.get_queue_data("before")
    coro = asyncio.sleep(0)
    # stop() forgot the queue; the unknown id is checked before the closed state, as in Langflow
    with pytest.raises(ValueError, match="No queue found for job_id before"):
        svc.start_job("before", coro)
    assert coro.cr_frame is None


async def test_failing_coroutine(make_service) -> None:
    svc = await make_service()
    queue, em = svc.create_queue("boom")

    async def bad() -> None:
        em.on_token(data={"chunk": "x"})
        raise RuntimeError("kaput")

    svc.start_job("boom", bad())
    items = await _drain(queue)
    assert items[-1][:2] == (None, None)
    task = svc.get_queue_data("boom")[2]
    with pytest.raises(RuntimeError, match="kaput"):
        await task
    rec = await svc.get("boom")
    assert rec.status is TaskStatus.FAILED
    assert "kaput" in rec.error
    assert rec.error_type == "RuntimeError"


async def test_reaper(make_service) -> None:
    svc = await make_service(cleanup_interval=0.05, retention=0.3)
    q1, e1 = svc.create_queue("consumed")
    q2, e2 = svc.create_queue("unread")

    async def work(em) -> None:
        em.on_end(data={})

    svc.start_job("consumed", work(e1))
    svc.start_job("unread", work(e2))
    await _drain(q1)
    await asyncio.sleep(0.15)
    with pytest.raises(JobQueueNotFoundError):
        svc.get_queue_data("consumed")
    assert svc.get_queue_data("unread")[0] is q2  # still within retention
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            svc.get_queue_data("unread")
        except JobQueueNotFoundError:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("unread job was never reaped")
    assert (await svc.get("unread")).status is TaskStatus.COMPLETED  # the record stays


async def test_start_stop_idempotent(db_path) -> None:
    svc = JobQueueService(str(db_path))
    svc.start()
    svc.start()
    q, em = svc.create_queue("a")
    svc.start_job("a", _end(em))
    assert (await _drain(q))[-1][0] is None
    await svc.stop()
    await svc.stop()
    with pytest.raises(RuntimeError):
        svc.create_queue("b")
    assert _no_extra_threads()


async def _end(em) -> None:
    em.on_end(data={})


def _no_extra_threads() -> bool:
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    return not [t for t in others if not t.daemon and t.is_alive()]


async def test_no_thread_left_after_async_with(db_path) -> None:
    async with JobQueueService(str(db_path)) as svc:
        q, em = svc.create_queue("t")
        svc.start_job("t", _end(em))
        await _drain(q)
        assert len(threading.enumerate()) > 1  # the db threads exist while open
    assert _no_extra_threads(), threading.enumerate()


def test_interpreter_exits_cleanly(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from jobqueue import JobQueueService

        async def main():
            async with JobQueueService(sys.argv[1], drain_timeout=0.2) as svc:
                q, em = svc.create_queue("x")
                async def p():
                    em.on_token(data={"chunk": "a"})
                    await asyncio.sleep(3600)
                svc.start_job("x", p())
                await asyncio.sleep(0.05)
            print("closed")

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "x.db")],
        capture_output=True,
        timeout=20,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == "closed"
    assert time.monotonic() - t0 < 8
