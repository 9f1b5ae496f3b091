"""What the Redis bus does beyond Langflow's, in one process against a real redis-server.

Readers with a cursor each, resuming after a seq, gap events for trimmed
entries, the outcome in the end entry, a dead worker's job ending ``lost``,
confirmed cancels across services, a resent batch stored once, a bounded
bridge buffer while Redis is stopped, a typed error for an outage.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from jobqueue.errors import BusUnavailableError, CancelNotConfirmedError
from jobqueue.events.manager import EventQueue
from tests.redis_server import RedisServer, redis_server

redis_asyncio = pytest.importorskip("redis.asyncio")
from jobqueue.redis import BusEvent, Keys, RedisJobQueueService  # noqa: E402
from jobqueue.redis.bridge import Bridge, BusStats  # noqa: E402

__all__ = ["redis_server"]


@pytest.fixture
async def make(redis_server: RedisServer) -> AsyncIterator[Any]:
    made: list[RedisJobQueueService] = []

    def build(**opts: Any) -> RedisJobQueueService:
        svc = RedisJobQueueService(url=opts.pop("url", redis_server.url), **opts)
        svc.start()
        made.append(svc)
        return svc

    try:
        yield build
    finally:
        for svc in made:
            await svc.stop()


async def run_logs(svc: RedisJobQueueService, n: int, *, pause: float = 0.0) -> str:
    """A job that sends ``n`` log events numbered 0..n-1; its id."""
    job = str(uuid.uuid4())
    _queue, manager = svc.create_queue(job)

    async def body() -> None:
        for i in range(n):
            await manager.asend("log", {"i": i})
            if pause:
                await asyncio.sleep(pause)

    svc.start_job(job, body())
    return job


async def collect(reader: Any, timeout: float = 10.0) -> list[BusEvent]:
    async def go() -> list[BusEvent]:
        return [e async for e in reader]

    return await asyncio.wait_for(go(), timeout)


def numbers(events: list[BusEvent]) -> list[int]:
    return [e.decoded()["data"]["i"] for e in events if e.kind == "event"]


async def test_two_readers_in_one_process_each_get_every_event(make: Any) -> None:
    svc = make()
    job = await run_logs(svc, 300, pause=0.001)
    first, second = await asyncio.gather(collect(svc.events(job)), collect(svc.events(job)))
    for events in (first, second):
        assert numbers(events) == list(range(300))
        assert [e.seq for e in events] == list(range(1, 302))
        assert events[-1].kind == "end"
        assert events[-1].outcome == "completed"


async def test_a_reader_resumes_after_the_last_seq_it_saw(make: Any) -> None:
    svc = make()
    job = await run_logs(svc, 20)
    assert await svc.wait_end(job, 5) == "completed"
    rest = await collect(svc.events(job, after=15))
    assert numbers(rest) == [15, 16, 17, 18, 19]
    assert rest[0].seq == 16


async def test_trimmed_entries_arrive_as_a_gap_event(make: Any) -> None:
    svc = make(maxlen=10)
    job = await run_logs(svc, 2000)
    await svc.wait_end(job, 10)
    events = await collect(svc.events(job))
    gaps = [e for e in events if e.kind == "gap"]
    assert len(gaps) == 1
    assert events[0] is gaps[0]
    seen = numbers(events)
    assert gaps[0].missed == seen[0]  # exactly the ones before the first kept
    assert seen == list(range(seen[0], 2000))
    assert svc.metrics_snapshot()["bus"]["gaps"] >= 1
    assert events[-1].outcome == "completed"


async def test_langflows_queue_wrapper_shows_a_gap_as_an_event(make: Any) -> None:
    svc = make(maxlen=10)
    job = await run_logs(svc, 1000)
    await svc.wait_end(job, 10)
    queue, *_ = svc.get_queue_data(job)
    event_id, data, _ts = await asyncio.wait_for(queue.get(), 5)
    assert event_id.startswith("gap-")
    body = json.loads(data)
    assert body["event"] == "gap"
    assert body["data"]["after"] == 0
    missed = body["data"]["missed"]
    event_id, data, _ts = await asyncio.wait_for(queue.get(), 5)
    assert json.loads(data)["data"] == {"i": missed}  # the first event kept


async def test_a_job_of_a_worker_that_stopped_renewing_its_lease_ends_lost(make: Any) -> None:
    owner = make(lease_s=1.0)
    reader_side = make(lease_s=1.0)
    job = str(uuid.uuid4())
    _queue, manager = owner.create_queue(job)
    owner.start_job(job, asyncio.Event().wait())
    manager.on_log(data={"i": 0})
    got: list[BusEvent] = []
    reader = reader_side.events(job)
    async for event in reader:
        got.append(event)
        if event.kind == "event":
            break
    # The owner "dies": nothing renews its lease and no end is written.
    assert owner._heartbeat_task is not None
    owner._heartbeat_task.cancel()
    owner._bridge_tasks[job].cancel()
    died = time.monotonic()
    rest = await collect(reader, timeout=10)
    assert rest[-1].kind == "end"
    assert rest[-1].outcome == "lost"
    assert time.monotonic() - died < 1.0 * 3  # within the lease and a few polls
    assert await reader_side.wait_end(job, 1) == "lost"


async def test_a_cancel_from_another_service_is_confirmed(make: Any) -> None:
    owner, other = make(), make()
    job = await run_logs(owner, 10**6, pause=0.01)
    await asyncio.sleep(0.05)
    assert await other.cancel_job(job, confirm=5) == "cancelled"
    deadline = time.monotonic() + 5
    while job in owner._queues:  # forgotten on the owner once its end is written
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    events = await collect(other.events(job))
    assert events[-1].outcome == "cancelled"
    assert numbers(events) == list(range(len(numbers(events))))


async def test_a_cancel_nobody_confirms_raises_a_typed_error(make: Any) -> None:
    other = make()
    with pytest.raises(CancelNotConfirmedError, match="wait_end"):
        await other.signal_cancel(str(uuid.uuid4()), confirm=0.3)


async def test_a_batch_sent_twice_is_stored_once(redis_server: RedisServer) -> None:
    client = redis_asyncio.Redis.from_url(redis_server.url)
    stats = BusStats()

    async def completed(_last: str | None) -> str:
        return "completed"

    bridge = Bridge(
        client,
        Keys(str(uuid.uuid4())),
        EventQueue(),
        worker_id="w",
        ttl=60,
        maxlen=1000,
        outcome_of=completed,
        stats=stats,
    )
    entries = [("0-1", {"event_id": "log-a", "data": b"{}", "ts": "1.0"})]
    await bridge._write(entries, claim=False, end=False)
    await bridge._write(entries, claim=False, end=False)  # as after a lost reply
    assert await client.xlen(Keys(bridge._keys.job_id).stream) == 1
    assert (stats.published, stats.duplicates) == (1, 1)
    await client.aclose()


async def test_while_redis_is_stopped_the_bridge_buffer_stays_bounded(
    make: Any, redis_server: RedisServer
) -> None:
    svc = make(queue_size=100)
    job = str(uuid.uuid4())
    queue, manager = svc.create_queue(job)
    svc.start_job(job, asyncio.Event().wait())
    await asyncio.sleep(0.1)  # the bridge's claim is written
    redis_server.pause()
    try:
        for i in range(20_000):
            manager.on_token(data={"chunk": f"{i},"})
            if i % 1000 == 0:
                await asyncio.sleep(0)
        assert queue.qsize() <= 100 + 256  # the bound, and one batch in flight at most
        assert queue.coalesced > 0
    finally:
        redis_server.resume()
    cancelled = await svc.cancel_job(job, confirm=10)
    assert cancelled == "cancelled"
    events = await collect(svc.events(job), timeout=20)
    text = "".join(e.decoded()["data"]["chunk"] for e in events if e.type == "token")
    assert text == "".join(f"{i}," for i in range(20_000))  # merged, never lost


async def test_an_outage_raises_a_typed_error_naming_the_url(redis_server: RedisServer) -> None:
    server = RedisServer().start()  # a server of its own, stopped halfway (the fixture: the skip)
    try:
        svc = RedisJobQueueService(url=server.url, outage_s=1.0, lease_s=1.0)
        svc.start()
        job = await run_logs(svc, 10**6, pause=0.01)
        reader = svc.events(job)
        first = await reader.read()
        assert first[0].kind == "event"
        server.stop()
        with pytest.raises(BusUnavailableError, match=f"127.0.0.1:{server.port}"):
            await asyncio.wait_for(collect(reader), 20)
        assert reader.outcome is None  # no end was made up
        assert svc.metrics_snapshot()["bus"]["bridge_errors"] >= 1
        await svc.stop(end_timeout=0.2)
    finally:
        server.stop()
