"""Throughput, latency and memory of jobqueue against SQLite/asyncio baselines.

Run (from the repository root)::

    PYTHONPATH=. python bench/throughput.py                # everything, ~20 s per repeat
    PYTHONPATH=. python bench/throughput.py --quick        # smoke run, a few seconds
    PYTHONPATH=. python bench/throughput.py --only a,c --repeat 3

Every figure is one JSON line on stdout; progress goes to stderr. Each system
runs in a fresh child process (``--child``) so that the memory and GC state of
one does not pollute another; the parent re-prints the children's lines, adds
the ratios that need two systems of the same repetition (``c_vs_a``) and ends
with one ``"system": "summary"`` line. Ratios measured in one run are the
figures to trust on a noisy shared machine; absolute numbers are informative.

Systems (``--only`` takes names, the aliases a, b, b2, c, d, e, or the groups
``baselines``, ``jobqueue``, ``latency``, ``rss``):

* a  ``sqlite3_ceiling``        stdlib sqlite3, one thread, batched executemany
* b  ``aiosqlite_naive``        aiosqlite, one commit per row write, 8 coroutines
* b2 ``aiosqlite_batching``     aiosqlite behind a simple group-commit writer
* c  ``jobqueue_submit_many``   the library: submit_many in chunks, run_until_idle
*    ``jobqueue_submit_gather`` the library: gathered submit() calls, run_until_idle
* d  ``latency_asyncio`` / ``latency_jobqueue``  submit->start at a steady rate
* e  ``rss_asyncio`` / ``rss_jobqueue_running`` / ``rss_jobqueue_pending``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sqlite3
import statistics
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:  # imported as ``bench.throughput`` rather than run as a script
    sys.path.insert(0, _BENCH_DIR)

from _common import (  # noqa: E402
    COMPLETED_SQL,
    INSERT_SQL,
    PRAGMAS,
    RUNNING_SQL,
    SCHEMA,
    count_statuses,
    emit,
    emit_summary,
    error_list,
    log,
    mem_snapshot,
    select_systems,
    spawn_child,
    summarize_ms,
    temp_db,
)

BENCH: Final = "throughput"
#: The target from issue 3: 2 x 12.8k jobs/s on this 2-core machine.
TARGET_JOBS_PER_S: Final = 2 * 12_800
#: The other throughput target from issue 3: jobqueue >= 30% of the sqlite3 ceiling.
TARGET_VS_CEILING: Final = 0.30
#: Target submit->start p99 at 500 jobs/s.
TARGET_LATENCY_P99_MS: Final = 2.0

SYSTEMS: Final = (
    "sqlite3_ceiling",
    "aiosqlite_naive",
    "aiosqlite_batching",
    "jobqueue_submit_many",
    "jobqueue_submit_gather",
    "latency_asyncio",
    "latency_jobqueue",
    "rss_asyncio",
    "rss_jobqueue_running",
    "rss_jobqueue_pending",
)
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "a": ("sqlite3_ceiling",),
    "b": ("aiosqlite_naive",),
    "b2": ("aiosqlite_batching",),
    "c": ("jobqueue_submit_many", "jobqueue_submit_gather"),
    "d": ("latency_asyncio", "latency_jobqueue"),
    "e": ("rss_asyncio", "rss_jobqueue_running", "rss_jobqueue_pending"),
    "baselines": ("sqlite3_ceiling", "aiosqlite_naive", "aiosqlite_batching"),
    "jobqueue": ("jobqueue_submit_many", "jobqueue_submit_gather"),
    "latency": ("latency_asyncio", "latency_jobqueue"),
    "rss": ("rss_asyncio", "rss_jobqueue_running", "rss_jobqueue_pending"),
    "all": SYSTEMS,
}
JOBQUEUE_THROUGHPUT: Final = ("jobqueue_submit_many", "jobqueue_submit_gather")


@dataclass(frozen=True)
class Config:
    """Sizes of one run, derived from the command line."""

    jobs: int
    concurrency: int
    quick: bool
    batch: int
    naive_jobs: int
    naive_workers: int
    submit_many_chunk: int
    gather_chunk: int
    latency_rate: float
    latency_jobs: int
    rss_jobs: int
    rss_pending_concurrency: int
    repeat_index: int

    def base(self, system: str) -> dict[str, Any]:
        """The fields every JSON line starts with."""
        return {"bench": BENCH, "system": system, "repeat": self.repeat_index}


def _rate(jobs: int, seconds: float) -> float:
    return round(jobs / seconds, 1) if seconds > 0 else math.inf


def _job_rows(start: int, stop: int, now: float) -> list[tuple[str, str, str, float, float, float]]:
    """INSERT_SQL parameters for jobs ``start..stop-1`` (uuid ids, JSON payloads)."""
    return [
        (uuid.uuid4().hex, "noop", json.dumps({"i": i}), now, now, now) for i in range(start, stop)
    ]


# --------------------------------------------------------------------------- (a)


def bench_sqlite3_ceiling(cfg: Config) -> None:
    """(a) stdlib sqlite3 in one thread: per batch, insert / running / completed, each committed.

    Three row writes per job, ``cfg.batch`` jobs per transaction, three
    transactions per batch; ids, JSON payloads and timestamps are made inside
    the timed loop, as a real queue has to.
    """
    system = "sqlite3_ceiling"
    n = cfg.jobs
    with temp_db() as path:
        conn = sqlite3.connect(path)
        try:
            for pragma in PRAGMAS:
                conn.execute(pragma)
            conn.executescript(SCHEMA)
            conn.commit()
            result = json.dumps(None)
            started = time.perf_counter()
            for lo in range(0, n, cfg.batch):
                hi = min(n, lo + cfg.batch)
                rows = _job_rows(lo, hi, time.time())
                conn.executemany(INSERT_SQL, rows)
                conn.commit()
                now = time.time()
                conn.executemany(RUNNING_SQL, [(now, now, row[0]) for row in rows])
                conn.commit()
                now = time.time()
                conn.executemany(COMPLETED_SQL, [(result, now, now, row[0]) for row in rows])
                conn.commit()
            elapsed = time.perf_counter() - started
        finally:
            conn.close()
        statuses = count_statuses(path)
    emit(
        {
            **cfg.base(system),
            "jobs": n,
            "jobs_per_s": _rate(n, elapsed),
            "seconds": round(elapsed, 4),
            "batch": cfg.batch,
            "writes_per_job": 3,
            "commits": 3 * math.ceil(n / cfg.batch),
            "statuses": statuses,
        }
    )


# --------------------------------------------------------------------------- (b)


async def _open_aiosqlite(path: str) -> Any:
    import aiosqlite

    db = await aiosqlite.connect(path)
    for pragma in PRAGMAS:
        await db.execute(pragma)
    await db.executescript(SCHEMA)
    await db.commit()
    return db


async def _aiosqlite_naive(cfg: Config, path: str) -> tuple[int, float]:
    n = min(cfg.jobs, cfg.naive_jobs)
    db = await _open_aiosqlite(path)
    try:
        numbers = iter(range(n))
        result = json.dumps(None)
        # Without this lock one coroutine's commit would also commit another's
        # pending write (one connection, implicit transactions), which is group
        # commit by accident; the lock makes it one transaction per change.
        lock = asyncio.Lock()

        async def change(sql: str, params: tuple[Any, ...]) -> None:
            async with lock:
                await db.execute(sql, params)
                await db.commit()

        async def worker() -> None:
            for i in numbers:  # shared iterator: each job is taken by exactly one worker
                job_id = uuid.uuid4().hex
                now = time.time()
                await change(INSERT_SQL, (job_id, "noop", json.dumps({"i": i}), now, now, now))
                now = time.time()
                await change(RUNNING_SQL, (now, now, job_id))
                now = time.time()
                await change(COMPLETED_SQL, (result, now, now, job_id))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(cfg.naive_workers)))
        elapsed = time.perf_counter() - started
    finally:
        await db.close()
    return n, elapsed


def bench_aiosqlite_naive(cfg: Config) -> None:
    """(b) aiosqlite, one transaction per row write, jobs run by a few coroutines."""
    system = "aiosqlite_naive"
    with temp_db() as path:
        n, elapsed = asyncio.run(_aiosqlite_naive(cfg, path))
        statuses = count_statuses(path)
    emit(
        {
            **cfg.base(system),
            "jobs": n,
            "jobs_per_s": _rate(n, elapsed),
            "seconds": round(elapsed, 4),
            "workers": cfg.naive_workers,
            "writes_per_job": 3,
            "commits": 3 * n,
            "statuses": statuses,
        }
    )


# --------------------------------------------------------------------------- (b2)

_Write = tuple[str, tuple[Any, ...], "asyncio.Future[None]"]


class BatchingWriter:
    """A simple group-commit writer over one aiosqlite connection.

    Callers enqueue ``(sql, params)`` and await a future; one writer coroutine
    takes everything queued, runs one ``executemany`` per distinct statement
    and one ``commit``, then resolves the futures. No ordering is needed
    across statements of one batch: a job issues its next write only after
    its previous one has been committed.
    """

    def __init__(self, db: Any, max_batch: int) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self.batches = 0
        self.writes = 0

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((sql, params, future))
        await future

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            groups: dict[str, list[tuple[Any, ...]]] = {}
            for sql, params, _ in batch:
                groups.setdefault(sql, []).append(params)
            try:
                for sql, rows in groups.items():
                    await self._db.executemany(sql, rows)
                await self._db.commit()
            except Exception as exc:
                await self._db.rollback()
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
            self.batches += 1
            self.writes += len(batch)


async def _aiosqlite_batching(cfg: Config, path: str) -> dict[str, Any]:
    n = cfg.jobs
    db = await _open_aiosqlite(path)
    writer = BatchingWriter(db, max_batch=cfg.batch)
    writer_task = asyncio.create_task(writer.run())
    try:
        numbers = iter(range(n))
        result = json.dumps(None)

        async def worker() -> None:
            for i in numbers:
                job_id = uuid.uuid4().hex
                now = time.time()
                await writer.write(
                    INSERT_SQL, (job_id, "noop", json.dumps({"i": i}), now, now, now)
                )
                now = time.time()
                await writer.write(RUNNING_SQL, (now, now, job_id))
                now = time.time()
                await writer.write(COMPLETED_SQL, (result, now, now, job_id))

        workers = min(cfg.concurrency, n) or 1
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = time.perf_counter() - started
    finally:
        writer.close()
        await writer_task
        await db.close()
    return {
        "jobs": n,
        "jobs_per_s": _rate(n, elapsed),
        "seconds": round(elapsed, 4),
        "workers": workers,
        "writes_per_job": 3,
        "commits": writer.batches,
        "mean_batch": round(writer.writes / max(writer.batches, 1), 1),
    }


def bench_aiosqlite_batching(cfg: Config) -> None:
    """(b2) aiosqlite behind a batching writer: executemany + one commit per batch."""
    system = "aiosqlite_batching"
    with temp_db() as path:
        fields = asyncio.run(_aiosqlite_batching(cfg, path))
        statuses = count_statuses(path)
    emit({**cfg.base(system), **fields, "statuses": statuses})


# --------------------------------------------------------------------------- (c)


def _import_service() -> Any:
    from jobqueue import JobQueueService

    return JobQueueService


def _error_line(cfg: Config, system: str, exc: BaseException, **extra: Any) -> None:
    log(f"{system} failed:\n{''.join(traceback.format_exception(exc))}")
    emit({**cfg.base(system), **extra, "error": f"{type(exc).__name__}: {exc}"[:500]})


def _chunks(n: int, size: int) -> Iterator[range]:
    for lo in range(0, n, size):
        yield range(lo, min(n, lo + size))


async def _jobqueue_throughput(cfg: Config, path: str, variant: str) -> dict[str, Any]:
    service_cls = _import_service()
    n = cfg.jobs
    opened = time.perf_counter()
    async with service_cls(path, concurrency=cfg.concurrency) as svc:
        open_s = time.perf_counter() - opened

        @svc.handler("noop")
        async def noop(ctx: Any, payload: Any) -> None:
            return None

        submitted_ids = 0
        started = time.perf_counter()
        if variant == "submit_many":
            for chunk in _chunks(n, cfg.submit_many_chunk):
                jobs = await svc.submit_many("noop", [{"i": i} for i in chunk])
                submitted_ids += len(jobs)
        else:
            for chunk in _chunks(n, cfg.gather_chunk):
                jobs = await asyncio.gather(*(svc.submit("noop", {"i": i}) for i in chunk))
                submitted_ids += len(jobs)
        submit_s = time.perf_counter() - started
        await svc.run_until_idle()
        elapsed = time.perf_counter() - started
        closing = time.perf_counter()
    close_s = time.perf_counter() - closing
    if submitted_ids != n:
        raise RuntimeError(f"submitted {n} jobs but got {submitted_ids} job records back")
    jobs_per_s = _rate(n, elapsed)
    return {
        "jobs": n,
        "jobs_per_s": jobs_per_s,
        "seconds": round(elapsed, 4),
        "submit_s": round(submit_s, 4),
        "open_s": round(open_s, 4),
        "close_s": round(close_s, 4),
        "concurrency": cfg.concurrency,
        "chunk": cfg.submit_many_chunk if variant == "submit_many" else cfg.gather_chunk,
        "c_vs_target": round(jobs_per_s / TARGET_JOBS_PER_S, 3),
        "target_jobs_per_s": TARGET_JOBS_PER_S,
    }


def bench_jobqueue_throughput(cfg: Config, system: str) -> None:
    """(c) the library: N no-op jobs submitted and completed, every change committed."""
    variant = system.removeprefix("jobqueue_")
    with temp_db() as path:
        try:
            fields = asyncio.run(_jobqueue_throughput(cfg, path, variant))
        except Exception as exc:
            _error_line(cfg, system, exc, jobs=cfg.jobs)
            return
        statuses = count_statuses(path)
    if statuses is not None and statuses.get("completed", 0) != cfg.jobs:
        fields["warning"] = f"expected {cfg.jobs} completed rows in the database, saw {statuses}"
        log(f"{system}: {fields['warning']}")
    emit({**cfg.base(system), **fields, "statuses": statuses})


# --------------------------------------------------------------------------- (d)


@dataclass
class _LatencyRun:
    latencies: list[float]
    submit_s: list[float]
    lateness: list[float]
    producer_s: float


async def _steady_producer(
    rate: float, n: int, submit: Callable[[float], Awaitable[None]], done: asyncio.Event
) -> _LatencyRun:
    """Start ``n`` submissions at ``rate``/s on absolute deadlines (open loop).

    Each submission is its own task, so a slow ``submit`` cannot hold back the
    next arrival (no coordinated omission); ``t0`` is taken just before
    ``await submit``. ``lateness`` is how late the producer woke for a deadline.
    """
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    submit_s: list[float] = []
    lateness: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        t0 = time.perf_counter()
        await submit(t0)
        submit_s.append(time.perf_counter() - t0)

    first = loop.time() + 0.02
    for k in range(n):
        deadline = first + k * interval
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(max(0.0, loop.time() - deadline))
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    producer_s = loop.time() - first
    await asyncio.wait_for(done.wait(), timeout=30 + n / rate)
    if tasks:
        await asyncio.gather(*tasks)
    return _LatencyRun([], submit_s, lateness, producer_s)


def _latency_fields(cfg: Config, run: _LatencyRun, n: int) -> dict[str, Any]:
    return {
        "jobs": n,
        "rate_per_s": cfg.latency_rate,
        "achieved_rate_per_s": round((n - 1) / run.producer_s, 1) if run.producer_s > 0 else None,
        **summarize_ms(run.latencies),
        **summarize_ms(run.submit_s, prefix="submit_"),
        "producer_late_p99_ms": summarize_ms(run.lateness)["p99_ms"],
        "target_p99_ms": TARGET_LATENCY_P99_MS,
    }


async def _latency_asyncio(cfg: Config) -> dict[str, Any]:
    n = cfg.latency_jobs
    queue: asyncio.Queue[dict[str, float]] = asyncio.Queue()
    latencies: list[float] = []
    done = asyncio.Event()

    async def worker() -> None:
        while True:
            item = await queue.get()
            latencies.append(time.perf_counter() - item["t"])
            if len(latencies) >= n:
                done.set()

    async def submit(t0: float) -> None:
        await queue.put({"t": t0})

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    try:
        run = await _steady_producer(cfg.latency_rate, n, submit, done)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    run.latencies = latencies
    return {**_latency_fields(cfg, run, n), "workers": len(workers)}


async def _latency_jobqueue(cfg: Config, path: str) -> dict[str, Any]:
    service_cls = _import_service()
    n = cfg.latency_jobs
    latencies: list[float] = []
    done = asyncio.Event()
    warmup = 50
    async with service_cls(path, concurrency=cfg.concurrency) as svc:

        @svc.handler("lat")
        async def lat(ctx: Any, payload: Any) -> None:
            latencies.append(time.perf_counter() - payload["t"])
            if len(latencies) >= n:
                done.set()

        # Warm up code paths and the connection, then start counting from zero.
        for _ in range(warmup):
            await svc.submit("lat", {"t": time.perf_counter()})
        await svc.run_until_idle()
        latencies.clear()

        async def submit(t0: float) -> None:
            await svc.submit("lat", {"t": t0})

        run = await _steady_producer(cfg.latency_rate, n, submit, done)
        await svc.run_until_idle()
    run.latencies = latencies
    return {**_latency_fields(cfg, run, n), "concurrency": cfg.concurrency, "warmup": warmup}


def bench_latency(cfg: Config, system: str) -> None:
    """(d) submit->start latency at a steady rate: plain asyncio.Queue or the library."""
    if system == "latency_asyncio":
        fields = asyncio.run(_latency_asyncio(cfg))
        emit({**cfg.base(system), **fields})
        return
    with temp_db() as path:
        try:
            fields = asyncio.run(_latency_jobqueue(cfg, path))
        except Exception as exc:
            _error_line(cfg, system, exc, jobs=cfg.latency_jobs)
            return
    fields["meets_target"] = fields["p99_ms"] <= TARGET_LATENCY_P99_MS
    emit({**cfg.base(system), **fields})


# --------------------------------------------------------------------------- (e)


def _mem_delta(before: dict[str, int], after: dict[str, int], n: int, tag: str) -> dict[str, Any]:
    rss = after["rss_kib"] - before["rss_kib"]
    return {
        f"rss_growth_{tag}_mib": round(rss / 1024, 2),
        f"rss_growth_{tag}_kib_per_job": round(rss / n, 3),
        f"blocks_growth_{tag}": after["blocks"] - before["blocks"],
        f"peak_rss_growth_{tag}_mib": round((after["hwm_kib"] - before["hwm_kib"]) / 1024, 2),
    }


class _StartCounter:
    """Counts handler starts; ``await reach(k)`` returns once ``k`` have started."""

    def __init__(self) -> None:
        self.count = 0
        self._target = math.inf
        self._reached = asyncio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self._target:
            self._reached.set()

    async def reach(self, target: int, seconds: float = 60.0) -> None:
        self._target = target
        if self.count >= target:
            return
        self._reached.clear()
        async with asyncio.timeout(seconds):
            await self._reached.wait()


async def _rss_asyncio(cfg: Config) -> dict[str, Any]:
    """10k plain tasks, each holding an asyncio.Queue and waiting on one Event."""
    n = cfg.rss_jobs
    release = asyncio.Event()
    started = _StartCounter()

    async def holder(queue: asyncio.Queue[Any]) -> None:
        started.hit()
        await release.wait()
        queue.put_nowait(None)

    before = mem_snapshot()
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in range(n)]
    tasks = [asyncio.create_task(holder(q)) for q in queues]
    await started.reach(n)
    after = mem_snapshot()
    release.set()
    await asyncio.gather(*tasks)
    return {
        "jobs": n,
        "rss_before_mib": round(before["rss_kib"] / 1024, 2),
        **_mem_delta(before, after, n, "started"),
    }


async def _rss_jobqueue(cfg: Config, path: str, running: bool) -> dict[str, Any]:
    service_cls = _import_service()
    n = cfg.rss_jobs
    concurrency = n if running else cfg.rss_pending_concurrency
    release = asyncio.Event()
    started = _StartCounter()
    async with service_cls(path, concurrency=concurrency) as svc:

        @svc.handler("hold")
        async def hold(ctx: Any, payload: Any) -> None:
            started.hit()
            await release.wait()

        @svc.handler("noop")
        async def noop(ctx: Any, payload: Any) -> None:
            return None

        # Warm-up so the baseline includes code paths and connection caches.
        await svc.submit_many("noop", [{"i": i} for i in range(200)])
        await svc.run_until_idle()
        before = mem_snapshot()
        t0 = time.perf_counter()
        for chunk in _chunks(n, cfg.submit_many_chunk):
            await svc.submit_many("hold", [{"i": i} for i in chunk])
        submit_s = time.perf_counter() - t0
        after_submit = mem_snapshot()
        fields: dict[str, Any] = {
            "jobs": n,
            "concurrency": concurrency,
            "rss_before_mib": round(before["rss_kib"] / 1024, 2),
            "submit_s": round(submit_s, 4),
            "started_at_submitted_snapshot": started.count,
            **_mem_delta(before, after_submit, n, "submitted"),
        }
        await started.reach(n if running else min(n, concurrency))
        fields["start_all_s" if running else "start_s"] = round(time.perf_counter() - t0, 4)
        after_start = mem_snapshot()
        fields.update(_mem_delta(before, after_start, n, "started"))
        fields["started_at_started_snapshot"] = started.count
        release.set()
        t1 = time.perf_counter()
        await svc.run_until_idle()
        fields["drain_s"] = round(time.perf_counter() - t1, 4)
        fields.update(_mem_delta(before, mem_snapshot(), n, "done"))
    if started.count < n:
        fields["warning"] = f"only {started.count} of {n} held jobs ever started"
    return fields


def bench_rss(cfg: Config, system: str) -> None:
    """(e) memory for 10k jobs in flight (all running, or mostly pending), vs plain asyncio."""
    if system == "rss_asyncio":
        emit({**cfg.base(system), **asyncio.run(_rss_asyncio(cfg))})
        return
    with temp_db() as path:
        try:
            fields = asyncio.run(_rss_jobqueue(cfg, path, running=system.endswith("_running")))
        except Exception as exc:
            _error_line(cfg, system, exc, jobs=cfg.rss_jobs)
            return
        statuses = count_statuses(path)
    emit({**cfg.base(system), **fields, "statuses": statuses})


# --------------------------------------------------------------------------- driver


def run_child(cfg: Config, system: str) -> None:
    """Run one system in this process and print its JSON line(s)."""
    if system == "sqlite3_ceiling":
        bench_sqlite3_ceiling(cfg)
    elif system == "aiosqlite_naive":
        bench_aiosqlite_naive(cfg)
    elif system == "aiosqlite_batching":
        bench_aiosqlite_batching(cfg)
    elif system in JOBQUEUE_THROUGHPUT:
        bench_jobqueue_throughput(cfg, system)
    elif system.startswith("latency_"):
        bench_latency(cfg, system)
    elif system.startswith("rss_"):
        bench_rss(cfg, system)
    else:  # pragma: no cover - argparse validation prevents this
        raise SystemExit(f"unknown system {system!r}")


def _spawn(system: str, args: argparse.Namespace, repeat_index: int) -> list[dict[str, Any]]:
    """Run one system in a fresh interpreter; return its JSON lines (or one error line)."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        "--only",
        system,
        "--jobs",
        str(args.jobs),
        "--concurrency",
        str(args.concurrency),
        "--repeat-index",
        str(repeat_index),
    ]
    base = {"bench": BENCH, "system": system, "repeat": repeat_index}
    proc = spawn_child(cmd, quick=args.quick, timeout=args.timeout)
    if isinstance(proc, str):
        return [{**base, "error": proc}]
    lines: list[dict[str, Any]] = []
    for raw in proc.stdout.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            log(f"{system}: ignoring non-JSON stdout line: {raw[:200]}")
    if proc.returncode != 0 and not any("error" in line for line in lines):
        lines.append({**base, "error": f"child exited with status {proc.returncode}"})
    if not lines:
        lines.append({**base, "error": "child printed no result"})
    return lines


