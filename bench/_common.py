"""Shared helpers for the benchmark scripts in ``bench/``.

Conventions (see ``bench/README.md``): one JSON object per line on stdout per
figure, everything else on stderr; database files live in a temp dir.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import argparse

__all__ = [
    "COMPLETED_SQL",
    "EVENT_VARIANTS",
    "INSERT_SQL",
    "PRAGMAS",
    "REPO_ROOT",
    "RUNNING_SQL",
    "SCHEMA",
    "count_statuses",
    "emit",
    "emit_summary",
    "error_list",
    "figure",
    "log",
    "mem_snapshot",
    "percentile",
    "read_status_kib",
    "select_systems",
    "spawn_child",
    "summarize_ms",
    "temp_db",
]

#: The variants ``events_stream.py`` runs, in the order ``render_md.py`` lists them.
EVENT_VARIANTS: Final = (
    "raw_queue",
    "eventmanager",
    "raw_queue_items",
    "raw_queue_burst",
    "eventmanager_burst",
    "service_events",
    "langflow_burst",
)
#: The checkout the bench scripts live in (put on a child's ``PYTHONPATH``).
REPO_ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The jobs table the baselines write to: the fields SPEC.md §5 asks the
#: library to keep, plus the one index a queue needs to claim pending jobs.
#: The baselines maintain the same row and index the library does, so the
#: ratios compare like with like.
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY,
    session_id      TEXT,
    handler         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    result          TEXT,
    error_message   TEXT,
    attempt         INTEGER NOT NULL DEFAULT 0,
    max_retries     INTEGER NOT NULL DEFAULT 0,
    priority        INTEGER NOT NULL DEFAULT 0,
    run_at          REAL,
    timeout         REAL,
    idempotency_key TEXT,
    owner           TEXT,
    heartbeat       REAL,
    created_at      REAL NOT NULL,
    started_at      REAL,
    completed_at    REAL,
    updated_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (status, priority, run_at);
"""

#: WAL and synchronous=NORMAL, as the library defaults to (SPEC.md §5).
PRAGMAS: Final = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)

#: Row write 1 of 3: the job is created pending. Params: id, handler, payload, run_at,
#: created_at, updated_at.
INSERT_SQL: Final = (
    "INSERT INTO jobs (id, handler, payload, status, priority, run_at, created_at, updated_at) "
    "VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)"
)
#: Row write 2 of 3: pending -> running. Params: started_at, updated_at, id.
RUNNING_SQL: Final = (
    "UPDATE jobs SET status = 'running', attempt = attempt + 1, started_at = ?, updated_at = ? "
    "WHERE id = ? AND status = 'pending'"
)
#: Row write 3 of 3: running -> completed. Params: result, completed_at, updated_at, id.
COMPLETED_SQL: Final = (
    "UPDATE jobs SET status = 'completed', result = ?, completed_at = ?, updated_at = ? "
    "WHERE id = ? AND status = 'running'"
)


