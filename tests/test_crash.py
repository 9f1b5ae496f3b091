"""Issue 4: SIGKILL a real worker process over and over; nothing is lost, stuck or done twice.

A producer service in this process submits a mix of jobs (see
``_crash_worker.py`` for the handlers) up front and between kills; a worker
subprocess runs them and is killed with SIGKILL at a random moment: during
start-up and crash recovery, or 20–300 ms (sometimes longer) after it said it
is ready. After at least ``JQ_CRASH_KILLS`` kills a final worker runs until
nothing is left to run, and the database is audited with the standard library:

* every job submitted is there (none lost, none unexpected) and terminal;
* effects written with ``ctx.effect`` are exactly once: one ledger row for a
  completed job of an effect handler, written by the run that completed it
  (same attempt), and none at all for a job that did not complete, although
  handlers were re-executed after kills (at-least-once execution);
* a job fails only for a reason its handler allows; ``crashed`` only once its
  retries are used up by kills (``attempt == max_retries + 1``);
* ``PRAGMA integrity_check`` is ``ok``.

``JQ_CRASH_KILLS`` (default 120) and ``JQ_CRASH_SEED`` tune a manual run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _crash_worker import EFFECT_HANDLERS, HANDLERS, LEDGER_SQL

from jobqueue import JobQueueService

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("_crash_worker.py")
KILLS = int(os.environ.get("JQ_CRASH_KILLS", "120"))
INITIAL_JOBS = 600
START_TIMEOUT = 60.0  # a loaded 2-core box can be slow to start a Python process
FINAL_TIMEOUT = 240.0
TERMINAL = ("completed", "failed", "cancelled", "stopped")
# Failure reasons each handler may legitimately end with (kills can exhaust any job's retries).
ALLOWED_FAILURES = {
    "noop": {"crashed"},
    "sleep": {"crashed"},
    "spawn": {"crashed"},
    "effect": {"crashed"},
    "retry_once": {"crashed", "retries_exhausted"},
    "flaky": {"crashed", "error"},
}
ERROR_TYPES = {"crashed": "Crashed", "retries_exhausted": "Retry", "error": "RuntimeError"}


@dataclass
class Spec:
    """One job as submitted by the test."""

    handler: str
    payload: dict[str, Any]
    max_retries: int
    delay: float = 0.0
    priority: int = 0


def _spec(rng: random.Random, n: int) -> Spec:
    handler = rng.choices(HANDLERS, weights=[25, 20, 10, 25, 10, 10])[0]
    u = rng.uniform
    payload: dict[str, Any] = {"n": n}
    if handler == "noop":
        retries = rng.choice([0, 1, 3])
    elif handler == "sleep":
        payload["seconds"] = u(0.02, 0.4)
        retries = rng.choice([0, 2, 5])
    elif handler == "effect":
        payload.update(before=u(0.0, 0.15), after=u(0.0, 0.1))
        retries = rng.choice([0, 3, 30])
    elif handler == "retry_once":
        payload.update(seconds=u(0.0, 0.1), delay=u(0.01, 0.2))
        retries = rng.choice([0, 1, 5, 30])
    elif handler == "flaky":
        payload.update(seconds=u(0.0, 0.05), fails=rng.randint(1, 3))
        retries = rng.randint(0, 4)
    else:  # spawn
        payload.update(
            seconds=u(0.0, 0.2),
            child_retries=rng.choice([0, 30]),
            child_delay=rng.choice([0.0, u(0.0, 3.0)]),
        )
        retries = rng.choice([0, 5])
    delay = u(0.2, 15.0) if rng.random() < 0.15 else 0.0
    return Spec(handler, payload, retries, delay, rng.choice([0, 0, 0, 5]))


# -- the worker processes ----------------------------------------------------------------


@dataclass
class Worker:
    """One ``_crash_worker.py`` subprocess; stdout and stderr merged into one pipe."""

    proc: asyncio.subprocess.Process
    log: list[str]
    said: list[dict[str, Any]] = field(default_factory=list)

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """Read lines until the JSON line of ``event``; fail on EOF or timeout."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"worker {self.proc.pid}: no {event!r} in {timeout}s")
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                continue
            if not raw:
                rc = await self.proc.wait()
                tail = "\n".join(self.log[-40:])
                raise AssertionError(
                    f"worker {self.proc.pid} exited {rc} before {event!r}:\n{tail}"
                )
            msg = self._take(raw)
            if msg is not None and msg["event"] == event:
                return msg

    def _take(self, raw: bytes) -> dict[str, Any] | None:
        line = raw.decode(errors="replace").rstrip("\n")
        if line.startswith('{"event"'):
            msg: dict[str, Any] = json.loads(line)
            self.said.append(msg)
            return msg
        self.log.append(line)
        return None

    async def kill(self) -> None:
        """SIGKILL, reap (a zombie would still look alive to recovery) and read what is left."""
        os.kill(self.proc.pid, signal.SIGKILL)
        rc = await self.proc.wait()
        assert self.proc.stdout is not None
        for raw in (await self.proc.stdout.read()).splitlines(keepends=True):
            self._take(raw)
        assert rc == -signal.SIGKILL, f"worker {self.proc.pid} exited {rc} by itself: {self.log}"


