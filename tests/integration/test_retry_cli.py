"""``jobqueue retry`` and the bulk ``retry``/``cancel`` through the installed command line.

Every command runs the installed entry point in a subprocess against a file
written by a real service; a worker service in this process picks up what the
command line retried.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
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


def cli(*argv: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed command line; stdin is closed, output captured as text."""
    return subprocess.run(
        [*CLI, *(str(a) for a in argv)],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def acli(*argv: str | Path) -> tuple[int, str, str]:
    """:func:`cli` without blocking the loop (a service here is running jobs meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *(str(a) for a in argv),
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def rows(db: Path) -> dict[str, tuple[str, int]]:
    """``{id: (status, attempt)}``, read with the standard library."""
    with closing(sqlite3.connect(db)) as conn:
        return {i: (s, a) for i, s, a in conn.execute("SELECT id, status, attempt FROM jobs")}


async def _fill(path: Path) -> None:
    async with JobQueueService(path) as svc:

        async def fail(ctx: JobContext, payload: Any) -> None:
            raise ValueError("bad input \x1b[2J")

        svc.register("mail", fail)
        svc.register("sms", fail)
        await svc.submit("mail", job_id="mail-s1-a", session_id="s1")
        await svc.submit("mail", job_id="mail-s2-a", session_id="s2")
        await svc.submit("sms", job_id="sms-s1-a", session_id="s1")
        await svc.run_until_idle()
        await svc.submit("mail", job_id="mail-later", delay=3600, session_id="s1")
        await svc.submit("sms", job_id="sms-later", delay=3600, session_id="s2")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Three failed jobs (two handlers, two sessions) and two delayed pending ones."""
    path = tmp_path / "jobs.db"
    asyncio.run(_fill(path))
    return path


# -- one job ---------------------------------------------------------------------------------


async def test_a_job_retried_from_the_command_line_runs_in_a_worker(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    runs: list[int] = []
    async with JobQueueService(db, poll_interval=0.05) as svc:

        @svc.handler("flaky")
        async def flaky(ctx: JobContext, payload: Any) -> int:
            runs.append(ctx.attempt)
            if len(runs) == 1:
                raise ValueError("first run")
            return ctx.attempt

        job = await svc.submit("flaky", job_id="report-2024-0042")
        with pytest.raises(Exception, match="first run"):
            await svc.wait(job.id)  # its failure is kept in this process's memory
        code, out, err = await acli("retry", "0042", "--db", db)  # a unique part of the id
        assert code == 0, err
        assert out.startswith("report-2024-0042 pending (attempt 2 of 2")
        assert err == ""
        # This worker claims it within its poll interval (and then forgets the failure
        # it kept in memory): wait() gets the new run.
        for _ in range(1000):
            if (await svc.get(job.id)).status != "pending":
                break
            await asyncio.sleep(0.01)
        assert await asyncio.wait_for(svc.wait(job.id), 10) == 1
        assert runs == [0, 1]
        (record,) = await svc.get_retries(job.id)
        assert (record.status, record.error) == ("failed", "ValueError: first run")


def test_jobs_that_cannot_be_retried_exit_1_and_stay(db: Path) -> None:
    before = rows(db)
    proc = cli("retry", "mail-later", "--db", db)
    assert proc.returncode == 1
    assert "is pending: only a failed, cancelled or stopped job can be retried" in proc.stderr
    assert "cancel it first" in proc.stderr
    proc = cli("retry", "nope-nope", "--db", db)
    assert proc.returncode == 1
    assert "no job with id 'nope-nope'" in proc.stderr
    # several ids: each one is tried, the failures reported, exit 1
    proc = cli("retry", "mail-s1-a", "mail-later", "--db", db)
    assert proc.returncode == 1
    assert proc.stdout.startswith("mail-s1-a pending")
    assert "mail-later" in proc.stderr
    after = rows(db)
    assert after.pop("mail-s1-a") == ("pending", 1)
    before.pop("mail-s1-a")
    assert after == before


def test_usage_errors_exit_2(db: Path) -> None:
    before = rows(db)
    cases = {
        ("retry",): "retry needs JOB (a job id) or a filter",
        ("cancel",): "cancel needs JOB (a job id) or a filter",
        ("retry", "mail-s1-a", "--status", "failed"): "give job ids or --status",
        ("retry", "--status", "running", "--yes"): "retry acts on jobs that are failed",
        ("cancel", "--status", "failed", "--yes"): "cancel acts on jobs that are pending",
        ("retry", "--status", "waiting"): "unknown status waiting",
    }
    for argv, said in cases.items():
        proc = cli(*argv, "--db", db)
        assert proc.returncode == 2, argv
        assert said in proc.stderr, (argv, proc.stderr)
        assert proc.stdout == ""
    assert rows(db) == before


# -- bulk ------------------------------------------------------------------------------------


def test_bulk_retry_needs_yes_without_a_terminal(db: Path) -> None:
    before = rows(db)
    proc = cli("retry", "--status", "failed", "--db", db)
    assert proc.returncode == 2
    assert "retry would change 3 job(s) that are failed; add --yes" in proc.stderr
    assert rows(db) == before


def test_bulk_retry_with_filters(db: Path) -> None:
    proc = cli("retry", "--status", "failed", "--handler", "mail", "--session", "s2", "--yes")
    assert proc.returncode == 2  # no --db and no JOBQUEUE_DB
    proc = cli("retry", "--handler", "mail", "--session", "s2", "--yes", "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["mail-s2-a", "pending"]
    assert "retried 1 job(s)" in proc.stderr
    proc = cli("retry", "--status", "failed,cancelled", "--yes", "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["mail-s1-a pending", "sms-s1-a pending"]
    proc = cli("retry", "--status", "failed", "--yes", "--db", db)
    assert proc.returncode == 0
    assert proc.stdout == ""
    assert "no jobs that are failed in" in proc.stderr
    assert {i: s for i, (s, _) in rows(db).items()} == dict.fromkeys(rows(db), "pending")
    assert rows(db)["mail-s1-a"] == ("pending", 1)  # attempt 2 as people count


def test_bulk_cancel(db: Path) -> None:
    proc = cli("cancel", "--status", "pending", "--session", "s2", "--yes", "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["sms-later cancelled"]
    proc = cli("cancel", "--handler", "mail", "--yes", "--db", db)  # pending, running, paused
    assert proc.stdout.splitlines() == ["mail-later cancelled"]
    assert "cancelled 1 job(s)" in proc.stderr
    got = rows(db)
    assert (got["sms-later"][0], got["mail-later"][0], got["mail-s1-a"][0]) == (
        "cancelled",
        "cancelled",
        "failed",
    )
    # cancelled jobs are retried in one go, and hostile text in a filter is shown escaped
    proc = cli("retry", "--status", "cancelled", "--handler", "x\x1b[2Jy", "--yes", "--db", db)
    assert proc.returncode == 0
    assert "\x1b" not in proc.stderr
    assert "\\x1b[2J" in proc.stderr


def _on_a_terminal(db: Path, answer: str, *argv: str) -> tuple[int, str]:
    """Run the command line with a pseudo-terminal as stdin, answering ``answer``."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, *argv, "--db", str(db)],
            cwd=ROOT,
            env=ENV,
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(leader, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert "[y/N]" in err
    return proc.returncode, out


def test_bulk_retry_asks_on_a_terminal(db: Path) -> None:
    before = rows(db)
    code, out = _on_a_terminal(db, "n", "retry", "--status", "failed")
    assert (code, out) == (1, "")
    assert rows(db) == before
    code, out = _on_a_terminal(db, "y", "retry", "--handler", "sms")
    assert code == 0
    assert out.splitlines() == ["sms-s1-a pending"]
    assert rows(db)["sms-s1-a"] == ("pending", 1)


def test_show_lists_the_runs_before_a_retry(db: Path) -> None:
    proc = cli("show", "mail-s1-a", "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["retries"] == []
    assert "runs before a retry" not in cli("show", "mail-s1-a", "--db", db).stdout
    assert cli("retry", "mail-s1-a", "--db", db).returncode == 0
    data = json.loads(cli("show", "mail-s1-a", "--db", db, "--json").stdout)
    (earlier,) = data["retries"]
    assert (earlier["seq"], earlier["attempt"], earlier["status"]) == (1, 0, "failed")
    assert earlier["error"] == "ValueError: bad input \x1b[2J"
    assert data["status"] == "pending"
    text = cli("show", "mail-s1-a", "--db", db).stdout
    assert "runs before a retry (1)" in text
    assert "ValueError: bad input \\x1b[2J" in text  # shown escaped, never run
    assert "\x1b" not in text
