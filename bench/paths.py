"""The paths users take, each beside its limit and the peers, measured in the same run.

Run (from the repository root)::

    PYTHONPATH=. python bench/paths.py                   # everything, ~1-2 minutes
    PYTHONPATH=. python bench/paths.py --quick           # smoke sizes, a few seconds
    PYTHONPATH=. python bench/paths.py --only seq --repeat 3

Every figure is one JSON line on stdout (progress on stderr); each system runs
in a fresh child process. The last line is ``"system": "summary"``: medians
over the repeats and, for each path, the ratio to its limit paired within a
repeat. Ratios from one run are the figures to trust on a shared machine.

Paths (``--only`` takes system names or the groups ``seq``, ``wait``, ``claim``):

**One at a time** (``seq_*``): ``--jobs`` (10,000) jobs, each submitted and
committed before the next one starts, by one producer; nothing consumes them
(a web app handing jobs to workers). ``jobs_per_s`` and each call's latency.

* ``seq_sqlite3``: the limit. stdlib ``sqlite3``, one connection, per job a
  time-ordered id, the payload encoded as JSON and one ``INSERT`` of jobqueue's
  row into jobqueue's own ``jobs`` table (made by its migrations, every index
  included), then ``COMMIT``: the same SQLite work a submit does, nothing else.
* ``seq_sqlite3_min``: the same into a minimal table (one index, ``bench/_common.SCHEMA``).
* ``seq_jobqueue``: ``await service.submit("noop", {"i": i})``, the handler
  declared (run by other processes).
* ``seq_jobqueue_local``: the same with the handler registered here (concurrency 8),
  so jobs also start and finish while the producer submits.
* ``seq_huey`` / ``seq_litequeue`` / ``seq_persistqueue``: the peers' enqueue
  (``task(payload)``, ``put(text)``, ``put(payload)``) on WAL + ``synchronous=NORMAL``,
  no consumer running.

**Submit, then wait** (``wait_*``): ``--jobs`` no-op jobs; each job is submitted
and then its outcome awaited by its own submitter.

* ``wait_limit``: the limit. The same jobs through ``submit_many`` (1,000 per
  call) and ``run_until_idle()``: no per-job caller, so nothing to wake.
* ``wait_floor``: what any gathered submit-then-wait costs in asyncio itself, with no
  queue: ``--jobs`` coroutines gathered, each awaiting two futures that are resolved
  a batch at a time (a commit, then an outcome). A gathered ``submit()`` + ``wait()``
  can at best take the limit's time plus this floor's, so the best ratio to the limit
  any library could reach here is ``limit / (limit + floor)`` (the summary's
  ``wait_best_possible_vs_wait_limit``).
* ``wait_jobqueue``: ``--jobs`` coroutines gathered, each ``job = await
  service.submit(...)`` then ``await service.wait(job.id)``.
* ``wait_jobqueue_later``: the ``--jobs`` submits gathered first, then one
  ``await service.wait(job.id)`` after the other.
* ``wait_tasks``: the same through ``TaskService(InProcessBackend(service))``
  ``.launch_and_await_task``.
* ``wait_huey``: ``--threads`` (32) producer threads, each ``task(payload)`` then
  ``result.get(blocking=True)`` (huey polls its result store, from 50 ms backing
  off; 10 ms at most here), huey's consumer with 4 thread workers.
* ``wait_litequeue``: 32 producer threads, each ``put()`` then polling ``get(id)``
  every 1 ms until ``DONE``; 4 consumer threads ``pop()``/``done()``.
* persist-queue has no call that tells one item's outcome: skipped, saying so.

jobqueue runs with concurrency ``--concurrency`` (512) in both ``wait`` systems.

**Claim with many delayed jobs** (``claim_*``): the claim statement
(``jobqueue.store.claim.claim``, 8 free slots) timed on a file made by the
library, inside ``BEGIN IMMEDIATE`` ... ``ROLLBACK`` so every round sees the
same rows; ``ms_per_claim`` is the median of ``--claims`` (50) rounds.

* ``claim_delayed``: 50,000 delayed jobs (an hour ahead) and 3 due.
* ``claim_backlog``: 50,000 due jobs.
* ``claim_delayed_ahead``: 50,000 delayed jobs at priority 5 and 50,000 due at 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Final

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

from _common import (  # noqa: E402
    INSERT_SQL,
    PRAGMAS,
    SCHEMA,
    count_statuses,
    emit,
    emit_summary,
    error_list,
    log,
    percentile,
    select_systems,
    spawn_child,
    temp_db,
)

BENCH: Final = "paths"
#: Targets: each path's ratio to its limit, and the claim's time.
TARGET_SEQ: Final = 0.8
FLOOR_SEQ: Final = 0.5
TARGET_WAIT: Final = 0.9
TARGET_CLAIM_MS: Final = 1.0

SYSTEMS: Final = (
    "seq_sqlite3",
    "seq_sqlite3_min",
    "seq_jobqueue",
    "seq_jobqueue_local",
    "seq_huey",
    "seq_litequeue",
    "seq_persistqueue",
    "wait_limit",
    "wait_floor",
    "wait_jobqueue",
    "wait_jobqueue_later",
    "wait_tasks",
    "wait_huey",
    "wait_litequeue",
    "wait_persistqueue",
    "claim_delayed",
    "claim_backlog",
    "claim_delayed_ahead",
)
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "seq": tuple(s for s in SYSTEMS if s.startswith("seq_")),
    "wait": tuple(s for s in SYSTEMS if s.startswith("wait_")),
    "claim": tuple(s for s in SYSTEMS if s.startswith("claim_")),
    "all": SYSTEMS,
}
#: Each path's limit and the systems measured against it.
PATHS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "seq": ("seq_sqlite3", tuple(s for s in ALIASES["seq"] if s != "seq_sqlite3")),
    "wait": (
        "wait_limit",
        tuple(s for s in ALIASES["wait"] if s not in ("wait_limit", "wait_floor")),
    ),
}
PEER_MODULES: Final = {"huey": "huey", "litequeue": "litequeue", "persistqueue": "persistqueue"}


class Cfg:
    def __init__(self, args: argparse.Namespace) -> None:
        self.jobs: int = args.jobs
        self.quick: bool = args.quick
        self.concurrency: int = args.concurrency
        self.threads: int = args.threads
        self.claims: int = args.claims
        self.delayed: int = 2_000 if args.quick else 50_000
        self.repeat: int = args.repeat_index

    def base(self, system: str) -> dict[str, Any]:
        return {"bench": BENCH, "system": system, "repeat": self.repeat}


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def _us(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50_us": round(percentile(values, 50) * 1e6, 1),
        "p99_us": round(percentile(values, 99) * 1e6, 1),
    }


# --------------------------------------------------------------------------- one at a time


def _jobqueue_insert() -> tuple[str, Callable[[sqlite3.Connection, str], None]]:
    """jobqueue's own INSERT statement and a function making its schema on a connection."""
    from jobqueue.store import jobs
    from jobqueue.store.schema import apply_migrations

    return jobs._INSERT, apply_migrations


