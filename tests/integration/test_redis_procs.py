"""The Redis bus across real processes and a real redis-server.

* one process runs a job, one streams its events, one cancels it: the cancel
  is confirmed, the stream ends ``cancelled``, every event arrives once, in order;
* the owner is SIGKILLed mid-stream: the reader gets the end, ``lost``, within
  the lease time;
* Redis is SIGSTOPped while a producer sends 100,000 events: the producer's
  queue and memory stay bounded, and after SIGCONT the stream holds them all,
  merged but whole, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer, redis_server

pytest.importorskip("redis.asyncio")
from jobqueue.redis import RedisJobQueueService

__all__ = ["redis_server"]

# Slow (several processes on a redis-server): in the whole suite (3.11), not the quick one.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROCS = ROOT / "tests" / "procs"


class Proc:
    """A child process whose stdout lines are collected as they come."""

    def __init__(self, script: str, *args: object, stdin: bool = False) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.popen = subprocess.Popen(
            [sys.executable, str(PROCS / script), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, check: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.lines):
            if self.popen.poll() is not None and not check(self.lines):
                self._reader.join(2)
                if check(self.lines):
                    return
                raise AssertionError(f"exited {self.popen.returncode}: {self.stderr()}")
            assert time.monotonic() < deadline, f"timed out; lines: {self.lines[-5:]}"
            time.sleep(0.01)

    def send(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text + "\n")
        self.popen.stdin.flush()

    def stderr(self) -> str:
        return self.popen.stderr.read() if self.popen.stderr else ""

    def finish(self, timeout: float = 20.0) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        for stream in (self.popen.stdout, self.popen.stderr, self.popen.stdin):
            if stream is not None:
                stream.close()


def events_of(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.lines if line.startswith("{")]


def has_end(lines: list[str]) -> bool:
    return any('"end"' in line for line in lines)


def test_run_stream_and_cancel_in_three_processes(redis_server: RedisServer) -> None:
    job = str(uuid.uuid4())
    worker = Proc("_redis_worker.py", redis_server.url, job, "ticks", 100_000, 0.002, 3.0)
    reader = canceller = None
    try:
        worker.wait_for(lambda lines: "READY" in lines)
        reader = Proc("_redis_reader.py", redis_server.url, job, 3.0)
        reader.wait_for(lambda lines: len(lines) > 50)
        canceller = Proc("_redis_cancel.py", redis_server.url, job)
        assert canceller.finish() == 0, canceller.stderr()
        assert canceller.lines == ["CONFIRMED cancelled"]
        reader.wait_for(has_end)
        worker.wait_for(lambda lines: any(x.startswith("DONE") for x in lines))
        assert "DONE cancelled" in worker.lines
        got = events_of(reader)
        assert got[-1]["kind"] == "end"
        assert got[-1]["outcome"] == "cancelled"
        body = got[:-1]
        assert all(e["kind"] == "event" for e in body)  # no gap
        assert [e["i"] for e in body] == list(range(len(body)))  # each once, in order
        assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
        assert len(body) > 50
    finally:
        for proc in (worker, reader, canceller):
            if proc is not None:
                proc.kill()


def test_a_sigkilled_owner_ends_its_stream_lost_within_the_lease(
    redis_server: RedisServer,
) -> None:
    lease = 2.0
    job = str(uuid.uuid4())
    worker = Proc("_redis_worker.py", redis_server.url, job, "ticks", 100_000, 0.005, lease)
    reader = None
    try:
        worker.wait_for(lambda lines: "READY" in lines)
        reader = Proc("_redis_reader.py", redis_server.url, job, lease)
        reader.wait_for(lambda lines: len(lines) > 20)
        os.kill(worker.popen.pid, signal.SIGKILL)
        killed = time.time()
        reader.wait_for(has_end, timeout=lease * 5)
        got = events_of(reader)
        end = got[-1]
        assert end["outcome"] == "lost"
        took = end["t"] - killed
        print(f"lost after {took:.2f} s (lease {lease} s)")
        assert took < lease  # the lease key outlives the owner by lease/2 at most
        body = got[:-1]
        assert [e["i"] for e in body] == list(range(len(body)))
        assert reader.finish() == 0
    finally:
        worker.kill()
        if reader is not None:
            reader.kill()


def test_redis_stopped_during_100k_events_bounded_and_whole(redis_server: RedisServer) -> None:
    job = str(uuid.uuid4())
    n = 100_000
    producer = Proc("_redis_worker.py", redis_server.url, job, "burst", n, 60.0, stdin=True)
    try:
        producer.wait_for(lambda lines: "READY" in lines)
        time.sleep(0.2)  # the bridge's claim is written
        redis_server.pause()
        try:
            producer.send("go")
            producer.wait_for(lambda lines: any(x.startswith("{") for x in lines), timeout=60)
        finally:
            redis_server.resume()
        held = json.loads(next(x for x in producer.lines if x.startswith("{")))
        grew_mib = (held["rss_after_kib"] - held["rss_before_kib"]) / 1024
        print(f"while stopped: queue <= {held['max_qsize']}, RSS +{grew_mib:.1f} MiB, {held}")
        assert held["max_qsize"] <= 10_000 + 256
        assert held["coalesced"] > 0
        assert grew_mib < 32
        producer.send("end")
        producer.wait_for(lambda lines: any(x.startswith("DONE") for x in lines), timeout=60)
        assert "DONE completed" in producer.lines
        text, seqs = asyncio.run(_read_tokens(redis_server.url, job))
        assert text == "".join(f"{i}," for i in range(n))
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        producer.kill()


async def _read_tokens(url: str, job: str) -> tuple[str, list[int]]:
    svc = RedisJobQueueService(url=url)
    svc.start()
    try:
        chunks, seqs = [], []
        async for event in svc.events(job):
            seqs.append(event.seq)
            if event.type == "token":
                chunks.append(event.decoded()["data"]["chunk"])
            elif event.kind == "end":
                assert event.outcome == "completed"
        return "".join(chunks), seqs
    finally:
        await svc.stop()


#: An interpreter where langflow-base 1.13.0 imports (a venv of its own: its dependencies
#: are an application's). Without it the interop test is skipped.
LANGFLOW_PYTHON = os.environ.get("JOBQUEUE_TEST_LANGFLOW_PYTHON", "")


@pytest.mark.skipif(
    not LANGFLOW_PYTHON, reason="set JOBQUEUE_TEST_LANGFLOW_PYTHON to a Python with langflow-base"
)
def test_langflow_and_jobqueue_workers_read_each_others_streams(
    redis_server: RedisServer,
) -> None:
    n = 500
    # Langflow produces, jobqueue reads: every event, then the end (no outcome from Langflow).
    job = str(uuid.uuid4())
    producer = subprocess.Popen(
        [
            LANGFLOW_PYTHON,
            str(PROCS / "_redis_langflow.py"),
            redis_server.url,
            job,
            "produce",
            str(n),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        got = asyncio.run(_read_logs(redis_server.url, job))
        assert got == ([{"i": i} for i in range(n)], "unknown")
    finally:
        producer.wait(60)
        if producer.stderr is not None:
            producer.stderr.close()
    # jobqueue produces, Langflow reads.
    job = str(uuid.uuid4())
    reader = subprocess.Popen(
        [LANGFLOW_PYTHON, str(PROCS / "_redis_langflow.py"), redis_server.url, job, "read"],
        stdout=subprocess.PIPE,
        text=True,
    )
    asyncio.run(_produce_logs(redis_server.url, job, n))
    out, _ = reader.communicate(timeout=60)
    lines = out.splitlines()
    assert lines[-1] == "END"
    assert [json.loads(x) for x in lines[:-1]] == [{"i": i} for i in range(n)]


async def _read_logs(url: str, job: str) -> tuple[list[Any], str | None]:
    svc = RedisJobQueueService(url=url)
    svc.start()
    try:
        reader = svc.events(job)
        data = [e.decoded()["data"] async for e in reader if e.kind == "event"]
        await svc._client.set(f"done:{job}", 1, ex=60)  # Langflow's producer may stop now
        return data, reader.outcome
    finally:
        await svc.stop()


async def _produce_logs(url: str, job: str, n: int) -> None:
    svc = RedisJobQueueService(url=url)
    svc.start()
    _queue, manager = svc.create_queue(job)

    async def body() -> None:
        for i in range(n):
            await manager.asend("log", {"i": i})

    svc.start_job(job, body())
    assert await svc.wait_end(job, 30) == "completed"
    await asyncio.sleep(0.5)  # let Langflow's reader take the end before the keys go
    await svc.stop()
