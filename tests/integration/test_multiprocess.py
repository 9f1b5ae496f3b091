"""Several real processes on one database file: claims, cross-process controls, crash sweeps.

Worker processes run ``tests/procs/_mp_worker.py`` (see its docstring: what each
handler logs, where). This process opens its own ``JobQueueService`` on the
same file as a *controller*: it submits jobs and sends controls, but never
runs them (it only ``declare()``s the workers' handler names).
"""

from __future__ import annotations

import asyncio
import json
import os
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

from jobqueue import JobQueueService, TaskStatus
from jobqueue.store.recovery import SweepResult

S = TaskStatus
HERE = Path(__file__).resolve().parents[1] / "procs"
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
        lines = path.read_text().split("\n")[:-1]  # a line still being written has no \n yet
        out = [json.loads(line) for line in lines]
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


@asynccontextmanager
async def controller(db: Path, poll_interval: float = 0.05) -> AsyncIterator[JobQueueService]:
    """A service on the same file that submits and controls jobs but runs none."""
    async with JobQueueService(db, poll_interval=poll_interval) as svc:
        svc.declare(*WORKER_HANDLERS)
        yield svc


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
        # Short but not instant jobs: all three processes keep claiming for over a second.
        jobs = await ctl.submit_many("record", [{"pace": 0.02}] * N_JOBS)
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


async def _long_job_running(ctl: JobQueueService, w: Worker, **payload: Any) -> str:
    job = await ctl.submit("long", payload or {"seconds": 60})
    await w.event("start", job.id)
    return job.id


def _bounded(name: str, seconds: float) -> None:
    LATENCY[name] = seconds
    print(f"\n{name}: {seconds * 1000:.0f} ms (poll_interval {POLL * 1000:.0f} ms)")
    assert seconds < POLL + MARGIN, f"{name} took {seconds:.2f}s"


@asynccontextmanager
async def _polling_worker(
    db_path: Path, workers: Any
) -> AsyncIterator[tuple[JobQueueService, Worker]]:
    """A ready worker and a controller, both polling every ``POLL``; the worker must exit 0
    when the block is done."""
    w = workers("--poll", str(POLL))
    async with controller(db_path, poll_interval=POLL) as ctl:
        await w.ready()
        yield ctl, w
    assert await w.terminate() == 0


async def _control_long_job(
    ctl: JobQueueService, w: Worker, control: str, status: S, reason: str, noticed_as: str
) -> str:
    """Start a long job in ``w``, then ``ctl.<control>(job)`` from this process.

    The control returns ``status`` (``reason``, no owner); the worker logs the
    job's ``cancelled`` event (``cancel``) or its ``interrupt`` of that kind.
    Both latencies, ``noticed_as`` in the worker and the status seen by the
    caller, are within a poll. Returns the job id.
    """
    job_id = await _long_job_running(ctl, w)
    t0 = time.time()
    out = await getattr(ctl, control)(job_id)
    returned = time.time()
    assert (out.status, out.reason, out.owner) == (status, reason, None)
    if control == "cancel":
        noticed = await w.event("cancelled", job_id)
    else:
        noticed = await w.event("interrupt", job_id)
        assert noticed["kind"] == control
    _bounded(f"{control}: {noticed_as}", noticed["t"] - t0)
    _bounded(f"{control}: status visible to the caller", returned - t0)
    return job_id


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_cancel_from_another_process_reaches_the_owner_within_a_poll(
    db_path: Path, workers: Any
) -> None:
    async with _polling_worker(db_path, workers) as (ctl, w):
        job_id = await _control_long_job(
            ctl, w, "cancel", S.CANCELLED, "cancelled", "handler got CancelledError"
        )
        assert row(db_path, job_id)["control"] is None
        assert len(w.events("start", job_id)) == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_pause_and_resume_from_another_process(db_path: Path, workers: Any) -> None:
    async with _polling_worker(db_path, workers) as (ctl, w):
        job_id = await _control_long_job(
            ctl, w, "pause", S.PAUSED, "paused", "handler interrupted at its checkpoint"
        )
        await asyncio.sleep(POLL * 3)  # paused stays paused: nobody claims it
        assert row(db_path, job_id)["status"] == "paused"
        assert len(w.events("start", job_id)) == 1

        t0 = time.time()
        resumed = await ctl.resume(job_id)
        assert resumed.status in (S.PAUSED, S.RUNNING)  # claimed by the worker moments later
        again = await w.event("start", job_id, n=2)
        _bounded("resume: handler started again in the worker", again["t"] - t0)
        assert again["attempt"] == 0  # a pause is not a failed attempt
        (w.workdir / f"release-{job_id}").touch()
        assert await ctl.wait(job_id, timeout=20) == w.pid
        done = row(db_path, job_id)
        assert (done["status"], done["attempt"], done["owner"]) == ("completed", 0, None)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_stop_from_another_process_ends_at_the_next_checkpoint(
    db_path: Path, workers: Any
) -> None:
    async with _polling_worker(db_path, workers) as (ctl, w):
        job_id = await _control_long_job(
            ctl, w, "stop", S.STOPPED, "stopped", "handler interrupted at its checkpoint"
        )
        assert w.events("cancelled", job_id) == []  # graceful: never cancelled


