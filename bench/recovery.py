"""Crash-recovery time and the memory of pending jobs (issue 4), against same-run baselines.

Run (from the repository root)::

    PYTHONPATH=. python bench/recovery.py                  # full sizes, about 10 s
    PYTHONPATH=. python bench/recovery.py --quick          # a tenth of the sizes, a few seconds
    PYTHONPATH=. python bench/recovery.py --only recovery --repeat 3

Two figures, each with its baselines, every system in a fresh child process:

``recovery`` -- a database of 100,000 jobs, 10,000 of them ``running`` under
the identity of a process that has exited (target: swept and open in <= 1 s):

* ``open_clean``     open a file of the same size with no running jobs (baseline)
* ``sqlite3_sweep``  stdlib sqlite3 on a copy of the file: the sweep's three
                     UPDATE statements in one transaction (the floor)
* ``open_recover``   ``async with JobQueueService(path)`` until ready and swept;
                     then the rows are checked (``swept_ok``)

``rss`` -- RSS growth for 100,000 pending jobs (target: <= 30 MiB):

* ``rss_dicts``      a list of 100,000 small job dicts (baseline: the data alone)
* ``rss_tasks``      100,000 asyncio tasks sleeping until their run time (the naive design)
* ``rss_pending``    the library: ``submit_many(..., delay=3600)`` in chunks of 1000;
                     also counts ``asyncio.all_tasks()`` before and after

Every figure is one JSON line on stdout; progress goes to stderr. The last
line is ``"system": "summary"``. Ratios measured in one run are the figures to
trust on a noisy shared machine; absolute numbers are informative.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Final

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:  # imported as ``bench.recovery`` rather than run as a script
    sys.path.insert(0, _BENCH_DIR)

from _common import (  # noqa: E402
    PRAGMAS,
    count_statuses,
    emit,
    emit_summary,
    error_list,
    figure,
    log,
    mem_snapshot,
    select_systems,
    spawn_child,
)

BENCH: Final = "recovery"
#: Issue 4: a 100,000-job file with 10,000 dead-owner running jobs is recovered in <= 1 s.
TARGET_RECOVERY_S: Final = 1.0
#: Issue 4: 100,000 pending jobs grow RSS by <= 30 MiB.
TARGET_RSS_MIB: Final = 30.0
#: The handler name of the durable jobs in the built file (registered by the open child).
HANDLER: Final = "work"

RECOVERY_SYSTEMS: Final = ("open_clean", "sqlite3_sweep", "open_recover")
RSS_SYSTEMS: Final = ("rss_dicts", "rss_tasks", "rss_pending")
SYSTEMS: Final = (*RECOVERY_SYSTEMS, *RSS_SYSTEMS)
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "recovery": RECOVERY_SYSTEMS,
    "rss": RSS_SYSTEMS,
    "all": SYSTEMS,
}


@dataclass(frozen=True)
class Sizes:
    """How many rows of each kind the built file holds, and how many jobs the RSS run submits."""

    total: int
    running: int
    rss_jobs: int

    @property
    def mix(self) -> dict[str, int]:
        """Rows per category; categories are id prefixes (``"<category>-<n>"``).

        The running rows split three ways, one per outcome of the sweep:
        ``run_retry`` (handler set, attempts left: back to ``pending``),
        ``run_spent`` (handler set, ``attempt >= max_retries``: ``failed``/``crashed``)
        and ``run_bare`` (handler NULL, a bare coroutine: ``failed``/``lost_on_restart``).
        """
        r, n = self.running, self.total
        spent = r // 10
        bare = r // 10
        parts = {
            "run_retry": r - spent - bare,
            "run_spent": spent,
            "run_bare": bare,
            "failed": n * 8 // 100,
            "pending": n * 10 // 100,
            "delayed": n * 8 // 100,
            "paused": n * 4 // 100,
        }
        parts["completed"] = n - sum(parts.values())
        return parts


def sizes(quick: bool) -> Sizes:
    return Sizes(10_000, 1_000, 10_000) if quick else Sizes(100_000, 10_000, 100_000)


# --------------------------------------------------------------------------- building the file

_ROW_SQL: Final = (
    "INSERT INTO jobs (id, handler, description, payload, status, result, error_message, "
    "error_type, reason, created_at, updated_at, started_at, completed_at, attempt, "
    "max_retries, priority, run_at, owner, heartbeat) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _rows(category: str, count: int, now: float, dead: str, clean: bool) -> list[tuple[Any, ...]]:
    """Rows of one category. ``clean``: the running rows are written ``completed`` instead."""
    out: list[tuple[Any, ...]] = []
    for i in range(count):
        job_id = f"{category}-{i:06d}-{uuid.uuid4().hex[:8]}"
        payload: str | None = json.dumps({"i": i, "kind": category})
        created = now - 3600 + i * 1e-3
        handler: str | None = HANDLER
        desc = None
        status, result, err, etype, reason = "pending", None, None, None, None
        started = completed = owner = heartbeat = None
        attempt, retries, run_at = 0, 0, created
        if category.startswith("run_"):
            status, started, owner, heartbeat = "running", now - 5.0, dead, now - 1.0
            if category == "run_retry":
                attempt, retries = 0, 3
            elif category == "run_spent":  # half never retried, half out of retries
                attempt, retries = (0, 0) if i % 2 == 0 else (2, 2)
            else:
                handler, desc, payload = None, "bare coroutine", None
            if clean:
                status, owner, heartbeat = "completed", None, None
                result, completed = json.dumps({"ok": True}), now - 4.0
        elif category == "completed":
            status, result = "completed", json.dumps({"ok": True, "i": i})
            started, completed = created + 0.5, created + 1.0
        elif category == "failed":
            status, err, etype = "failed", "ValueError: boom", "ValueError"
            started, completed, reason = created + 0.5, created + 1.0, "error"
        elif category == "delayed":
            run_at = now + 3600.0
        elif category == "paused":
            status, attempt, retries = "paused", 1, 3
        out.append(
            (
                job_id,
                handler,
                desc,
                payload,
                status,
                result,
                err,
                etype,
                reason,
                created,
                created,
                started,
                completed,
                attempt,
                retries,
                0,
                run_at,
                owner,
                heartbeat,
            )
        )
    return out


def build_file(path: str, sz: Sizes, dead: str, dead_pid: int, clean: bool) -> float:
    """Fill ``path`` (already migrated by the library) with the job mix; return seconds taken."""
    t0 = time.perf_counter()
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in PRAGMAS:
            conn.execute(pragma)
        conn.execute("BEGIN")
        for category, count in sz.mix.items():
            conn.executemany(_ROW_SQL, _rows(category, count, now, dead, clean))
        if not clean:
            # What the killed process would have left: its row in the owners table.
            has_owners = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'owners'"
            ).fetchone()
            if has_owners:
                conn.execute(
                    "INSERT OR REPLACE INTO owners (owner, pid, started_at, heartbeat) "
                    "VALUES (?, ?, ?, ?)",
                    (dead, dead_pid, now - 60.0, now - 1.0),
                )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - t0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- children


def child_setup(path: str) -> dict[str, Any]:
    """Let the library create the schema, and report this (soon dead) process's identity."""
    from jobqueue import JobQueueService
    from jobqueue.runtime.owner import owner_identity

    async def run() -> None:
        async with JobQueueService(path):
            pass

    asyncio.run(run())
    return {"owner": owner_identity(), "pid": os.getpid()}