class Workers:
    """Starts workers; kills whatever is still alive at teardown."""

    def __init__(self, db: Path, runs: Path) -> None:
        self.db, self.runs = db, runs
        self.all: list[Worker] = []
        self.log: list[str] = []

    async def start(self, *args: str) -> Worker:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            "--db",
            str(self.db),
            "--runs",
            str(self.runs),
            *args,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        w = Worker(proc, self.log)
        self.all.append(w)
        return w

    async def kill_all(self) -> None:
        for w in self.all:
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Workers]:
    made = Workers(tmp_path / "jobs.db", tmp_path / "runs.txt")
    try:
        yield made
    finally:
        await made.kill_all()


# -- the producer in this process ----------------------------------------------------------


class Producer:
    """A service in this process that submits jobs for the worker and runs none itself."""

    def __init__(self, db: Path) -> None:
        self.svc = JobQueueService(db, busy_timeout=30.0)
        self.svc.declare(*HANDLERS)  # submitted here, run by the worker processes

    async def open(self) -> None:
        await self.svc.__aenter__()

    async def submit(self, specs: list[Spec]) -> list[str]:
        jobs = await asyncio.gather(
            *(
                self.svc.submit(
                    s.handler,
                    s.payload,
                    max_retries=s.max_retries,
                    delay=s.delay,
                    priority=s.priority,
                )
                for s in specs
            )
        )
        return [j.id for j in jobs]

    async def close(self) -> None:
        await self.svc.close()


def _create_ledger(db: Path) -> None:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.execute(LEDGER_SQL)
        conn.commit()


# -- the audit -----------------------------------------------------------------------------


@dataclass
class Audit:
    figures: dict[str, Any]
    problems: list[str]

    def summary(self) -> str:
        return "crash test: " + " ".join(f"{k}={v}" for k, v in self.figures.items())


