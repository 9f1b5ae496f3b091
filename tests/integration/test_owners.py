"""Owners in other PID namespaces: never judged by this process's /proc, only by their lease.

Worker processes run ``tests/procs/_mp_worker.py`` (its ``long`` handler runs until a
``release-<job_id>`` file appears in its directory) under ``unshare --pid
--fork --mount-proc``, as two containers sharing a volume would: each worker
is pid 1 of its own namespace and sees only its own ``/proc``. Each worker gets
a directory of its own, since both write ``ready-1.json`` and ``events-1.log``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobQueueService, TaskStatus
from jobqueue.runtime.owner import owner_identity
from jobqueue.store.recovery import dead_owners, owner_alive

S = TaskStatus
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "procs" / "_mp_worker.py"
UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")


@cache
def _unshare_refused() -> str | None:
    """Why ``unshare --pid --fork --mount-proc`` cannot run here (None: it can)."""
    if shutil.which("unshare") is None:
        return "the unshare program (util-linux) is not installed"
    try:
        done = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare could not run: {exc}"
    if done.returncode != 0:
        return f"unshare refused a new PID namespace (needs root or user namespaces): {done.stderr}"
    return None


@pytest.fixture
def unshare_ok() -> None:
    reason = _unshare_refused()
    if reason is not None:
        pytest.skip(reason)


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _child_of(pid: int) -> int:
    """The one child of ``unshare``: the worker, by its pid in this namespace."""
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])


class NsWorker:
    """``_mp_worker.py`` as pid 1 of a new PID namespace, with its own /proc."""

    def __init__(self, db: Path, workdir: Path, *args: str) -> None:
        workdir.mkdir()
        self.workdir = workdir
        self.stderr = workdir / "stderr.log"
        argv = [*UNSHARE, sys.executable, str(SCRIPT), "--db", str(db), "--dir", str(workdir)]
        with self.stderr.open("w") as err:
            self.proc = subprocess.Popen(
                [*argv, "--poll", "0.05", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.owner = ""
        self.host_pid = 0  # the worker's pid as this process sees it (not unshare's)

    def text(self) -> str:
        return self.stderr.read_text()

    async def ready(self, timeout: float = 30.0) -> NsWorker:
        deadline = time.monotonic() + timeout
        while not (found := list(self.workdir.glob("ready-*.json"))):
            assert self.proc.poll() is None, f"worker exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"worker not ready:\n{self.text()}"
            await asyncio.sleep(0.02)
        info = json.loads(found[0].read_text())
        assert info["pid"] == 1, info  # it runs as the init of its own namespace
        self.owner = info["owner"]
        self.host_pid = _child_of(self.proc.pid)
        return self

    def starts(self, job_id: str | None = None) -> list[str]:
        path = self.workdir / "events-1.log"
        if not path.exists():
            return []
        events = [json.loads(line) for line in path.read_text().split("\n")[:-1]]
        return [
            e["job"]
            for e in events
            if e["ev"] == "start" and (job_id is None or e["job"] == job_id)
        ]

    def release(self, job_id: str) -> None:
        (self.workdir / f"release-{job_id}").touch()

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the namespace's init (everything in the namespace dies with it)."""
        os.kill(self.host_pid, signal.SIGKILL)
        self.proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while _proc_state(self.host_pid) not in (None, "Z"):
            assert time.monotonic() < deadline, "the killed worker is still there"
            time.sleep(0.01)

    async def terminate(self, timeout: float = 20.0) -> int:
        os.kill(self.host_pid, signal.SIGTERM)  # its handler drains, as init too
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            assert time.monotonic() < deadline, f"worker did not exit:\n{self.text()}"
            await asyncio.sleep(0.02)
        return code


@pytest.fixture
def ns_workers(
    db_path: Path, tmp_path: Path, unshare_ok: None
) -> Iterator[Callable[..., NsWorker]]:
    """``ns_workers(*args)`` starts a worker in a new PID namespace; all are killed at teardown."""
    made: list[NsWorker] = []

    def start(*args: str) -> NsWorker:
        w = NsWorker(db_path, tmp_path / f"ns{len(made)}", *args)
        made.append(w)
        return w

    try:
        yield start
    finally:
        for w in made:
            if w.proc.poll() is None:
                w.proc.kill()  # --kill-child: the namespace goes with it
            w.proc.wait(10)


def rows(db: Path, ids: list[str]) -> dict[str, dict[str, Any]]:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        marks = ", ".join("?" * len(ids))
        found = conn.execute(
            f"SELECT id, status, reason, attempt, owner FROM jobs WHERE id IN ({marks})", ids
        ).fetchall()
    return {r["id"]: dict(r) for r in found}


