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
* no two runs of one job overlap (the runs file has each run's start and end;
  a run without an end ended when its worker was killed);
* ``PRAGMA integrity_check`` is ``ok``.

Meanwhile a controller process (``_chaos_controller.py``, its own service on
the file) calls cancel/stop/pause/resume on random jobs among a share of
those submitted: single calls, several in a row, calls on jobs waiting for a
retry, calls on running jobs just before their worker is killed. The audit
then checks that every successful cancel, stop and pause took effect:

* a cancel or stop: the job ends ``cancelled`` (a stop: ``stopped`` or
  ``cancelled``), unless the job finished on its own first (its
  ``completed_at`` is before the call returned); no run of it starts after the
  call returned;
* a pause: no run of it starts after the call returned until a later resume;
  with no later resume, cancel or stop, the job ends ``paused``;
* a resume: a job that ends ``paused`` had a pause after its last resume.

``JQ_CRASH_KILLS`` (default 120), ``JQ_CRASH_SEED`` and ``JQ_CRASH_CONTROLS``
(``0``: no controller) tune a manual run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parents[1] / "procs" / "_crash_worker.py"
CONTROLLER = Path(__file__).resolve().parents[1] / "procs" / "_chaos_controller.py"
KILLS = int(os.environ.get("JQ_CRASH_KILLS", "120"))
CONTROLS = os.environ.get("JQ_CRASH_CONTROLS", "1") != "0"
CONTROLLED_SHARE = 0.3  # of the jobs the test submits, offered to the controller
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
#: How a job may end by a control (a stop past ``stop_timeout`` is a cancel).
CONTROLLED_ENDS = {
    ("cancelled", "cancelled"),
    ("cancelled", "stop_timeout"),
    ("stopped", "stopped"),
}


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
    #: Wall-clock time once it was killed and reaped.
    died: float | None = None

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
        self.died = time.time()
        assert self.proc.stdout is not None
        for raw in (await self.proc.stdout.read()).splitlines(keepends=True):
            self._take(raw)
        assert rc == -signal.SIGKILL, f"worker {self.proc.pid} exited {rc} by itself: {self.log}"


class Workers:
    """Starts workers; kills whatever is still alive at teardown."""

    def __init__(self, db: Path, runs: Path) -> None:
        self.db, self.runs = db, runs
        self.all: list[Worker] = []
        self.controller: Worker | None = None
        self.log: list[str] = []

    async def start(self, *args: str) -> Worker:
        w = await self._spawn(WORKER, "--db", str(self.db), "--runs", str(self.runs), *args)
        self.all.append(w)
        return w

    async def start_controller(self, jobs: Path, calls: Path, seed: int) -> Worker:
        """The controller process; it stops at EOF on its stdin (see ``_chaos_controller``)."""
        args = ("--db", str(self.db), "--jobs", str(jobs), "--calls", str(calls))
        self.controller = await self._spawn(
            CONTROLLER, *args, "--seed", str(seed), stdin=asyncio.subprocess.PIPE
        )
        return self.controller

    async def _spawn(self, script: Path, *args: str, stdin: int | None = None) -> Worker:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            *args,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return Worker(proc, self.log)

    def deaths(self) -> dict[int, list[float]]:
        """When each killed worker's pid died (a pid may come back as another worker)."""
        found: dict[int, list[float]] = {}
        for w in self.all:
            if w.died is not None:
                found.setdefault(w.proc.pid, []).append(w.died)
        return found

    async def kill_all(self) -> None:
        for w in [*self.all, *filter(None, [self.controller])]:
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


@dataclass
class Run:
    """One handler run, from the runs file."""

    pid: int
    start: float
    end: float | None = None  # None: its worker was killed during it


@dataclass
class Call:
    """One control call, from the controller's calls file."""

    job: str
    kind: str
    t0: float
    t1: float
    result: str  # ok, refused (InvalidTransition), error
    status: str | None
    error: str | None
    why: str


@dataclass
class Requests:
    """Control requests the workers' supervisors read and applied (see ``_watch_controls``)."""

    #: (job, kind, started_at of the run) -> (pid, first time read)
    seen: dict[tuple[str, str, str], tuple[int, float]] = field(default_factory=dict)
    applied: set[tuple[str, str, str]] = field(default_factory=set)

    def unapplied(self, deaths: dict[int, list[float]]) -> list[str]:
        """Requests read on a run and never applied to it (but by a worker killed at once)."""
        problems = []
        for key, (pid, t) in sorted(self.seen.items(), key=lambda kv: kv[1][1]):
            if key in self.applied or any(t <= d <= t + 0.2 for d in deaths.get(pid, [])):
                continue
            job_id, kind, started_at = key
            problems.append(
                f"worker {pid} read {kind} on job {job_id} (its run claimed at {started_at}) "
                f"at {t:.3f} and never applied it"
            )
        return problems


