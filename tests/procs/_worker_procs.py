"""Helpers for tests that run real worker processes (imported by test modules).

``WorkerProcess`` runs ``python -m jobqueue worker`` with its log in a file;
``submit`` hands jobs to it from this process (see its docstring for how a
producer service avoids running them itself); ``row`` reads a job back with
the standard library.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from jobqueue import JobContext, JobQueueService

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.procs._worker_app:service"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


# -- helpers -------------------------------------------------------------------------------


class WorkerProcess:
    """``python -m jobqueue worker`` in a subprocess, its log in a file."""

    def __init__(self, db: Path, *args: str, app: str = APP) -> None:
        self.log = db.with_name(f"worker-{time.monotonic_ns()}.log")
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobqueue", "worker", app, "--db", str(db), *args],
                cwd=ROOT,
                env=ENV,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def text(self) -> str:
        return self.log.read_text()

    def wait_log(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"worker exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {needle!r} in the log:\n{self.text()}"
            time.sleep(0.02)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)


@contextmanager
def workers(db: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``start(*args)`` starts a worker on ``db`` and waits until it is ready; all are
    killed when the block exits."""
    made: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        w = WorkerProcess(db, "--report-interval", "0", *args)
        made.append(w)
        w.wait_log(" ready: ")
        return w

    try:
        yield start
    finally:
        for w in made:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(10)


def row(db: Path, job_id: str) -> dict[str, Any]:
    """The job's row, read with the standard library."""
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        got = conn.execute(
            "SELECT status, reason, attempt, owner FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    assert got is not None, job_id
    return dict(got)


def wait_status(db: Path, job_id: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (r := row(db, job_id))["status"] not in statuses:
        assert time.monotonic() < deadline, f"{job_id}: {r}, expected {statuses}"
        time.sleep(0.02)
    return r


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Poll ``check`` every 10 ms until it is true; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not true after {timeout}s: {check}")


async def _never(ctx: JobContext, payload: Any) -> None:
    raise AssertionError("a worker job ran in the test process")


async def _submit(db: Path, jobs: list[tuple[str, Any]], running: bool) -> list[str]:
    hold = asyncio.Event()

    async def hold_slot(ctx: JobContext, payload: Any) -> None:
        await hold.wait()

    producer = JobQueueService(db, concurrency=1, poll_interval=0.05)
    await producer.__aenter__()
    try:
        producer.register("hold", hold_slot)
        blocker = await producer.submit("hold")

        async def blocker_runs() -> bool:
            return (await producer.get(blocker.id)).status == "running"

        async def all_run() -> bool:
            return all([(await producer.get(i)).status == "running" for i in ids])

        await eventually(blocker_runs)
        for name in {h for h, _ in jobs}:
            producer.register(name, _never)  # its only slot is taken: it claims nothing
        ids = [(await producer.submit(h, p)).id for h, p in jobs]
        if running:
            await eventually(all_run)
    finally:
        closing_ = asyncio.ensure_future(producer.close())
        await asyncio.sleep(0)  # close() stops claiming in its first step
        hold.set()
        await closing_
    return ids


def submit(db: Path, *jobs: tuple[str, Any], running: bool = True) -> list[str]:
    """Submit jobs for the worker; with ``running``, return once they all run there.

    A service only submits to handlers it registered, and it would run them too.
    The producer service used here first fills its single slot with a ``hold``
    job the worker does not know, so every job it submits afterwards is left
    to the worker (a stub that fails loudly is registered for each handler).
    """
    return asyncio.run(_submit(db, list(jobs), running))