def _median(values: list[float]) -> float | None:
    clean = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return round(statistics.median(clean), 3) if clean else None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return round(num / den, 3)


def summarize(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """One line with medians over repetitions and the ratios that matter."""
    ok = [r for r in results if "error" not in r]

    def med(system: str, field: str) -> float | None:
        return _median([r[field] for r in ok if r["system"] == system and field in r])

    rates = {s: med(s, "jobs_per_s") for s in (*ALIASES["baselines"], *JOBQUEUE_THROUGHPUT)}
    ceiling = rates["sqlite3_ceiling"]
    ratios: dict[str, float | None] = {
        "b_vs_a": _ratio(rates["aiosqlite_naive"], ceiling),
        "b2_vs_a": _ratio(rates["aiosqlite_batching"], ceiling),
    }
    for s in JOBQUEUE_THROUGHPUT:
        short = s.removeprefix("jobqueue_")
        ratios[f"c_{short}_vs_a"] = _ratio(rates[s], ceiling)
        ratios[f"c_{short}_vs_b2"] = _ratio(rates[s], rates["aiosqlite_batching"])
        ratios[f"c_{short}_vs_target"] = _ratio(rates[s], TARGET_JOBS_PER_S)
    latency = {
        s: {k: med(s, k) for k in ("p50_ms", "p99_ms", "max_ms")}
        for s in ("latency_asyncio", "latency_jobqueue")
    }
    rss = {
        "asyncio_started": med("rss_asyncio", "rss_growth_started_mib"),
        "jobqueue_running_submitted": med("rss_jobqueue_running", "rss_growth_submitted_mib"),
        "jobqueue_running_started": med("rss_jobqueue_running", "rss_growth_started_mib"),
        "jobqueue_pending_submitted": med("rss_jobqueue_pending", "rss_growth_submitted_mib"),
    }
    best_c = max((rates[s] for s in JOBQUEUE_THROUGHPUT if rates[s] is not None), default=None)
    targets: dict[str, bool | None] = {
        "c_ge_30pct_of_a": None if best_c is None or ceiling is None else best_c >= 0.3 * ceiling,
        "c_ge_25600": None if best_c is None else best_c >= TARGET_JOBS_PER_S,
        "latency_p99_le_2ms": None
        if latency["latency_jobqueue"]["p99_ms"] is None
        else latency["latency_jobqueue"]["p99_ms"] <= TARGET_LATENCY_P99_MS,
    }
    return {
        "bench": BENCH,
        "system": "summary",
        "jobs": args.jobs,
        "repeats": args.repeat,
        "quick": args.quick,
        "median_jobs_per_s": rates,
        "ratios": ratios,
        "latency_ms": latency,
        "rss_growth_mib": rss,
        "targets_met": targets,
        "errors": error_list(results),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput run (20000)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions, interleaved (1)")
    parser.add_argument(
        "--only",
        default="all",
        help="comma-separated systems or aliases: " + ", ".join((*SYSTEMS, *ALIASES)),
    )
    parser.add_argument("--concurrency", type=int, default=512, help="jobqueue concurrency (512)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per child process (150; quick 60)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeat-index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = 500 if args.quick else 20_000
    if args.timeout is None:
        args.timeout = 60.0 if args.quick else 150.0
    if args.jobs < 1 or args.repeat < 1 or args.concurrency < 1:
        parser.error("--jobs, --repeat and --concurrency must be positive")
    # Canonical order: the ceiling runs before the jobqueue figures that are divided by it.
    selected = select_systems(parser, args.only, SYSTEMS, ALIASES)
    if args.child and len(selected) != 1:
        parser.error("--child runs exactly one system")
    args.systems = selected
    return args


def make_config(args: argparse.Namespace) -> Config:
    quick = bool(args.quick)
    return Config(
        jobs=args.jobs,
        concurrency=args.concurrency,
        quick=quick,
        batch=1000,
        naive_jobs=200 if quick else 2000,
        naive_workers=8,
        submit_many_chunk=1000,
        gather_chunk=500,
        latency_rate=500.0,
        latency_jobs=200 if quick else 2000,
        rss_jobs=1000 if quick else 10_000,
        rss_pending_concurrency=8,
        repeat_index=args.repeat_index,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(make_config(args), args.systems[0])
        return 0
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for rep in range(args.repeat):
        ceiling: float | None = None
        for system in args.systems:
            log(f"repeat {rep + 1}/{args.repeat}: {system} ...")
            t0 = time.perf_counter()
            lines = _spawn(system, args, rep)
            log(
                f"repeat {rep + 1}/{args.repeat}: {system} done in {time.perf_counter() - t0:.1f} s"
            )
            for line in lines:
                if line.get("system") == "sqlite3_ceiling" and "jobs_per_s" in line:
                    ceiling = line["jobs_per_s"]
                if line.get("system") in JOBQUEUE_THROUGHPUT and "jobs_per_s" in line:
                    line["c_vs_a"] = _ratio(line["jobs_per_s"], ceiling)
                    line["sqlite3_ceiling_jobs_per_s"] = ceiling
                emit(line)
                results.append(line)
    return emit_summary(summarize(results, args), started)


if __name__ == "__main__":
    sys.exit(main())