def seq_sqlite3(cfg: Cfg, minimal: bool) -> dict[str, Any]:
    """The limit: one INSERT + COMMIT per job, ids and JSON made in the loop."""
    from jobqueue.ids import new_job_id

    n = cfg.jobs
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    with temp_db() as path:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            for pragma in PRAGMAS:
                conn.execute(pragma)
            if minimal:
                conn.executescript(SCHEMA)
            else:
                sql, make_schema = _jobqueue_insert()
                make_schema(conn, path)
            lat: list[float] = []
            perf = time.perf_counter
            started = perf()
            for i in range(n):
                t0 = perf()
                now = time.time()
                payload = dumps({"i": i})
                conn.execute("BEGIN IMMEDIATE")
                if minimal:
                    conn.execute(INSERT_SQL, (new_job_id(), "noop", payload, now, now, now))
                else:
                    conn.execute(
                        sql,
                        (new_job_id(), "noop", payload, "pending", now, now, None, now, 0, 0)
                        + (None,) * 7,
                    )
                conn.execute("COMMIT")
                lat.append(perf() - t0)
            elapsed = perf() - started
        finally:
            conn.close()
        statuses = count_statuses(path)
    return {
        "jobs": n,
        "jobs_per_s": _rate(n, elapsed),
        "seconds": round(elapsed, 4),
        **_us(lat),
        "table": "bench/_common.SCHEMA (one index)" if minimal else "jobqueue's jobs table",
        "statuses": statuses,
    }