_CATEGORY_SQL: Final = (
    "SELECT substr(id, 1, instr(id, '-') - 1), status, coalesce(reason, ''), "
    "CASE WHEN owner IS NULL THEN 'none' WHEN owner = ? THEN 'dead' "
    "WHEN owner = ? THEN 'self' ELSE 'other' END, attempt, count(*) "
    "FROM jobs GROUP BY 1, 2, 3, 4, 5"
)


def verify(path: str, dead: str, me: str, mix: dict[str, int]) -> dict[str, Any]:
    """Check, row category by row category, that the sweep did what SPEC.md §6 says."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(_CATEGORY_SQL, (dead, me)).fetchall()
    finally:
        conn.close()
    got: dict[str, dict[str, int]] = {}
    for cat, status, reason, owner, attempt, n in rows:
        key = f"{status}/{reason}" if reason else status
        if status == "running":
            key += f"@{owner}"
        if cat == "run_retry" and status in ("pending", "running"):
            key += f"#attempt={attempt}"
        got.setdefault(cat, {})
        got[cat][key] = got[cat].get(key, 0) + n

    def share(cat: str, *keys: str) -> int:
        return sum(got.get(cat, {}).get(k, 0) for k in keys)

    # Back to pending with the attempt counted; the sweep may note a reason on the row,
    # and this process may already have claimed one (concurrency 1).
    requeued = sum(
        n
        for k, n in got.get("run_retry", {}).items()
        if k.endswith("#attempt=1") and (k.startswith("pending") or "@self" in k)
    )
    still = sum(n for c in got.values() for k, n in c.items() if "@dead" in k)
    swept = {
        "still_running_dead_owner": still,
        "to_pending": requeued,
        "crashed": share("run_spent", "failed/crashed"),
        "lost_on_restart": share("run_bare", "failed/lost_on_restart"),
    }
    expected = {
        "still_running_dead_owner": 0,
        "to_pending": mix["run_retry"],
        "crashed": mix["run_spent"],
        "lost_on_restart": mix["run_bare"],
    }
    # The rest must be untouched (a ready pending job may have been claimed by this process).
    others_ok = (
        share("pending", "pending", "running@self") == mix["pending"]
        and share("delayed", "pending") == mix["delayed"]
        and share("paused", "paused") == mix["paused"]
        and share("completed", "completed") == mix["completed"]
        and share("failed", "failed/error") == mix["failed"]
    )
    return {
        "swept_ok": swept == expected and others_ok,
        "swept": swept,
        "expected": expected,
        "others_unchanged": others_ok,
        "by_category": got,
    }


def _running_under(path: str, owner: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT count(*) FROM jobs WHERE status = 'running' AND owner = ?", (owner,)
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


def child_open(
    path: str, dead: str, mix: dict[str, int], spawned: float, wait: float
) -> dict[str, Any]:
    """Open the file in this fresh process; time until ready and until the dead owner is swept."""
    t_import = time.perf_counter()
    from jobqueue import JobQueueService

    import_s = time.perf_counter() - t_import
    fields: dict[str, Any] = {"import_s": round(import_s, 4)}

    async def run() -> None:
        release = asyncio.Event()
        svc = JobQueueService(path, concurrency=1, drain_timeout=0.0)

        @svc.handler(HANDLER)
        async def work(ctx: Any, payload: Any) -> None:
            await release.wait()  # hold the one slot: the rows stay countable

        t0 = time.perf_counter()
        async with svc:
            ready = time.perf_counter()
            fields["ready_s"] = round(ready - t0, 4)
            fields["spawn_to_ready_s"] = round(time.time() - spawned, 4)
            if dead:
                # If the sweep finishes after the service reports ready, wait for it.
                left = _running_under(path, dead)
                deadline = ready + wait
                while left and time.perf_counter() < deadline:
                    await asyncio.sleep(0.005)
                    left = _running_under(path, dead)
                swept_at = time.perf_counter()
                fields["swept_after_ready_s"] = round(swept_at - ready, 4) if not left else None
                fields["recovery_s"] = round(swept_at - t0, 4) if not left else None
                fields.update(verify(path, dead, svc.owner, mix))
            fields["stats"] = {
                k: v for k, v in svc.stats().items() if k in ("pending", "running", "paused")
            }
            release.set()
        fields["close_s"] = round(time.perf_counter() - ready, 4)

    asyncio.run(run())
    return fields


_SWEEP_SQL: Final = (
    # back to pending, the attempt counted
    "UPDATE jobs SET status = 'pending', attempt = attempt + 1, owner = NULL, heartbeat = NULL, "
    "run_at = ?1, updated_at = ?1 WHERE status = 'running' AND owner = ?2 "
    "AND handler IS NOT NULL AND attempt < max_retries",
    # out of retries
    "UPDATE jobs SET status = 'failed', reason = 'crashed', error_message = 'owner died', "
    "attempt = attempt + 1, owner = NULL, heartbeat = NULL, completed_at = ?1, updated_at = ?1 "
    "WHERE status = 'running' AND owner = ?2 AND handler IS NOT NULL",
    # bare coroutines cannot be re-run
    "UPDATE jobs SET status = 'failed', reason = 'lost_on_restart', error_message = 'owner died', "
    "owner = NULL, heartbeat = NULL, completed_at = ?1, updated_at = ?1 "
    "WHERE status = 'running' AND owner = ?2 AND handler IS NULL",
)


def child_sqlite3_sweep(path: str, dead: str) -> dict[str, Any]:
    """The floor: the sweep's three UPDATEs by hand, one transaction, stdlib sqlite3."""
    t0 = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in PRAGMAS:
            conn.execute(pragma)
        t1 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        now = time.time()
        changed = [conn.execute(sql, (now, dead)).rowcount for sql in _SWEEP_SQL]
        conn.execute("COMMIT")
        t2 = time.perf_counter()
    finally:
        conn.close()
    return {
        "connect_s": round(t1 - t0, 4),
        "update_s": round(t2 - t1, 4),
        "rows_changed": dict(
            zip(("to_pending", "crashed", "lost_on_restart"), changed, strict=True)
        ),
    }


