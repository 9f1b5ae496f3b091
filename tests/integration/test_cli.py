"""The command line against real database files, including bad input.

Every subcommand runs here against a file made by a real service: ``demo``,
``worker`` (through the control tests; its own tests are in test_worker.py),
``list``, ``show``, ``cancel``/``pause``/``resume``/``stop``, ``stats``,
``check`` and ``metrics``. Bad input (an unknown job, a missing file, a
damaged or foreign file, bad options) must give a clear message on stderr and
a non-zero exit code, and leave the file as it was.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService
from jobqueue.cli import render
from jobqueue.cli.main import main
from jobqueue.cli.render import Output

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
DB_COMMANDS: list[list[str]] = [
    ["list"],
    ["list", "--json"],
    ["show", "done-1"],
    ["cancel", "later-1"],
    ["pause", "later-1"],
    ["resume", "later-1"],
    ["stop", "later-1"],
    ["stats"],
    ["stats", "--watch", "--count", "1"],
    ["check"],
    ["metrics", "--port", "0"],
]
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A file with one completed, one failed and one delayed pending job, events persisted."""
    path = tmp_path / "jobs.db"

    async def fill() -> None:
        async with JobQueueService(path, persist_events=True) as svc:

            @svc.handler("echo")
            async def echo(ctx: JobContext, payload: Any) -> Any:
                await ctx.emit("token", {"chunk": "hello"})
                if payload.get("fail"):
                    raise ValueError("bad input")
                return payload

            await svc.wait((await svc.submit("echo", {"x": 1}, job_id="done-1")).id)
            await svc.submit("echo", {"fail": True}, job_id="failed-1")
            await svc.run_until_idle()
            await svc.submit("echo", {"x": 2}, job_id="later-1", delay=3600, priority=3)

    asyncio.run(fill())
    return path


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """``code, out, err = run("list", "--db", path)``."""

    def go(*argv: str | Path) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return go