async def _seq_jobqueue(cfg: Cfg, path: str, local: bool) -> dict[str, Any]:
    from jobqueue import JobQueueService

    n = cfg.jobs
    async with JobQueueService(path, concurrency=8) as svc:
        if local:

            @svc.handler("noop")
            async def noop(ctx: Any, payload: Any) -> None:
                return None
        else:
            svc.declare("noop")
        for i in range(100):  # warm-up: code paths and the connection
            await svc.submit("noop", {"w": i})
        if local:
            await svc.run_until_idle()
        writer = svc.runtime.writer
        assert writer is not None
        batches0, inline0 = writer.batches, writer.inline_batches
        lat: list[float] = []
        perf = time.perf_counter
        submit = svc.submit
        cpu0 = time.process_time()
        started = perf()
        for i in range(n):
            t0 = perf()
            await submit("noop", {"i": i})
            lat.append(perf() - t0)
        elapsed = perf() - started
        cpu = time.process_time() - cpu0
        fields = {
            "jobs": n,
            "jobs_per_s": _rate(n, elapsed),
            "seconds": round(elapsed, 4),
            **_us(lat),
            "cpu_us_per_job": round(cpu / n * 1e6, 1),
            "batches": writer.batches - batches0,
            "batches_on_loop": writer.inline_batches - inline0,
        }
        if local:
            await svc.run_until_idle()
    return fields


def seq_jobqueue(cfg: Cfg, local: bool) -> dict[str, Any]:
    with temp_db() as path:
        fields = asyncio.run(_seq_jobqueue(cfg, path, local))
        fields["statuses"] = count_statuses(path)
    return fields


def _peer(system: str) -> Any:
    name = system.split("_", 1)[1]
    sys.path.insert(0, os.path.join(_BENCH_DIR, "peers"))
    if name == "huey":
        from huey_sqlite import HueyPeer

        return HueyPeer(True)
    if name == "litequeue":
        from litequeue_file import LiteQueuePeer

        return LiteQueuePeer()
    from persistqueue_ack import PersistQueuePeer

    return PersistQueuePeer(True)


def _close_unstarted(peer: Any) -> None:
    if hasattr(peer, "huey"):
        peer.huey.storage.close()
    elif hasattr(peer, "producer"):
        peer.producer.close()
    else:
        peer.queue.close()


def seq_peer(cfg: Cfg, system: str) -> dict[str, Any]:
    """A peer's enqueue, one job at a time, with no consumer running."""
    n = cfg.jobs
    peer = _peer(system)
    with temp_db() as path:
        peer.open(os.path.dirname(path), lambda payload: None)
        try:
            for i in range(100):
                peer.submit({"w": i})
            lat: list[float] = []
            perf = time.perf_counter
            submit = peer.submit
            started = perf()
            for i in range(n):
                t0 = perf()
                submit({"i": i})
                lat.append(perf() - t0)
            elapsed = perf() - started
        finally:
            _close_unstarted(peer)
    return {
        "jobs": n,
        "jobs_per_s": _rate(n, elapsed),
        "seconds": round(elapsed, 4),
        **_us(lat),
        "settings": peer.settings if isinstance(peer.settings, dict) else None,
    }


# --------------------------------------------------------------------------- submit, then wait


async def _wait_jobqueue(cfg: Cfg, path: str, variant: str) -> dict[str, Any]:
    from jobqueue import JobQueueService

    n = cfg.jobs
    async with JobQueueService(path, concurrency=cfg.concurrency) as svc:

        @svc.handler("noop")
        async def noop(ctx: Any, payload: Any) -> Any:
            return payload["i"]

        await svc.submit_many("noop", [{"i": i} for i in range(200)])  # warm-up
        await svc.run_until_idle()
        db = svc.runtime.db
        assert db is not None
        calls0 = db.calls
        now0 = db.calls_now
        started = time.perf_counter()
        if variant == "limit":
            for lo in range(0, n, 1000):
                await svc.submit_many("noop", [{"i": i} for i in range(lo, min(n, lo + 1000))])
            await svc.run_until_idle()
            results: list[Any] = list(range(n))
        elif variant == "jobqueue":

            async def one(i: int) -> Any:
                job = await svc.submit("noop", {"i": i})
                return await svc.wait(job.id)

            results = await asyncio.gather(*(one(i) for i in range(n)))
        elif variant == "jobqueue_later":
            jobs = await asyncio.gather(*(svc.submit("noop", {"i": i}) for i in range(n)))
            results = [await svc.wait(job.id) for job in jobs]
        else:
            from jobqueue.tasks import InProcessBackend, TaskService

            tasks = TaskService(InProcessBackend(svc))
            results = await asyncio.gather(
                *(tasks.launch_and_await_task("noop", {"i": i}) for i in range(n))
            )
        elapsed = time.perf_counter() - started
        calls, calls_now = db.calls - calls0, db.calls_now - now0
    if results != list(range(n)):
        raise RuntimeError("some waits returned the wrong result")
    return {
        "jobs": n,
        "jobs_per_s": _rate(n, elapsed),
        "seconds": round(elapsed, 4),
        "concurrency": cfg.concurrency,
        "db_thread_calls": calls,
        "db_loop_calls": calls_now,
    }


