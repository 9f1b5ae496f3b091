"""QueueRegistry alone: create/ensure/data/cleanup, what is due when, reap, the persisted log."""

from __future__ import annotations

import asyncio
import json

import pytest
from _parts import WAIT, insert, new_job

from jobqueue.errors import JobQueueNotFoundError, QueueExistsError
from jobqueue.events.manager import EventQueue
from jobqueue.events.registry import QueueRegistry
from jobqueue.store.connection import Database
from jobqueue.store.eventlog import read_after
from jobqueue.store.writer import Writer

RETENTION = 10.0


@pytest.fixture
def registry() -> QueueRegistry:
    return QueueRegistry(queue_size=5, retention=RETENTION)


def test_create(registry: QueueRegistry) -> None:
    entry = registry.create("j")
    assert isinstance(entry.queue, EventQueue)
    assert entry.queue.maxsize == 5
    assert entry.manager.queue is entry.queue
    assert entry.langflow
    assert entry.task is None
    assert entry.cleanup_at is None
    assert registry.get("j") is entry
    assert len(registry) == 1
    with pytest.raises(QueueExistsError):
        registry.create("j")
    assert registry.get("j") is entry


def test_ensure(registry: QueueRegistry) -> None:
    entry = registry.ensure("d")
    assert not entry.langflow
    assert registry.ensure("d") is entry
    langflow = registry.create("l")
    assert registry.ensure("l") is langflow
    assert len(registry) == 2
    assert registry.get("nope") is None


def test_data(registry: QueueRegistry) -> None:
    entry = registry.create("j")
    assert registry.data("j") == (entry.queue, entry.manager, None, None)
    with pytest.raises(JobQueueNotFoundError):
        registry.data("nope")
    with pytest.raises(ValueError, match="nope"):  # Langflow catches ValueError
        registry.data("nope")


def test_strict_events_reach_the_manager() -> None:
    strict = QueueRegistry(queue_size=5, retention=1.0, strict_events=True)
    with pytest.raises(AttributeError, match="unknown event"):
        strict.ensure("j").manager.on_no_such_event(data=1)


async def test_cleanup_cancels_drains_and_ends(registry: QueueRegistry) -> None:
    entry = registry.create("j")
    entry.manager.on_token(data={"chunk": "a"})

    async def work() -> object:
        await asyncio.sleep(30)
        return None

    entry.task = asyncio.ensure_future(work())
    await asyncio.sleep(0)
    async with asyncio.timeout(WAIT):
        await registry.cleanup("j")
    assert entry.task.cancelled()
    assert registry.get("j") is None
    # the queue was drained, and a consumer still holding it sees the end
    assert entry.queue.get_nowait()[0] is None
    await registry.cleanup("j")  # nothing left: no error
    await registry.cleanup("never-there")


async def test_cleanup_wakes_a_blocked_consumer(registry: QueueRegistry) -> None:
    entry = registry.create("j")
    consumer = asyncio.ensure_future(entry.queue.get())
    await asyncio.sleep(0)
    await registry.cleanup("j")
    async with asyncio.timeout(WAIT):
        item = await consumer
    assert item[0] is None


async def test_on_consume_reports_time_in_queue() -> None:
    waits: list[float] = []
    registry = QueueRegistry(queue_size=5, retention=1.0, on_consume=waits.append)
    entry = registry.ensure("j")
    entry.manager.on_token(data="x")
    entry.queue.get_nowait()
    assert len(waits) == 1
    assert waits[0] >= 0


def test_unfinished_entries_are_never_due(registry: QueueRegistry) -> None:
    registry.ensure("running")
    assert registry.due(0.0) == []
    assert registry.due(1e12) == []


def test_finished_entry_with_unread_events_waits_for_retention(registry: QueueRegistry) -> None:
    entry = registry.ensure("j")
    entry.manager.on_token(data="unread")
    entry.finished = True
    now = 1000.0
    assert registry.due(now) == []
    assert entry.cleanup_at == now  # marked by this pass (Langflow's mark time)
    assert registry.due(now + RETENTION - 0.001) == []
    assert registry.due(now + RETENTION) == ["j"]


