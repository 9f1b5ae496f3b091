"""Contention: four processes submit, read and claim on one file at once for 30 seconds.

No caller may see 'database is locked' (SQLite's busy handler and jobqueue's
BEGIN IMMEDIATE writer must absorb every conflict), nothing may be logged as
failed, and no job may run twice. See also tests/integration/test_multiprocess.py (three
workers claiming 2,000 pre-submitted jobs exactly once).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from _fault_util import ROOT, TESTS, integrity, report

PROCESSES = 4
SECONDS = float(os.environ.get("JOBQUEUE_CONTENTION_SECONDS", "30"))


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[str]]]:
    """Started children; any still alive at teardown are killed."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_four_processes_for_30s_no_locked_error_no_double_claim(
    tmp_path: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    db = tmp_path / "shared.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start_at = time.time() + 3.0  # after every interpreter has imported jobqueue
    t0 = time.monotonic()
    for i in range(PROCESSES):
        spawn.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(TESTS / "_fault_contend.py"),
                    str(db),
                    str(i),
                    str(start_at),
                    str(SECONDS),
                    str(tmp_path / f"runs{i}.txt"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    outs = []
    for p in spawn:
        out, err = p.communicate(timeout=200)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    elapsed = time.monotonic() - t0

    errors = [e for o in outs for e in o["errors"]]
    logs = [line for o in outs for line in o["logs"]]
    locked = [x for x in errors + logs if "locked" in x.lower()]
    runs = Counter(
        line.strip()
        for i in range(PROCESSES)
        for line in (tmp_path / f"runs{i}.txt").read_text().splitlines()
    )
    conn = sqlite3.connect(str(db))
    try:
        stored = dict(conn.execute("SELECT id, status FROM jobs").fetchall())
    finally:
        conn.close()
    ops = Counter()
    for o in outs:
        ops.update(o["ops"])
    report(
        "contention",
        processes=PROCESSES,
        seconds=SECONDS,
        wall_s=round(elapsed, 1),
        jobs=len(stored),
        runs=sum(runs.values()),
        api_calls=sum(ops.values()),
        ops=dict(ops),
        per_process_ran=[o["ran"] for o in outs],
        locked_errors=len(locked),
        other_errors=len(errors) + len(logs) - len(locked),
    )
    assert not locked, locked[:5]
    assert not errors, errors[:5]
    assert not logs, logs[:5]
    assert sum(o["submitted"] for o in outs) == len(stored) > 1000
    assert sum(1 for o in outs if o["ran"] > 0) >= 2, "only one process ever claimed"
    twice = {job_id: n for job_id, n in runs.items() if n > 1}
    assert not twice, list(twice.items())[:5]
    assert set(runs) == set(stored)
    assert set(stored.values()) == {"completed"}
    assert integrity(db) == ["ok"]