async def _wait_floor(n: int) -> float:
    loop = asyncio.get_running_loop()
    commits: list[asyncio.Future[None]] = []
    outcomes: list[asyncio.Future[int]] = []

    def settle(futures: list[Any], value: Any) -> None:
        for f in futures:
            f.set_result(value)

    async def one(i: int) -> int:
        done: asyncio.Future[None] = loop.create_future()
        commits.append(done)
        if len(commits) == n:  # the last submit of the pass: one commit for all
            loop.call_soon(settle, commits, None)
        await done
        out: asyncio.Future[int] = loop.create_future()
        outcomes.append(out)
        if len(outcomes) == n:
            loop.call_soon(lambda: [f.set_result(k) for k, f in enumerate(outcomes)])
        return await out

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    if results != list(range(n)):
        raise RuntimeError("the floor's futures returned the wrong results")
    return elapsed


def wait_floor(cfg: Cfg) -> dict[str, Any]:
    asyncio.run(_wait_floor(200))  # warm-up, as the others
    elapsed = asyncio.run(_wait_floor(cfg.jobs))
    return {"jobs": cfg.jobs, "jobs_per_s": _rate(cfg.jobs, elapsed), "seconds": round(elapsed, 4)}


def wait_jobqueue(cfg: Cfg, variant: str) -> dict[str, Any]:
    with temp_db() as path:
        fields = asyncio.run(_wait_jobqueue(cfg, path, variant))
        statuses = count_statuses(path)
    fields["statuses"] = statuses
    if statuses != {"completed": cfg.jobs + 200}:
        fields["warning"] = f"expected {cfg.jobs + 200} completed rows, saw {statuses}"
    return fields


