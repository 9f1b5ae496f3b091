"""The dashboard's event streams over a real socket: uvicorn serving in this test's loop.

SSE ids are event seqs, a reconnect with ``Last-Event-ID`` resumes without a
gap or a duplicate, viewers of one job share one reader, quiet streams send
heartbeats, and streams end when the app or the service closes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from jobqueue import JobQueueService
from jobqueue.web import create_app
from tests.conftest import MakeService


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Return once ``check()`` holds (looked at every 10 ms); TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 (a condition on another task's state)
            await asyncio.sleep(0.01)


WORKER = Path(__file__).resolve().parent.parent / "procs" / "_web_worker.py"


class Served:
    def __init__(self, app: Any) -> None:
        self.app = app
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))

    async def started(self) -> None:
        await until(lambda: self.server.started)

    async def stop(self) -> None:
        await self.app.state.dashboard.hub.close()  # open streams end, then the server stops
        self.server.should_exit = True
        async with asyncio.timeout(10):
            await self.task


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    made: list[Served] = []

    async def start(app: Any) -> Served:
        served = Served(app)
        made.append(served)
        await served.started()
        return served

    yield start
    for served in made:
        if not served.task.done():
            await served.stop()


async def messages(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The SSE messages of a streamed response (comments as {"comment": ...})."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def producer(make_service: MakeService) -> tuple[JobQueueService, asyncio.Event]:
    service = await make_service(persist_events=True, poll_interval=0.05)
    release = asyncio.Event()

    @service.handler("talk")
    async def talk(ctx: Any, payload: Any) -> str:
        for i in range(payload["n"]):
            await ctx.emit("tick", {"i": i})
            if i == payload["wait_at"]:
                await release.wait()
            await asyncio.sleep(0.002)
        return "done"

    return service, release


async def read_events(
    c: httpx.AsyncClient, url: str, headers: dict[str, str], upto: int | None = None
) -> tuple[list[dict[str, Any]], list[str], bool]:
    """(events, ids, done): read until ``upto`` events, or the stream's end."""
    events: list[dict[str, Any]] = []
    ids: list[str] = []
    async with c.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for m in messages(r):
            if m.get("event") == "done":
                return events, ids, True
            if "data" in m and "id" in m:
                events.append(json.loads(m["data"]))
                ids.append(m["id"])
                if upto is not None and len(events) >= upto:
                    return events, ids, False
    return events, ids, False


