"""Several real processes on one database file: claims, cross-process controls, crash sweeps.

Worker processes run ``tests/_mp_worker.py`` (see its docstring: what each
handler logs, where). This process opens its own ``JobQueueService`` on the
same file as a *controller*: it submits jobs and sends controls, but never
runs them — its single slot is held by a ``hold`` job that no worker knows,
and every worker handler is registered here only as a stub that records it
ran (it must not).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService, TaskStatus

S = TaskStatus
HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "_mp_worker.py"
WORKER_HANDLERS = ("record", "long", "other")


# -- worker processes ------------------------------------------------------------------------


class Worker:
    """One ``_mp_worker.py`` process; its log files are in ``workdir``."""

    def __init__(self, db: Path, workdir: Path, *args: str) -> None:
        self.workdir = workdir
        self.stderr = workdir / f"stderr-{time.monotonic_ns()}.log"
        with self.stderr.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), "--db", str(db), "--dir", str(workdir), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.pid = self.proc.pid
        self.owner = ""

    async def ready(self, timeout: float = 30.0) -> Worker:
        path = self.workdir / f"ready-{self.pid}.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert self.proc.poll() is None, f"worker exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"worker not ready:\n{self.text()}"
            await asyncio.sleep(0.02)
        self.owner = json.loads(path.read_text())["owner"]
        return self

    def text(self) -> str:
        return self.stderr.read_text()

    def events(self, ev: str | None = None, job: str | None = None) -> list[dict[str, Any]]:
        path = self.workdir / f"events-{self.pid}.log"
        if not path.exists():
            return []
        out = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [
            e for e in out if (ev is None or e["ev"] == ev) and (job is None or e["job"] == job)
        ]

    async def event(self, ev: str, job: str, n: int = 1, timeout: float = 20.0) -> dict[str, Any]:
        """The ``n``-th ``ev`` event of ``job`` in this worker, waited for."""
        deadline = time.monotonic() + timeout
        while len(found := self.events(ev, job)) < n:
            assert time.monotonic() < deadline, f"no {ev!r} #{n} for {job}:\n{self.text()}"
            await asyncio.sleep(0.01)
        return found[n - 1]

    def kill(self) -> None:
        """SIGKILL, and reap it (a zombie keeps its /proc entry: see the zombie test)."""
        self.proc.kill()
        self.proc.wait(10)

    async def terminate(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            assert time.monotonic() < deadline, f"worker did not exit:\n{self.text()}"
            await asyncio.sleep(0.02)
        return code


@pytest.fixture
def workers(db_path: Path, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """``workers(*args)`` starts a worker process (not yet waited for); all are killed at
    teardown, whatever happened."""
    workdir = tmp_path / "mp"
    workdir.mkdir()
    made: list[Worker] = []

    def start(*args: str) -> Worker:
        w = Worker(db_path, workdir, *args)
        made.append(w)
        return w

    try:
        yield start
    finally:
        for w in made:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait(10)


# -- reading the file directly ---------------------------------------------------------------


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute(sql, params).fetchall()


def execute(db: Path, sql: str, *params: Any) -> None:
    with closing(sqlite3.connect(db, timeout=30)) as conn, conn:
        conn.execute(sql, params)


def row(db: Path, job_id: str) -> dict[str, Any]:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        got = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert got is not None, job_id
    return dict(got)


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> float:
    """Poll ``check`` every 10 ms; returns the wall time it became true."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true after {timeout}s: {what}"
        await asyncio.sleep(0.01)
    return time.time()


# -- the controller in this process ------------------------------------------------------------


class Controller:
    """A service on the same file that submits and controls but runs no worker job."""

    def __init__(self, svc: JobQueueService) -> None:
        self.svc = svc
        self.stub_runs: list[str] = []


@asynccontextmanager
async def controller(db: Path, poll_interval: float = 0.05) -> AsyncIterator[Controller]:
    hold = asyncio.Event()
    svc = JobQueueService(db, concurrency=1, poll_interval=poll_interval)
    ctl = Controller(svc)

    async def hold_slot(ctx: JobContext, payload: Any) -> None:
        await hold.wait()

    async def stub(ctx: JobContext, payload: Any) -> None:
        ctl.stub_runs.append(ctx.job_id)
        raise AssertionError("a worker job ran in the controller")

    await svc.__aenter__()
    try:
        svc.register("hold", hold_slot)
        blocker = await svc.submit("hold")
        await until(lambda: row(db, blocker.id)["status"] == "running", "hold runs")
        for name in WORKER_HANDLERS:
            svc.register(name, stub)  # the only slot is taken: these are never claimed here
        yield ctl
    finally:
        closing_ = asyncio.ensure_future(svc.close(drain_timeout=5))
        await asyncio.sleep(0)  # close() stops claiming in its first step
        hold.set()
        await closing_
    assert ctl.stub_runs == []


def ledger(db: Path) -> None:
    execute(db, "CREATE TABLE IF NOT EXISTS ledger (job_id TEXT NOT NULL, pid INTEGER NOT NULL)")


# -- 1. no double claim ----------------------------------------------------------------------