def wait_peer(cfg: Cfg, system: str) -> dict[str, Any]:
    """``--threads`` producers, each submitting a job and waiting for its outcome."""
    if system == "wait_persistqueue":
        raise _Skip(
            "persist-queue has no call that tells one item's outcome by id "
            "(get/ack work on the next ready item), so a submitter cannot wait for its job"
        )
    n = cfg.jobs
    peer = _peer(system)
    numbers = iter(range(n))
    lock = threading.Lock()
    errors: list[str] = []

    with temp_db() as path:
        peer.open(os.path.dirname(path), lambda payload: None)
        peer.start()
        try:
            if system == "wait_huey":

                def producer() -> None:
                    while True:
                        with lock:
                            i = next(numbers, None)
                        if i is None:
                            return
                        peer.task({"i": i}).get(blocking=True, timeout=60, max_delay=0.01)

            else:
                from litequeue import LiteQueue, MessageStatus

                def producer() -> None:
                    q = LiteQueue(peer.path)
                    try:
                        while True:
                            with lock:
                                i = next(numbers, None)
                            if i is None:
                                return
                            msg = q.put(json.dumps({"i": i}))
                            deadline = time.monotonic() + 60
                            while q.get(msg.message_id).status != MessageStatus.DONE:
                                if time.monotonic() > deadline:
                                    raise TimeoutError(f"job {i} not done after 60 s")
                                time.sleep(0.001)
                    finally:
                        q.close()

            def guarded() -> None:
                try:
                    producer()
                except Exception as exc:  # reported in the line
                    errors.append(f"{type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=guarded) for _ in range(cfg.threads)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
        finally:
            peer.close()
    if errors:
        raise RuntimeError(errors[0])
    return {
        "jobs": n,
        "jobs_per_s": _rate(n, elapsed),
        "seconds": round(elapsed, 4),
        "producer_threads": cfg.threads,
        "settings": peer.settings if isinstance(peer.settings, dict) else None,
    }


class _Skip(Exception):
    """The system cannot run this path; the message says why."""


# --------------------------------------------------------------------------- claim


async def _make_claim_file(path: str, delayed: int, due: int, delayed_priority: int) -> None:
    from jobqueue import JobQueueService

    async with JobQueueService(path) as svc:
        svc.declare("noop")
        for lo in range(0, delayed, 1000):
            payloads = [{"i": i} for i in range(lo, min(delayed, lo + 1000))]
            await svc.submit_many("noop", payloads, delay=3600, priority=delayed_priority)
        for lo in range(0, due, 1000):
            await svc.submit_many("noop", [{"i": i} for i in range(lo, min(due, lo + 1000))])


def claim_case(cfg: Cfg, system: str) -> dict[str, Any]:
    from jobqueue.store.claim import ClaimRequest, claim

    big = cfg.delayed
    delayed, due, prio = {
        "claim_delayed": (big, 3, 0),
        "claim_backlog": (0, big, 0),
        "claim_delayed_ahead": (big, big, 5),
    }[system]
    with temp_db() as path:
        asyncio.run(_make_claim_file(path, delayed, due, prio))
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            times: list[float] = []
            claimed = 0
            for _ in range(cfg.claims):
                conn.execute("BEGIN IMMEDIATE")
                t0 = time.perf_counter()
                rows, _next = claim(conn, ClaimRequest(["noop"], 8, "bench", time.time()))
                times.append(time.perf_counter() - t0)
                conn.execute("ROLLBACK")
                claimed = len(rows)
        finally:
            conn.close()
    times.sort()
    return {
        "delayed": delayed,
        "due": due,
        "delayed_priority": prio,
        "slots": 8,
        "claimed": claimed,
        "claims": cfg.claims,
        "ms_per_claim": round(statistics.median(times) * 1e3, 4),
        "p99_ms": round(percentile(times, 99) * 1e3, 4),
    }


# --------------------------------------------------------------------------- driver


def run_child(cfg: Cfg, system: str) -> None:
    base = cfg.base(system)
    peer = next((m for k, m in PEER_MODULES.items() if system.endswith("_" + k)), None)
    if peer is not None and system != "wait_persistqueue":
        import importlib.util

        if importlib.util.find_spec(peer) is None:
            emit({**base, "skipped": f"{peer} is not installed (pip install -e '.[bench]')"})
            return
    try:
        if system in ("seq_sqlite3", "seq_sqlite3_min"):
            fields = seq_sqlite3(cfg, minimal=system.endswith("_min"))
        elif system in ("seq_jobqueue", "seq_jobqueue_local"):
            fields = seq_jobqueue(cfg, local=system.endswith("_local"))
        elif system.startswith("seq_"):
            fields = seq_peer(cfg, system)
        elif system == "wait_floor":
            fields = wait_floor(cfg)
        elif system in ("wait_limit", "wait_jobqueue", "wait_jobqueue_later", "wait_tasks"):
            fields = wait_jobqueue(cfg, system.removeprefix("wait_"))
        elif system.startswith("wait_"):
            fields = wait_peer(cfg, system)
        else:
            fields = claim_case(cfg, system)
    except _Skip as why:
        emit({**base, "skipped": str(why)})
        return
    except Exception as exc:
        log(f"{system} failed:\n{traceback.format_exc()}")
        emit({**base, "error": f"{type(exc).__name__}: {exc}"[:500]})
        return
    emit({**base, **fields})


def _spawn(system: str, args: argparse.Namespace, rep: int) -> list[dict[str, Any]]:
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
        "--threads",
        str(args.threads),
        "--claims",
        str(args.claims),
        "--repeat-index",
        str(rep),
    ]
    base = {"bench": BENCH, "system": system, "repeat": rep}
    proc = spawn_child(cmd, quick=args.quick, timeout=args.timeout)
    if isinstance(proc, str):
        return [{**base, "error": proc}]
    lines = []
    for raw in proc.stdout.splitlines():
        if raw.strip().startswith("{"):
            lines.append(json.loads(raw))
    if proc.returncode != 0 and not any("error" in ln for ln in lines):
        lines.append({**base, "error": f"child exited with status {proc.returncode}"})
    return lines or [{**base, "error": "child printed no result"}]