def _mem_fields(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, Any]:
    rss = after["rss_kib"] - before["rss_kib"]
    return {
        "rss_before_mib": round(before["rss_kib"] / 1024, 2),
        "rss_growth_mib": round(rss / 1024, 2),
        "rss_growth_kib_per_job": round(rss / n, 3),
        "peak_rss_growth_mib": round((after["hwm_kib"] - before["hwm_kib"]) / 1024, 2),
        "blocks_growth": after["blocks"] - before["blocks"],
    }


def child_rss_dicts(n: int) -> dict[str, Any]:
    """Baseline: what 100,000 small job records cost as plain Python objects."""
    before = mem_snapshot()
    now = time.time()
    jobs = [
        {
            "id": uuid.uuid4().hex,
            "handler": "noop",
            "payload": {"i": i},
            "status": "pending",
            "run_at": now + 3600.0,
        }
        for i in range(n)
    ]
    after = mem_snapshot()
    fields = {"jobs": len(jobs), **_mem_fields(before, after, n)}
    del jobs
    return fields


def child_rss_tasks(n: int) -> dict[str, Any]:
    """Baseline, the naive design: one asyncio task per job, sleeping until its run time."""

    async def job(payload: dict[str, int], delay: float) -> None:
        await asyncio.sleep(delay)

    async def run() -> dict[str, Any]:
        tasks_before = len(asyncio.all_tasks())
        before = mem_snapshot()
        tasks = [asyncio.create_task(job({"i": i}, 3600.0)) for i in range(n)]
        await asyncio.sleep(0)  # every task reaches its sleep
        await asyncio.sleep(0)
        after = mem_snapshot()
        fields = {
            "jobs": n,
            "tasks_before": tasks_before,
            "tasks_after": len(asyncio.all_tasks()),
            **_mem_fields(before, after, n),
        }
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return fields

    return asyncio.run(run())


