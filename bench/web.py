"""The web dashboard: list and detail at 1,000,000 jobs, and 10 live event followers.

Run (from the repository root)::

    PYTHONPATH=. python bench/web.py            # 1,000,000 jobs; 10 followers x 10 s
    PYTHONPATH=. python bench/web.py --quick    # 20,000 jobs; 10 followers x 2 s

``endpoints``: a file of ``--jobs`` jobs (schema made by a service, then the
rows written by one ``executemany`` of plain sqlite3: seconds, not minutes),
served by ``create_app(path)``; each request goes through the whole app
(guard, routing, JSON) over httpx's in-process ASGI transport and is timed
from send to body: the first page, pages deep in the table (keyset cursor),
each status, a handler, a handler and status, a session, an id prefix, and
the detail of random jobs. Target: p99 <= 50 ms per kind.

``followers``: a producer process emits ~1,000 events/s from one job (the
persisted log); this process serves the dashboard with uvicorn, while a
third process holds 10 SSE streams of that job. A coroutine in the server
measures its loop's lag (oversleep of a 5 ms sleep). Targets: lag p99 <=
10 ms, and every follower gets every event, in order, once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sqlite3
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import emit, figure, log, percentile, summarize_ms, temp_db

HERE = os.path.abspath(__file__)
HANDLERS = ("resize", "email", "report", "crawl", "summarize")
STATUS_MIX = ["completed"] * 90 + ["failed"] * 4 + ["cancelled"] * 2 + ["pending"] * 3 + ["stopped"]


def make_file(path: str, n: int) -> float:
    """A file of ``n`` jobs (mostly finished); returns the seconds it took."""
    from jobqueue import JobQueueService

    started = time.perf_counter()

    async def schema() -> None:
        async with JobQueueService(path):
            pass

    asyncio.run(schema())
    rnd = random.Random(7)
    t0 = time.time() - n * 0.01

    def rows() -> Any:
        for i in range(n):
            t = t0 + i * 0.01
            status = rnd.choice(STATUS_MIX)
            done = status != "pending"
            yield (
                f"{int(t * 1000):012x}{rnd.getrandbits(80):020x}",
                rnd.choice(HANDLERS),
                status,
                json.dumps({"n": i, "text": "x" * 40}),
                f"session-{i % 5000}",
                t,
                t,
                t + 0.1 if done else None,
                t + 0.3 if done else None,
                t,
                '"ok"' if status == "completed" else None,
                "boom" if status == "failed" else None,
            )

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        conn.executemany(
            "INSERT INTO jobs (id, handler, status, payload, session_id, created_at, updated_at,"
            " started_at, completed_at, run_at, result, error_message)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows(),
        )
    conn.close()
    return time.perf_counter() - started


async def endpoints(path: str, rounds: int) -> list[dict[str, Any]]:
    import httpx

    from jobqueue.web import create_app

    app = create_app(path, authorize=lambda request: "full")
    transport = httpx.ASGITransport(app=app)
    conn = sqlite3.connect(path)
    ids = [r[0] for r in conn.execute("SELECT id FROM jobs ORDER BY random() LIMIT ?", (rounds,))]
    (top,) = conn.execute("SELECT max(seq) FROM jobs").fetchone()
    conn.close()
    rnd = random.Random(3)
    kinds: dict[str, Any] = {
        "first_page": lambda: "api/jobs",
        "deep_page": lambda: f"api/jobs?cursor={rnd.randrange(100, top)}",
        "status": lambda: f"api/jobs?status={rnd.choice(['failed', 'pending', 'running'])}",
        "status_deep": lambda: f"api/jobs?status=failed&cursor={rnd.randrange(100, top)}",
        "handler": lambda: f"api/jobs?handler={rnd.choice(HANDLERS)}",
        "handler_status": lambda: f"api/jobs?handler={rnd.choice(HANDLERS)}&status=stopped",
        "session": lambda: f"api/jobs?session=session-{rnd.randrange(5000)}",
        "id_prefix": lambda: f"api/jobs?id={rnd.choice(ids)[:14]}",
        "detail": lambda: f"api/jobs/{rnd.choice(ids)}",
        "overview": lambda: "api/overview",
    }
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench/") as c:
        await c.get("api/me")  # opens the app's service and its read connection
        for kind, url in kinds.items():
            times = []
            # The overview waits out its 2 s cache between reads: 5 of them, 2 when quick.
            for _ in range(rounds if kind != "overview" else (5 if rounds >= 100 else 2)):
                target = url()
                started = time.perf_counter()
                r = await c.get(target)
                times.append(time.perf_counter() - started)
                if r.status_code != 200:
                    raise RuntimeError(f"{target}: {r.status_code} {r.text[:200]}")
                if kind == "overview":
                    await asyncio.sleep(2.05)  # past its cache: each one a scan
            times.sort()
            p99 = percentile(times, 99) * 1000
            record = {"bench": "web_endpoint", "kind": kind, "n": len(times)}
            record.update(summarize_ms(times))
            if kind != "overview":
                record.update(figure(f"web_{kind}_p99", round(p99, 3), "ms", 50.0))
            emit(record)
            out.append(record)
    await app.state.dashboard.aclose()
    return out


def produce(path: str, seconds: float, rate: int) -> None:
    """The producer process: one job emitting ``rate`` events/s for ``seconds``."""
    from jobqueue import JobQueueService

    async def run() -> None:
        async with JobQueueService(path, persist_events=True, poll_interval=0.05) as service:

            @service.handler("burst")
            async def burst(ctx: Any, payload: Any) -> int:
                await asyncio.sleep(payload["delay"])
                n, per_tick = int(payload["seconds"] * payload["rate"]), payload["rate"] // 100
                start = time.perf_counter()
                for i in range(n):
                    await ctx.emit("tick", {"i": i})
                    if i % per_tick == per_tick - 1:  # 100 ticks a second, on schedule
                        ahead = start + (i + 1) / payload["rate"] - time.perf_counter()
                        await asyncio.sleep(max(ahead, 0))
                return n

            job = await service.submit(
                "burst", {"seconds": seconds, "rate": rate, "delay": 1.0}, job_id="burst-job"
            )
            print(job.id, flush=True)
            await service.wait(job.id)

    asyncio.run(run())


def follow(url: str, n: int, expected: int) -> None:
    """The followers process: ``n`` SSE streams; prints what each received."""
    import httpx

    async def one(c: httpx.AsyncClient) -> dict[str, Any]:
        seqs: list[int] = []
        async with c.stream("GET", url) as r:
            async for line in r.aiter_lines():
                if line.startswith('data: {"seq"'):
                    seqs.append(json.loads(line[6:])["seq"])
                elif line.startswith("event: done"):
                    break
        ok = seqs == list(range(1, len(seqs) + 1)) and len(seqs) == expected
        return {"events": len(seqs), "in_order_once": ok}

    async def run() -> None:
        async with httpx.AsyncClient(timeout=60) as c:
            results = await asyncio.gather(*(one(c) for _ in range(n)))
        print(json.dumps(results), flush=True)

    asyncio.run(run())


async def followers(path: str, seconds: float, rate: int, n: int) -> dict[str, Any]:
    import httpx
    import uvicorn

    from jobqueue.web import create_app

    here = HERE
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(here))}
    producer = await asyncio.create_subprocess_exec(
        sys.executable, here, "--role", "produce", "--db", path, "--seconds", str(seconds),
        "--rate", str(rate), stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert producer.stdout is not None
    job_id = (await producer.stdout.readline()).decode().strip()
    app = create_app(path, authorize=lambda request: "full")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    async with httpx.AsyncClient() as warm:  # the app opens its service: not steady state
        while not server.started:  # noqa: ASYNC110 (uvicorn's flag)
            await asyncio.sleep(0.01)
        (await warm.get(f"http://127.0.0.1:{port}/api/me")).raise_for_status()
    lags: list[float] = []
    measuring = True

    async def lag() -> None:
        while measuring:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - started - 0.005)
            if os.environ.get("WEB_BENCH_TRACE") and lags[-1] > 0.004:
                log(f"lag {lags[-1] * 1000:.1f} ms at sample {len(lags)}")

    watcher = asyncio.create_task(lag())
    expected = int(seconds * rate) + 1  # the ticks and the end event
    url = f"http://127.0.0.1:{port}/api/jobs/{job_id}/events"
    clients = await asyncio.create_subprocess_exec(
        sys.executable, here, "--role", "follow", "--url", url, "--followers", str(n),
        "--expected", str(expected), stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, _ = await clients.communicate()
    measuring = False
    await watcher
    await producer.wait()
    results = json.loads(out)
    await app.state.dashboard.hub.close()
    server.should_exit = True
    await serving
    lags.sort()
    lag_p99 = percentile(lags, 99) * 1000
    complete = all(r["in_order_once"] for r in results)
    record = {
        "bench": "web_followers",
        "followers": n,
        "rate": rate,
        "seconds": seconds,
        "expected_events": expected,
        "received": [r["events"] for r in results],
        "lag_samples": len(lags),
        "lag_p50_ms": round(percentile(lags, 50) * 1000, 3),
        "lag_max_ms": round(lags[-1] * 1000, 3),
        "all_events_in_order_once": complete,
    }
    record.update(figure("web_followers_loop_lag_p99", round(lag_p99, 3), "ms", 10.0, ok=complete))
    emit(record)
    return record


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--rounds", type=int, default=200, help="requests per endpoint kind")
    p.add_argument("--role", choices=("produce", "follow"), help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--followers", type=int, default=10)
    p.add_argument("--expected", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "produce":
        produce(args.db, args.seconds, args.rate)
        return 0
    if args.role == "follow":
        follow(args.url, args.followers, args.expected)
        return 0
    started = time.perf_counter()
    jobs = args.jobs or (20_000 if args.quick else 1_000_000)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    with temp_db("web.db") as path:
        took = make_file(path, jobs)
        log(f"web: {jobs:,} jobs written in {took:.1f} s")
        emit({"bench": "web_file", "jobs": jobs, "seconds": round(took, 2)})
        asyncio.run(endpoints(path, 50 if args.quick else args.rounds))
    with temp_db("web-events.db") as path:
        asyncio.run(followers(path, seconds, args.rate, args.followers))
    emit({"bench": "web", "wall_s": round(time.perf_counter() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
