"""Langflow 1.13's JobQueueService members, each on an in-memory and a file-backed service.

Every test gets ``JobQueueService()`` and ``JobQueueService("<tmp>/file.db")``
as Langflow code makes them: not started (the Langflow calls work without
``start()``; runs are recorded in the store once it is started), closed at
teardown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobQueueNotFoundError, JobQueueService, TaskStatus
from jobqueue.errors import InvalidArgumentError, ServiceClosedError
from jobqueue.events.manager import EventManager

WAIT = 10.0


@pytest.fixture(params=["memory", "file"])
async def svc(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobQueueService]:
    service = JobQueueService(None if request.param == "memory" else str(tmp_path / "file.db"))
    try:
        yield service
    finally:
        await service.close(drain_timeout=1.0)


async def _until_end(queue: asyncio.Queue[Any]) -> list[tuple[Any, ...]]:
    """Langflow's consumer: items until the end sentinel ``(None, None, t)`` (included)."""
    items = []
    async with asyncio.timeout(WAIT):
        while True:
            item = await queue.get()
            items.append(item)
            if item[0] is None:
                return items


def _bodies(items: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [json.loads(raw) for _, raw, _ in items if raw is not None]


async def _forever() -> None:
    await asyncio.sleep(3600)


async def _until_status(svc: JobQueueService, job_id: str, status: TaskStatus) -> None:
    """Poll the store: the end of a watched task is stored beside it, a moment later."""
    async with asyncio.timeout(WAIT):
        while (await svc.get(job_id)).status is not status:  # noqa: ASYNC110 - a store read
            await asyncio.sleep(0.01)


# -- Langflow's Service interface ----------------------------------------------------------


async def test_service_interface(svc: JobQueueService) -> None:
    assert svc.name == "job_queue_service" == JobQueueService.name
    assert svc.ready is False
    assert svc.is_started() is False
    assert svc._closed is False
    assert svc._cleanup_task is None
    svc.set_ready()
    assert svc.ready is True
    assert svc.is_started() is True
    await svc.runtime.ready()
    assert isinstance(svc._cleanup_task, asyncio.Task)
    await svc.teardown()
    assert svc._closed is True
    assert svc.state == "closed"
    assert svc.is_started() is True  # as Langflow: started once stays started
    svc.start()  # Langflow's start() reopens
    assert svc._closed is False
    svc.create_queue("again")


async def test_at_most_two_project_classes_in_the_mro() -> None:
    project = [c for c in JobQueueService.__mro__ if c.__module__.startswith("jobqueue")]
    assert len(project) == 2, project


async def test_schema_lists_methods_only(svc: JobQueueService) -> None:
    schema = svc.get_schema()
    assert {"create_queue", "start_job", "cleanup_job", "register_job_owner"} <= set(schema)
    assert "teardown" not in schema
    assert "set_ready" not in schema
    assert "locks" not in schema  # a property: not read, so nothing is created
    assert not svc.locks_made
    assert schema["start_job"]["documentation"]
    assert schema["get_job_owner"]["name"] == "get_job_owner"


async def test_snapshot_and_cross_worker_flag(svc: JobQueueService) -> None:
    assert svc.cross_worker_cancel_enabled is False
    svc.create_queue("a")
    snap = svc.metrics_snapshot()
    assert snap == {"backend": "memory" if svc.settings.in_memory else "sqlite", "active_jobs": 1}


# -- _queues --------------------------------------------------------------------------------


async def test_queues_is_a_live_view(svc: JobQueueService) -> None:
    view = svc._queues
    assert len(view) == 0
    queue, manager = svc.create_queue("a")
    svc.create_queue("b")
    assert len(view) == 2
    assert "a" in view
    assert "nope" not in view
    assert list(view) == ["a", "b"]
    assert view["a"] == (queue, manager, None, None) == svc.get_queue_data("a")
    svc.start_job("a", _forever())
    _, _, task, cleanup_time = view["a"]
    assert isinstance(task, asyncio.Task)
    assert cleanup_time is None
    assert view.pop("b")[0] is not queue
    assert "b" not in view
    with pytest.raises(JobQueueNotFoundError):
        svc.get_queue_data("b")
    del view["a"]  # forgotten, task untouched (as removing it from Langflow's dict)
    assert not task.done()
    task.cancel()
    with pytest.raises(KeyError):
        view["a"]


async def test_assigning_registers_an_external_queue_and_its_task(svc: JobQueueService) -> None:
    svc.start()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    manager = svc._create_default_event_manager(queue)
    go = asyncio.Event()

    async def produce() -> str:
        await go.wait()
        manager.on_token(data={"chunk": "hi"})
        return "done"

    task = asyncio.ensure_future(produce())
    svc._queues["ext"] = (queue, manager, task, None)
    assert svc.get_queue_data("ext") == (queue, manager, task, None)
    go.set()
    items = await _until_end(queue)  # the end of a tracked task ends its stream
    assert [b["event"] for b in _bodies(items)] == ["token"]
    assert await task == "done"
    await _until_status(svc, "ext", TaskStatus.COMPLETED)  # recorded like a start_job run
    # the reaper marks, then reaps it like any finished entry
    svc.CLEANUP_GRACE_PERIOD = 0
    await svc._cleanup_old_queues()
    assert svc._queues["ext"][3] is not None
    await svc._cleanup_old_queues()
    assert "ext" not in svc._queues


async def test_cleanup_cancels_an_external_task(svc: JobQueueService) -> None:
    svc.start()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.ensure_future(_forever())
    svc._queues["ext"] = (queue, EventManager(queue), task, None)
    await asyncio.sleep(0)
    await svc.cleanup_job("ext")
    assert task.cancelled()
    assert "ext" not in svc._queues
    assert (await svc.get("ext")).status is TaskStatus.CANCELLED


async def test_langflow_consumer_on_an_external_entry(svc: JobQueueService) -> None:
    """A consumer as Langflow's streaming response: until the sentinel, time in queue."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    manager = EventManager(queue)
    manager.register_event("on_token", "token")
    manager.register_event("on_end", "end")

    async def build() -> None:  # as a Langflow build: it ends its own stream
        for word in ("a", "b"):
            manager.on_token(data={"chunk": word})
            await asyncio.sleep(0.02)
        manager.on_end(data={})
        await queue.put((None, None, time.time()))

    svc._queues["job"] = (queue, manager, asyncio.ensure_future(build()), None)
    main_queue, _, event_task, _ = svc.get_queue_data("job")
    seen: list[tuple[str, str, float]] = []
    async with asyncio.timeout(WAIT):
        while True:
            event_id, value, put_time = await main_queue.get()
            if value is None:
                break
            get_time = time.time()
            body = json.loads(value.decode("utf-8"))
            seen.append((event_id, body["event"], get_time - put_time))
    assert [kind for _, kind, _ in seen] == ["token", "token", "end"]
    assert all(0 <= waited < WAIT for _, _, waited in seen)
    for event_id, kind, _ in seen:
        assert uuid.UUID(event_id.removeprefix(f"{kind}-")).version == 4
    assert event_task is not None
    await event_task


async def test_assigning_a_wrong_value_is_refused(svc: JobQueueService) -> None:
    with pytest.raises(ValueError, match="cleanup_time"):
        svc._queues["x"] = (asyncio.Queue(),)  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"asyncio\.Task"):
        svc._queues["x"] = (asyncio.Queue(), None, "not a task", None)  # type: ignore[assignment]
    assert "x" not in svc._queues


# -- _closed ----------------------------------------------------------------------------------


async def test_closed_flag_closes_and_reopens(svc: JobQueueService) -> None:
    svc.create_queue("a")
    svc._closed = True
    assert svc._closed is True
    with pytest.raises(RuntimeError, match="closed") as ei:
        svc.create_queue("b")
    assert isinstance(ei.value, ServiceClosedError)
    coro = _forever()
    with pytest.raises(RuntimeError, match="closed"):
        svc.start_job("a", coro)
    assert coro.cr_frame is None  # closed, never awaited
    with pytest.raises(RuntimeError, match="closed for job_id: a"):
        svc.get_queue_data("a")
    svc._closed = False
    svc.create_queue("b")
    svc.start_job("b", _forever())
    assert svc.get_queue_data("b")[2] is not None


async def test_closed_after_stop_and_reopened_by_the_flag(svc: JobQueueService) -> None:
    svc.start()
    await svc.stop()
    assert svc._closed is True
    with pytest.raises(RuntimeError, match="closed"):
        svc.create_queue("a")
    svc._closed = False  # the Langflow calls take work again
    queue, manager = svc.create_queue("a")

    async def one() -> None:
        manager.on_end(data={})

    svc.start_job("a", one())
    assert (await _until_end(queue))[-1][0] is None
    assert svc.state == "new"  # runs as Langflow's, not recorded, until start()
    svc.start()
    await svc.runtime.ready()
    assert svc.state == "open"


async def test_start_job_before_start_opens_nothing(svc: JobQueueService) -> None:
    queue, manager = svc.create_queue("a")

    async def work() -> str:
        manager.on_token(data={"chunk": "x"})
        return "ok"

    svc.start_job("a", work())
    assert await svc.get_queue_data("a")[2] == "ok"  # type: ignore[misc]
    assert _bodies(await _until_end(queue)) == [{"event": "token", "data": {"chunk": "x"}}]
    assert svc.state == "new"  # no store opened, no thread: nothing to close
    assert svc.runtime.db is None
    svc.start()  # from now on runs are recorded
    queue, manager = svc.create_queue("b")
    svc.start_job("b", work())
    await _until_end(queue)
    assert (await svc.get("b")).status is TaskStatus.COMPLETED


# -- the grace period and the reaper pass ----------------------------------------------------


async def test_grace_period_is_the_retention_knob(tmp_path: Path) -> None:
    svc = JobQueueService(retention=12.5)
    assert svc.CLEANUP_GRACE_PERIOD == 12.5 == svc.registry.retention
    assert JobQueueService().CLEANUP_GRACE_PERIOD == 300
    svc.CLEANUP_GRACE_PERIOD = 0
    assert svc.registry.retention == 0
    for bad in (-1, float("nan"), "5", True):
        with pytest.raises(InvalidArgumentError, match="CLEANUP_GRACE_PERIOD"):
            svc.CLEANUP_GRACE_PERIOD = bad  # type: ignore[assignment]
    await svc.close()


async def test_cleanup_old_queues_marks_then_reaps(svc: JobQueueService) -> None:
    svc.create_queue("orphan")
    _queue, manager = svc.create_queue("done")
    svc.create_queue("running")

    async def quick() -> None:
        manager.on_token(data={"chunk": "unread"})

    svc.start_job("done", quick())
    svc.start_job("running", _forever())
    await svc.get_queue_data("done")[2]
    before = time.monotonic()
    await svc._cleanup_old_queues()
    assert before <= svc._queues["orphan"][3] <= time.monotonic()  # never got a task: marked
    assert svc._queues["done"][3] is not None
    assert svc._queues["running"][3] is None
    await svc._cleanup_old_queues()
    assert set(svc._queues) == {"orphan", "done", "running"}  # within the grace period
    svc.CLEANUP_GRACE_PERIOD = 0
    await svc._cleanup_old_queues()
    assert set(svc._queues) == {"running"}


async def test_default_event_manager(svc: JobQueueService) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    manager = svc._create_default_event_manager(queue)
    assert manager.queue is queue
    assert "on_log" in manager.events
    assert asyncio.iscoroutinefunction(svc._periodic_cleanup)


# -- ownership ------------------------------------------------------------------------------


async def test_ownership(svc: JobQueueService) -> None:
    owner = uuid.uuid4()
    svc.create_queue("a")
    assert await svc.get_job_owner("a") is None
    await svc.register_job_owner("a", owner)
    await svc.register_public_job("a")
    assert await svc.get_job_owner("a") == owner
    assert svc.is_public_job("a")
    assert await svc.is_public_job_async("a")
    assert svc._job_owners == {"a": owner}
    assert svc._public_jobs == {"a"}
    await svc.cleanup_job("a")
    assert await svc.get_job_owner("a") is None
    assert not svc.is_public_job("a")


async def test_reaped_jobs_forget_their_owner(svc: JobQueueService) -> None:
    svc.create_queue("a")
    await svc.register_job_owner("a", uuid.uuid4())
    svc.CLEANUP_GRACE_PERIOD = 0
    await svc._cleanup_old_queues()
    await svc._cleanup_old_queues()
    assert "a" not in svc._queues
    assert await svc.get_job_owner("a") is None


async def test_cancel_job(svc: JobQueueService) -> None:
    svc.create_queue("a")
    svc.start_job("a", _forever())
    task = svc.get_queue_data("a")[2]
    await svc.cancel_job("a")
    assert task is not None
    assert task.cancelled()
    assert "a" not in svc._queues


# -- messages -------------------------------------------------------------------------------


async def test_start_job_unknown_id_message(svc: JobQueueService) -> None:
    svc._closed = True  # the unknown id is checked first
    coro = _forever()
    with pytest.raises(ValueError, match=r"^No queue found for job_id ghost; call create_queue"):
        svc.start_job("ghost", coro)
    assert coro.cr_frame is None
    svc._closed = False
    with pytest.raises(JobQueueNotFoundError, match=r"^Job queue not found for job_id: x"):
        svc.get_queue_data("x")


# -- behaviour ------------------------------------------------------------------------------


async def test_stop_cancels_start_job_tasks_at_once(
    svc: JobQueueService, caplog: pytest.LogCaptureFixture
) -> None:
    svc.start()
    _queue, manager = svc.create_queue("a")
    started = asyncio.Event()

    async def work() -> None:
        manager.on_token(data={"chunk": "x"})
        started.set()
        await asyncio.sleep(3600)

    svc.start_job("a", work())
    await asyncio.wait_for(started.wait(), WAIT)
    task = svc.get_queue_data("a")[2]
    assert svc.drain_timeout == 10.0
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="jobqueue"):
        await svc.stop()
    assert time.monotonic() - t0 < 2.0  # not the 10 s drain of durable jobs
    assert task is not None
    assert task.cancelled()
    assert len(svc._queues) == 0
    assert not [r for r in caplog.records if "could not record" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    if not svc.settings.in_memory:  # the cancellation was stored before the store closed
        async with JobQueueService(svc.path) as again:
            assert (await again.get("a")).status is TaskStatus.CANCELLED


async def test_replaced_task_is_cancelled_within_one_iteration(svc: JobQueueService) -> None:
    queue, manager = svc.create_queue("a")
    first_running = asyncio.Event()

    async def first() -> None:
        first_running.set()
        await asyncio.sleep(3600)

    async def second() -> str:
        manager.on_end(data={})
        return "second"

    svc.start_job("a", first())
    await asyncio.wait_for(first_running.wait(), WAIT)  # it runs: it is not just scheduled
    old = svc.get_queue_data("a")[2]
    svc.start_job("a", second())
    new = svc.get_queue_data("a")[2]
    assert old is not None
    assert new is not None
    assert old is not new
    await asyncio.sleep(0)
    assert old.cancelled()
    assert await asyncio.wait_for(new, WAIT) == "second"
    assert _bodies(await _until_end(queue))[-1]["event"] == "end"


async def test_replacing_a_task_that_never_ran(svc: JobQueueService) -> None:
    svc.create_queue("a")
    svc.start_job("a", _forever())
    old = svc.get_queue_data("a")[2]
    svc.start_job("a", _forever())
    await asyncio.sleep(0)
    assert old is not None
    assert old.cancelled()


async def test_stop_on_a_service_never_started_clears_queues(svc: JobQueueService) -> None:
    svc.create_queue("a")
    svc.create_queue("b")
    await svc.stop()
    assert len(svc._queues) == 0
    assert svc._closed is True


async def test_unhandled_exception_sends_error_and_end_before_the_task_ends(
    svc: JobQueueService,
) -> None:
    svc.start()
    queue, manager = svc.create_queue("a")
    at_end: list[list[tuple[Any, ...]]] = []

    async def boom() -> None:
        manager.on_token(data={"chunk": "x"})
        raise RuntimeError("kaput")

    svc.start_job("a", boom())
    task = svc.get_queue_data("a")[2]
    assert task is not None
    task.add_done_callback(lambda _: at_end.append(list(queue._queue)))  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="kaput"):
        await task
    items = at_end[0]
    assert items[-1][:2] == (None, None)
    assert _bodies(items) == [
        {"event": "token", "data": {"chunk": "x"}},
        {"event": "error", "data": {"error": "kaput"}},
    ]
    record = await svc.get("a")
    assert record.status is TaskStatus.FAILED
    assert "kaput" in (record.error or "")


# -- the one divergence: cleanup_job does not raise the task's CancelledError -----------------


async def _cancel_flow_build(service: JobQueueService, job_id: str) -> bool:
    """The logic of Langflow's cancel endpoint, written here: cancel, then judge by the task."""
    _, _, event_task, _ = service.get_queue_data(job_id)
    if event_task is None:
        return False
    if event_task.done():
        return True
    try:
        await service.cancel_job(job_id)
    except asyncio.CancelledError:
        if event_task.cancelled():
            return True
        raise
    return event_task.cancelled()


async def test_cleanup_of_a_running_task_returns_and_cancel_reports_success(
    svc: JobQueueService,
) -> None:
    svc.set_ready()  # as Langflow's service manager does at startup
    await svc.runtime.ready()
    svc.create_queue("a")
    svc.start_job("a", _forever())
    task = svc.get_queue_data("a")[2]
    await svc.cleanup_job("a")  # returns: the caller is not the one cancelled
    assert task is not None
    assert task.cancelled()
    svc.create_queue("b")
    svc.start_job("b", _forever())
    await asyncio.sleep(0.01)
    assert await _cancel_flow_build(svc, "b") is True
    assert "b" not in svc._queues
    assert (await svc.get("b")).status is TaskStatus.CANCELLED