# -- 3. crash sweep after a real SIGKILL -------------------------------------------------------


def owners(db: Path) -> dict[str, float]:
    return dict(query(db, "SELECT owner, heartbeat FROM owners"))


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_sigkill_then_reopen_sweeps_each_kind_of_job(db_path: Path, workers: Any) -> None:
    w = workers("--poll", "0.1", "--bare", "bare-1")
    async with controller(db_path) as ctl:
        await w.ready()
        last = await _long_job_running(ctl, w)  # max_retries=0: the crash uses its one try
        retried = await ctl.submit("long", {"seconds": 60}, max_retries=1)
        await w.event("start", retried.id)
        paused = await _long_job_running(ctl, w)
        assert (await ctl.pause(paused)).status is S.PAUSED
        delayed = await ctl.submit("long", delay=3600)
        pending = await ctl.submit("other")  # due, but no process runs "other"
        bare = await ctl.get("bare-1")
        assert (bare.status, bare.handler, bare.owner) == (S.RUNNING, None, w.owner)

    w.kill()  # SIGKILL mid-run, reaped
    assert w.owner in owners(db_path)
    for job_id in (last, retried.id, "bare-1"):
        assert row(db_path, job_id)["status"] == "running"  # nobody alive has looked yet

    async with JobQueueService(db_path, poll_interval=0.05) as svc:  # runs no handler
        assert svc.recovered == SweepResult(requeued=1, crashed=1, lost=1, controlled=0, owners=1)
        got = {j: await svc.get(j) for j in (last, retried.id, "bare-1", paused)}
        assert got[retried.id].status is S.PENDING
        assert (got[retried.id].reason, got[retried.id].attempt) == ("crashed", 1)
        assert got[retried.id].owner is None
        assert (got[last].status, got[last].reason, got[last].attempt) == (S.FAILED, "crashed", 1)
        assert got[last].error_type == "Crashed"
        assert (got["bare-1"].status, got["bare-1"].reason) == (S.FAILED, "lost_on_restart")
        assert got["bare-1"].error_type == "LostOnRestart"
        assert (got[paused].status, got[paused].reason) == (S.PAUSED, "paused")
        d, p = await svc.get(delayed.id), await svc.get(pending.id)
        assert (d.status, d.attempt, d.reason, d.run_at) == (S.PENDING, 0, None, delayed.run_at)
        assert (p.status, p.attempt, p.reason, p.run_at) == (S.PENDING, 0, None, pending.run_at)
        assert w.owner not in owners(db_path)

        # A new worker runs the requeued job (attempt 1) and nothing else it may not run.
        (w.workdir / f"release-{retried.id}").touch()
        w2 = await workers("--poll", "0.1").ready()
        assert await svc.wait(retried.id, timeout=20) == w2.pid
        assert [e["attempt"] for e in w2.events("start")] == [1]
        await asyncio.sleep(0.5)
        assert (await svc.get(paused)).status is S.PAUSED
        assert (await svc.get(delayed.id)).status is S.PENDING
        assert (await svc.get(pending.id)).status is S.PENDING
    assert await w2.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_live_owner_is_never_swept_even_with_a_stale_heartbeat(
    db_path: Path, workers: Any
) -> None:
    w = workers("--poll", "0.1")
    async with controller(db_path) as ctl:
        await w.ready()
        job_id = await _long_job_running(ctl, w)

        def age_heartbeats() -> None:  # as if the wall clock jumped an hour ahead
            execute(
                db_path,
                "UPDATE owners SET heartbeat = ? WHERE owner = ?",
                time.time() - 3600,
                w.owner,
            )
            execute(db_path, "UPDATE jobs SET heartbeat = 0 WHERE id = ?", job_id)

        age_heartbeats()
        async with JobQueueService(db_path, poll_interval=0.05) as other:
            assert other.recovered.total == 0
            beat_interval = getattr(other.runtime.supervisor, "heartbeat_interval", 1.0)
            opened = time.time()
            end = time.monotonic() + beat_interval * 3.5  # several sweeps by both services
            while time.monotonic() < end:
                age_heartbeats()
                await asyncio.sleep(0.1)
                r = row(db_path, job_id)
                assert (r["status"], r["owner"], r["attempt"]) == ("running", w.owner, 0)
            assert owners(db_path)[other.owner] > opened  # its watch loop did run
        assert w.events("cancelled") == []
        assert len(w.events("start", job_id)) == 1
        (w.workdir / f"release-{job_id}").touch()
        assert await ctl.wait(job_id, timeout=20) == w.pid
        assert row(db_path, job_id)["attempt"] == 0
    assert await w.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_cancel_the_dead_owner_never_applied_is_honoured_by_the_sweep(
    db_path: Path, workers: Any
) -> None:
    w = workers("--poll", "30")  # its watch loop will not look at control requests in time
    async with controller(db_path) as ctl:
        job = await ctl.submit("long", {"seconds": 60}, max_retries=3)
        await w.ready()  # claims once at start
        await w.event("start", job.id)
        cancel = asyncio.ensure_future(ctl.cancel(job.id))
        await until(lambda: row(db_path, job.id)["control"] == "cancel", "request written")
        assert not cancel.done()
        w.kill()
        t0 = time.monotonic()
        out = await asyncio.wait_for(cancel, 20)
        print(f"\ncancel applied by the sweep {time.monotonic() - t0:.2f}s after SIGKILL")
        # Not requeued (max_retries=3 would allow it): the caller asked for a cancel.
        assert (out.status, out.reason, out.attempt, out.control) == (
            S.CANCELLED,
            "cancelled",
            0,
            None,
        )
    assert w.events("cancelled") == []  # the owner never saw it


