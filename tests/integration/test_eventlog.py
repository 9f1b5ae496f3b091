"""The persisted event log: per-job seqs, resumable streams, reconnects and producer restarts."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from jobqueue import Event, JobQueueService, Retry
from jobqueue.errors import InvalidArgumentError, JobNotFoundError
from jobqueue.events import seq_of
from jobqueue.store import eventlog

HERE = Path(__file__).resolve().parents[1] / "procs"
PRODUCER = HERE / "_event_producer.py"


async def _log(svc: JobQueueService, job_id: str) -> list[tuple[int, str, Any]]:
    rows = await svc.runtime.read(eventlog.read_after, job_id, 0, 100_000)
    return [(seq, etype, json.loads(data)) for seq, etype, data, _ in rows]


def _seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


async def _take(svc: JobQueueService, job_id: str, n: int | None = None, **kw: Any) -> list[Event]:
    """Up to ``n`` events (all of them with ``None``), then disconnect."""
    got: list[Event] = []
    async for ev in svc.events(job_id, **kw):
        got.append(ev)
        if n is not None and len(got) >= n:
            break
    return got


async def _until(read, at_least: int, timeout: float = 20.0) -> None:
    """Poll ``await read()`` until it returns ``at_least`` or more."""
    for _ in range(int(timeout / 0.01)):
        if await read() >= at_least:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still under {at_least} after {timeout}s")


# -- the SQL ----------------------------------------------------------------------------------


async def test_log_sql(make_service, caplog: pytest.LogCaptureFixture) -> None:
    svc = await make_service(persist_events=True)
    writer = svc.runtime.writer
    futs = [writer.enqueue(eventlog.append, "a", s, "token", f'{{"i":{s}}}', 1.0) for s in (1, 2)]
    futs.append(writer.enqueue(eventlog.append, "b", 1, "end", "{}", 2.0))
    await asyncio.gather(*futs)
    assert writer.batches >= 1
    with caplog.at_level(logging.WARNING, logger="jobqueue.events"):
        # A taken seq is skipped, not an error that would roll back other writes in the batch.
        await writer.write(eventlog.append, "a", 2, "token", '"dup"', 3.0)
    assert "not appended" in caplog.text
    assert await svc.runtime.read(eventlog.read_after, "a", 0, 10) == [
        (1, "token", '{"i":1}', 1.0),
        (2, "token", '{"i":2}', 1.0),
    ]
    assert await svc.runtime.read(eventlog.read_after, "a", 1, 10) == [(2, "token", '{"i":2}', 1.0)]
    assert await svc.runtime.read(eventlog.read_after, "a", 0, 1) == [(1, "token", '{"i":1}', 1.0)]
    assert await svc.runtime.read(eventlog.max_seq, "a") == 2
    assert await svc.runtime.read(eventlog.max_seq, "zzz") == 0
    assert await svc.runtime.read(eventlog.last_event, "b") == (1, "end")
    assert await svc.runtime.read(eventlog.last_event, "zzz") is None
    assert await writer.write(eventlog.delete, ["a", "zzz"]) == 2
    assert await svc.runtime.read(eventlog.max_seq, "a") == 0
    assert await svc.runtime.read(eventlog.max_seq, "b") == 1


# -- ids and what is stored ------------------------------------------------------------------


async def test_ids_are_log_seqs(make_service) -> None:
    svc = await make_service(persist_events=True)
    go = asyncio.Event()

    @svc.handler("talk")
    async def talk(ctx, payload):
        await go.wait()
        for c in "abc":
            ctx.events.on_token(data={"chunk": c})
        await ctx.emit("custom", {"n": 1})
        return "said"

    job = await svc.submit("talk")
    consumer = asyncio.create_task(_take(svc, job.id))
    await asyncio.sleep(0.05)
    go.set()
    got = await asyncio.wait_for(consumer, 10)
    assert [e.id for e in got] == ["token-1", "token-2", "token-3", "custom-4", "end-5"]
    assert got[-1].data == {"status": "completed", "result": "said"}
    assert all(e.time_in_queue >= 0 for e in got)
    assert await _log(svc, job.id) == [(e.seq, e.type, e.data) for e in got]
    # Finished and streamed: the entry is gone, the log answers later consumers.
    assert svc.registry.get(job.id) is None
    again = await _take(svc, job.id)
    assert [(e.id, e.data) for e in again] == [(e.id, e.data) for e in got]


async def test_log_is_opt_in(make_service) -> None:
    svc = await make_service()

    @svc.handler("talk")
    async def talk(ctx, payload):
        ctx.events.on_token(data={"chunk": "x"})

    job = await svc.submit("talk")
    await svc.run_until_idle(timeout=10)
    assert await _log(svc, job.id) == []
    with pytest.raises(InvalidArgumentError, match="persist_events"):
        await _take(svc, job.id, after=0)


@pytest.mark.parametrize("bad", [-1, True, 1.5, "token", "token-x", [1]])
async def test_after_must_be_a_seq_or_an_id(make_service, bad) -> None:
    svc = await make_service(persist_events=True)

    @svc.handler("h")
    async def h(ctx, payload):
        return None

    job = await svc.submit("h")
    with pytest.raises(InvalidArgumentError, match="after"):
        await _take(svc, job.id, after=bad)
    with pytest.raises(JobNotFoundError):
        await _take(svc, "missing", after=0)


# -- reconnects ------------------------------------------------------------------------------


async def test_consumer_reconnect(make_service) -> None:
    """A consumer leaves mid-stream while the job keeps emitting, then resumes after its
    last id: every event exactly once, in order."""
    svc = await make_service(persist_events=True, poll_interval=0.05)
    first_part = asyncio.Event()
    resume = asyncio.Event()

    @svc.handler("talk")
    async def talk(ctx, payload):
        for i in range(300):
            if i == 50:
                first_part.set()
            if i == 120:
                await resume.wait()  # part of the rest is sent while nobody listens
            ctx.events.on_token(data={"chunk": f"{i} "})
            if i % 7 == 0:
                await asyncio.sleep(0)
        return "done"

    job = await svc.submit("talk")
    await first_part.wait()
    first = await _take(svc, job.id, 30)
    assert _seqs(first) == list(range(1, 31))
    await asyncio.sleep(0.1)  # disconnected while the job sends up to event 120
    consumer = asyncio.create_task(_take(svc, job.id, after=first[-1].id))
    await asyncio.sleep(0.05)
    resume.set()
    rest = await asyncio.wait_for(consumer, 20)
    got = first + rest
    assert _seqs(got) == list(range(1, 302))
    assert "".join(e.data["chunk"] for e in got[:-1]) == "".join(f"{i} " for i in range(300))
    assert got[-1].type == "end"
    # Resuming by seq works as well as by id; after the end there is nothing more.
    assert _seqs(await _take(svc, job.id, after=299)) == [300, 301]
    assert await _take(svc, job.id, after=got[-1].id) == []


async def test_slow_consumer_of_a_small_queue_loses_nothing(make_service) -> None:
    """A full live queue drops its copy instead of merging tokens; the log fills the gap
    (at once: not a poll_interval later)."""
    svc = await make_service(persist_events=True, queue_size=4, poll_interval=30.0)
    seen = asyncio.Event()

    @svc.handler("burst")
    async def burst(ctx, payload):
        ctx.events.on_build_start(data={})
        await asyncio.sleep(0.2)  # the consumer is waiting on the live queue by now
        for i in range(100):
            ctx.events.on_token(data={"chunk": str(i)})  # sync: never waits for room
        await seen.wait()  # quiet until the consumer has every token of the burst
        for i in range(100, 110):
            ctx.events.on_token(data={"chunk": str(i)})
        await asyncio.sleep(0.1)
        ctx.progress(1, 1)
        return None

    job = await svc.submit("burst")
    got: list[Event] = []
    queue = None

    async def consume() -> None:
        nonlocal queue
        async for ev in svc.events(job.id):
            queue = queue or svc.registry.get(job.id).queue
            got.append(ev)
            if ev.data.get("chunk") == "99":
                seen.set()
            await asyncio.sleep(0.001)

    await asyncio.wait_for(consume(), 10)
    assert _seqs(got) == list(range(1, 114))
    assert [e.data["chunk"] for e in got[1:111]] == [str(i) for i in range(110)]
    assert [e.type for e in got[111:]] == ["progress", "end"]
    assert queue is not None
    assert queue.dropped > 0  # the live queue overflowed and the log filled in
    assert queue.coalesced == 0


async def test_emit_is_not_held_up_by_a_missing_consumer(make_service) -> None:
    """With the log, ctx.emit waits for the store, not for a consumer that never comes."""
    svc = await make_service(persist_events=True, queue_size=8)

    @svc.handler("chatty")
    async def chatty(ctx, payload):
        for i in range(200):
            await ctx.emit("step", {"i": i})
        return "ok"

    job = await svc.submit("chatty")
    assert await svc.wait(job.id, timeout=10) == "ok"
    log = await _log(svc, job.id)
    assert [s for s, _, _ in log] == list(range(1, 202))
    assert [d["i"] for _, t, d in log if t == "step"] == list(range(200))
    assert log[-1][1:] == ("end", {"status": "completed", "result": "ok"})


async def test_two_consumers_each_see_everything(make_service) -> None:
    svc = await make_service(persist_events=True, poll_interval=0.05)
    go = asyncio.Event()

    @svc.handler("talk")
    async def talk(ctx, payload):
        await go.wait()
        for i in range(200):
            ctx.events.on_token(data={"chunk": str(i)})
            await asyncio.sleep(0)

    job = await svc.submit("talk")
    a = asyncio.create_task(_take(svc, job.id))
    b = asyncio.create_task(_take(svc, job.id))
    await asyncio.sleep(0.05)
    go.set()
    got_a, got_b = await asyncio.wait_for(asyncio.gather(a, b), 20)
    assert _seqs(got_a) == _seqs(got_b) == list(range(1, 202))


async def test_follow_a_job_running_in_another_service(make_service, db_path) -> None:
    """No live queue here: the stream tails the log (the other service could be a process)."""
    producer = await make_service(persist_events=True, poll_interval=0.05)
    consumer = await make_service(persist_events=True, poll_interval=0.05)

    @producer.handler("talk")
    async def talk(ctx, payload):
        for i in range(40):
            await ctx.emit("token", {"chunk": str(i)})
            await asyncio.sleep(0.005)
        return i

    job = await producer.submit("talk")
    got = await asyncio.wait_for(_take(consumer, job.id), 20)
    assert consumer.registry.get(job.id) is None  # it never ran in the consumer's service
    assert _seqs(got) == list(range(1, 42))
    assert got[-1].data == {"status": "completed", "result": 39}


async def test_events_sent_from_a_thread_are_logged(make_service) -> None:
    svc = await make_service(persist_events=True, poll_interval=0.05)

    @svc.handler("threaded")
    async def threaded(ctx, payload):
        loop, done = asyncio.get_running_loop(), asyncio.Event()

        def work() -> None:
            for i in range(50):
                ctx.events.on_token(data={"chunk": str(i)})
            loop.call_soon_threadsafe(done.set)  # after the events' own hand-overs

        thread = threading.Thread(target=work)  # joined here: no thread outlives the test
        thread.start()
        await done.wait()
        thread.join()
        return None

    job = await svc.submit("threaded")
    got = await asyncio.wait_for(_take(svc, job.id), 10)
    assert _seqs(got) == list(range(1, 52))
    assert [e.data["chunk"] for e in got[:50]] == [str(i) for i in range(50)]
    assert [(s, d) for s, _, d in await _log(svc, job.id)] == [(e.seq, e.data) for e in got]


async def test_follow_across_pause_and_resume(make_service) -> None:
    """The consumer keeps following a job that is paused (its entry reaped) and resumed."""
    svc = await make_service(
        persist_events=True, poll_interval=0.05, cleanup_interval=0.05, stop_timeout=0.2
    )
    step = asyncio.Event()

    @svc.handler("steps")
    async def steps(ctx, payload):
        runs.append(ctx.attempt)
        for i in range(3):
            ctx.events.on_message(data={"run": len(runs), "i": i})
            if len(runs) == 1 and i == 1:
                step.set()
                await asyncio.sleep(30)  # paused here: cancelled after stop_timeout
            await ctx.checkpoint()
        return len(runs)

    runs: list[int] = []
    job = await svc.submit("steps")
    consumer = asyncio.create_task(_take(svc, job.id))
    await asyncio.wait_for(step.wait(), 10)
    paused = await svc.pause(job.id)
    assert paused.status == "paused"
    for _ in range(500):  # the reaper drops the paused job's entry; the stream polls
        if svc.registry.get(job.id) is None:
            break
        await asyncio.sleep(0.01)
    assert svc.registry.get(job.id) is None
    assert not consumer.done()
    await svc.resume(job.id)
    got = await asyncio.wait_for(consumer, 10)
    assert [(e.seq, e.data.get("run"), e.data.get("i")) for e in got[:-1]] == [
        (1, 1, 0),
        (2, 1, 1),
        (3, 2, 0),
        (4, 2, 1),
        (5, 2, 2),
    ]
    assert got[-1].id == "end-6"
    assert got[-1].data == {"status": "completed", "result": 2}


# -- runs, restarts, jobs that end without running ---------------------------------------------


async def test_retries_continue_the_sequence(make_service) -> None:
    svc = await make_service(persist_events=True, poll_interval=0.05)

    @svc.handler("flaky")
    async def flaky(ctx, payload):
        ctx.events.on_message(data={"attempt": ctx.attempt})
        ctx.events.on_message(data={"attempt": ctx.attempt})
        if ctx.attempt == 0:
            raise Retry(delay=0.05)
        return ctx.attempt

    job = await svc.submit("flaky", max_retries=1)
    got = await asyncio.wait_for(_take(svc, job.id), 10)
    assert [(e.id, e.data.get("attempt")) for e in got[:4]] == [
        ("add_message-1", 0),
        ("add_message-2", 0),
        ("add_message-3", 1),
        ("add_message-4", 1),
    ]
    assert got[4].id == "end-5"
    assert _seqs(await _take(svc, job.id, after=2)) == [3, 4, 5]


async def test_restart_continues_the_sequence(make_service, db_path) -> None:
    first = await make_service(persist_events=True, drain_timeout=0.1)
    ran = asyncio.Event()

    @first.handler("talk")
    async def stuck(ctx, payload):
        for i in range(3):
            ctx.events.on_token(data={"chunk": f"a{i}"})
        ran.set()
        await asyncio.Event().wait()

    job = await first.submit("talk")
    await asyncio.wait_for(ran.wait(), 10)
    seen = await _take(first, job.id, 2)
    await first.close(drain_timeout=0.1)  # cancelled: back to pending, to run at the next start

    second = await make_service(persist_events=True)

    @second.handler("talk")
    async def talk(ctx, payload):
        for i in range(2):
            ctx.events.on_token(data={"chunk": f"b{i}"})
        return "ok"

    rest = await asyncio.wait_for(_take(second, job.id, after=seen[-1].id), 10)
    got = seen + rest
    assert [e.id for e in got] == ["token-1", "token-2", "token-3", "token-4", "token-5", "end-6"]
    assert [e.data.get("chunk") for e in got[:5]] == ["a0", "a1", "a2", "b0", "b1"]


async def test_final_event_built_from_the_record_keeps_one_id(make_service) -> None:
    svc = await make_service(persist_events=True, poll_interval=0.05)

    @svc.handler("quiet")
    async def quiet(ctx, payload):
        if payload == "fail":
            raise ValueError("bad")
        return 7

    ok = await svc.submit("quiet", "ok", delay=60)
    waiting = asyncio.create_task(_take(svc, ok.id))
    await asyncio.sleep(0.1)
    cancelled = await svc.cancel(ok.id)  # it never ran: nothing logged
    assert cancelled.status == "cancelled"
    got = await asyncio.wait_for(waiting, 5)
    assert [(e.id, e.data) for e in got] == [
        ("end-1", {"status": "cancelled", "reason": "cancelled"})
    ]
    assert [e.id for e in await _take(svc, ok.id)] == ["end-1"]
    assert await _take(svc, ok.id, after="end-1") == []

    bad = await svc.submit("quiet", "fail")
    await svc.run_until_idle(timeout=10)
    got = await _take(svc, bad.id)
    assert [e.id for e in got] == ["error-1"]
    assert "bad" in got[0].data["error"]
    assert await _log(svc, bad.id) == [(1, "error", got[0].data)]


async def test_langflow_layer_is_not_logged(make_service) -> None:
    svc = await make_service(persist_events=True)
    queue, em = svc.create_queue("lf")

    async def work():
        em.on_token(data={"chunk": "x"})
        em.on_end(data={"ok": True})
        return 1

    svc.start_job("lf", work())
    items = [await queue.get() for _ in range(3)]
    ids = [i[0] for i in items]
    assert ids[2] is None
    for event_id, kind in zip(ids, ("token", "end"), strict=False):  # Langflow's "<type>-<uuid4>"
        assert uuid.UUID(event_id.removeprefix(f"{kind}-")).version == 4
    assert json.loads(items[0][1]) == {"event": "token", "data": {"chunk": "x"}}
    await asyncio.wait_for(svc.registry.get("lf").task, 5)
    assert await _log(svc, "lf") == []


# -- a real producer process that dies or exits ----------------------------------------------


async def _producer(db: Path, job_id: str, label: str, n: int, pause: float, mode: str):
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(PRODUCER),
        str(db),
        job_id,
        label,
        str(n),
        str(pause),
        mode,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill", "exit"])
async def test_producer_restart(make_service, db_path, how) -> None:
    """The producing process dies (SIGKILL) or exits mid-job; a new process runs the job
    again. A consumer that disconnected meanwhile resumes after its last id: no gap, no
    duplicate, the same events as the log."""
    consumer = await make_service(persist_events=True, poll_interval=0.05)
    job_id = f"restart-{how}"
    first = await _producer(db_path, job_id, "p1", 10_000, 0.01, "hold")
    second = None
    try:
        assert await asyncio.wait_for(first.stdout.readline(), 30) == b"ready\n"
        seen = await asyncio.wait_for(_take(consumer, job_id, 10), 20)
        # The producer goes on while nobody listens.
        await _until(lambda: consumer.runtime.read(eventlog.max_seq, job_id), seen[-1].seq + 5)
        if how == "sigkill":
            first.send_signal(signal.SIGKILL)
        else:
            first.stdin.write(b"exit\n")
        out, err = await asyncio.wait_for(first.communicate(), 30)
        assert first.returncode == (-signal.SIGKILL if how == "sigkill" else 0), err.decode()
        # Reconnect before the next producer exists: the stream waits on the log.
        resumed = asyncio.create_task(_take(consumer, job_id, after=seen[-1].id))
        await asyncio.sleep(0.2)
        assert not resumed.done()
        second = await _producer(db_path, job_id, "p2", 20, 0.0, "finish")
        out, err = await asyncio.wait_for(second.communicate(), 40)
        assert out == b"done\n", err.decode()
        rest = await asyncio.wait_for(resumed, 20)
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.communicate()
    got = seen + rest
    n = len(got)
    assert _seqs(got) == list(range(1, n + 1))  # no gap, no duplicate
    assert [(e.seq, e.type, e.data) for e in got] == await _log(consumer, job_id)
    runs = [(e.data["run"], e.data["i"]) for e in got[:-1]]
    p1 = [i for run, i in runs if run == "p1"]
    p2 = [i for run, i in runs if run == "p2"]
    assert runs == [("p1", i) for i in p1] + [("p2", i) for i in p2]  # p1's events, then p2's
    assert p1 == list(range(len(p1)))
    assert len(p1) > 10  # some were sent while the consumer was away
    assert p2 == list(range(20))
    assert got[-1].type == "end"
    assert got[-1].data == {"status": "completed", "result": {"run": "p2"}}
    assert seq_of(got[-1].id) == n
