"""Limits (per handler, per key, rates), transactional effects, pending jobs kept as rows."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections import Counter
from contextlib import closing
from typing import Any

import pytest

from jobqueue import TaskStatus
from jobqueue.errors import InvalidArgumentError
from jobqueue.testing import TestClock

S = TaskStatus


class Peak:
    """Tracks how many runs overlap, overall and per key."""

    def __init__(self) -> None:
        self.now: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()

    async def run(self, key: str, seconds: float) -> None:
        self.now[key] += 1
        self.peak[key] = max(self.peak[key], self.now[key])
        try:
            await asyncio.sleep(seconds)
        finally:
            self.now[key] -= 1


async def test_per_handler_concurrency(make_service) -> None:
    svc = await make_service(concurrency=8)
    peak = Peak()

    @svc.handler("limited", concurrency=2)
    async def limited(ctx: Any, payload: Any) -> None:
        await peak.run("limited", 0.03)

    @svc.handler("free")
    async def free(ctx: Any, payload: Any) -> None:
        await peak.run("free", 0.03)

    await svc.submit_many("limited", list(range(10)))
    await svc.submit_many("free", list(range(10)))
    await svc.run_until_idle(timeout=10)
    assert peak.peak["limited"] == 2
    assert peak.peak["free"] > 2  # the other handler is not held back


async def test_key_concurrency_one_per_key(make_service) -> None:
    svc = await make_service(concurrency=8)
    peak = Peak()

    @svc.handler("browse")
    async def browse(ctx: Any, payload: Any) -> None:
        await peak.run(payload["profile"], 0.03)
        await peak.run("all", 0)

    for i in range(12):
        await svc.submit("browse", {"profile": f"p{i % 3}"}, concurrency_key=f"p{i % 3}")
    started = time.monotonic()
    await svc.run_until_idle(timeout=10)
    assert all(peak.peak[f"p{k}"] == 1 for k in range(3))
    # Three keys ran side by side: about 4 rounds of 30 ms, not 12.
    assert time.monotonic() - started < 12 * 0.03


async def test_key_concurrency_limit_from_submit(make_service) -> None:
    svc = await make_service(concurrency=8)
    peak = Peak()

    @svc.handler("work", key_concurrency=1)
    async def work(ctx: Any, payload: Any) -> None:
        await peak.run("k", 0.05)

    for _ in range(6):
        await svc.submit("work", concurrency_key="k", concurrency_limit=3)
    await svc.run_until_idle(timeout=10)
    assert peak.peak["k"] == 3


async def test_key_concurrency_holds_across_processes_rows(make_service, db_path) -> None:
    """A key held by a running job of another service on the file blocks this one."""
    first = await make_service(poll_interval=0.05)
    second = await make_service(poll_interval=0.05)
    gate = asyncio.Event()
    ran: list[str] = []

    async def held(ctx: Any, payload: Any) -> None:
        ran.append(ctx.job_id)
        await gate.wait()

    first.register("held", held)
    a = await first.submit("held", concurrency_key="user-1")
    for _ in range(200):
        if ran:
            break
        await asyncio.sleep(0.01)
    second.register("held", held)
    b = await second.submit("held", concurrency_key="user-1")
    await asyncio.sleep(0.3)
    assert (await second.get(b.id)).status is S.PENDING  # user-1 is busy in `first`
    gate.set()
    await first.wait(a.id, timeout=5)
    await second.wait(b.id, timeout=5)
    assert ran == [a.id, b.id]


async def test_rate_limit_per_handler(make_service) -> None:
    clock = TestClock()
    svc = await make_service(concurrency=8, clock=clock)
    starts: list[float] = []

    @svc.handler("api", rate_limit=(3, 60))
    async def api(ctx: Any, payload: Any) -> None:
        starts.append(clock.time())

    await svc.submit_many("api", list(range(9)))
    await svc.run_until_idle(timeout=10)  # the clock moves to each window's end
    assert len(starts) == 9
    # No minute holds more than 3 starts, and the next window is not wasted.
    for i in range(len(starts) - 3):
        assert starts[i + 3] - starts[i] >= 60
    assert starts[-1] - starts[0] == pytest.approx(120)  # 9 starts at 3 a minute


async def test_rate_limit_per_key(make_service) -> None:
    clock = TestClock()
    svc = await make_service(concurrency=8, clock=clock)
    starts: dict[str, list[float]] = {"a": [], "b": []}

    @svc.handler("fetch", key_rate_limit=(1, 60), key_concurrency=10)
    async def fetch(ctx: Any, payload: Any) -> None:
        starts[payload].append(clock.time())

    for key in ["a", "a", "a", "b", "b", "b"]:
        await svc.submit("fetch", key, concurrency_key=key)
    await svc.run_until_idle(timeout=10)
    for key in "ab":
        times = starts[key]
        assert len(times) == 3
        assert all(t2 - t1 >= 60 for t1, t2 in itertools.pairwise(times))
    assert starts["a"][0] == starts["b"][0]  # keys do not hold each other back


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"rate_limit": (0, 1.0)}, "rate_limit"),
        ({"rate_limit": (5, -1)}, "rate_limit"),
        ({"key_rate_limit": "5/s"}, "key_rate_limit"),
        ({"key_concurrency": True}, "key_concurrency"),
    ],
)
async def test_bad_limits_are_refused(make_service, opts, match) -> None:
    svc = await make_service()

    async def h(ctx: Any, payload: Any) -> None:
        return None

    with pytest.raises(InvalidArgumentError, match=match):
        svc.register("h", h, **opts)


async def test_bad_concurrency_key_options(make_service) -> None:
    svc = await make_service()

    @svc.handler("h")
    async def h(ctx: Any, payload: Any) -> None:
        return None

    with pytest.raises(InvalidArgumentError, match="concurrency_key"):
        await svc.submit("h", concurrency_limit=2)
    with pytest.raises(InvalidArgumentError, match="concurrency_limit"):
        await svc.submit("h", concurrency_key="k", concurrency_limit=0)
    assert await svc.list() == []


# -- pending jobs are rows, not tasks -----------------------------------------------------


async def test_pending_jobs_are_not_tasks(make_service) -> None:
    svc = await make_service()

    @svc.handler("later")
    async def later(ctx: Any, payload: Any) -> None:
        return None

    before = len(asyncio.all_tasks())
    await svc.submit_many("later", list(range(20_000)), delay=3600)
    assert len(asyncio.all_tasks()) - before < 5
    assert svc.stats()["pending"] == 20_000


# -- effects in the job's own transaction ---------------------------------------------------


def _ledger(conn: sqlite3.Connection, job_id: str, amount: int) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS ledger (job_id TEXT PRIMARY KEY, amount INTEGER)")
    conn.execute("INSERT INTO ledger VALUES (?, ?)", (job_id, amount))


async def test_effect_is_written_once_despite_retries(make_service, db_path) -> None:
    svc = await make_service(retry_backoff=0.01)

    @svc.handler("pay")
    async def pay(ctx: Any, payload: Any) -> str:
        ctx.effect(_ledger, ctx.job_id, payload)
        if ctx.attempt < 2:
            raise RuntimeError("network blip")  # the effect of this run is dropped
        return "paid"

    job = await svc.submit("pay", 42, max_retries=3)
    assert await svc.wait(job.id, timeout=10) == "paid"
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT job_id, amount FROM ledger").fetchall()
    assert rows == [(job.id, 42)]


async def test_failing_effect_fails_the_job_and_keeps_nothing(make_service, db_path) -> None:
    svc = await make_service()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS marks (x)")
        conn.execute("INSERT INTO marks VALUES (1)")
        raise ValueError("bad effect")

    @svc.handler("h")
    async def h(ctx: Any, payload: Any) -> str:
        ctx.effect(broken)
        return "ok"

    job = await svc.submit("h")
    await svc.run_until_idle(timeout=5)
    done = await svc.get(job.id)
    assert (done.status, done.reason, done.error_type) == (S.FAILED, "effect_error", "ValueError")
    with closing(sqlite3.connect(db_path)) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE name = 'marks'").fetchall()
    assert tables == []  # the savepoint rolled the effect back, table and all


async def test_effect_needs_a_callable(make_service) -> None:
    svc = await make_service()
    errors: list[str] = []

    @svc.handler("h")
    async def h(ctx: Any, payload: Any) -> None:
        try:
            ctx.effect("not callable")
        except InvalidArgumentError as exc:
            errors.append(str(exc))

    await svc.submit("h")
    await svc.run_until_idle(timeout=5)
    assert errors
    assert "callable" in errors[0]