# -- 4. owner identity: a reused pid, a gone pid, a zombie -------------------------------------


def start_ticks(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat, as the library reads it for an owner identity."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def proc_state(pid: int) -> str | None:
    """Field 3 of /proc/<pid>/stat (``Z``: zombie); None once the pid is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def run_as(db: Path, job_id: str, owner: str, beat: float) -> None:
    """Mark a pending job running for ``owner`` the way a claim and a heartbeat write it."""
    now = time.time()
    execute(
        db,
        "UPDATE jobs SET status = 'running', started_at = ?, updated_at = ?, owner = ?, "
        "heartbeat = ?, control = NULL WHERE id = ? AND status = 'pending'",
        now,
        now,
        owner,
        beat,
        job_id,
    )
    pid = int(owner.partition(":")[0])
    execute(
        db,
        "INSERT INTO owners (owner, pid, started_at, heartbeat) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(owner) DO UPDATE SET heartbeat = excluded.heartbeat",
        owner,
        pid,
        now,
        beat,
    )


needs_procfs = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="owner identity uses /proc start times"
)


@pytest.fixture
def other_pids() -> Iterator[tuple[int, int]]:
    """The pid of a live process (not a jobqueue one) and the pid of one that has exited."""
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    try:
        yield alive.pid, gone.pid
    finally:
        alive.kill()
        alive.wait(10)


@needs_procfs
@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_owner_liveness_is_pid_plus_start_time(
    db_path: Path, other_pids: tuple[int, int]
) -> None:
    alive, gone = other_pids
    async with controller(db_path) as ctl:
        ids = [(await ctl.submit("other", delay=3600, max_retries=1)).id for _ in range(3)]
    reused, dead, live = ids
    me = os.getpid()
    wrong = str(int(start_ticks(me)) + 1)
    now = time.time()
    # This test's own pid with another start time: the pid was reused, the owner is dead,
    # even though its heartbeat is fresh.
    run_as(db_path, reused, f"{me}:{wrong}", now)
    run_as(db_path, dead, f"{gone}:{start_ticks(me)}", now)
    # A live process with its real start time: alive, however old its heartbeat.
    live_owner = f"{alive}:{start_ticks(alive)}"
    run_as(db_path, live, live_owner, now - 86400)

    async with JobQueueService(db_path, poll_interval=0.05) as svc:
        assert svc.recovered == SweepResult(requeued=2, owners=2)
        for job_id in (reused, dead):
            j = await svc.get(job_id)
            assert (j.status, j.reason, j.attempt, j.owner) == (S.PENDING, "crashed", 1, None)
        j = await svc.get(live)
        assert (j.status, j.owner, j.attempt) == (S.RUNNING, live_owner, 0)
        assert set(owners(db_path)) == {live_owner, svc.owner}
        await asyncio.sleep(1.5)  # a periodic sweep agrees
        assert (await svc.get(live)).status is S.RUNNING


@needs_procfs
@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_killed_worker_not_yet_reaped_is_dead(db_path: Path, workers: Any) -> None:
    """A zombie keeps its /proc entry and start time until its parent reaps it, but it runs
    nothing: its jobs are swept at once, not after the parent gets round to ``wait()``
    (fixed in f18c33a; an xfail here found it)."""
    w = workers("--poll", "0.1")
    async with controller(db_path) as ctl:
        await w.ready()
        job = await ctl.submit("long", {"seconds": 60}, max_retries=1)
        await w.event("start", job.id)
    w.proc.send_signal(signal.SIGKILL)  # and not reaped: a zombie until the fixture's wait()
    await until(lambda: proc_state(w.pid) in ("Z", None), "the worker is a zombie")
    state = proc_state(w.pid)  # None only if something else in this process reaped it
    async with JobQueueService(db_path, poll_interval=0.05) as svc:
        j = await svc.get(job.id)
        assert (j.status, j.reason, j.attempt) == (S.PENDING, "crashed", 1), (state, j)