def _read_runs(
    runs_file: Path, deaths: dict[int, list[float]]
) -> tuple[dict[str, list[Run]], Requests, list[str]]:
    """Each job's runs in start order, the control requests, problems with the file."""
    runs: dict[str, list[Run]] = {}
    requests = Requests()
    problems: list[str] = []
    open_: dict[tuple[str, int], Run] = {}
    for line in runs_file.read_text().splitlines():
        job_id, field_, pid_text, when, what = line.split()
        pid, t = int(pid_text), float(when)
        if what.startswith("seen:"):
            requests.seen.setdefault((job_id, what[5:], field_), (pid, t))
        elif what.startswith("applied:"):
            requests.applied.add((job_id, what[8:], field_))
        elif what == "start":
            before = open_.get((job_id, pid))
            if before is not None and not any(before.start <= d <= t for d in deaths.get(pid, [])):
                problems.append(f"job {job_id}: a second run started in pid {pid} at {t:.3f}")
            run = open_[job_id, pid] = Run(pid, t)
            runs.setdefault(job_id, []).append(run)
        elif (run_ := open_.pop((job_id, pid), None)) is None:
            problems.append(f"job {job_id}: a run ended in pid {pid} at {t:.3f} but never started")
        else:
            run_.end = t
    for v in runs.values():
        v.sort(key=lambda r: r.start)
    return runs, requests, problems


def _overlaps(job_id: str, runs: list[Run], deaths: dict[int, list[float]]) -> list[str]:
    """Each run ended (or its worker died) before the next one started."""
    problems: list[str] = []
    for a, b in itertools.pairwise(runs):
        if a.end is not None:
            over = a.end > b.start
        else:
            died = [d for d in deaths.get(a.pid, []) if d >= a.start]
            over = not died or min(died) > b.start
        if over:
            problems.append(
                f"overlapping runs of job {job_id}: pid {a.pid} {a.start:.3f}-{a.end} "
                f"and pid {b.pid} from {b.start:.3f}"
            )
    return problems


def _read_calls(calls_file: Path | None) -> list[Call]:
    if calls_file is None or not calls_file.exists():
        return []
    fields = Call.__dataclass_fields__
    found = [json.loads(line) for line in calls_file.read_text().splitlines()]
    return sorted(
        (Call(**{k: v for k, v in c.items() if k in fields}) for c in found),
        key=lambda c: c.t0,
    )


#: What a successful control is after: the statuses it may leave a job in.
_TARGET = {"cancel": {"cancelled"}, "stop": {"stopped", "cancelled"}, "pause": {"paused"}}
_ENDED = {"completed", "failed", "cancelled", "stopped"}


def _judge(c: Call, later: list[Call], row: sqlite3.Row, runs: list[Run]) -> tuple[str, str]:
    """Did the successful control ``c`` take effect? ``(verdict, why)``.

    Verdicts: ``effect`` (the job is in the control's target status when the call
    returns), ``late`` (the call returned with the job still running, the request
    left for its owner, and it ends in the target status, or a later call decides),
    ``finished_first`` (it ended another way on its own: completed, failed, or by
    a stronger control; ``why`` is how long after the call it ended) and
    ``not_taken`` (a broken promise: ``why`` says which).
    """
    final, done_at = row["status"], row["completed_at"]
    target = _TARGET[c.kind]
    if c.kind == "pause":
        resumed = [x.t0 for x in later if x.kind == "resume"]
        until = min(resumed, default=float("inf"))
        undone = any(x.kind in ("resume", "cancel", "stop") for x in later)
    else:
        until, undone = float("inf"), False
    ran = [r.start for r in runs if c.t1 < r.start < until]
    if ran:
        return "not_taken", f"a run started {ran[0] - c.t1:.3f}s after it returned"
    if c.status in target:
        if not undone and c.kind == "pause" and final != "paused":
            return "not_taken", f"returned paused, ends {final} with no resume, cancel or stop"
        return "effect", ""
    if c.status in _ENDED:  # ended before the control could act
        if done_at is None or done_at > c.t1:
            return "not_taken", f"returned {c.status} but completed_at {done_at} > {c.t1}"
        return "finished_first", f"{done_at - c.t0:.3f}"
    if c.status == "running":  # the request stays in the row for the owner (or the sweep)
        # No handler here runs long enough to outlast the call's wait for the owner, so
        # only the sweep of a killed owner can still apply it.
        if final in target or undone:
            return "late", ""
        return "not_taken", f"returned running, ends {final}"
    return "not_taken", f"returned {c.status}"


