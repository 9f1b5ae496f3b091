"""The command line against real database files, including bad input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService
from jobqueue.cli.main import main


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.db"

    async def fill() -> None:
        async with JobQueueService(path) as svc:

            @svc.handler("echo")
            async def echo(ctx: JobContext, payload: Any) -> Any:
                return payload

            job = await svc.submit("echo", {"x": 1}, job_id="done-1")
            await svc.wait(job.id)
            await svc.submit("echo", {"x": 2}, job_id="later-1", delay=3600)

    asyncio.run(fill())
    return path


def test_list_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--db", str(db), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["id"]: r["status"] for r in rows} == {"done-1": "completed", "later-1": "pending"}


def test_show_and_cancel(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "--db", str(db), "done-1"]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == {"x": 1}
    assert main(["cancel", "--db", str(db), "later-1"]) == 0
    assert "later-1 cancelled" in capsys.readouterr().out
    assert main(["cancel", "--db", str(db), "done-1"]) == 1  # already finished
    assert "cannot go from 'completed'" in capsys.readouterr().err


def test_stats_and_check(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--db", str(db)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["done"], stats["pending"]) == (1, 1)
    assert main(["check", "--db", str(db)]) == 0
    assert json.loads(capsys.readouterr().out)["integrity"] == "ok"


def test_unknown_job(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "--db", str(db), "nope"]) == 1
    assert "no job with id 'nope'" in capsys.readouterr().err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--db", str(tmp_path / "absent.db")]) == 2
    assert "no database file" in capsys.readouterr().err
    assert not (tmp_path / "absent.db").exists()


def test_corrupted_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    before = bad.read_bytes()
    assert main(["list", "--db", str(bad)]) == 2
    assert "not a SQLite database" in capsys.readouterr().err
    assert bad.read_bytes() == before


def test_metrics_command_serves_prometheus_until_sigterm(db: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "jobqueue", "metrics", "--db", str(db), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        text, deadline = "", time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    text = resp.read().decode()
                if "jobqueue_queue_length" in text:
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
        assert "# TYPE jobqueue_queue_length gauge" in text or "jobqueue_queue_length" in text
        assert 'jobqueue_queue_length{handler="echo"' in text  # the delayed job is pending
        assert "process_cpu_time" in text
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"127.0.0.1:{port}" in out


# -- control commands: cancel, pause, resume, stop -------------------------------------------


def test_controls_on_jobs_that_are_not_running(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pause", "--db", str(db), "later-1"]) == 1  # pending: nothing to pause
    assert "cannot go from 'pending' to 'paused'" in capsys.readouterr().err
    assert main(["resume", "--db", str(db), "done-1"]) == 1
    assert "cannot go from 'completed'" in capsys.readouterr().err
    assert main(["stop", "--db", str(db), "later-1"]) == 0
    assert capsys.readouterr().out == "later-1 stopped\n"
    assert main(["stop", "--db", str(db), "nope"]) == 1
    assert "no job with id 'nope'" in capsys.readouterr().err


def test_controls_reach_a_worker_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal

    from _worker_procs import row, submit, wait_status, workers

    db = tmp_path / "jobs.db"
    with workers(db) as start:
        w = start()
        a, b, c = submit(
            db, ("steps", {"steps": 400}), ("steps", {"steps": 400}), ("sleep", {"seconds": 60})
        )

        def cli(*argv: str) -> str:
            assert main([*argv, "--db", str(db)]) == 0
            return capsys.readouterr().out

        assert cli("pause", a) == f"{a} paused\n"
        assert row(db, a)["owner"] is None  # a paused job holds no running task
        assert "resume requested: a worker with its handler claims it" in cli("resume", a)
        assert wait_status(db, a, "running")["owner"].startswith(f"{w.proc.pid}:")
        assert cli("stop", b) == f"{b} stopped\n"
        assert cli("cancel", c) == f"{c} cancelled\n"
        assert cli("stop", a) == f"{a} stopped\n"
        w.send(signal.SIGTERM)
        assert w.wait(20) == 0, w.text()


def test_control_of_a_frozen_worker_says_what_happens_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal

    from _worker_procs import submit, wait_status, workers

    db = tmp_path / "jobs.db"
    with workers(db) as start:
        w = start()
        (job,) = submit(db, ("sleep", {"seconds": 60}))
        w.send(signal.SIGSTOP)  # alive, but cannot apply the request
        try:
            assert main(["cancel", "--db", str(db), job]) == 0
        finally:
            w.send(signal.SIGCONT)
        out = capsys.readouterr().out
        assert out.startswith(f"{job} running (cancel requested: the worker running it, pid ")
        assert f"pid {w.proc.pid}," in out
        wait_status(db, job, "cancelled")