def test_finished_entry_whose_end_was_read_is_due_at_once(registry: QueueRegistry) -> None:
    read = registry.ensure("read")
    read.manager.end_stream()
    assert read.queue.get_nowait()[0] is None  # the consumer took the sentinel
    read.finished = True
    ended = registry.ensure("ended-empty")
    ended.manager.end_stream()
    ended.queue.get_nowait()
    ended.finished = True
    assert sorted(registry.due(0.0)) == ["ended-empty", "read"]


async def test_done_task_counts_as_finished(registry: QueueRegistry) -> None:
    entry = registry.create("j")

    async def quick() -> object:
        return "ok"

    entry.task = asyncio.ensure_future(quick())
    await entry.task
    entry.manager.on_token(data="unread")
    assert entry.done
    assert registry.due(5.0) == []
    assert registry.due(5.0 + RETENTION) == ["j"]


def test_abandoned_langflow_queue_is_marked_then_due_after_retention(
    registry: QueueRegistry,
) -> None:
    entry = registry.create("j")
    assert registry.due(50.0) == []
    assert entry.cleanup_at == 50.0  # a queue that never got a task: marked on the first pass
    assert registry.due(50.0 + RETENTION - 1) == []
    assert registry.due(50.0 + RETENTION) == ["j"]
    durable = registry.ensure("d")  # a durable entry without a task is not abandoned
    assert "d" not in registry.due(durable.created + RETENTION + 1)
    assert durable.cleanup_at is None


def test_retention_changed_after_the_mark_applies(registry: QueueRegistry) -> None:
    entry = registry.create("j")
    registry.due(10.0)
    assert entry.cleanup_at == 10.0
    registry.retention = 0.0  # service.CLEANUP_GRACE_PERIOD = 0
    assert registry.due(10.0) == ["j"]


async def test_reap() -> None:
    registry = QueueRegistry(queue_size=5, retention=0.0)
    done = registry.ensure("done")
    done.manager.end_stream()
    done.queue.get_nowait()
    done.finished = True
    unread = registry.ensure("unread")
    unread.manager.on_token(data="x")
    unread.finished = True
    registry.ensure("running")
    async with asyncio.timeout(WAIT):
        assert await registry.reap() == 1  # "unread" got its cleanup time (retention 0)
        assert await registry.reap() == 1  # ... which has come now
    assert list(registry.entries) == ["running"]


async def test_persisted_log_through_a_real_writer(db: Database, writer: Writer) -> None:
    registry = QueueRegistry(queue_size=5, retention=1.0)
    assert not registry.persisting
    registry.begin_run("j", 0)  # without the log: nothing happens
    assert registry.get("j") is None
    await insert(writer, new_job("j"))
    registry.attach_log(writer, db)
    assert registry.persisting
    assert registry.db is db
    registry.begin_run("j", 3)  # the job's log already holds 3 events
    entry = registry.get("j")
    assert entry is not None
    assert entry.manager.logging
    entry.manager.on_token(data={"n": 1})
    entry.manager.on_token(data={"n": 2})
    async with asyncio.timeout(WAIT):
        await entry.manager.flush()
    rows = await db.run(read_after, "j", 0, 10)
    assert [(seq, kind) for seq, kind, _, _ in rows] == [(4, "token"), (5, "token")]
    assert json.loads(rows[1][2]) == {"n": 2}
    entry.manager.end_stream()
    assert registry.get("j") is None  # the log holds everything: the entry is dropped


async def test_wait_run(registry: QueueRegistry, db: Database, writer: Writer) -> None:
    await insert(writer, new_job("j"))
    registry.attach_log(writer, db)
    waiter = asyncio.ensure_future(registry.wait_run("j", timeout=WAIT))
    await asyncio.sleep(0)
    registry.begin_run("j", 0)
    async with asyncio.timeout(WAIT):
        await waiter
    registry.get("j").manager.end_stream()  # type: ignore[union-attr]
    async with asyncio.timeout(WAIT):
        await registry.wait_run("j", timeout=0.01)  # nobody starts it: returns at the timeout
