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


# -- 4: list, show, stats and check read the file read-only ---------------------------------


def _sha(path: Path) -> str | None:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _files(db: Path) -> dict[str, str | None]:
    """The database file and its -wal (the -shm is shared memory: readers use it).

    A reader of a WAL file may leave an empty -wal where there was none: that is
    no write, so an empty -wal counts as none.
    """
    wal = Path(f"{db}-wal")
    return {"": _sha(db), "-wal": _sha(wal) if wal.exists() and wal.stat().st_size else None}


READ_ONLY = [["list"], ["list", "--json"], ["show", "done-1"], ["stats"], ["stats", "--json"]]


def test_read_only_commands_answer_while_another_process_writes(db: Path) -> None:
    import time

    writer = sqlite3.connect(db, isolation_level=None, timeout=0)
    try:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock until the end of the test
        writer.execute("UPDATE jobs SET priority = 7 WHERE id = 'later-1'")
        for argv in [*READ_ONLY, ["check"]]:
            t0 = time.monotonic()
            proc = cli(*argv, "--db", db)
            took = time.monotonic() - t0
            assert proc.returncode == 0, (argv, proc.stderr)
            assert "locked" not in proc.stderr, argv
            assert took < 4, (argv, took)  # the old read-write open waited 5 s, then failed
        assert '"priority": 0' in cli("show", "later-1", "--json", "--db", db).stdout
        t0 = time.monotonic()
        proc = cli("cancel", "later-1", "--busy-timeout", "0.3", "--db", db)
        assert proc.returncode == 2, proc.stderr
        assert "another connection held the write lock" in proc.stderr
        assert time.monotonic() - t0 < 4
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert rows(db)["later-1"] == ("pending", 0)


def test_read_only_commands_never_write(db: Path) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:  # a running job whose process is gone
        conn.execute("UPDATE jobs SET status = 'running', owner = '999999999:1' WHERE id='later-1'")
    before = _files(db)
    for argv in [*READ_ONLY, ["show", "later-1"], ["check"]]:
        proc = cli(*argv, "--db", db)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert _files(db) == before, argv  # no heartbeat, no sweep, no checkpoint
    listing = cli("list", "--db", db).stdout
    later = next(line for line in listing.splitlines() if line.startswith("later-1"))
    assert "pid 999999999 gone (recovered when a worker opens the file)" in later
    assert rows(db)["later-1"] == ("running", 0)  # not swept: a worker does that
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM owners").fetchone() == (0,)


def test_an_empty_file_stays_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    proc = cli("list", "--db", empty)
    assert (proc.returncode, proc.stdout) == (0, "")
    assert "no jobs in" in proc.stderr
    assert "no jobqueue schema yet" in proc.stderr
    assert cli("list", "--json", "--db", empty).returncode == 0
    stats = cli("stats", "--json", "--db", empty)
    assert stats.returncode == 0, stats.stderr
    assert '"pending": 0' in stats.stdout
    proc = cli("show", "abcd", "--db", empty)
    assert proc.returncode == 1
    assert "no job with id 'abcd'" in proc.stderr
    assert cli("cancel", "abcd", "--db", empty).returncode == 1
    assert cli("check", "--db", empty).returncode == 0
    assert empty.stat().st_size == 0  # no schema written into it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


# -- 10: one file, one diagnosis, whatever the command ----------------------------------------