def emit(record: dict[str, Any]) -> None:
    """Print one figure as one JSON line on stdout."""
    sys.stdout.write(json.dumps(record, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


def figure(
    name: str,
    value: float | None,
    unit: str,
    target: float,
    *,
    baseline: str | None = None,
    baseline_value: float | None = None,
    higher_is_better: bool = False,
    ok: bool = True,
) -> dict[str, Any]:
    """The fields that make a JSON line a figure with a target (see ``bench/README.md``).

    ``ratio`` is ``value / baseline_value`` (``None`` without a baseline);
    ``meets_target`` compares ``value`` with ``target`` and is false when
    ``ok`` is false (the run did not do what it was measuring, e.g. a
    verification failed) and ``None`` when there is no value.
    """
    ratio = None
    if value is not None and baseline_value:
        ratio = round(value / baseline_value, 3)
    meets: bool | None = None
    if value is not None:
        meets = ok and (value >= target if higher_is_better else value <= target)
    return {
        "figure": name,
        "value": value,
        "unit": unit,
        "target": target,
        "target_is": "min" if higher_is_better else "max",
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio,
        "meets_target": meets,
    }


def log(message: str) -> None:
    """Progress and diagnostics go to stderr, never stdout."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def temp_db(name: str = "jobs.db") -> Iterator[str]:
    """Yield the path of a not-yet-existing database file in a fresh temp dir."""
    with tempfile.TemporaryDirectory(prefix="jobqueue-bench-") as directory:
        yield os.path.join(directory, name)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; ``nan`` if empty."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    frac = rank - low
    return sorted_values[low] * (1.0 - frac) + sorted_values[high] * frac


def summarize_ms(seconds: Sequence[float], prefix: str = "") -> dict[str, float]:
    """p50/p90/p99/max/mean of durations given in seconds, as milliseconds (3 decimals)."""
    values = sorted(seconds)
    if not values:
        return {f"{prefix}{k}_ms": math.nan for k in ("p50", "p90", "p99", "max", "mean")}
    return {
        f"{prefix}p50_ms": round(percentile(values, 50) * 1e3, 3),
        f"{prefix}p90_ms": round(percentile(values, 90) * 1e3, 3),
        f"{prefix}p99_ms": round(percentile(values, 99) * 1e3, 3),
        f"{prefix}max_ms": round(values[-1] * 1e3, 3),
        f"{prefix}mean_ms": round(sum(values) / len(values) * 1e3, 3),
    }


def read_status_kib(field: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``...) of ``/proc/self/status``, in KiB; -1 if absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def mem_snapshot() -> dict[str, int]:
    """Collect garbage, then read RSS, peak RSS and live Python allocations.

    No tracemalloc (it would inflate and slow what it measures) and no psutil:
    ``VmRSS``/``VmHWM`` from ``/proc/self/status`` and ``sys.getallocatedblocks()``.
    """
    gc.collect()
    return {
        "rss_kib": read_status_kib("VmRSS"),
        "hwm_kib": read_status_kib("VmHWM"),
        "blocks": sys.getallocatedblocks(),
    }


def count_statuses(path: str) -> dict[str, int] | None:
    """``{status: count}`` of the ``jobs`` table in ``path`` (read-only), or ``None``."""
    if not os.path.exists(path):
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        log(f"could not read statuses back from {path}: {exc}")
        return None
    return {str(status): int(count) for status, count in rows}


def select_systems(
    parser: argparse.ArgumentParser,
    only: str,
    systems: Sequence[str],
    aliases: Mapping[str, Sequence[str]],
) -> list[str]:
    """The systems ``--only`` names (comma-separated systems or alias groups), in ``systems`` order.

    An unknown name, or a selection of nothing, is a ``parser.error``.
    """
    selected: list[str] = []
    for name in (part.strip() for part in only.split(",")):
        if not name:
            continue
        expanded = aliases.get(name, (name,) if name in systems else None)
        if expanded is None:
            parser.error(f"unknown system {name!r}; choose from {', '.join((*systems, *aliases))}")
        selected.extend(s for s in expanded if s not in selected)
    if not selected:
        parser.error("--only selected nothing")
    return sorted(selected, key=systems.index)


def spawn_child(
    cmd: list[str], *, quick: bool, timeout: float
) -> subprocess.CompletedProcess[str] | str:
    """Run a bench script's child (``cmd``, plus ``--quick`` when ``quick``), stdout captured.

    The checkout is put first on the child's ``PYTHONPATH``. Returns the finished
    process, or the error message for a child that timed out.
    """
    if quick:
        cmd = [*cmd, "--quick"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    try:
        return subprocess.run(
            cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        return f"child timed out after {exc.timeout} s"


def error_list(results: Sequence[dict[str, Any]]) -> list[str]:
    """The distinct ``"system: error"`` of the failed lines, sorted (a summary's ``errors``)."""
    return sorted({f"{r['system']}: {r['error']}" for r in results if "error" in r})


def emit_summary(summary: dict[str, Any], started: float) -> int:
    """Emit a script's summary line with its ``wall_s`` since ``started``; the exit status (0)."""
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    emit(summary)
    return 0