def owners(db: Path) -> dict[str, float]:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return dict(conn.execute("SELECT owner, heartbeat FROM owners").fetchall())


async def until(
    check: Callable[[], bool], what: str, timeout: float = 20.0, show: Callable[[], Any] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true after {timeout}s: {what}; {show()}"
        await asyncio.sleep(0.01)


async def submit(db: Path, n: int, **opts: Any) -> list[str]:
    """Submit ``n`` ``long`` jobs from a service that is closed again before workers start."""
    async with JobQueueService(db, poll_interval=0.05) as svc:
        svc.declare("long")
        return [(await svc.submit("long", {"seconds": 60}, **opts)).id for _ in range(n)]


async def cli(db: Path, *argv: str) -> str:
    """``python -m jobqueue *argv --db db`` in a process of this namespace; its stdout."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "jobqueue", *argv, "--db", str(db)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _hold(db: Path, ids: list[str], expect: dict[str, str], seconds: float) -> None:
    """For ``seconds``, every job stays running, first attempt, with the owner it started with."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = rows(db, ids)
        for job_id in ids:
            got = now[job_id]
            assert (got["status"], got["attempt"], got["owner"]) == ("running", 0, expect[job_id])
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_workers_in_two_pid_namespaces_never_sweep_each_others_jobs(
    db_path: Path, ns_workers: Callable[..., NsWorker]
) -> None:
    ids = await submit(db_path, 4, max_retries=5)
    a = await ns_workers("--concurrency", "2").ready()
    b = await ns_workers("--concurrency", "2").ready()
    assert a.owner != b.owner
    await until(
        lambda: all(r["status"] == "running" for r in rows(db_path, ids).values()),
        "every job running",
        show=lambda: (rows(db_path, ids), "started:", a.starts() + b.starts()),
    )
    expect = {job_id: r["owner"] for job_id, r in rows(db_path, ids).items()}
    assert sorted(expect.values()) == sorted([a.owner, a.owner, b.owner, b.owner])
    # Both watch loops sweep every second (poll 0.05): several sweeps each.
    await asyncio.to_thread(_hold, db_path, ids, expect, 3.5)
    for job_id in ids:
        a.release(job_id)
        b.release(job_id)
    await until(
        lambda: all(r["status"] == "completed" for r in rows(db_path, ids).values()),
        "every job completed",
    )
    assert all(r["attempt"] == 0 for r in rows(db_path, ids).values())
    assert sorted(a.starts() + b.starts()) == sorted(ids)  # each ran once
    assert await a.terminate() == 0, a.text()
    assert await b.terminate() == 0, b.text()
    assert owners(db_path) == {}


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_the_host_never_sweeps_a_live_job_of_a_worker_in_a_pid_namespace(
    db_path: Path, ns_workers: Callable[..., NsWorker]
) -> None:
    (job_id,) = await submit(db_path, 1, max_retries=5)
    w = await ns_workers().ready()
    await until(lambda: rows(db_path, [job_id])[job_id]["status"] == "running", "job running")
    expect = {job_id: w.owner}
    # The CLI on the host: its reports judge the worker as the sweep does (alive, by its
    # heartbeat), and its other commands open a service on the file (and sweep at open).
    checked = json.loads(await cli(db_path, "check", "--json"))
    assert checked["warnings"] == [], checked
    listed = await cli(db_path, "list")
    assert job_id[-8:] in listed  # the list shows the part of an id that tells jobs apart
    assert "running" in listed
    stats = json.loads(await cli(db_path, "stats", "--json"))
    assert [(p["owner"], p["running"]) for p in stats["processes"]] == [(w.owner, 1)]
    _hold(db_path, [job_id], expect, 0.1)
    # A service left open on the host: its watch loop sweeps every second.
    async with JobQueueService(db_path, poll_interval=0.05) as host:
        assert host.recovered.total == 0
        await asyncio.to_thread(_hold, db_path, [job_id], expect, 3.5)
        assert owners(db_path)[w.owner] > time.time() - 3  # the worker's heartbeat is fresh
    w.release(job_id)
    await until(lambda: rows(db_path, [job_id])[job_id]["status"] == "completed", "completed")
    assert w.starts() == [job_id]
    assert rows(db_path, [job_id])[job_id]["attempt"] == 0
    assert await w.terminate() == 0, w.text()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_dead_worker_in_a_pid_namespace_is_swept_once_its_lease_expires(
    db_path: Path, ns_workers: Callable[..., NsWorker]
) -> None:
    (job_id,) = await submit(db_path, 1, max_retries=5)
    w = await ns_workers().ready()
    await until(lambda: rows(db_path, [job_id])[job_id]["status"] == "running", "job running")
    w.kill()
    # Its pid means nothing here and its heartbeat is fresh: it cannot be judged dead yet.
    async with JobQueueService(db_path, poll_interval=0.05) as host:
        assert host.recovered.total == 0
    assert rows(db_path, [job_id])[job_id]["owner"] == w.owner
    with closing(sqlite3.connect(db_path, timeout=30)) as conn, conn:
        conn.execute("UPDATE owners SET heartbeat = heartbeat - 120 WHERE owner = ?", (w.owner,))
    async with JobQueueService(db_path, poll_interval=0.05) as host:
        assert (host.recovered.requeued, host.recovered.owners) == (1, 1)
        got = rows(db_path, [job_id])[job_id]
        assert (got["status"], got["reason"], got["attempt"], got["owner"]) == (
            "pending",
            "crashed",
            1,
            None,
        )
        assert w.owner not in owners(db_path)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_worker_with_a_long_poll_interval_still_beats_often(
    db_path: Path, ns_workers: Callable[..., NsWorker]
) -> None:
    """Owners elsewhere are judged by heartbeat alone: a 30 s poll must not space it 2 min."""
    w = await ns_workers("--poll", "30").ready()
    first = owners(db_path)[w.owner]
    await until(lambda: owners(db_path)[w.owner] > first, "a second heartbeat", timeout=8.0)
    assert await w.terminate() == 0, w.text()


# -- judging one owner ---------------------------------------------------------------------


def _fields(owner: str) -> list[str]:
    return owner.split(":")


needs_procfs = pytest.mark.skipif(
    not Path("/proc/self/ns/pid").exists(), reason="owner identity reads /proc"
)


@needs_procfs
def test_an_owner_carries_its_pid_namespace_and_boot() -> None:
    pid, start, ns, boot, _ = _fields(owner_identity())
    assert int(pid) == os.getpid()
    assert ns == str(os.stat("/proc/self/ns/pid").st_ino)
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert start == Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]