def _audit_controls(
    calls: list[Call], rows: dict[str, sqlite3.Row], runs: dict[str, list[Run]]
) -> tuple[dict[str, Any], list[str], set[str]]:
    """Every successful cancel/stop/pause took effect; figures, problems, jobs it may end."""
    problems: list[str] = []
    by_job: dict[str, list[Call]] = {}
    for c in calls:
        by_job.setdefault(c.job, []).append(c)
    kinds: Counter[str] = Counter(c.kind for c in calls)
    results: Counter[str] = Counter(c.result for c in calls)
    verdicts: Counter[str] = Counter()
    scenarios: Counter[str] = Counter(c.why for c in calls)
    returned: Counter[str] = Counter(f"{c.kind}->{c.status}" for c in calls if c.result == "ok")
    problems += [f"control call raised: {c}" for c in calls if c.result == "error"]
    may_end: set[str] = set()  # jobs a cancel/stop/pause may have ended or paused
    first_after: dict[str, float] = {}  # the longest a job took to end on its own, by kind
    for job_id, cs in by_job.items():
        row = rows.get(job_id)
        if row is None:
            problems.append(f"controlled job {job_id} is not in the database")
            continue
        if any(c.result != "refused" and c.kind != "resume" for c in cs):
            may_end.add(job_id)
        ok = [c for c in cs if c.result == "ok"]
        for i, c in enumerate(ok):
            if c.kind == "resume":
                continue
            verdict, why = _judge(c, ok[i + 1 :], row, runs.get(job_id, []))
            verdicts[verdict] += 1
            if verdict == "finished_first":
                first_after[c.kind] = max(first_after.get(c.kind, 0.0), round(float(why), 3))
            if verdict == "not_taken":
                problems.append(
                    f"{c.kind} did not take effect on job {job_id} ({row['handler']}, ends "
                    f"{row['status']}/{row['reason']}): {why}; calls "
                    + ", ".join(f"{x.kind}:{x.result}:{x.status}@{x.t0:.3f}" for x in cs)
                )
        last = next((c for c in reversed(ok) if c.kind in ("pause", "resume")), None)
        if row["status"] == "paused" and (last is None or last.kind != "pause"):
            verdicts["resume_lost"] += 1
            problems.append(
                f"job {job_id} ends paused after a successful resume: calls "
                + ", ".join(f"{x.kind}:{x.result}:{x.status}@{x.t0:.3f}" for x in cs)
            )
    figures = {
        "control_calls": dict(sorted(kinds.items())),
        "control_results": dict(sorted(results.items())),
        "controlled_jobs": len(by_job),
        "taken_effect": verdicts["effect"] + verdicts["late"],
        "taken_effect_late": verdicts["late"],
        "finished_first": verdicts["finished_first"],
        "finished_first_max_s": dict(sorted(first_after.items())),
        "not_taken_effect": verdicts["not_taken"],
        "resume_lost": verdicts["resume_lost"],
        "control_scenarios": dict(sorted(scenarios.items())),
        "control_returned": dict(sorted(returned.items())),
    }
    return figures, problems, may_end


