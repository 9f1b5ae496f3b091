"""RedisJobQueueService does what Langflow 1.13's does, against a real redis-server.

The behaviours Langflow checks on its class (with fakeredis), checked here on
ours with a real server: the wrapper reads Langflow's entries and ends at the
sentinel or when the key is deleted, same-worker and cross-worker reads, the
shared wrapper of sequential polls, cleanup deleting the keys, owners across
workers, the bridge's sentinel (kept when the bridge is cancelled mid-write),
the bounded buffer, the cancel marker, the polling watchdog, metrics. Where
jobqueue's differs on purpose (a failed read raises instead of ending the
stream), the test says so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from jobqueue.errors import BusUnavailableError, JobQueueNotFoundError, QueueExistsError
from jobqueue.events.manager import EventManager
from tests.redis_server import RedisServer, free_port, redis_server

redis_asyncio = pytest.importorskip("redis.asyncio")
from redis.asyncio.retry import Retry  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402

from jobqueue.redis import (  # noqa: E402 - after the skip: needs redis-py
    _STREAM_SENTINEL_DATA,
    RedisJobQueueService,
    RedisQueueWrapper,
)

__all__ = ["redis_server"]

SENTINEL_FIELDS = {"event_id": "__sentinel__", "data": _STREAM_SENTINEL_DATA, "ts": "3.0"}


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    c = redis_asyncio.Redis.from_url(redis_server.url)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
async def service(redis_server: RedisServer) -> AsyncIterator[RedisJobQueueService]:
    svc = RedisJobQueueService(url=redis_server.url, ttl=60, lease_s=2.0, startup_grace_s=5.0)
    svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


def new_id() -> str:
    return str(uuid.uuid4())


async def drain(queue: Any, timeout: float = 5.0) -> list[Any]:
    """Every item up to and with the sentinel."""
    items = []
    while True:
        item = await asyncio.wait_for(queue.get(), timeout)
        items.append(item)
        if item[0] is None:
            return items


# -- the wrapper ---------------------------------------------------------------------------


async def test_wrapper_reads_langflow_entries_then_the_sentinel(client: Any) -> None:
    job = new_id()
    key = f"langflow:queue:{job}"
    wrapper = RedisQueueWrapper(job, client, ttl=60)
    await client.xadd(key, {"event_id": "e1", "data": b"hello", "ts": "1.0"})
    await client.xadd(key, {"event_id": "e2", "data": b"world", "ts": "2.0"})
    await client.xadd(key, SENTINEL_FIELDS)
    assert await drain(wrapper) == [("e1", b"hello", 1.0), ("e2", b"world", 2.0), (None, None, 3.0)]
    assert wrapper.outcome == "unknown"  # Langflow's end entry says nothing more
    await wrapper.cancel()


async def test_wrapper_ends_when_the_key_is_deleted(client: Any) -> None:
    job = new_id()
    key = f"langflow:queue:{job}"
    wrapper = RedisQueueWrapper(job, client, ttl=60, lease_s=0.5)
    await client.xadd(key, {"event_id": "e1", "data": b"data", "ts": "1.0"})
    assert (await asyncio.wait_for(wrapper.get(), 5))[1] == b"data"
    await client.delete(key)
    end = await asyncio.wait_for(wrapper.get(), 5)
    assert end[:2] == (None, None)
    assert wrapper.outcome == "deleted"
    await wrapper.cancel()


async def test_wrapper_is_not_empty_before_its_first_read(client: Any) -> None:
    job = new_id()
    wrapper = RedisQueueWrapper(job, client, ttl=60)
    assert not wrapper.empty()  # a drain loop waits in get() for the first read
    await client.xadd(f"langflow:queue:{job}", {"event_id": "e1", "data": b"x", "ts": "1.0"})
    await client.xadd(f"langflow:queue:{job}", SENTINEL_FIELDS)
    await asyncio.wait_for(_until(lambda: wrapper.qsize() == 2), 5)
    assert not wrapper.empty()
    await wrapper.cancel()


async def test_wrapper_put_nowait_does_nothing(client: Any) -> None:
    wrapper = RedisQueueWrapper(new_id(), client, ttl=60)
    wrapper.put_nowait(("e1", b"data", 1.0))
    assert wrapper.qsize() == 0
    await wrapper.cancel()


async def test_wrapper_buffer_is_bounded(client: Any) -> None:
    wrapper = RedisQueueWrapper(new_id(), client, ttl=60)
    await wrapper.cancel()
    assert 0 < wrapper._buffer.maxsize == RedisQueueWrapper._BUFFER_MAXSIZE


async def test_a_failed_read_raises_instead_of_ending_the_stream() -> None:
    """Langflow hands out the sentinel after a persistent Redis error; jobqueue raises."""
    port = free_port()  # nothing listens there
    # No retries inside redis-py (its default backs off ~3 s per call): the wrapper's own
    # outage_s (here startup_grace_s, 0.5 s) is what decides when to give up.
    client = redis_asyncio.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    wrapper = RedisQueueWrapper(new_id(), client, ttl=60, startup_grace_s=0.5)
    with pytest.raises(BusUnavailableError, match=f"127.0.0.1:{port}") as caught:
        await asyncio.wait_for(wrapper.get(), 30)
    assert "start Redis" in str(caught.value)
    with pytest.raises(BusUnavailableError):  # and again: it never turns into an end
        wrapper.get_nowait()
    assert wrapper.outcome is None
    await wrapper.cancel()
    await client.aclose()


# -- the service ---------------------------------------------------------------------------


async def test_events_of_a_job_reach_the_stream_with_an_end_that_says_completed(
    service: RedisJobQueueService, client: Any
) -> None:
    job = new_id()
    _queue, manager = service.create_queue(job)

    async def build() -> None:
        manager.on_token(data={"chunk": "hi"})
        manager.on_end(data={"ok": True})

    service.start_job(job, build())
    assert await service.wait_end(job, 5) == "completed"
    entries = await client.xrange(f"langflow:queue:{job}")
    assert [e[0] for e in entries] == [b"0-1", b"0-2", b"0-3"]
    assert entries[0][1][b"event_id"].startswith(b"token-")
    assert entries[-1][1][b"data"] == _STREAM_SENTINEL_DATA
    assert entries[-1][1][b"outcome"] == b"completed"


async def test_a_crash_sends_error_then_an_end_that_says_failed(
    service: RedisJobQueueService,
) -> None:
    job = new_id()
    service.create_queue(job)

    async def build() -> None:
        raise ValueError("boom")

    service.start_job(job, build())
    events = [e async for e in service.events(job)]
    assert [e.type for e in events] == ["error", "end"]
    assert events[0].decoded()["data"] == {"error": "boom"}
    assert events[-1].outcome == "failed"


async def test_cross_worker_get_queue_data_reads_the_stream(
    service: RedisJobQueueService, client: Any
) -> None:
    job = new_id()
    await client.xadd(f"langflow:queue:{job}", {"event_id": "e1", "data": b"bytes", "ts": "1.0"})
    await client.xadd(f"langflow:queue:{job}", SENTINEL_FIELDS)
    queue, manager, task, cleanup_time = service.get_queue_data(job)
    assert isinstance(queue, RedisQueueWrapper)
    assert isinstance(manager, EventManager)
    assert manager.queue is None
    assert task is None
    assert cleanup_time is None
    assert [i[1] for i in await drain(queue)] == [b"bytes", None]


async def test_same_worker_get_queue_data_gives_the_wrapper_and_the_task(
    service: RedisJobQueueService,
) -> None:
    job = new_id()
    service.create_queue(job)
    service.start_job(job, asyncio.sleep(0))
    queue, _manager, task, _ = service.get_queue_data(job)
    assert isinstance(queue, RedisQueueWrapper)  # the bridge alone reads the local queue
    assert task is not None
    assert (await drain(queue))[-1][0] is None


async def test_sequential_polls_share_one_wrapper_and_continue(
    service: RedisJobQueueService, client: Any
) -> None:
    job = new_id()
    await client.xadd(f"langflow:queue:{job}", {"event_id": "e1", "data": b"first", "ts": "1"})
    await client.xadd(f"langflow:queue:{job}", {"event_id": "e2", "data": b"second", "ts": "2"})
    first, *_ = service.get_queue_data(job)
    got_first = await asyncio.wait_for(first.get(), 5)
    second, *_ = service.get_queue_data(job)
    got_second = await asyncio.wait_for(second.get(), 5)
    assert second is first
    assert (got_first, got_second) == (("e1", b"first", 1.0), ("e2", b"second", 2.0))


async def test_cleanup_stops_the_cached_wrapper(service: RedisJobQueueService) -> None:
    job = new_id()
    queue, *_ = service.get_queue_data(job)
    assert job in service._consumer_wrappers
    await service.cleanup_job(job)
    assert job not in service._consumer_wrappers
    assert isinstance(queue, RedisQueueWrapper)
    assert queue.fill_done()


async def test_a_closed_service_refuses_get_queue_data(service: RedisJobQueueService) -> None:
    service._closed = True
    with pytest.raises(RuntimeError, match="closed"):
        service.get_queue_data("some-job-id")


async def test_create_queue_twice_and_start_without_queue_are_typed(
    service: RedisJobQueueService,
) -> None:
    job = new_id()
    service.create_queue(job)
    with pytest.raises(QueueExistsError):
        service.create_queue(job)
    with pytest.raises(JobQueueNotFoundError):
        service.start_job(new_id(), asyncio.sleep(0))


@pytest.mark.parametrize("running", [False, True])
async def test_cleanup_deletes_the_jobs_keys(
    service: RedisJobQueueService, client: Any, running: bool
) -> None:
    job = new_id()
    service.create_queue(job)
    service.start_job(job, asyncio.Event().wait() if running else asyncio.sleep(0))
    await service.register_job_owner(job, uuid.uuid4())
    if running:
        await _until_exists(client, f"jobqueue:runner:{job}")
    else:
        assert await service.wait_end(job, 5) == "completed"
    if running:  # the task's cancel is re-raised, as Langflow's
        with pytest.raises(asyncio.CancelledError):
            await service.cleanup_job(job)
    else:
        await service.cleanup_job(job)
    for key in ("langflow:queue:", "langflow:owner:", "jobqueue:runner:"):
        assert not await client.exists(key + job), key


async def test_owners_are_shared_across_workers(
    service: RedisJobQueueService, redis_server: RedisServer, client: Any
) -> None:
    job, user = new_id(), uuid.uuid4()
    await service.register_job_owner(job, user)
    assert (await client.get(f"langflow:owner:{job}")).decode() == str(user)
    other = RedisJobQueueService(url=redis_server.url)
    other.start()
    try:
        assert await other.get_job_owner(job) == user
        assert await other.get_job_owner(new_id()) is None
    finally:
        await other.stop()


async def test_cleanup_forgets_the_owner(service: RedisJobQueueService, client: Any) -> None:
    job, user = new_id(), uuid.uuid4()
    service.create_queue(job)
    service.start_job(job, asyncio.sleep(0))
    await service.register_job_owner(job, user)
    assert await service.get_job_owner(job) == user
    await service.cleanup_job(job)
    assert await service.get_job_owner(job) is None


async def test_public_jobs_are_seen_by_other_workers(
    service: RedisJobQueueService, redis_server: RedisServer
) -> None:
    job = new_id()
    await service.register_public_job(job)
    assert service.is_public_job(job)
    other = RedisJobQueueService(url=redis_server.url)
    other.start()
    try:
        assert await other.is_public_job_async(job)
        assert not await other.is_public_job_async(new_id())
    finally:
        await other.stop()


async def test_the_bridge_writes_the_sentinel_last(
    service: RedisJobQueueService, client: Any
) -> None:
    job = new_id()
    _queue, manager = service.create_queue(job)

    async def build() -> None:
        assert manager.queue is not None
        await manager.queue.put((None, None, time.time()))

    service.start_job(job, build())
    await service.wait_end(job, 5)
    last = (await client.xrevrange(f"langflow:queue:{job}", count=1))[0][1]
    assert last[b"data"] == _STREAM_SENTINEL_DATA


async def test_a_bridge_cancelled_mid_write_puts_the_sentinel_back(
    service: RedisJobQueueService, redis_server: RedisServer, client: Any
) -> None:
    job = new_id()
    local, _manager = service.create_queue(job)
    await _until_exists(client, f"jobqueue:runner:{job}")  # the bridge's claim is written
    redis_server.pause()  # the next write hangs
    try:
        sentinel = (None, None, time.time())
        await local.put(sentinel)
        await _until(lambda: local.empty())  # the bridge took it and is writing
        bridge = service._bridge_tasks[job]
        bridge.cancel()
        await asyncio.wait({bridge}, timeout=5)
        assert local.get_nowait() == sentinel
    finally:
        redis_server.resume()


async def test_a_cancel_signalled_before_the_job_starts_cancels_it(
    service: RedisJobQueueService, client: Any
) -> None:
    job = new_id()
    assert await service.signal_cancel(job) >= 1  # our own dispatcher hears it
    assert await client.exists(f"langflow:cancel-marker:{job}")
    service.create_queue(job)
    service.start_job(job, asyncio.Event().wait())
    assert await service.wait_end(job, 5) == "cancelled"
    assert service.metrics_snapshot()["cancel_stats"]["marker_hit"] == 1


async def test_the_polling_watchdog_cancels_an_abandoned_job(redis_server: RedisServer) -> None:
    svc = RedisJobQueueService(
        url=redis_server.url, polling_stale_threshold_s=0.3, polling_watchdog_interval_s=0.1
    )
    svc.start()
    try:
        job = new_id()
        svc.create_queue(job)
        await svc.register_job_owner(job, uuid.uuid4())
        svc.start_job(job, asyncio.Event().wait())
        assert await svc.wait_end(job, 5) == "cancelled"
        assert svc.metrics_snapshot()["cancel_stats"]["polling_watchdog_kills"] >= 1
        # A job whose client keeps touching it is left alone.
        kept = new_id()
        svc.create_queue(kept)
        await svc.register_job_owner(kept, uuid.uuid4())
        svc.start_job(kept, asyncio.Event().wait())
        for _ in range(8):
            await svc.touch_activity(kept)
            await asyncio.sleep(0.1)
        assert not svc._queues[kept][2].done()  # type: ignore[union-attr]
    finally:
        await svc.stop()


async def test_metrics_snapshot_and_connection_target(service: RedisJobQueueService) -> None:
    snap = service.metrics_snapshot()
    assert snap["backend"] == "redis"
    assert snap["cancel_dispatcher_running"] is True
    for key in ("bridge_count", "consumer_wrapper_count", "background_task_count"):
        assert key in snap
    assert {"published", "dispatched_owned", "dispatched_foreign"} <= set(snap["cancel_stats"])
    assert set(snap["bus"]) >= {"published", "buffered", "gaps", "lost_declared"}
    secret = RedisJobQueueService(url="redis://user:hunter2@example.invalid:6390/1")
    assert "hunter2" not in secret.connection_target
    assert RedisJobQueueService(port=7000).connection_target == "localhost:7000 db=1"


async def test_is_connected(service: RedisJobQueueService) -> None:
    assert await service.is_connected(attempts=1)
    nowhere = RedisJobQueueService(port=free_port())
    assert not await nowhere.is_connected(attempts=2, backoff_s=0.01)


# -- helpers -------------------------------------------------------------------------------


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _until_exists(client: Any, key: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await client.exists(key):
        assert time.monotonic() < deadline, f"{key} never appeared"
        await asyncio.sleep(0.01)