@needs_procfs
def test_owner_alive_judges_by_proc_only_in_its_own_namespace_and_boot() -> None:
    pid, start, ns, boot, token = _fields(owner_identity())
    me = f"{pid}:{start}:{ns}:{boot}:{token}"
    assert owner_alive(me) is True
    assert owner_alive(f"{pid}:{start}:{ns}:{boot}:other") is True  # another service here
    assert owner_alive(f"{pid}:{int(start) + 1}:{ns}:{boot}:1") is False  # pid reused
    assert owner_alive(f"{pid}:{start}") is True  # the older form: this namespace
    assert owner_alive(f"{pid}:{int(start) + 1}") is False
    # Another namespace or another boot (host): /proc here says nothing about it.
    assert owner_alive(f"{pid}:{int(start) + 1}:{int(ns) + 1}:{boot}:1") is None
    assert owner_alive(f"999999999:1:{int(ns) + 1}:{boot}:1") is None
    assert owner_alive(f"{pid}:{int(start) + 1}:{ns}:not-this-boot:1") is None
    assert owner_alive(f"{pid}:{start}:-:-:1") is None  # written where /proc was unreadable
    assert owner_alive("unknown:0") is False
    assert owner_alive("garbage") is False


@needs_procfs
def test_dead_owners_judges_other_namespaces_by_heartbeat_only(db_path: Path) -> None:
    pid, start, ns, boot, _ = _fields(owner_identity())
    foreign = f"{pid}:{int(start) + 1}:{int(ns) + 1}:{boot}:1"  # /proc here would say dead
    silent = f"1:1:{int(ns) + 1}:{boot}:1"
    legacy_dead = f"{pid}:{int(start) + 1}"
    now = time.time()
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE jobs (owner TEXT, status TEXT)")
        conn.execute("CREATE TABLE owners (owner TEXT PRIMARY KEY, heartbeat REAL)")
        conn.executemany(
            "INSERT INTO jobs VALUES (?, 'running')", [(foreign,), (silent,), (legacy_dead,)]
        )
        conn.execute("INSERT INTO owners VALUES (?, ?)", (foreign, now - 10))
        me = owner_identity()
        assert sorted(dead_owners(conn, me, now, stale_after=30)) == sorted([silent, legacy_dead])
        assert sorted(dead_owners(conn, me, now + 25, stale_after=30)) == sorted(
            [foreign, silent, legacy_dead]
        )