def _jobs(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, status FROM jobs").fetchall()
    conn.close()
    return dict(rows)


# -- usage -----------------------------------------------------------------------------------


def test_help_version_and_usage_errors(run: Run) -> None:
    code, out, _ = run("--help")
    assert code == 0
    for name in ("demo", "worker", "list", "show", "cancel", "pause", "resume", "stop"):
        assert name in out
    assert "Exit codes" in out
    code, out, _ = run("--version")
    assert (code, out.split()[0]) == (0, "jobqueue")
    code, _, err = run()
    assert code == 2
    assert "usage: jobqueue" in err
    code, _, err = run("frobnicate")
    assert code == 2
    assert "invalid choice: 'frobnicate'" in err
    code, _, err = run("list", "--db", "x.db", "--limit", "0")
    assert code == 2
    assert "must be at least 1" in err


def test_every_file_command_needs_db(
    run: Run, db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("JOBQUEUE_DB", raising=False)
    for argv in DB_COMMANDS:
        code, out, err = run(*argv)
        assert code == 2, argv
        assert f"{argv[0]} needs --db FILE (or the JOBQUEUE_DB environment variable)" in err
        assert out == ""
    monkeypatch.setenv("JOBQUEUE_DB", str(db))
    code, out, _ = run("list", "--json")
    assert (code, len(out.splitlines())) == (0, 3)
    code, out, _ = run("--db", db, "list", "--json")  # also before the command's name
    assert (code, len(out.splitlines())) == (0, 3)


# -- bad files: missing, a directory, garbage, another program's, damaged ---------------------


@pytest.mark.parametrize("argv", DB_COMMANDS, ids=[" ".join(a) for a in DB_COMMANDS])
def test_missing_file(run: Run, tmp_path: Path, argv: list[str]) -> None:
    absent = tmp_path / "absent.db"
    code, out, err = run(*argv, "--db", absent)
    assert code == 2
    assert f"no database file at {absent}; check the path" in err
    assert out == ""
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_worker_with_a_bad_app(run: Run, tmp_path: Path) -> None:
    code, out, err = run("worker", "no_such_module_xyz:service", "--db", tmp_path / "jobs.db")
    assert (code, out) == (2, "")
    assert "no module named 'no_such_module_xyz'" in err
    code, _, err = run("worker", "not-a-target", "--db", tmp_path / "jobs.db")
    assert code == 2
    assert "is not of the form module:attr" in err
    assert not (tmp_path / "jobs.db").exists()


def test_directory_instead_of_file(run: Run, tmp_path: Path) -> None:
    code, _, err = run("list", "--db", tmp_path)
    assert code == 2
    assert "is a directory; --db takes a database file" in err


@pytest.mark.parametrize("argv", DB_COMMANDS, ids=[" ".join(a) for a in DB_COMMANDS])
def test_garbage_file(run: Run, tmp_path: Path, argv: list[str]) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 300)
    code, out, err = run(*argv, "--db", bad)
    assert code == 2
    assert err.startswith(f"jobqueue: {bad} is not a SQLite database: it does not start with")
    assert out == ""
    assert bad.read_bytes() == b"this is not sqlite" * 300


@pytest.mark.parametrize("argv", [["list"], ["check"], ["cancel", "x"]])
def test_another_programs_database(run: Run, tmp_path: Path, argv: list[str]) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.close()
    before = other.read_bytes()
    code, _, err = run(*argv, "--db", other)
    assert code == 2
    assert "is a SQLite database of another program (tables: invoices)" in err
    assert other.read_bytes() == before


def _damage_jobs_table(db: Path) -> bytes:
    with sqlite3.connect(db) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with db.open("r+b") as f:
        f.seek(page_size * (root - 1) + 8)
        f.write(b"\x07" * (page_size // 2))
    return db.read_bytes()


def test_damaged_file(run: Run, db: Path) -> None:
    damaged = _damage_jobs_table(db)
    code, out, err = run("list", "--db", db)
    assert code == 2
    assert "integrity check failed" in err
    assert "the file was not modified" in err
    assert out == ""
    code, out, err = run("check", "--db", db, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["integrity"] != "ok"
    assert any("integrity check failed" in p for p in report["problems"])
    code, out, err = run("check", "--db", db)
    assert code == 1
    assert "integrity: FAILED" in out
    assert "problem(s)" in err
    assert db.read_bytes() == damaged


# -- list ------------------------------------------------------------------------------------


def test_list_json_and_filters(run: Run, db: Path) -> None:
    code, out, _ = run("list", "--db", db, "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == ["later-1", "failed-1", "done-1"]  # newest first
    assert {r["id"]: r["status"] for r in rows}["failed-1"] == "failed"
    assert rows[2]["result"] == {"x": 1}
    code, out, _ = run("list", "--db", db, "--json", "--status", "pending,failed")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["later-1", "failed-1"]
    code, out, _ = run("list", "--db", db, "--json", "--handler", "nope")
    assert (code, out) == (0, "")


def test_list_table(run: Run, db: Path) -> None:
    code, out, err = run("list", "--db", db)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "HANDLER",
        "STATUS",
        "ATTEMPT",
        "PRIORITY",
        "CREATED",
        "DETAIL",
    ]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["later-1", "echo", "pending"],
        ["failed-1", "echo", "failed"],
        ["done-1", "echo", "completed"],
    ]
    assert "due in 59m" in lines[1]
    assert "ValueError: bad input" in lines[2]
    assert 'result {"x": 1}' in lines[3]
    assert err == ""
    code, out, err = run("list", "--db", db, "--limit", "1")
    assert len(out.splitlines()) == 2
    assert "the newest 1 shown; --limit N shows more" in err
    code, out, err = run("list", "--db", db, "--status", "paused")
    assert (code, out) == (0, "")
    assert "no jobs with status paused in" in err


def test_list_bad_status(run: Run, db: Path) -> None:
    code, out, err = run("list", "--db", db, "--status", "finished")
    assert code == 2
    assert "unknown status finished; use one of pending, running" in err
    assert out == ""


# -- show ------------------------------------------------------------------------------------


def test_show(run: Run, db: Path) -> None:
    code, out, _ = run("show", "--db", db, "failed-1")
    assert code == 0
    assert "status:" in out
    assert "failed (reason: error)" in out
    assert "ValueError: bad input" in out
    assert "traceback:" in out
    assert "last 2 events:" in out
    assert "token" in out
    code, out, _ = run("show", "--db", db, "done-1", "--json")
    data = json.loads(out)
    assert (data["id"], data["status"], data["result"]) == ("done-1", "completed", {"x": 1})
    assert [e["type"] for e in data["events"]] == ["token", "end"]
    assert data["events"][0]["data"] == {"chunk": "hello"}
    code, out, _ = run("show", "--db", db, "done-1", "--json", "--events", "1")
    assert [e["seq"] for e in json.loads(out)["events"]] == [2]
    code, out, _ = run("show", "--db", db, "later-1")
    assert "run at:" in out
    assert "events: none persisted" in out


def test_show_steps_when_the_service_records_them(
    run: Run, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobqueue.store import steps

    def list_steps(conn: object, job_id: str) -> list[dict[str, Any]]:
        assert job_id == "done-1"
        return [
            {"name": "fetch", "status": "completed", "result": {"rows": 3}},
            {"name": "nap", "status": "sleeping", "wake_at": 1.5},
        ]

    monkeypatch.setattr(steps, "list_steps", list_steps)
    code, out, _ = run("show", "--db", db, "done-1")
    assert code == 0
    assert "steps (2):" in out
    assert "NAME" in out
    assert "WAKE_AT" in out
    fetch = next(line for line in out.splitlines() if "fetch" in line)
    assert fetch.split()[:2] == ["fetch", "completed"]
    code, out, _ = run("show", "--db", db, "done-1", "--json")
    assert json.loads(out)["steps"][1] == {"name": "nap", "status": "sleeping", "wake_at": 1.5}


def test_show_steps_of_a_real_workflow(run: Run, tmp_path: Path) -> None:
    db = tmp_path / "flow.db"

    async def fill() -> None:
        async with JobQueueService(db) as svc:

            @svc.handler("order")
            async def order(ctx: JobContext, payload: Any) -> Any:
                async def fetch() -> dict[str, int]:
                    return {"rows": 3}

                async def close() -> str:
                    return "closed"

                rows = await ctx.step("fetch", fetch)
                await ctx.step("close", close)
                return rows

            await svc.wait((await svc.submit("order", {}, job_id="order-1")).id)

    asyncio.run(fill())
    code, out, _ = run("show", "--db", db, "order-1")
    assert code == 0
    assert "steps (2):" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:2] == "  "}
    assert "completed" in rows["fetch"]
    assert "completed" in rows["close"]
    assert "JOB_ID" not in out  # the job's own id is not repeated per step
    code, out, _ = run("show", "--db", db, "order-1", "--json")
    steps = json.loads(out)["steps"]
    assert [(s["name"], s["status"], s["result"]) for s in steps] == [
        ("fetch", "completed", {"rows": 3}),
        ("close", "completed", "closed"),
    ]


def test_unknown_job(run: Run, db: Path) -> None:
    for argv in (["show", "nope"], ["cancel", "nope"], ["stop", "nope"], ["resume", "nope"]):
        code, out, err = run(*argv, "--db", db)
        assert code == 1, argv
        assert "no job with id 'nope'" in err
        assert out == ""


# -- control commands: cancel, pause, resume, stop -------------------------------------------


def test_controls_on_jobs_that_are_not_running(run: Run, db: Path) -> None:
    code, _, err = run("pause", "--db", db, "later-1")  # pending: nothing to pause
    assert code == 1
    assert "cannot go from 'pending' to 'paused'" in err
    code, _, err = run("resume", "--db", db, "done-1")
    assert code == 1
    assert "cannot go from 'completed'" in err
    assert run("stop", "--db", db, "later-1") == (0, "later-1 stopped\n", "")
    assert run("cancel", "--db", db, "later-1")[0] == 1  # already finished
    assert _jobs(db)["later-1"] == "stopped"


def test_control_several_jobs_reports_each(run: Run, db: Path) -> None:
    code, out, err = run("cancel", "--db", db, "later-1", "nope", "done-1", "later-1")
    assert code == 1
    assert out == "later-1 cancelled\n"
    assert "no job with id 'nope'" in err
    assert "cannot go from 'completed'" in err
    assert _jobs(db)["later-1"] == "cancelled"


def test_controls_reach_a_worker_process(tmp_path: Path, run: Run) -> None:
    import signal

    from _worker_procs import row, submit, wait_status, workers

    db = tmp_path / "jobs.db"
    with workers(db) as start:
        w = start()
        a, b, c = submit(
            db, ("steps", {"steps": 400}), ("steps", {"steps": 400}), ("sleep", {"seconds": 60})
        )

        def cli(*argv: str) -> str:
            code, out, err = run(*argv, "--db", db)
            assert code == 0, err
            return out

        wait_status(db, c, "running")
        stats = json.loads(cli("stats", "--json"))
        assert stats["running"] == 3
        assert [(p["pid"], p["running"]) for p in stats["processes"]] == [(w.proc.pid, 3)]
        assert f"pid {w.proc.pid}" in cli("list")
        assert cli("pause", a) == f"{a[-8:]} paused\n"  # the short id
        assert row(db, a)["owner"] is None  # a paused job holds no running task
        assert "resume requested: a worker with its handler claims it" in cli("resume", a)
        assert wait_status(db, a, "running")["owner"].startswith(f"{w.proc.pid}:")
        assert cli("stop", b) == f"{b[-8:]} stopped\n"
        assert cli("cancel", c) == f"{c[-8:]} cancelled\n"
        assert cli("stop", a) == f"{a[-8:]} stopped\n"
        w.send(signal.SIGTERM)
        assert w.wait(20) == 0, w.text()


@pytest.mark.slow
def test_control_of_a_frozen_worker_says_what_happens_next(tmp_path: Path, run: Run) -> None:
    import signal

    from _worker_procs import submit, wait_status, workers

    db = tmp_path / "jobs.db"
    with workers(db) as start:
        w = start()
        (job,) = submit(db, ("sleep", {"seconds": 60}))
        w.send(signal.SIGSTOP)  # alive, but cannot apply the request
        try:
            code, out, _ = run("cancel", "--db", db, job)
        finally:
            w.send(signal.SIGCONT)
        assert code == 0
        assert out.startswith(f"{job[-8:]} running (cancel requested: the worker running it, pid ")
        assert f"pid {w.proc.pid}," in out
        wait_status(db, job, "cancelled")


# -- stats -----------------------------------------------------------------------------------


def test_stats(run: Run, db: Path) -> None:
    code, out, _ = run("stats", "--db", db, "--json")
    assert code == 0
    stats = json.loads(out)
    names = ("pending", "running", "paused", "completed", "failed", "cancelled", "stopped")
    counts = {k: stats[k] for k in names}
    assert counts == {
        "pending": 1,
        "running": 0,
        "paused": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
        "stopped": 0,
    }
    assert stats["done"] == stats["completed"]  # the alias
    assert (stats["due"], stats["delayed"], stats["lag"]) == (0, 1, 0.0)
    assert stats["queues"] == {"echo": 1}
    assert stats["processes"] == []  # this command's own service is not listed
    code, out, _ = run("stats", "--db", db)
    assert code == 0
    assert "pending:   1 (due 0, delayed 1)" in out
    assert "lag:" in out
    assert "processes: none" in out


def test_stats_watch(run: Run, db: Path) -> None:
    argv = ["stats", "--db", db, "--watch", "--count", "3", "--interval", "0.01"]
    code, out, _ = run(*argv, "--json")
    assert code == 0
    reports = [json.loads(line) for line in out.splitlines()]
    assert len(reports) == 3
    assert reports[0]["now"] < reports[2]["now"]
    code, out, _ = run(*argv)
    assert len(out.splitlines()) == 3
    assert "pending=1 running=0 paused=0 completed=1 failed=1" in out.splitlines()[0]
    code, _, err = run("stats", "--db", db, "--watch", "--interval", "0")
    assert code == 2
    assert "must be a positive number of seconds" in err


def test_stats_watch_ends_cleanly_on_ctrl_c(db: Path) -> None:
    import signal

    cmd = [sys.executable, "-m", "jobqueue", "stats", "--db", str(db), "--watch", "--json"]
    proc = subprocess.Popen(
        [*cmd, "--interval", "0.1"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())  # a report is out: the watch loop runs
        assert first["done"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert err == ""


# -- check -----------------------------------------------------------------------------------


def test_check_healthy_file(run: Run, db: Path) -> None:
    from jobqueue.store.schema import latest_version

    before = db.read_bytes()
    code, out, err = run("check", "--db", db, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True
    assert report["integrity"] == "ok"
    assert report["schema_version"] == report["supported_version"] == latest_version()
    assert report["journal_mode"] == "wal"
    assert report["jobs"] == {"completed": 1, "failed": 1, "pending": 1}
    assert (report["problems"], report["warnings"]) == ([], [])
    code, out, err = run("check", "--db", db, "--quick")
    assert code == 0
    assert "integrity: ok" in out
    assert f"version {latest_version()} (this jobqueue: {latest_version()})" in out
    assert err == "check: ok\n"
    assert db.read_bytes() == before  # read-only: not migrated, not recovered, not touched


def test_check_finds_problems(run: Run, db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jobs SET status = 'exploded' WHERE id = 'done-1'")
    conn.close()
    code, out, _ = run("check", "--db", db, "--json")
    assert code == 1
    (problem,) = json.loads(out)["problems"]
    assert "1 job(s) have the invalid status 'exploded' (e.g. job 'done-1')" in problem
    code, _, err = run("list", "--db", db)  # the other commands refuse the row clearly
    assert code == 1
    assert "exploded" in err
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jobs SET status = 'completed' WHERE id = 'done-1'")
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    code, out, _ = run("check", "--db", db, "--json")
    assert code == 1
    assert "has schema version 99, newer than this jobqueue understands" in out
    code, _, err = run("list", "--db", db)
    assert code == 2
    assert "upgrade jobqueue to open it" in err


def test_check_warnings(run: Run, tmp_path: Path, db: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    code, out, _ = run("check", "--db", empty, "--json")
    assert code == 0
    assert "empty: no jobqueue schema yet" in json.loads(out)["warnings"][0]
    with sqlite3.connect(db) as conn:  # a running job whose process is gone
        conn.execute("UPDATE jobs SET status = 'running', owner = '999999999:1' WHERE id='later-1'")
    conn.close()
    code, out, _ = run("check", "--db", db, "--json")
    assert code == 0
    assert "belong to process 999999999, which is gone" in json.loads(out)["warnings"][0]


# -- output: rich on a terminal, plain text otherwise ------------------------------------------


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend stdout and stderr are terminals (rich draws only on terminals)."""
    monkeypatch.setattr(render, "is_terminal", lambda stream: True)
    monkeypatch.setenv("COLUMNS", "160")


@pytest.mark.usefixtures("terminal")
def test_rich_tables_on_a_terminal(run: Run, db: Path) -> None:
    assert render.rich_available()
    code, out, _ = run("list", "--db", db)
    assert code == 0
    assert "─" in out  # rich draws the header rule
    assert "later-1" in out
    code, out, _ = run("show", "--db", db, "done-1")
    assert "completed" in out
    assert "last 2 events" in out
    code, out, _ = run("stats", "--db", db)
    assert "delayed 1" in out
    code, out, _ = run("stats", "--db", db, "--watch", "--count", "2", "--interval", "0.01")
    assert "(Ctrl-C to stop)" in out
    code, out, _ = run("check", "--db", db)
    assert "integrity" in out
    code, out, _ = run("list", "--db", db, "--plain")
    assert "─" not in out
    assert out.splitlines()[0].split()[0] == "ID"


@pytest.mark.usefixtures("terminal")
def test_plain_text_without_rich(run: Run, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # as if jobqueue[cli] were not installed
    assert not render.rich_available()
    code, out, _ = run("list", "--db", db)
    assert code == 0
    assert "─" not in out
    assert out.splitlines()[1].split()[:3] == ["later-1", "echo", "pending"]
    code, out, _ = run("show", "--db", db, "done-1")
    assert "id:" in out


def test_plain_table_layout() -> None:
    buf = io.StringIO()
    Output(stdout=buf).table(["A", "LONGER"], [["x y\nz", ""], ["wide cell", "1"]], title="t")
    assert buf.getvalue() == "t:\n  A          LONGER\n  x y z      -\n  wide cell  1\n"


# -- demo ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_keeps_its_file_when_given_one(run: Run, tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    code, out, err = run("demo", "--db", db)
    assert code == 0
    assert out.startswith("final statuses read back from the database file:\n")
    assert "events=end:1" in out
    assert "cancelling the slow job" in err  # progress goes to stderr
    assert sorted(_jobs(db).values()) == ["cancelled", *["completed"] * 4]
    code, out, _ = run("list", "--db", db, "--json")
    assert len(out.splitlines()) == 5


@pytest.mark.slow
def test_demo_live_progress_display(tmp_path: Path) -> None:
    from jobqueue.cli.demo import run_demo

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out, err = Tty(), Tty()
    assert run_demo(str(tmp_path / "demo.db"), Output(stdout=out, stderr=err)) == 0
    assert "━" in err.getvalue()  # progress bars
    assert "cancelled" in err.getvalue()
    assert "final statuses read back from the database file" in out.getvalue()


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_command_serves_prometheus_until_sigterm(db: Path) -> None:
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "jobqueue", "metrics", "--db", str(db), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
        assert 'jobqueue_queue_length{handler="echo"' in text  # the delayed job is pending
        assert "process_cpu_time" in text
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out == f"serving metrics at http://127.0.0.1:{port}/metrics\n"


def test_metrics_bad_port(run: Run, db: Path) -> None:
    code, _, err = run("metrics", "--db", db, "--port", "70000")
    assert code == 2
    assert "a port is 0..65535" in err


# -- the installed entry points ----------------------------------------------------------------


def test_python_dash_m_exit_codes_and_streams(db: Path, tmp_path: Path) -> None:
    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jobqueue", *argv],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
        )

    ok = cli("list", "--db", str(db), "--json")
    assert (ok.returncode, len(ok.stdout.splitlines()), ok.stderr) == (0, 3, "")
    missing = cli("show", "x", "--db", str(tmp_path / "nope.db"))
    assert (missing.returncode, missing.stdout) == (2, "")
    assert "no database file at" in missing.stderr
    unknown = cli("show", "nope", "--db", str(db))
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr.startswith("jobqueue: no job with id 'nope'")


def test_console_script_is_declared() -> None:
    import tomllib

    from jobqueue.cli.main import entrypoint

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"jobqueue": "jobqueue.cli.main:entrypoint"}
    assert callable(entrypoint)


def test_keyboard_interrupt_exits_130(run: Run, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobqueue.cli import main as cli_main

    def interrupted(*args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "_dispatch", interrupted)
    code, _, err = run("list", "--db", db)
    assert (code, err) == (130, "jobqueue: interrupted\n")