def _audit(db: Path, runs_file: Path, submitted: dict[str, Spec]) -> Audit:
    """Read the database back with the standard library and check every promise."""
    problems: list[str] = []
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        rows = {
            r["id"]: r
            for r in conn.execute(
                "SELECT id, handler, status, reason, error_type, attempt, max_retries, result, "
                "payload, idempotency_key, created_at, started_at, owner FROM jobs"
            )
        }
        ledger: dict[str, list[int]] = {}
        for job_id, attempt in conn.execute("SELECT job_id, attempt FROM ledger ORDER BY id"):
            ledger.setdefault(job_id, []).append(attempt)
        owners_left = conn.execute("SELECT count(*) FROM owners").fetchone()[0]
    runs = Counter(line.split()[0] for line in runs_file.read_text().splitlines())

    if [tuple(r) for r in integrity] != [("ok",)]:
        problems.append(f"integrity_check: {[tuple(r) for r in integrity]}")

    # Children submitted by `spawn` handlers in the worker, idempotent per parent.
    children = {
        job_id: r["idempotency_key"].removeprefix("child-")
        for job_id, r in rows.items()
        if (r["idempotency_key"] or "").startswith("child-")
    }
    lost = sorted(set(submitted) - set(rows))
    unexpected = sorted(set(rows) - set(submitted) - set(children))
    problems += [f"lost: submitted job {i} is not in the database" for i in lost]
    problems += [f"unexpected job {i}: {dict(rows[i])}" for i in unexpected]
    for child, parent in children.items():
        if parent not in submitted or submitted[parent].handler != "spawn":
            problems.append(f"child {child} has no spawn parent ({parent})")
        if rows[child]["handler"] != "effect":
            problems.append(f"child {child} runs {rows[child]['handler']!r}, not 'effect'")

    specs: dict[str, Spec] = dict(submitted)
    for child, parent in children.items():
        payload = json.loads(rows[child]["payload"])
        retries = rows[child]["max_retries"]
        delay = submitted[parent].payload["child_delay"] if parent in submitted else 0.0
        specs[child] = Spec("effect", payload, retries, delay)

    statuses: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    stuck: list[str] = []
    duplicates = phantom = missing = reran_effects = 0
    for job_id, spec in specs.items():
        r = rows.get(job_id)
        if r is None:
            continue  # reported as lost
        status, attempt, retries = r["status"], r["attempt"], r["max_retries"]
        statuses[status] += 1
        effects = ledger.get(job_id, [])
        ran = runs[job_id]
        where = f"job {job_id} ({spec.handler}, {status}/{r['reason']}, attempt {attempt}"
        where += f" of max_retries {retries}, runs {ran}, ledger {effects})"
        if status not in TERMINAL:
            stuck.append(job_id)
            problems.append(f"stuck: {where}")
            continue
        if r["owner"] is not None:
            problems.append(f"terminal but still owned by {r['owner']}: {where}")
        if r["handler"] != spec.handler or retries != spec.max_retries:
            problems.append(f"stored handler/max_retries differ from the submit: {where}")
        if ran > attempt + 1:
            problems.append(f"more runs than claims (attempt + 1): {where}")
        if r["started_at"] is None or r["started_at"] < r["created_at"] + spec.delay - 1e-6:
            problems.append(f"started before its delay {spec.delay:.3f}s was up: {where}")
        expected_effects = 1 if status == "completed" and spec.handler in EFFECT_HANDLERS else 0
        if len(effects) > 1:
            duplicates += len(effects) - 1
            problems.append(f"duplicated effect: {where}")
        elif len(effects) > expected_effects:
            phantom += 1
            problems.append(f"effect kept for a job that did not complete: {where}")
        elif len(effects) < expected_effects:
            missing += 1
            problems.append(f"completed without its effect: {where}")
        if status == "completed":
            if effects and effects[0] != attempt:
                problems.append(f"effect written by another run than the completing one: {where}")
            if spec.handler == "effect" and ran > 1:  # re-executed only because of kills
                reran_effects += 1
            result = json.loads(r["result"])
            want: dict[str, Any] = {"n": spec.payload["n"]}
            if spec.handler == "spawn":
                want["child"] = result.get("child")
                if children.get(want["child"]) != job_id:
                    problems.append(f"its result names no child of its own: {result} {where}")
            if result != want:
                problems.append(f"result {result} != {want}: {where}")
            if attempt > retries:
                problems.append(f"completed past its retries: {where}")
            if ran < 1:
                problems.append(f"completed but the handler never ran: {where}")
            if spec.handler == "retry_once" and attempt < 1:
                problems.append(f"completed without its retry: {where}")
            if spec.handler == "flaky" and attempt < spec.payload["fails"]:
                problems.append(f"completed before its failures were used up: {where}")
        elif status == "failed":
            reason = r["reason"]
            failed[reason] += 1
            if reason not in ALLOWED_FAILURES[spec.handler]:
                problems.append(f"failed with a reason its handler cannot cause: {where}")
            elif r["error_type"] != ERROR_TYPES[reason]:
                problems.append(f"error_type {r['error_type']!r} for reason {reason}: {where}")
            want_attempt = retries + 1 if reason == "crashed" else retries
            if attempt != want_attempt:
                problems.append(
                    f"failed {reason} at attempt {attempt}, not {want_attempt}: {where}"
                )
        else:
            problems.append(f"nobody cancelled or stopped it: {where}")
    orphans = sorted(set(ledger) - set(rows))
    problems += [f"ledger rows for unknown job {i}" for i in orphans]

    figures: dict[str, Any] = {
        "jobs": len(specs),
        "by_test": len(submitted),
        "by_worker": len(children),
        "completed": statuses["completed"],
        "failed": dict(sorted(failed.items())),
        "lost": len(lost),
        "stuck": len(stuck),
        "duplicates": duplicates,
        "phantom_effects": phantom,
        "missing_effects": missing,
        "effects": sum(len(v) for v in ledger.values()),
        "reran_effect_jobs": reran_effects,
        "handler_runs": sum(runs.values()),
        "owners_rows_left": owners_left,
        "integrity": integrity[0][0] if integrity else None,
    }
    return Audit(figures, problems)