def _damaged_db(path: Path) -> None:
    asyncio.run(_fill(path))
    with closing(sqlite3.connect(path)) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    with path.open("r+b") as f:
        f.seek(page_size * (root - 1) + 8)
        f.write(b"\x07" * (page_size // 2))


def _foreign_db(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")


BAD_FILES = {
    "12-byte text": (lambda p: p.write_bytes(b"hello world\n"), "is not a SQLite database"),
    "12-byte start of a database": (
        lambda p: p.write_bytes(b"SQLite forma"),
        "12 bytes is too short to be a SQLite database (a truncated file?)",
    ),
    "text": (lambda p: p.write_bytes(b"not sqlite " * 300), "is not a SQLite database"),
    "damaged page": (_damaged_db, "integrity check failed"),
    "another program's": (_foreign_db, "is a SQLite database of another program"),
}
EVERY_COMMAND = [
    ["list"],
    ["show", "abcd"],
    ["stats"],
    ["cancel", "abcd"],
    ["stop", "abcd"],
    ["metrics", "--port", "0"],
    ["check"],
    ["worker", "tests.procs._worker_app:service"],
]


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_one_file_one_diagnosis_in_every_command(tmp_path: Path, kind: str) -> None:
    make, expected = BAD_FILES[kind]
    bad = tmp_path / "bad.db"
    make(bad)
    before = _sha(bad)
    said: dict[str, str] = {}
    for argv in EVERY_COMMAND:
        proc = cli(*argv, "--db", bad)
        name = argv[0]
        if name == "check" and kind == "damaged page":  # a finding of the check: exit 1
            assert proc.returncode == 1, proc.stderr
            line = next(x for x in proc.stdout.splitlines() if x.startswith("problem:"))
            said[name] = line.split(":", 1)[1].strip()
        else:
            assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
            errors = [x for x in proc.stderr.splitlines() if x.startswith("jobqueue: ")]
            assert len(errors) == 1, (argv, proc.stderr)
            said[name] = errors[0].removeprefix("jobqueue: ")
        assert _sha(bad) == before, argv  # never modified
    assert len(set(said.values())) == 1, said
    (message,) = set(said.values())
    assert expected in message
    assert message.startswith(str(bad))


# -- 1: short ids that tell jobs apart; any unique part of an id finds the job ---------------

TWIN_A = "0" * 12 + "1" * 12 + "deadbeef"  # the same last 8 characters as TWIN_B
TWIN_B = "0" * 12 + "2" * 12 + "deadbeef"


@pytest.fixture
def many(tmp_path: Path) -> tuple[Path, list[str]]:
    """A file with 6 generated ids (made in the same instant: same first characters)."""
    path = tmp_path / "many.db"

    async def fill() -> list[str]:
        async with JobQueueService(path) as svc:
            svc.declare("summarize")
            made = await svc.submit_many("summarize", [{"i": i} for i in range(6)], delay=3600)
            for job_id in (TWIN_A, TWIN_B, "report-2024-05"):
                await svc.submit("summarize", {}, job_id=job_id, delay=3600)
            return [j.id for j in made]

    return path, asyncio.run(fill())


def test_list_shows_ids_that_tell_jobs_apart(many: tuple[Path, list[str]]) -> None:
    db, made = many
    assert len({i[:8] for i in made}) == 1  # what the table showed before: all alike
    out = cli("list", "--db", db).stdout
    shown = [line.split()[0] for line in out.splitlines()[1:]]
    assert shown[:3] == ["report-2024-05", "2222deadbeef", "1111deadbeef"]  # newest first
    assert sorted(shown[3:]) == sorted(i[-8:] for i in made)  # the random tails
    assert len(set(shown)) == len(shown)
    for part in shown:  # what is shown can be typed back
        proc = cli("show", part, "--json", "--db", db)
        assert proc.returncode == 0, (part, proc.stderr)


def test_a_unique_prefix_or_suffix_names_a_job(many: tuple[Path, list[str]]) -> None:
    import json

    db, made = many
    job = made[2]
    for part in (job[-8:], job[-5:], job[:20], job, TWIN_A[-14:], "report"):
        proc = cli("show", part, "--json", "--db", db)
        assert proc.returncode == 0, (part, proc.stderr)
    assert json.loads(cli("show", job[-6:], "--json", "--db", db).stdout)["id"] == job
    text = cli("show", job[-8:], "--db", db).stdout
    assert f"{job} (short: {job[-8:]})" in text
    proc = cli("cancel", job[-8:], made[3][:20], "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{job[-8:]} cancelled", f"{made[3][-8:]} cancelled"]
    assert rows(db)[job] == ("cancelled", 0)


def test_an_ambiguous_part_lists_candidates_and_changes_nothing(
    many: tuple[Path, list[str]],
) -> None:
    db, made = many
    for argv in (["show", "deadbeef"], ["cancel", "deadbeef"], ["stop", made[0][:4]]):
        proc = cli(*argv, "--db", db)
        assert proc.returncode == 1, (argv, proc.stderr)
        assert proc.stdout == ""
        err = proc.stderr
        assert err.count("\n") == 1, err
        assert f"job id {argv[1]!r} is ambiguous" in err
        assert "give more characters of the id" in err
    err = cli("cancel", "deadbeef", "--db", db).stderr
    assert TWIN_A in err
    assert TWIN_B in err
    assert "ids of 2 jobs start or end with it" in err
    err = cli("show", made[0][:4], "--db", db).stderr
    assert "or more jobs" in err  # 9 jobs: the newest few are named
    proc = cli("show", "abc", "--db", db)  # too short to be a part
    assert proc.returncode == 1
    assert "a part of an id needs at least 4 characters" in proc.stderr
    assert {s for s, _ in rows(db).values()} == {"pending"}


@pytest.mark.slow
def test_the_demo_shows_ids_that_tell_jobs_apart(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    proc = cli("demo", "--db", db)
    assert proc.returncode == 0, proc.stderr
    shown = [line.split()[0] for line in proc.stdout.splitlines()[2:]]
    stored = list(rows(db))
    assert len(shown) == len(set(shown)) == 5
    assert all(len(s) == 8 and any(i.endswith(s) for i in stored) for s in shown)
    slow = next(line for line in proc.stderr.splitlines() if "cancelling the slow job" in line)
    assert any(i.endswith(slow.split()[-1].rstrip(".")) for i in stored)


# -- 6: attempts as people count them ---------------------------------------------------------


def test_attempts_are_counted_as_people_count(db: Path, tmp_path: Path) -> None:
    import json

    # failed-1 failed twice (max_retries=1): the stored attempt is 1, its last is "2 of 2"
    assert rows(db)["failed-1"] == ("failed", 1)
    listing = {line.split()[0]: line for line in cli("list", "--db", db).stdout.splitlines()}
    assert listing["failed-1"].split()[3:6] == ["2", "of", "2"]
    assert listing["done-1"].split()[3:6] == ["1", "of", "1"]
    assert listing["later-1"].split()[3:6] == ["1", "of", "1"]  # the attempt it makes next
    text = cli("show", "failed-1", "--db", db).stdout
    assert "attempt:   2 of 2 (stored: attempt 1, max_retries 1)" in text
    assert json.loads(cli("show", "failed-1", "--json", "--db", db).stdout)["attempt"] == 1
    assert cli("cancel", "later-1", "--db", db).returncode == 0
    text = cli("show", "later-1", "--db", db).stdout
    assert "attempt:   not run (stored: attempt 0, max_retries 0)" in text  # never ran


@pytest.mark.slow
def test_the_demo_counts_attempts_as_people_do(tmp_path: Path) -> None:
    proc = cli("demo", "--db", tmp_path / "demo.db")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split()[3] == "ATTEMPT"
    flaky = next(line for line in lines if " flaky " in line)
    assert flaky.split()[3:6] == ["2", "of", "3"]  # failed once, retried (max_retries=2)
    assert "attempt=" not in proc.stdout


# -- the rich list at 80 and 200 columns ---------------------------------------------------------


def on_terminal(*argv: str | Path, columns: int, timeout: float = 60) -> str:
    """Run the installed command line on a pseudo-terminal ``columns`` wide (no colour)."""
    import select
    import time
    import tty

    env = {**ENV, "COLUMNS": str(columns), "LINES": "60", "TERM": "dumb"}
    for name in ("FORCE_COLOR", "NO_COLOR"):
        env.pop(name, None)
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        child = subprocess.Popen(
            [*CLI, *map(str, argv)], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
        )
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    assert child.wait(timeout=10) == 0, b"".join(chunks)
    return b"".join(chunks).decode()


LONG_HANDLER = "resize_images_for_the_gallery"


@pytest.fixture
def wide(tmp_path: Path) -> Path:
    """Jobs with long details and a long handler name, as a real application has."""
    path = tmp_path / "wide.db"

    async def fill() -> None:
        async with JobQueueService(path, retry_backoff=0.01) as svc:

            @svc.handler("summarize")
            async def summarize(ctx: JobContext, payload: Any) -> Any:
                if payload.get("fail"):
                    raise ValueError("upstream returned 503 Service Unavailable while fetching")
                return {"summary": "jobs survive crashes because every status change is saved"}

            @svc.handler(LONG_HANDLER)
            async def resize(ctx: JobContext, payload: Any) -> Any:
                return "ok"

            for _ in range(3):
                await svc.wait((await svc.submit("summarize", {})).id)
            await svc.submit("summarize", {"fail": True}, max_retries=2)
            await svc.submit(LONG_HANDLER, {}, priority=5)
            await svc.run_until_idle()
            await svc.submit("summarize", {}, delay=3600)

    asyncio.run(fill())
    return path


def test_the_rich_list_fits_the_terminal(wide: Path) -> None:
    narrow = on_terminal("list", "--db", wide, columns=80)
    lines = narrow.splitlines()
    assert "─" in lines[1]  # drawn by rich
    assert lines[0].split() == ["ID", "HANDLER", "STATUS", "ATTEMPT", "DETAIL"]
    assert all(len(line) <= 80 for line in lines), narrow
    body = lines[2:]
    assert len(body) == 6  # one line per job: nothing folded onto a second line
    assert sum("summarize" in line for line in body) == 5  # never cut inside
    assert any("resize_images_for_t…" in line for line in body)  # cut, with an ellipsis
    assert all(len(line.split()[0]) == 8 for line in body)  # the short ids
    assert any("ValueError: upstream" in line for line in body)
    full = on_terminal("list", "--db", wide, columns=200)
    lines = full.splitlines()
    assert lines[0].split() == [
        "ID", "HANDLER", "STATUS", "ATTEMPT", "PRIORITY", "CREATED", "DETAIL"
    ]  # fmt: skip
    assert all(len(line) <= 200 for line in lines)
    assert len(lines[2:]) == 6
    assert any(LONG_HANDLER in line for line in lines)
    assert any("while fetching" in line for line in lines)  # the whole detail


def test_the_demo_fits_the_terminal(tmp_path: Path) -> None:
    narrow = on_terminal("demo", "--db", tmp_path / "demo.db", columns=80)
    lines = narrow.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["ID", "HANDLER"])
    assert lines[head].split() == ["ID", "HANDLER", "STATUS", "ATTEMPT", "RESULT"]  # no EVENTS
    rows = lines[head + 2 : head + 7]
    assert all(len(line) <= 80 for line in lines[head:]), narrow
    assert sum(line.split()[1] in ("summarize", "flaky") for line in rows) == 5  # one line each
    assert any('{"summary":"jobs survive' in line and line.endswith("…") for line in rows)
    wide = on_terminal("demo", "--db", tmp_path / "demo2.db", columns=200)
    lines = wide.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["ID", "HANDLER"])
    assert "EVENTS" in lines[head].split()
    assert any("events=end:1" in line for line in lines[head + 2 :])


# -- 11: the demo says its database is temporary ------------------------------------------------


@pytest.mark.slow
def test_the_demo_says_its_temporary_database_is_deleted(tmp_path: Path) -> None:
    import re

    proc = cli("demo")
    assert proc.returncode == 0, proc.stderr
    said = re.search(
        r"database: (\S+) \(a temporary file, deleted when the demo ends; (.*)\)", proc.stderr
    )
    assert said is not None, proc.stderr
    assert "`jobqueue demo --db FILE` keeps it" in said.group(2)
    assert not Path(said.group(1)).exists()  # it was deleted, as said
    assert f"{said.group(1)} was a temporary file and is deleted now" in proc.stderr
    kept = tmp_path / "kept.db"
    proc = cli("demo", "--db", kept)
    assert f"database: {kept} (kept: `jobqueue list --db {kept}` shows its jobs)" in proc.stderr
    assert "temporary" not in proc.stderr
    assert kept.exists()


# -- 2: metrics of the file, and a worker's live metrics ---------------------------------------


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``{(sample name, labels): value}`` of one Prometheus scrape."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def L(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def status_code(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def until(check: Any, timeout: float = 20.0) -> Any:
    """Call ``check()`` until it returns something true; returns that."""
    import time

    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"not true after {timeout}s"
        time.sleep(0.05)
    return got


def test_metrics_exports_what_the_file_knows(db: Path) -> None:
    import signal

    before = _files(db)
    proc = subprocess.Popen(
        [*CLI, "metrics", "--db", str(db), "--port", "0", "--interval", "0.2"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        got = scrape(url)
        echo = L(handler="echo")
        for status, n in (("completed", 1), ("failed", 1), ("pending", 1)):
            assert got[("jobqueue_jobs", L(handler="echo", status=status))] == n, status
        assert got[("jobqueue_queue_length", echo)] == 1
        assert got[("jobqueue_queue_oldest_age_seconds", echo)] == 0  # delayed: not due yet
        done = L(handler="echo", status="completed")
        assert got[("jobqueue_jobs_finished_total", done)] == 1
        assert got[("jobqueue_jobs_finished_total", L(handler="echo", status="failed"))] == 1
        assert got[("jobqueue_job_errors_total", L(handler="echo", error_type="ValueError"))] == 1
        assert got[("jobqueue_job_duration_seconds_count", echo)] == 2  # both ran
        assert status_code(url.replace("/metrics", "/nope")) == 404
        assert _files(db) == before  # read-only: nothing written

        async def more() -> None:  # jobs finish in another process while it serves
            async with JobQueueService(db) as svc:

                @svc.handler("echo")
                async def echo(ctx: JobContext, payload: Any) -> Any:
                    return payload

                svc.declare("later")
                for i in range(3):
                    await svc.wait((await svc.submit("echo", {"i": i})).id)
                await svc.submit("later", {})  # due now, and no process runs it

        asyncio.run(more())

        def updated() -> Any:
            got = scrape(url)
            ready = got.get(("jobqueue_jobs_finished_total", done)) == 4
            return (
                got
                if ready and got.get(("jobqueue_queue_oldest_age_seconds", L(handler="later")))
                else None
            )

        got = until(updated)
        assert got[("jobqueue_jobs", done)] == 4
        assert got[("jobqueue_job_duration_seconds_count", echo)] == 5
        assert got[("jobqueue_queue_length", L(handler="later"))] == 1
        assert got[("jobqueue_queue_oldest_age_seconds", L(handler="later"))] > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


def test_a_taken_port_names_the_flag(db: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        proc = cli("metrics", "--db", db, "--port", port)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert f"port {port} is already in use" in proc.stderr
        assert "pass --port 0 for a free one" in proc.stderr
        assert "port=0" not in proc.stderr
        proc = cli("worker", "tests.procs._worker_app:service", "--db", db, "--metrics-port", port)
        assert proc.returncode == 1, proc.stderr
        errors = [x for x in proc.stderr.splitlines() if x.startswith("jobqueue: ")]
        assert len(errors) == 1, proc.stderr
        assert "pass --metrics-port 0 for a free one" in errors[0]
        assert "port=0" not in proc.stderr


def test_a_worker_serves_its_live_metrics(tmp_path: Path) -> None:
    import re
    import signal

    from _worker_procs import submit, wait_status, workers

    db = tmp_path / "jobs.db"
    with workers(db) as start:
        w = start("--metrics-port", "0")
        url = re.search(r"serving metrics at (\S+)", w.text()).group(1)  # type: ignore[union-attr]
        ids = submit(db, *[("sleep", {"seconds": 0.05})] * 3, running=False)
        for job in ids:
            wait_status(db, job, "completed")
        sleep = L(handler="sleep")

        def recorded() -> Any:
            got = scrape(url)
            return got if got.get(("jobqueue_job_duration_seconds_count", sleep)) == 3 else None

        got = until(recorded)
        assert got[("jobqueue_jobs_finished_total", L(handler="sleep", status="completed"))] == 3
        assert got[("jobqueue_job_wait_time_seconds_count", sleep)] == 3  # histograms too
        assert got[("jobqueue_job_duration_seconds_bucket", L(handler="sleep", le="0.1"))] == 3
        assert got[("jobqueue_jobs_active", sleep)] == 0
        assert status_code(url.replace("/metrics", "/")) == 404
        w.send(signal.SIGTERM)
        assert w.wait(20) == 0, w.text()


# -- 5: the worker logs each job that ends; aiosqlite's chatter only when asked for -------------


def _put(db: Path, *jobs: tuple[str, dict[str, Any], int]) -> list[str]:
    """Submit ``(handler, payload, max_retries)`` jobs for a worker; returns their ids."""

    async def go() -> list[str]:
        async with JobQueueService(db) as svc:
            svc.declare(*{h for h, _, _ in jobs})  # declared, not registered: never run here
            return [(await svc.submit(h, p, max_retries=m)).id for h, p, m in jobs]

    return asyncio.run(go())


def test_the_worker_logs_each_job_that_ends(tmp_path: Path) -> None:
    import signal

    from _worker_procs import wait_status, workers

    db = tmp_path / "jobs.db"
    with workers(db) as start:
        w = start()
        ok, flaky, slow = _put(
            db,
            ("sleep", {"seconds": 0.05}, 2),
            ("fails_slowly", {"seconds": 0.05}, 1),
            ("sleep", {"seconds": 60}, 0),
        )
        wait_status(db, flaky, "failed")
        wait_status(db, slow, "running")
        assert cli("cancel", slow, "--db", db).returncode == 0
        w.send(signal.SIGTERM)
        assert w.wait(20) == 0, w.text()
    lines = [
        x.split("jobqueue.worker.jobs", 1)[1] for x in w.text().splitlines() if "worker.jobs" in x
    ]
    assert len(lines) == 4, w.text()  # one per run that ended: ok, flaky twice, slow
    text = "\n".join(lines)
    assert f"job {ok[-8:]} sleep completed (attempt 1 of 3) in 0.0" in text
    first = f"job {flaky[-8:]} fails_slowly failed (attempt 1 of 2) after 0.0"
    assert first in text, text
    assert "s, will be retried: RuntimeError: failed after a while" in text
    assert f"job {flaky[-8:]} fails_slowly failed (attempt 2 of 2) in 0.0" in text
    assert text.count("RuntimeError: failed after a while") == 2
    assert f"job {slow[-8:]} sleep cancelled (attempt 1 of 1) after " in text
    assert "aiosqlite" not in w.text()


def test_aiosqlite_debug_lines_only_when_asked_for(tmp_path: Path) -> None:
    import signal

    from _worker_procs import wait_status, workers

    db = tmp_path / "jobs.db"
    with workers(db) as start:
        quiet = start("--log-level", "DEBUG")
        (job,) = _put(db, ("sleep", {"seconds": 0}, 0))
        wait_status(db, job, "completed")
        quiet.send(signal.SIGTERM)
        assert quiet.wait(20) == 0, quiet.text()
        assert " DEBUG " in quiet.text()  # jobqueue's own debug lines are there
        assert " aiosqlite " not in quiet.text()
        assert f"job {job[-8:]} sleep completed" in quiet.text()
        chatty = start("--log-level", "DEBUG", "--log-sqlite")
        (job,) = _put(db, ("sleep", {"seconds": 0}, 0))
        wait_status(db, job, "completed")
        chatty.send(signal.SIGTERM)
        assert chatty.wait(20) == 0, chatty.text()
        assert " aiosqlite " in chatty.text()
