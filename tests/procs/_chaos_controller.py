"""A controller process for the crash test: random cancel/stop/pause/resume from outside.

Run as ``python tests/procs/_chaos_controller.py --db FILE --jobs FILE --calls FILE --seed N``.
It opens its own :class:`~jobqueue.JobQueueService` on ``FILE`` (it runs no
job: the handler names are only declared), prints ``{"event": "ready"}`` and
then, until its stdin reaches EOF, picks jobs among the ids listed in
``--jobs`` (one a line; the test appends to it as it submits) and calls
controls on them from a few lanes at once:

* one control on a pending, running or paused job;
* bursts of two to four controls in a row on one job (pause, resume, pause ...);
* controls on a job waiting in ``pending`` after a run (a retry or a requeue),
  or running a handler that fails into a retry (a lane of its own watches for them);
* controls on finished jobs (refused with ``InvalidTransition``);
* some jobs left paused for good after a pause;
* on a ``kill`` line on stdin (sent just before the test SIGKILLs a worker):
  controls on up to three running jobs at once, while their owner dies.

A job is controlled by one lane at a time, so the calls on one job never
overlap. Each call appends one JSON line to ``--calls`` once it returns:
``job``, ``kind``, ``t0``/``t1`` (wall clock before and after), ``result``
(``ok``, ``refused`` for ``InvalidTransition``, ``error``), the ``status``
returned, ``error`` text, ``why`` (the scenario). On EOF it lets the calls
in progress finish, prints ``{"event": "done", ...}``, closes and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import sqlite3
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Final

from _crash_worker import HANDLERS

from jobqueue import JobQueueService
from jobqueue.errors import InvalidTransition

KINDS: Final = ("cancel", "stop", "pause", "resume")
LANES: Final = 2

_PID: Final = os.getpid()


def _say(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "pid": _PID, **data}) + "\n")
    sys.stdout.flush()


def _active(db: str) -> dict[str, tuple[str, float | None, str, int]]:
    """Unfinished jobs: id -> (status, started_at, handler, attempt), read without the service."""
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return {
            r[0]: (r[1], r[2], r[3], r[4])
            for r in conn.execute(
                "SELECT id, status, started_at, handler, attempt FROM jobs "
                "WHERE status IN ('pending', 'running', 'paused')"
            )
        }


class Chaos:
    def __init__(self, svc: JobQueueService, args: argparse.Namespace) -> None:
        self.svc = svc
        self.db: str = args.db
        self.jobs_file = Path(args.jobs)
        self.rng = random.Random(args.seed)
        self.calls_fd = os.open(args.calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.busy: set[str] = set()  # a lane or kill-time call is on it
        self.parked: set[str] = set()  # left paused for good (also in busy)
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.calls = 0

    def candidates(self) -> list[str]:
        return self.jobs_file.read_text().split()

    async def call(self, job_id: str, kind: str, why: str) -> str | None:
        """One control call, logged; returns the status it returned (None: it raised)."""
        fn = getattr(self.svc, kind)
        t0 = time.time()
        line: dict[str, Any] = {"job": job_id, "kind": kind, "why": why, "pid": _PID}
        try:
            job = await fn(job_id)
        except InvalidTransition as exc:
            line.update(result="refused", status=exc.current, error=str(exc))
        except Exception as exc:
            line.update(result="error", status=None, error=f"{type(exc).__name__}: {exc}")
        else:
            line.update(result="ok", status=job.status.value, error=None)
        line.update(t0=t0, t1=time.time())
        os.write(self.calls_fd, (json.dumps(line) + "\n").encode())
        self.calls += 1
        return line["status"] if line["result"] == "ok" else None

    async def series(self, job_id: str, kinds: Sequence[str], why: str, gap: float) -> None:
        """Controls in a row on one job (already marked busy), ``gap`` seconds at most apart.

        A job the series left paused is sometimes left alone from then on, so that
        some jobs stay paused through later kills and the final worker.
        """
        status = None
        try:
            for i, kind in enumerate(kinds):
                if i:
                    await asyncio.sleep(self.rng.uniform(0.0, gap))
                status = await self.call(job_id, kind, why)
        finally:
            if status == "paused" and kinds[-1] == "pause" and self.rng.random() < 0.3:
                self.parked.add(job_id)
            else:
                self.busy.discard(job_id)

    def pick(self, pool: Sequence[str]) -> str | None:
        free = [j for j in pool if j not in self.busy]
        if not free:
            return None
        job_id = self.rng.choice(free)
        self.busy.add(job_id)
        return job_id

    async def lane(self) -> None:
        rng = self.rng
        while not self.stopping.is_set():
            cands = self.candidates()
            active = await asyncio.to_thread(_active, self.db)
            mine = {j: active[j] for j in cands if j in active}
            by_status: dict[str, list[str]] = {"pending": [], "running": [], "paused": []}
            waiting: list[str] = []  # pending again after a run: a retry's backoff, a requeue
            for j, (status, started_at, _handler, _attempt) in mine.items():
                by_status[status].append(j)
                if status == "pending" and started_at is not None:
                    waiting.append(j)
            r = rng.random()
            if r < 0.3:
                why, pool = "one", list(mine) or cands
                kinds = [rng.choices(KINDS, weights=[2, 2, 4, 2])[0]]
                gap = 0.0
            elif r < 0.55:
                why, pool = "burst", by_status["running"] + by_status["paused"] or list(mine)
                kinds = rng.choices(KINDS, weights=[1, 1, 4, 4], k=rng.randint(2, 4))
                gap = 0.05
            elif r < 0.7:
                why, pool = "toggle", by_status["running"] or by_status["paused"]
                kinds = ["pause", "resume", "pause", "resume"][: rng.randint(3, 4)]
                if rng.random() < 0.3:
                    kinds.append(rng.choice(["cancel", "stop"]))
                gap = 0.02
            elif r < 0.9:
                why, pool = "waiting", waiting
                kinds = rng.choices(KINDS, weights=[3, 3, 1, 1], k=rng.randint(1, 2))
                gap = 0.02
            else:
                why, pool = "any", cands
                kinds = [rng.choice(KINDS)]
                gap = 0.0
            job_id = self.pick(pool)
            if job_id is None:  # none of that kind now: draw again soon
                await asyncio.sleep(0.01)
                continue
            await self.series(job_id, kinds, why, gap)
            await asyncio.sleep(rng.uniform(0.02, 0.25))

    async def retry_lane(self) -> None:
        """Watch for jobs waiting for a retry (or a requeue), or about to fail into one."""
        rng = self.rng
        while not self.stopping.is_set():
            await asyncio.sleep(0.02)
            active = await asyncio.to_thread(_active, self.db)
            waiting = []
            for j in self.candidates():
                status, started_at, handler, _ = active.get(j, ("", None, "", 0))
                after_run = status == "pending" and started_at is not None
                failing = status == "running" and handler in ("retry_once", "flaky")
                if after_run or (failing and rng.random() < 0.2):
                    waiting.append(j)
            if not waiting or rng.random() < 0.5:
                continue
            job_id = self.pick(waiting)
            if job_id is not None:
                kinds = rng.choices(KINDS, weights=[3, 3, 2, 1], k=rng.randint(1, 2))
                await self.series(job_id, kinds, "retry_wait", 0.02)

    async def on_kill(self) -> None:
        """A worker is about to be SIGKILLed: control some running jobs right now."""
        active = await asyncio.to_thread(_active, self.db)
        running = [j for j in self.candidates() if j in active and active[j][0] == "running"]
        for _ in range(min(3, len(running))):
            job_id = self.pick(running)
            if job_id is None:
                break
            kinds = [self.rng.choice(("cancel", "stop", "pause"))]
            if self.rng.random() < 0.3:
                kinds.append(self.rng.choice(KINDS))
            self.spawn(self.series(job_id, kinds, "kill", 0.05))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def read_stdin(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if line.strip() == b"kill":
                self.spawn(self.on_kill())
        self.stopping.set()


async def _orphan_guard() -> None:
    """Exit if the test process died (a killed pytest must not leave us behind)."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--jobs", required=True)
    parser.add_argument("--calls", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format=f"[{_PID}] %(levelname)s %(name)s: %(message)s"
    )
    guard = asyncio.get_running_loop().create_task(_orphan_guard())
    svc = JobQueueService(
        args.db,
        poll_interval=0.05,
        cancel_grace=2.0,
        stop_timeout=3.0,
        busy_timeout=30.0,
    )
    svc.declare(*HANDLERS)  # controlled here, run by the worker processes
    async with svc:
        chaos = Chaos(svc, args)
        _say("ready")
        stdin = asyncio.get_running_loop().create_task(chaos.read_stdin())
        await asyncio.gather(*(chaos.lane() for _ in range(LANES)), chaos.retry_lane())
        while chaos.tasks:  # kill-time calls still in progress
            await asyncio.wait(set(chaos.tasks))
        stdin.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stdin
        os.close(chaos.calls_fd)
        _say("done", calls=chaos.calls)
    guard.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