# -- the test ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_sigkill_loop_loses_nothing_and_never_repeats_an_effect(workers: Workers) -> None:
    t0 = time.monotonic()
    seed = int(os.environ.get("JQ_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    submitted: dict[str, Spec] = {}

    producer = Producer(workers.db)
    await producer.open()
    try:
        await asyncio.to_thread(_create_ledger, workers.db)
        specs = [_spec(rng, n) for n in range(INITIAL_JOBS)]
        submitted.update(zip(await producer.submit(specs), specs, strict=True))

        kills = before_ready = 0
        while kills < KILLS:
            w = await workers.start()
            mode = rng.random()
            if mode < 0.2:  # during start-up: opening the file, migrations check, recovery
                await w.expect("opening", START_TIMEOUT)
                await asyncio.sleep(rng.uniform(0.0, 0.03))
            else:
                await w.expect("ready", START_TIMEOUT)
                await asyncio.sleep(
                    rng.uniform(0.4, 1.5) if mode > 0.95 else rng.uniform(0.02, 0.3)
                )
            if rng.random() < 0.5:  # more work arrives while the worker runs
                more = [_spec(rng, len(submitted) + i) for i in range(rng.randint(1, 8))]
                submitted.update(zip(await producer.submit(more), more, strict=True))
            await w.kill()
            kills += 1
            before_ready += all(m["event"] != "ready" for m in w.said)
    finally:
        await producer.close()

    final = await workers.start("--final", "--idle-timeout", str(FINAL_TIMEOUT))
    await final.expect("ready", START_TIMEOUT)
    await final.expect("idle", FINAL_TIMEOUT + START_TIMEOUT)
    await final.expect("closed", 60)
    assert await asyncio.wait_for(final.proc.wait(), 60) == 0, "\n".join(workers.log[-40:])

    recovered: Counter[str] = Counter()
    for m in (m for w in workers.all for m in w.said if m["event"] == "ready"):
        recovered.update(requeued=m["requeued"], crashed=m["crashed"])
    audit = await asyncio.to_thread(_audit, workers.db, workers.runs, submitted)
    audit.figures = {
        "kills": kills,
        "kills_before_ready": before_ready,
        **audit.figures,
        "recovered_at_open": dict(recovered),
        "log_errors": sum(" ERROR " in line or "Traceback" in line for line in workers.log),
        "seconds": round(time.monotonic() - t0, 1),
        "seed": seed,
    }
    summary = audit.summary()
    print(f"\n{summary}")
    assert kills >= KILLS, summary
    assert not audit.problems, f"{summary}\n{len(audit.problems)} problem(s):\n" + "\n".join(
        audit.problems[:40]
    )
    assert audit.figures["reran_effect_jobs"] > 0, f"no effect job ran twice; weak run: {summary}"