def summarize(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    ok = [r for r in results if "error" not in r and "skipped" not in r]

    def by_rep(system: str, field: str) -> dict[int, float]:
        return {
            int(r["repeat"]): float(r[field])
            for r in ok
            if r["system"] == system and isinstance(r.get(field), int | float)
        }

    def med(values: dict[int, float] | list[float]) -> float | None:
        vals = list(values.values()) if isinstance(values, dict) else values
        return round(statistics.median(vals), 3) if vals else None

    rates = {s: med(by_rep(s, "jobs_per_s")) for s in SYSTEMS if not s.startswith("claim_")}
    ratios: dict[str, float | None] = {}
    for limit, systems in PATHS.values():
        den = by_rep(limit, "jobs_per_s")
        for s in systems:
            num = by_rep(s, "jobs_per_s")
            ratios[f"{s}_vs_{limit}"] = med([num[r] / den[r] for r in num if den.get(r)])
    seq_min = by_rep("seq_sqlite3_min", "jobs_per_s")
    seq = by_rep("seq_jobqueue", "jobs_per_s")
    ratios["seq_jobqueue_vs_seq_sqlite3_min"] = med(
        [seq[r] / seq_min[r] for r in seq if seq_min.get(r)]
    )
    # The best a gathered submit+wait could reach: the limit's time plus asyncio's floor.
    limit, floor, waited = (
        by_rep(s, "jobs_per_s") for s in ("wait_limit", "wait_floor", "wait_jobqueue")
    )
    best = {r: 1 / (1 / limit[r] + 1 / floor[r]) for r in limit if floor.get(r)}
    ratios["wait_best_possible_vs_wait_limit"] = med([best[r] / limit[r] for r in best])
    ratios["wait_jobqueue_vs_wait_best_possible"] = med(
        [waited[r] / best[r] for r in waited if best.get(r)]
    )
    claims = {s: med(by_rep(s, "ms_per_claim")) for s in ALIASES["claim"]}
    seq_ratio = ratios.get("seq_jobqueue_vs_seq_sqlite3")
    wait_ratio = ratios.get("wait_jobqueue_vs_wait_limit")
    return {
        "bench": BENCH,
        "system": "summary",
        "jobs": args.jobs,
        "repeats": args.repeat,
        "quick": args.quick,
        "median_jobs_per_s": rates,
        "ratios": ratios,
        "ms_per_claim": claims,
        "targets_met": {
            "seq_vs_sqlite3_ge_0.8": None if seq_ratio is None else seq_ratio >= TARGET_SEQ,
            "seq_vs_sqlite3_ge_0.5": None if seq_ratio is None else seq_ratio >= FLOOR_SEQ,
            "wait_vs_limit_ge_0.9": None if wait_ratio is None else wait_ratio >= TARGET_WAIT,
            "claim_delayed_le_1ms": None
            if claims.get("claim_delayed") is None
            else claims["claim_delayed"] <= TARGET_CLAIM_MS,
        },
        "errors": error_list(results),
        "skipped_systems": sorted(
            {f"{r['system']}: {r['skipped']}" for r in results if "skipped" in r}
        ),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="jobs per system (10000)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions, interleaved (1)")
    parser.add_argument("--only", default="all", help="systems or groups: seq, wait, claim")
    parser.add_argument("--concurrency", type=int, default=512, help="jobqueue's, wait_* (512)")
    parser.add_argument("--threads", type=int, default=32, help="peers' producer threads (32)")
    parser.add_argument("--claims", type=int, default=50, help="timed claims per case (50)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per child (300)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeat-index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = 300 if args.quick else 10_000
    if args.quick:
        args.claims = min(args.claims, 10)
    if args.timeout is None:
        args.timeout = 60.0 if args.quick else 300.0
    args.systems = select_systems(parser, args.only, SYSTEMS, ALIASES)
    if args.child and len(args.systems) != 1:
        parser.error("--child runs exactly one system")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(Cfg(args), args.systems[0])
        return 0
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        for system in args.systems:
            log(f"repeat {rep + 1}/{args.repeat}: {system} ...")
            for line in _spawn(system, args, rep):
                emit(line)
                results.append(line)
    return emit_summary(summarize(results, args), started)


if __name__ == "__main__":
    sys.exit(main())