N_JOBS = 2000


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_three_processes_claim_every_job_exactly_once(db_path: Path, workers: Any) -> None:
    async with controller(db_path) as ctl:
        ledger(db_path)
        procs = [workers("--poll", "0.05", "--concurrency", "8") for _ in range(3)]
        for w in procs:
            await w.ready()
        t0 = time.monotonic()
        jobs = await ctl.svc.submit_many("record", [{"i": i} for i in range(N_JOBS)])
        ids = {j.id for j in jobs}
        assert len(ids) == N_JOBS

        def finished() -> bool:
            ((n,),) = query(
                db_path,
                "SELECT count(*) FROM jobs WHERE handler = 'record' "
                "AND status IN ('completed', 'failed', 'cancelled')",
            )
            return bool(n == N_JOBS)

        await until(finished, "all jobs finished", timeout=60)
        elapsed = time.monotonic() - t0
        for w in procs:
            assert await w.terminate() == 0, w.text()

    statuses = query(
        db_path, "SELECT status, attempt, count(*) FROM jobs WHERE handler = 'record' GROUP BY 1, 2"
    )
    assert statuses == [("completed", 0, N_JOBS)]
    starts = [e for w in procs for e in w.events("start")]
    started = Counter(e["job"] for e in starts)
    assert set(started) == ids
    assert [j for j, n in started.items() if n > 1] == []  # no job started twice
    effects = query(db_path, "SELECT job_id, pid FROM ledger")
    assert len(effects) == N_JOBS
    assert {j for j, _ in effects} == ids  # each effect exactly once
    by_start = {e["job"]: e["pid"] for e in starts}
    assert dict(effects) == by_start  # the effect came from the process that ran it
    results = dict(query(db_path, "SELECT id, result FROM jobs WHERE handler = 'record'"))
    assert {j: int(r) for j, r in results.items()} == by_start
    split = Counter(by_start.values())
    assert all(split[w.pid] > 0 for w in procs), split
    print(f"\n{N_JOBS} jobs in {elapsed:.2f}s, per process: {sorted(split.values())}")


# -- 2. controls from another process ----------------------------------------------------------

POLL = 0.25  # both sides' poll_interval
MARGIN = 1.5  # generous: two cores shared with other test runs
LATENCY: dict[str, float] = {}


async def _long_job_running(ctl: Controller, w: Worker, **payload: Any) -> str:
    job = await ctl.svc.submit("long", payload or {"seconds": 60})
    await w.event("start", job.id)
    return job.id


def _bounded(name: str, seconds: float) -> None:
    LATENCY[name] = seconds
    print(f"\n{name}: {seconds * 1000:.0f} ms (poll_interval {POLL * 1000:.0f} ms)")
    assert seconds < POLL + MARGIN, f"{name} took {seconds:.2f}s"


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_cancel_from_another_process_reaches_the_owner_within_a_poll(
    db_path: Path, workers: Any
) -> None:
    w = workers("--poll", str(POLL))
    async with controller(db_path, poll_interval=POLL) as ctl:
        await w.ready()
        job_id = await _long_job_running(ctl, w)
        t0 = time.time()
        out = await ctl.svc.cancel(job_id)
        returned = time.time()
        assert (out.status, out.reason, out.owner) == (S.CANCELLED, "cancelled", None)
        noticed = await w.event("cancelled", job_id)
        _bounded("cancel: handler got CancelledError", noticed["t"] - t0)
        _bounded("cancel: status visible to the caller", returned - t0)
        assert row(db_path, job_id)["control"] is None
        assert len(w.events("start", job_id)) == 1
    assert await w.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_pause_and_resume_from_another_process(db_path: Path, workers: Any) -> None:
    w = workers("--poll", str(POLL))
    async with controller(db_path, poll_interval=POLL) as ctl:
        await w.ready()
        job_id = await _long_job_running(ctl, w)
        t0 = time.time()
        out = await ctl.svc.pause(job_id)
        returned = time.time()
        assert (out.status, out.reason, out.owner) == (S.PAUSED, "paused", None)
        noticed = await w.event("interrupt", job_id)
        assert noticed["kind"] == "pause"
        _bounded("pause: handler interrupted at its checkpoint", noticed["t"] - t0)
        _bounded("pause: status visible to the caller", returned - t0)
        await asyncio.sleep(POLL * 3)  # paused stays paused: nobody claims it
        assert row(db_path, job_id)["status"] == "paused"
        assert len(w.events("start", job_id)) == 1

        t0 = time.time()
        resumed = await ctl.svc.resume(job_id)
        assert resumed.status in (S.PAUSED, S.RUNNING)  # claimed by the worker moments later
        again = await w.event("start", job_id, n=2)
        _bounded("resume: handler started again in the worker", again["t"] - t0)
        assert again["attempt"] == 0  # a pause is not a failed attempt
        (w.workdir / f"release-{job_id}").touch()
        assert await ctl.svc.wait(job_id, timeout=20) == w.pid
        done = row(db_path, job_id)
        assert (done["status"], done["attempt"], done["owner"]) == ("completed", 0, None)
    assert await w.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_stop_from_another_process_ends_at_the_next_checkpoint(
    db_path: Path, workers: Any
) -> None:
    w = workers("--poll", str(POLL))
    async with controller(db_path, poll_interval=POLL) as ctl:
        await w.ready()
        job_id = await _long_job_running(ctl, w)
        t0 = time.time()
        out = await ctl.svc.stop(job_id)
        returned = time.time()
        assert (out.status, out.reason, out.owner) == (S.STOPPED, "stopped", None)
        noticed = await w.event("interrupt", job_id)
        assert noticed["kind"] == "stop"
        _bounded("stop: handler interrupted at its checkpoint", noticed["t"] - t0)
        _bounded("stop: status visible to the caller", returned - t0)
        assert w.events("cancelled", job_id) == []  # graceful: never cancelled
    assert await w.terminate() == 0