async def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(
    make_service: MakeService, serve: Any
) -> None:
    service, release = await producer(make_service)
    job = await service.submit("talk", {"n": 60, "wait_at": 30})
    served = await serve(create_app(service, authorize=lambda r: "full"))
    url = f"{served.url}/api/jobs/{job.id}/events"
    async with httpx.AsyncClient(timeout=10) as c:
        first, ids, done = await read_events(c, url, {}, upto=12)
        assert not done
        assert [e["seq"] for e in first] == list(range(1, 13))
        assert ids == [str(e["seq"]) for e in first]  # the SSE id is the seq
        release.set()
        rest, _, done = await read_events(c, url, {"last-event-id": ids[-1]})
    assert done
    seqs = [e["seq"] for e in first + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [e["type"] for e in first + rest].count("tick") == 60
    assert rest[-1]["type"] == "end"


async def test_viewers_share_one_reader_and_far_behind_ones_catch_up(
    make_service: MakeService, serve: Any
) -> None:
    service, release = await producer(make_service)
    job = await service.submit("talk", {"n": 40, "wait_at": 20})
    app = create_app(service, authorize=lambda r: "full")
    served = await serve(app)
    url = f"{served.url}/api/jobs/{job.id}/events"
    hub = app.state.dashboard.hub
    async with httpx.AsyncClient(timeout=10) as c:
        viewers = [asyncio.create_task(read_events(c, url, {})) for _ in range(3)]
        await until(lambda: job.id in hub.feeds and hub.feeds[job.id].viewers == 3)
        await until(lambda: hub.feeds[job.id].last >= 21)
        assert len(hub.feeds) == 1
        late = asyncio.create_task(read_events(c, url, {"last-event-id": "5"}))
        await asyncio.sleep(0.1)
        release.set()
        results = await asyncio.gather(*viewers, late)
    for events, _, done in results[:3]:
        assert done
        assert [e["seq"] for e in events] == list(range(1, 42))
    late_events, _, late_done = results[3]
    assert late_done
    assert [e["seq"] for e in late_events] == list(range(6, 42))
    assert hub.feeds == {}  # the last viewer gone, the reader stops


async def test_quiet_streams_send_heartbeats_and_end_when_the_app_closes(
    make_service: MakeService, serve: Any
) -> None:
    service, release = await producer(make_service)
    job = await service.submit("talk", {"n": 3, "wait_at": 1})
    app = create_app(service, authorize=lambda r: "full", heartbeat=0.05)
    served = await serve(app)
    seen: list[dict[str, str]] = []
    async with (
        httpx.AsyncClient(timeout=10) as c,
        c.stream("GET", f"{served.url}/api/jobs/{job.id}/events") as r,
    ):

        async def read() -> None:
            async for m in messages(r):
                seen.append(m)

        reading = asyncio.create_task(read())
        await until(lambda: sum(1 for m in seen if m.get("comment") == "ping") >= 3)
        assert [json.loads(m["data"])["seq"] for m in seen if "id" in m] == [1, 2]
        async with asyncio.timeout(5):
            await served.stop()  # returns only once the open stream has ended
            await reading
    release.set()


async def test_events_need_the_log_and_a_known_job(make_service: MakeService, serve: Any) -> None:
    plain = await make_service(path=None)
    plain.declare("x")
    job = await plain.submit("x")
    served = await serve(create_app(plain, authorize=lambda r: "full"))
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{served.url}/api/jobs/{job.id}/events")
        assert r.status_code == 409
        assert "persist_events=True" in r.json()["error"]
        assert (await c.get(f"{served.url}/api/jobs/nope/events")).status_code == 404
        bad = await c.get(f"{served.url}/api/jobs/{job.id}/events", headers={"last-event-id": "x"})
        assert bad.status_code == 400


async def test_pages_hear_of_every_change_to_the_file(
    make_service: MakeService, serve: Any
) -> None:
    service = await make_service(persist_events=True)
    service.declare("x")
    app = create_app(service, authorize=lambda r: "full", heartbeat=0.2)
    served = await serve(app)
    seen: list[dict[str, str]] = []
    async with (
        httpx.AsyncClient(timeout=10) as c,
        c.stream("GET", f"{served.url}/api/changes") as r,
    ):
        assert r.headers["content-type"].startswith("text/event-stream")

        async def read() -> None:
            async for m in messages(r):
                seen.append(m)

        reading = asyncio.create_task(read())
        await until(lambda: any(m.get("comment") == "ping" for m in seen))  # quiet: heartbeats
        before = sum(1 for m in seen if "data" in m)
        await service.submit("x")
        await until(lambda: sum(1 for m in seen if "data" in m) > before, timeout=2.0)
        await served.stop()
        await reading
    assert app.state.dashboard.hub.changes.listeners == 0


async def test_a_worker_killed_mid_stream_and_restarted_leaves_no_gap(
    tmp_path: Any, serve: Any
) -> None:
    path = str(tmp_path / "jobs.db")
    async with JobQueueService(path) as producer:
        producer.declare("ticker")
        job = await producer.submit("ticker", {"n": 60, "pace": 0.02}, max_retries=2)
    worker_script = str(WORKER)

    async def worker() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, worker_script, path, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"ready"
        return proc

    first = await worker()
    app = create_app(path, authorize=lambda r: "full")  # a service of its own, on the file
    served = await serve(app)
    seqs: list[int] = []
    types: list[str] = []
    second = None
    try:
        async with (
            httpx.AsyncClient(timeout=20) as c,
            c.stream("GET", f"{served.url}/api/jobs/{job.id}/events") as r,
        ):
            async for m in messages(r):
                if m.get("event") == "done":
                    break
                if "data" not in m:
                    continue
                event = json.loads(m["data"])
                seqs.append(event["seq"])
                types.append(event["type"])
                if len(seqs) == 15 and second is None:
                    first.kill()  # SIGKILL mid-run: its job goes back to pending
                    await first.wait()
                    second = await worker()  # sweeps the dead owner and runs it again
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                await proc.wait()
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
    assert types[-1] == "end"
    assert types.count("tick") >= 15 + 60  # the first run's ticks, then all of the second's


async def test_streams_end_when_the_service_closes(make_service: MakeService, serve: Any) -> None:
    service, release = await producer(make_service)
    job = await service.submit("talk", {"n": 5, "wait_at": 2})
    served = await serve(create_app(service, authorize=lambda r: "full"))
    async with httpx.AsyncClient(timeout=10) as c:
        reading = asyncio.create_task(read_events(c, f"{served.url}/api/jobs/{job.id}/events", {}))
        await until(lambda: bool(served.app.state.dashboard.hub.feeds))
        await until(lambda: served.app.state.dashboard.hub.feeds[job.id].last >= 3)
        await service.close(drain_timeout=0)
        async with asyncio.timeout(5):
            events, _, done = await reading
    assert not done  # no end event: the browser reconnects and resumes after the last seq
    assert [e["seq"] for e in events] == [1, 2, 3]
    release.set()
