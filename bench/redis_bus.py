"""The Redis bus: events per second from a producer to a reader in another process.

Run (from the repository root; needs ``redis-server`` on PATH and redis-py)::

    PYTHONPATH=. python bench/redis_bus.py                  # 3 rounds x 20,000 events
    PYTHONPATH=. python bench/redis_bus.py --quick          # 1 round x 2,000 events

The script starts its own ``redis-server`` (a free port, no persistence) and, for
each run, a reader process and then a producer process. The producer prints the
wall-clock time just before its first event, the reader the time it took the
end; events/s is the count over that span. Every event is the same small
Langflow item, ``{"event": "log", "data": {"i": n}}``. Systems, in an order that
rotates from round to round:

``raw``       the limit: a bare loop of pipelined ``XADD`` (256 per round trip)
              and ``XREAD COUNT 512``, with no cursor logic, lease or outcome.
``jobqueue``  ``RedisJobQueueService``: ``await manager.asend("log", ...)`` in a
              job started with ``start_job``; the reader iterates
              ``service.events(job)`` to the end entry.
``durable``   a ``JobQueueService`` on a file (``persist_events=True``) with a
              ``RedisBus``: the handler's ``await ctx.emit("log", ...)`` go to the
              event log, which the bus copies to the stream; the reader iterates
              ``RemoteJobs(url).events(job)`` to the end entry.
``langflow``  Langflow 1.13's ``RedisJobQueueService``: ``manager.on_log(...)``
              in a job, the end sentinel put by the job; the reader takes
              items from ``get_queue_data(job)[0]`` until the sentinel. Runs
              under ``--langflow-python`` (``JOBQUEUE_BENCH_LANGFLOW_PYTHON``,
              default ``/work/lfredis/bin/python``): an interpreter where
              langflow-base 1.13.0 imports; skipped, saying why, otherwise.

Ratios are taken within each round (``jobqueue ÷ raw``, ``jobqueue ÷ langflow``,
``durable ÷ raw``)
and their medians reported. One JSON line per run, then a summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

try:
    from _common import REPO_ROOT, emit, emit_summary, log
except ImportError:  # imported as bench.redis_bus
    from bench._common import REPO_ROOT, emit, emit_summary, log

SYSTEMS = ("raw", "jobqueue", "durable", "langflow")
LANGFLOW_PYTHON = os.environ.get("JOBQUEUE_BENCH_LANGFLOW_PYTHON", "/work/lfredis/bin/python")


def item(i: int) -> tuple[str, bytes]:
    body = json.dumps({"event": "log", "data": {"i": i}})
    return f"log-{uuid.uuid4()}", (body + "\n\n").encode()


# -- the children ------------------------------------------------------------------------


async def raw_producer(url: str, job: str, n: int) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    key = f"langflow:queue:{job}"
    print(time.time(), flush=True)
    for start in range(0, n, 256):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 256)):
            event_id, data = item(i)
            pipe.xadd(key, {"event_id": event_id, "data": data, "ts": repr(time.time())})
        await pipe.execute()
    await client.xadd(key, {"event_id": "__sentinel__", "data": b"__sentinel__", "ts": "0"})
    await client.aclose()


async def raw_reader(url: str, job: str, n: int) -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    key, cursor, got = f"langflow:queue:{job}", "0-0", 0
    while True:
        reply = await client.xread({key: cursor}, count=512, block=1000)
        for entry_id, fields in reply[0][1] if reply else []:
            cursor = entry_id
            if fields[b"data"] == b"__sentinel__":
                await client.aclose()
                return got
            got += 1


async def jobqueue_producer(url: str, job: str, n: int) -> None:
    from jobqueue.redis import RedisJobQueueService

    svc = RedisJobQueueService(url=url)
    svc.start()
    _queue, manager = svc.create_queue(job)

    async def body() -> None:
        print(time.time(), flush=True)
        for i in range(n):
            await manager.asend("log", {"i": i})

    svc.start_job(job, body())
    await svc.wait_end(job, 120)
    await svc.stop()


async def jobqueue_reader(url: str, job: str, n: int) -> int:
    from jobqueue.redis import RedisJobQueueService

    svc = RedisJobQueueService(url=url)
    svc.start()
    got = 0
    async for event in svc.events(job):
        got += event.kind == "event"
    await svc.stop()
    return got


async def durable_producer(url: str, job: str, n: int) -> None:
    from jobqueue import JobQueueService
    from jobqueue.redis import RedisBus

    with tempfile.TemporaryDirectory() as folder:
        service = JobQueueService(os.path.join(folder, "jobs.db"), persist_events=True)

        @service.handler("emit")
        async def emit_all(ctx: Any, count: int) -> None:
            print(time.time(), flush=True)
            for i in range(count):
                await ctx.emit("log", {"i": i})

        async with service, RedisBus(service, url):
            await service.submit("emit", n, job_id=job)
            await service.wait(job, timeout=120)


async def durable_reader(url: str, job: str, n: int) -> int:
    from jobqueue.redis import RemoteJobs

    got = 0
    async with RemoteJobs(url) as remote:
        async for event in remote.events(job):
            got += event.type == "log"
    return got


async def langflow_producer(url: str, job: str, n: int) -> None:
    from langflow.services.job_queue.service import RedisJobQueueService

    svc = RedisJobQueueService(url=url)
    svc.start()
    queue, manager = svc.create_queue(job)

    async def body() -> None:
        print(time.time(), flush=True)
        for i in range(n):
            manager.on_log(data={"i": i})
            if i % 100 == 99:
                await asyncio.sleep(0)
        await queue.put((None, None, time.time()))

    svc.start_job(job, body())
    # Its stop() deletes the stream: wait until the reader is through (it sets a key),
    # else a reader still behind takes the missing key for the end.
    for _ in range(2400):  # two minutes at most
        if await ended(svc._client, job) and await svc._client.exists(f"bench:{job}"):
            break
        await asyncio.sleep(0.05)
    await svc.stop()


async def ended(client: Any, job: str) -> bool:
    top = await client.xrevrange(f"langflow:queue:{job}", count=1)
    return bool(top) and top[0][1].get(b"data") == b"__sentinel__"


async def langflow_reader(url: str, job: str, n: int) -> int:
    from langflow.services.job_queue.service import RedisJobQueueService

    svc = RedisJobQueueService(url=url)
    svc.start()
    queue = svc.get_queue_data(job)[0]
    got = 0
    while True:
        event_id, _data, _ts = await queue.get()
        if event_id is None:
            break
        got += 1
    await svc._client.set(f"bench:{job}", 1, ex=60)
    await queue.cancel()
    await svc.stop()
    return got


def child(role: str, system: str, url: str, job: str, n: int) -> None:
    fn = globals()[f"{system}_{role}"]
    if role == "reader":
        print("READY", flush=True)
        got = asyncio.run(fn(url, job, n))
        print(json.dumps({"t_end": time.time(), "got": got}), flush=True)
    else:
        asyncio.run(fn(url, job, n))


# -- the driver ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    port, folder = free_port(), tempfile.mkdtemp(prefix="jq-bench-redis-")
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", folder]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"redis://127.0.0.1:{port}/0", folder
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def run_once(python: str, system: str, url: str, n: int) -> dict[str, Any]:
    job = str(uuid.uuid4())
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    cmd = [python, os.path.abspath(__file__), "_child"]
    reader = subprocess.Popen(
        [*cmd, "reader", system, url, job, str(n)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert reader.stdout is not None
    if reader.stdout.readline().strip() != "READY":
        raise RuntimeError(f"{system} reader did not start")
    producer = subprocess.run(
        [*cmd, "producer", system, url, job, str(n)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    out, _ = reader.communicate(timeout=120)
    if producer.returncode or reader.returncode:
        raise RuntimeError(f"{system}: {producer.stderr[-500:]}")
    t0 = float(producer.stdout.split()[0])
    end = json.loads(out.strip().splitlines()[-1])
    seconds = end["t_end"] - t0
    return {"events": end["got"], "seconds": round(seconds, 4), "events_per_s": round(n / seconds)}


def langflow_missing(python: str) -> str | None:
    if not os.path.exists(python):
        return f"no interpreter at {python} (set JOBQUEUE_BENCH_LANGFLOW_PYTHON)"
    probe = "from langflow.services.job_queue.service import RedisJobQueueService"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    if done.returncode:
        return f"langflow-base 1.13.0 does not import there: {done.stderr.strip()[-200:]}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round x 2,000 events")
    parser.add_argument("--langflow-python", default=LANGFLOW_PYTHON)
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds = 2_000, 1
    started = time.perf_counter()
    if shutil.which("redis-server") is None:
        emit({"system": "summary", "bench": "redis_bus", "skipped": "no redis-server on PATH"})
        return 0
    skipped = {"langflow": reason} if (reason := langflow_missing(args.langflow_python)) else {}
    for name, why in skipped.items():
        log(f"{name} skipped: {why}")
    server, url, folder = start_redis()
    rates: dict[str, list[float]] = {s: [] for s in SYSTEMS}
    ratios: dict[str, list[float]] = {
        "jobqueue_over_raw": [],
        "jobqueue_over_langflow": [],
        "durable_over_raw": [],
    }
    try:
        for rnd in range(args.rounds):
            order = SYSTEMS[rnd % 4 :] + SYSTEMS[: rnd % 4]
            got: dict[str, float] = {}
            for system in order:
                if system in skipped:
                    continue
                python = args.langflow_python if system == "langflow" else sys.executable
                result = run_once(python, system, url, args.events)
                emit({"bench": "redis_bus", "round": rnd, "system": system, **result})
                if result["events"] != args.events:
                    raise RuntimeError(f"{system} delivered {result['events']} of {args.events}")
                got[system] = result["events_per_s"]
                rates[system].append(result["events_per_s"])
            ratios["jobqueue_over_raw"].append(got["jobqueue"] / got["raw"])
            ratios["durable_over_raw"].append(got["durable"] / got["raw"])
            if "langflow" in got:
                ratios["jobqueue_over_langflow"].append(got["jobqueue"] / got["langflow"])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    summary: dict[str, Any] = {"system": "summary", "bench": "redis_bus", "events": args.events}
    summary["rounds"] = args.rounds
    for system, values in rates.items():
        if values:
            summary[f"{system}_events_per_s"] = round(statistics.median(values))
    for name, values in ratios.items():
        if values:
            summary[name] = round(statistics.median(values), 3)
    summary["skipped_systems"] = skipped
    return emit_summary(summary, started)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        sys.exit(main())