def _audit(
    db: Path,
    runs_file: Path,
    submitted: dict[str, Spec],
    calls: list[Call] | None = None,
    deaths: dict[int, list[float]] | None = None,
) -> Audit:
    """Read the database back with the standard library and check every promise."""
    problems: list[str] = []
    calls = calls or []
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        rows = {
            r["id"]: r
            for r in conn.execute(
                "SELECT id, handler, status, reason, error_type, attempt, max_retries, result, "
                "payload, idempotency_key, created_at, started_at, completed_at, owner, control "
                "FROM jobs"
            )
        }
        ledger: dict[str, list[int]] = {}
        for job_id, attempt in conn.execute("SELECT job_id, attempt FROM ledger ORDER BY id"):
            ledger.setdefault(job_id, []).append(attempt)
        owners_left = conn.execute("SELECT count(*) FROM owners").fetchone()[0]
    run_list, requests, run_problems = _read_runs(runs_file, deaths or {})
    problems += run_problems + requests.unapplied(deaths or {})
    runs = Counter({job_id: len(v) for job_id, v in run_list.items()})
    for job_id, v in run_list.items():
        problems += _overlaps(job_id, v, deaths or {})
    control_figures, control_problems, may_end = _audit_controls(calls, rows, run_list)
    problems += control_problems
    # Runs a pause cut short are run again at the same attempt.
    reruns = Counter(c.job for c in calls if c.kind == "pause" and c.result != "refused")

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
        if status == "paused" and job_id in may_end:  # judged by _audit_controls
            if effects:
                problems.append(f"effect kept for a paused job: {where}")
            continue
        if status not in TERMINAL:
            stuck.append(job_id)
            problems.append(f"stuck: {where}")
            continue
        if r["owner"] is not None:
            problems.append(f"terminal but still owned by {r['owner']}: {where}")
        if r["handler"] != spec.handler or retries != spec.max_retries:
            problems.append(f"stored handler/max_retries differ from the submit: {where}")
        if ran > attempt + 1 + reruns[job_id]:
            problems.append(f"more runs than claims (attempt + 1 + pauses): {where}")
        never_ran = ran == 0 and status in ("cancelled", "stopped") and job_id in may_end
        if never_ran and r["started_at"] is None:
            pass  # cancelled or stopped while it waited
        elif r["started_at"] is None or r["started_at"] < r["created_at"] + spec.delay - 1e-6:
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
        elif job_id not in may_end:
            problems.append(f"nobody cancelled or stopped it: {where}")
        elif (status, r["reason"]) not in CONTROLLED_ENDS:
            problems.append(f"ended {status} for reason {r['reason']!r}: {where}")
    orphans = sorted(set(ledger) - set(rows))
    problems += [f"ledger rows for unknown job {i}" for i in orphans]

    figures: dict[str, Any] = {
        "jobs": len(specs),
        "by_test": len(submitted),
        "by_worker": len(children),
        "completed": statuses["completed"],
        "failed": dict(sorted(failed.items())),
        "cancelled": statuses["cancelled"],
        "stopped": statuses["stopped"],
        "paused": statuses["paused"],
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
        **(control_figures if calls else {}),
        "requests_read": len(requests.seen),
        "requests_applied": len(requests.applied),
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
    jobs_file = workers.db.with_name("controllable.txt")  # what the controller may pick
    calls_file = workers.db.with_name("calls.jsonl")
    jobs_file.touch()

    def offer(ids: list[str]) -> None:
        picked = [i for i in ids if rng.random() < CONTROLLED_SHARE]
        with jobs_file.open("a") as f:
            f.writelines(f"{i}\n" for i in picked)

    producer = Producer(workers.db)
    await producer.open()
    controller: Worker | None = None
    try:
        await asyncio.to_thread(_create_ledger, workers.db)
        specs = [_spec(rng, n) for n in range(INITIAL_JOBS)]
        submitted.update(zip(await producer.submit(specs), specs, strict=True))
        if CONTROLS:
            offer(list(submitted))
            controller = await workers.start_controller(jobs_file, calls_file, rng.randrange(2**32))
            await controller.expect("ready", START_TIMEOUT)

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
                ids = await producer.submit(more)
                submitted.update(zip(ids, more, strict=True))
                if controller is not None:
                    offer(ids)
            if controller is not None and rng.random() < 0.5:  # controls as the owner dies
                assert controller.proc.stdin is not None
                controller.proc.stdin.write(b"kill\n")
                await controller.proc.stdin.drain()
                await asyncio.sleep(rng.uniform(0.0, 0.03))
            await w.kill()
            kills += 1
            before_ready += all(m["event"] != "ready" for m in w.said)
        if controller is not None:  # calls in progress end; a dead owner's jobs are swept
            assert controller.proc.stdin is not None
            controller.proc.stdin.close()
            await controller.expect("done", 120)
            rc = await asyncio.wait_for(controller.proc.wait(), 60)
            assert rc == 0, "\n".join(workers.log[-40:])
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
    calls = _read_calls(calls_file)
    audit = await asyncio.to_thread(
        _audit, workers.db, workers.runs, submitted, calls, workers.deaths()
    )
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
    if controller is not None:
        assert audit.figures["taken_effect"] > 0, f"no control took effect; weak run: {summary}"
