"""The command line as a person uses it: what it says, against real files and processes.

Every command here runs the installed entry point (``jobqueue`` next to the
interpreter, else ``python -m jobqueue``) in a subprocess, on a database file
written by a real service.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = shutil.which("jobqueue", path=str(Path(sys.executable).parent))
CLI = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "jobqueue"]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


def cli(*argv: str | Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed command line; stdin is closed, output captured as text."""
    return subprocess.run(
        [*CLI, *(str(a) for a in argv)],
        cwd=ROOT,
        env={**ENV, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rows(db: Path) -> dict[str, tuple[str, int]]:
    """``{id: (status, attempt)}``, read with the standard library."""
    with closing(sqlite3.connect(db)) as conn:
        return {i: (s, a) for i, s, a in conn.execute("SELECT id, status, attempt FROM jobs")}


async def _fill(path: Path) -> None:
    async with JobQueueService(path, retry_backoff=0.01) as svc:

        @svc.handler("echo")
        async def echo(ctx: JobContext, payload: Any) -> Any:
            if payload.get("fail"):
                raise ValueError("bad input")
            return payload

        await svc.wait((await svc.submit("echo", {"x": 1}, job_id="done-1")).id)
        await svc.submit("echo", {"fail": True}, job_id="failed-1", max_retries=1)
        await svc.run_until_idle()
        await svc.submit("echo", {"x": 2}, job_id="later-1", delay=3600)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A file with one completed job, one failed after 2 attempts, one delayed pending."""
    path = tmp_path / "jobs.db"
    asyncio.run(_fill(path))
    return path


# -- 9: a refused control says what can be done instead -----------------------------------


def test_pausing_a_pending_job_lists_only_what_a_user_can_ask_for(db: Path) -> None:
    proc = cli("pause", "later-1", "--db", db)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert err.count("\n") == 1, err
    assert "cannot go from 'pending' to 'paused'" in err
    assert "only a running job can be paused" in err
    assert "a pending job can be cancelled or stopped instead (cancel, stop)" in err
    assert "running" not in err.split("instead", 1)[1]  # no one can request `running`
    assert rows(db)["later-1"] == ("pending", 0)
    proc = cli("cancel", "done-1", "--db", db)
    assert proc.returncode == 1
    assert "'completed' is a final status; submit a new job to run it again" in proc.stderr


# -- 8: one vocabulary for the counts: stopped is not cancelled -------------------------------


def test_stopped_is_not_counted_as_cancelled(tmp_path: Path) -> None:
    import json
    import signal
    import time

    from _worker_procs import submit, wait_status, workers

    db = tmp_path / "jobs.db"
    with workers(db) as start:
        w = start("--report-interval", "0.2")
        ids = submit(db, *[("steps", {"steps": 400})] * 4)
        for job in ids[:3]:
            assert cli("cancel", job, "--db", db).returncode == 0
        assert cli("stop", ids[3], "--db", db).returncode == 0
        wait_status(db, ids[3], "stopped")
        mark = len(w.text())
        deadline = time.monotonic() + 20
        while "status report" not in w.text()[mark:]:
            assert time.monotonic() < deadline, w.text()
            time.sleep(0.05)
        line = next(x for x in w.text()[mark:].splitlines() if "status report" in x)
        report = json.loads(line.split("status report: ", 1)[1])
        assert (report["cancelled"], report["stopped"]) == (3, 1), line
        assert report["completed"] == report["done"] == 1  # the submit helper's own job
        stats = cli("stats", "--json", "--db", db)
        data = json.loads(stats.stdout)
        assert (data["cancelled"], data["stopped"], data["completed"]) == (3, 1, 1)
        text = cli("stats", "--db", db).stdout
        assert "cancelled: 3" in text
        assert "stopped:   1" in text
        assert "completed: 1" in text
        assert "done" not in text
        w.send(signal.SIGTERM)
        assert w.wait(20) == 0, w.text()