def child_rss_pending(path: str, n: int, chunk: int = 1000) -> dict[str, Any]:
    """The library: n jobs submitted with delay=3600 stay rows in the file, not tasks."""
    from jobqueue import JobQueueService

    async def run() -> dict[str, Any]:
        async with JobQueueService(path) as svc:

            @svc.handler("noop")
            async def noop(ctx: Any, payload: Any) -> None:
                return None

            # Warm-up: code paths, statement cache, the delayed-submit path too.
            await svc.submit_many("noop", [{"i": i} for i in range(200)])
            await svc.run_until_idle()
            await svc.submit_many("noop", [{"w": i} for i in range(200)], delay=3600)
            tasks_before = len(asyncio.all_tasks())
            before = mem_snapshot()
            t0 = time.perf_counter()
            for lo in range(0, n, chunk):
                await svc.submit_many(
                    "noop", [{"i": i} for i in range(lo, min(n, lo + chunk))], delay=3600
                )
            submit_s = time.perf_counter() - t0
            await asyncio.sleep(0.05)  # let the scheduler look at what arrived
            after = mem_snapshot()
            tasks_after = len(asyncio.all_tasks())
            stats = svc.stats()
            fields = {
                "jobs": n,
                "submit_s": round(submit_s, 4),
                "tasks_before": tasks_before,
                "tasks_after": tasks_after,
                "stats": {k: stats[k] for k in ("pending", "running", "registry")},
                **_mem_fields(before, after, n),
            }
            t1 = time.perf_counter()
        fields["close_s"] = round(time.perf_counter() - t1, 4)
        return fields

    return asyncio.run(run())


def run_child(args: argparse.Namespace) -> None:
    system = args.child
    base = {"bench": BENCH, "system": system, "repeat": args.repeat_index}
    sz = sizes(args.quick)
    try:
        if system == "setup":
            fields = child_setup(args.db)
        elif system in ("open_clean", "open_recover"):
            dead = args.dead if system == "open_recover" else ""
            fields = child_open(args.db, dead, sz.mix, args.spawned, args.sweep_wait)
        elif system == "sqlite3_sweep":
            fields = child_sqlite3_sweep(args.db, args.dead)
        elif system == "rss_dicts":
            fields = child_rss_dicts(sz.rss_jobs)
        elif system == "rss_tasks":
            fields = child_rss_tasks(sz.rss_jobs)
        elif system == "rss_pending":
            fields = child_rss_pending(args.db, sz.rss_jobs)
            fields["statuses"] = count_statuses(args.db)
        else:  # pragma: no cover - argparse validation prevents this
            raise SystemExit(f"unknown system {system!r}")
    except Exception as exc:
        traceback.print_exc()
        emit({**base, "error": f"{type(exc).__name__}: {exc}"[:500]})
        return
    emit({**base, **fields})


# --------------------------------------------------------------------------- parent


def spawn(system: str, args: argparse.Namespace, rep: int, **extra: Any) -> dict[str, Any]:
    """Run one system in a fresh interpreter; return its JSON line (or an error line)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", system]
    cmd += ["--repeat-index", str(rep), "--spawned", repr(time.time())]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    base = {"bench": BENCH, "system": system, "repeat": rep}
    proc = spawn_child(cmd, quick=args.quick, timeout=args.timeout)
    if isinstance(proc, str):
        return {**base, "error": proc}
    for raw in reversed(proc.stdout.splitlines()):
        try:
            line: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError:
            continue
        return line
    return {**base, "error": f"child printed no result (exit status {proc.returncode})"}


def run_recovery(args: argparse.Namespace, rep: int, systems: list[str]) -> list[dict[str, Any]]:
    """Build the two files, then open each in a fresh process (and sweep a copy by hand)."""
    sz = sizes(args.quick)
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="jobqueue-bench-") as tmp:
        schema = os.path.join(tmp, "schema.db")
        setup = spawn("setup", args, rep, db=schema)
        if "error" in setup:
            return [{**setup, "system": s} for s in systems]
        dead, dead_pid = setup["owner"], int(setup["pid"])
        if _pid_alive(dead_pid):  # pragma: no cover - reaped by subprocess.run
            log(f"warning: pid {dead_pid} of the dead owner is in use again")
        files = {name: os.path.join(tmp, f"{name}.db") for name in ("clean", "recover", "raw")}
        for name in ("clean", "recover"):
            shutil.copyfile(schema, files[name])
            took = build_file(files[name], sz, dead, dead_pid, clean=name == "clean")
            log(f"built {name}.db: {sz.total:,} jobs in {took:.2f} s")
        shutil.copyfile(files["recover"], files["raw"])
        db_mib = round(os.path.getsize(files["recover"]) / 2**20, 1)
        order = systems if rep % 2 == 0 else systems[::-1]
        for system in order:
            db = {"open_clean": "clean", "open_recover": "recover", "sqlite3_sweep": "raw"}[system]
            log(f"repeat {rep}: {system} ...")
            line = spawn(system, args, rep, db=files[db], dead=dead)
            line.update(jobs=sz.total, running=sz.running, db_mib=db_mib, dead_owner=dead)
            out.append(line)
    clean = next((r for r in out if r["system"] == "open_clean" and "error" not in r), None)
    raw = next((r for r in out if r["system"] == "sqlite3_sweep" and "error" not in r), None)
    for line in out:
        if line["system"] != "open_recover" or "error" in line:
            continue
        base_s = clean["ready_s"] if clean else None
        swept_ok = bool(line.get("swept_ok"))
        value = line.get("recovery_s") if swept_ok else line.get("ready_s")
        line.update(
            figure(
                "recovery_s",
                value,
                "s",
                TARGET_RECOVERY_S,
                baseline="open_clean",
                baseline_value=base_s,
                ok=swept_ok,
            )
        )
        line["sweep_cost_s"] = round(value - base_s, 4) if value and base_s else None
        line["sqlite3_sweep_update_s"] = raw["update_s"] if raw else None
        if not swept_ok:
            line["note"] = (
                "dead owner's running jobs were not (all) swept: value is the open time only"
            )
    return out


def run_rss(args: argparse.Namespace, rep: int, systems: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    order = systems if rep % 2 == 0 else systems[::-1]
    with tempfile.TemporaryDirectory(prefix="jobqueue-bench-") as tmp:
        for system in order:
            log(f"repeat {rep}: {system} ...")
            out.append(spawn(system, args, rep, db=os.path.join(tmp, f"{system}.db")))
    tasks = next((r for r in out if r["system"] == "rss_tasks" and "error" not in r), None)
    dicts = next((r for r in out if r["system"] == "rss_dicts" and "error" not in r), None)
    for line in out:
        if line["system"] != "rss_pending" or "error" in line:
            continue
        # Pending jobs must not be tasks: allow a handful of service tasks, not one per job.
        few_tasks = line["tasks_after"] - line["tasks_before"] <= 10
        statuses = line.get("statuses") or {}
        all_pending = statuses.get("pending", 0) >= line["jobs"]
        line["tasks_ok"] = few_tasks
        line.update(
            figure(
                "rss_growth_mib",
                line["rss_growth_mib"],
                "MiB",
                TARGET_RSS_MIB,
                baseline="rss_tasks",
                baseline_value=tasks["rss_growth_mib"] if tasks else None,
                ok=few_tasks and all_pending,
            )
        )
        line["dicts_rss_growth_mib"] = dicts["rss_growth_mib"] if dicts else None
        line["ratio_vs_dicts"] = (
            round(line["rss_growth_mib"] / dicts["rss_growth_mib"], 3)
            if dicts and dicts["rss_growth_mib"]
            else None
        )
    return out


def _median(values: list[Any]) -> float | None:
    clean = [v for v in values if isinstance(v, int | float)]
    return round(statistics.median(clean), 4) if clean else None


def summarize(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    ok = [r for r in results if "error" not in r]

    def med(system: str, field: str) -> float | None:
        return _median([r.get(field) for r in ok if r["system"] == system])

    recover = [r for r in ok if r["system"] == "open_recover"]
    pending = [r for r in ok if r["system"] == "rss_pending"]
    rec_s, rss = med("open_recover", "value"), med("rss_pending", "rss_growth_mib")
    swept_ok = all(r.get("swept_ok") for r in recover) if recover else None
    tasks_ok = all(r.get("tasks_ok") for r in pending) if pending else None
    sz = sizes(args.quick)
    return {
        "bench": BENCH,
        "system": "summary",
        "repeats": args.repeat,
        "quick": args.quick,
        "jobs": sz.total,
        "running": sz.running,
        "rss_jobs": sz.rss_jobs,
        "recovery_s": {
            "open_recover": rec_s,
            "open_clean": med("open_clean", "ready_s"),
            "sqlite3_sweep_update": med("sqlite3_sweep", "update_s"),
            "sweep_cost": med("open_recover", "sweep_cost_s"),
            "ratio_vs_clean": med("open_recover", "ratio"),
            "spawn_to_ready": med("open_recover", "spawn_to_ready_s"),
        },
        "swept_ok": swept_ok,
        "rss_growth_mib": {
            "rss_pending": rss,
            "rss_tasks": med("rss_tasks", "rss_growth_mib"),
            "rss_dicts": med("rss_dicts", "rss_growth_mib"),
            "ratio_vs_tasks": med("rss_pending", "ratio"),
        },
        "tasks_after_submit": med("rss_pending", "tasks_after"),
        "tasks_ok": tasks_ok,
        "targets_met": {
            "recovery_le_1s": None if rec_s is None else bool(swept_ok) and rec_s <= 1.0,
            "rss_le_30mib": None if rss is None else bool(tasks_ok) and rss <= TARGET_RSS_MIB,
        },
        "errors": error_list(results),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeat", type=int, default=1, help="repetitions (1)")
    parser.add_argument(
        "--only", default="all", help="systems or groups: " + ", ".join((*SYSTEMS, *ALIASES))
    )
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per child (120)")
    parser.add_argument(
        "--sweep-wait",
        type=float,
        default=2.0,
        help="seconds to wait after ready for a sweep still in progress (2)",
    )
    parser.add_argument("--child", choices=("setup", *SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--repeat-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--spawned", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--db", default="", help=argparse.SUPPRESS)
    parser.add_argument("--dead", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be positive")
    args.systems = select_systems(parser, args.only, SYSTEMS, ALIASES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    rec = [s for s in args.systems if s in RECOVERY_SYSTEMS]
    mem = [s for s in args.systems if s in RSS_SYSTEMS]
    for rep in range(args.repeat):
        lines = (run_recovery(args, rep, rec) if rec else []) + (
            run_rss(args, rep, mem) if mem else []
        )
        for line in lines:
            emit(line)
        results += lines
    return emit_summary(summarize(results, args), started)


if __name__ == "__main__":
    sys.exit(main())
