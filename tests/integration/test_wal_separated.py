"""A database file parted from its ``-wal`` while in use, and what ``jobqueue check`` says.

The database file, its ``-wal`` and its ``-shm`` go together. Here a real
service writes jobs, then a writer holds newer commits in the WAL (no
checkpoint), and the database file is copied the way ``cp jobs.db`` copies
it while a checkpoint is writing those commits into it: some pages new, the
others old, and no ``-wal`` beside the copy. ``jobqueue check``, run as a
process, must say the file is damaged, the usual cause, and to restore it
from a backup, without a traceback and without writing to the file. The
same files copied together check clean.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobqueue import JobContext, JobQueueService

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = shutil.which("jobqueue", path=str(Path(sys.executable).parent))
CLI = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "jobqueue"]
JOBS = 300


@dataclass
class LiveFile:
    """A database with commits still in its ``-wal``, held by an open writer."""

    path: Path
    page_size: int
    pages: dict[int, bytes]  # page number -> its newest image in the WAL


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveFile]:
    path = tmp_path / "jobs.db"

    async def fill() -> None:
        async with JobQueueService(path) as svc:

            @svc.handler("echo")
            async def echo(ctx: JobContext, payload: object) -> object:
                return payload

            await svc.submit_many("echo", [{"i": i} for i in range(JOBS)], delay=3600)

    asyncio.run(fill())  # closed: every job is in the database file itself
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")  # newer commits stay in the WAL
        writer.execute(
            "UPDATE jobs SET payload = json_object('pad', hex(randomblob(300))) WHERE rowid % 2 = 0"
        )
        wal = Path(f"{path}-wal").read_bytes()
        page_size = struct.unpack(">I", wal[8:12])[0]
        pages: dict[int, bytes] = {}
        for off in range(32, len(wal) - 24 - page_size + 1, 24 + page_size):
            pgno = struct.unpack(">I", wal[off : off + 4])[0]
            pages[pgno] = wal[off + 24 : off + 24 + page_size]
        assert len(pages) > 10
        yield LiveFile(path, page_size, pages)
    finally:
        writer.close()


def torn_copy(live: LiveFile, dest: Path, pick: str) -> Path:
    """``live``'s database file alone, with some of the WAL's pages copied in."""
    order = sorted(live.pages)
    chosen = {
        "header-and-half": [p for i, p in enumerate(order) if i % 2 == 0 or p == 1],
        "half-not-header": [p for i, p in enumerate(order) if i % 2 == 0 and p != 1],
        "other-half": [p for i, p in enumerate(order) if i % 2 == 1],
    }[pick]
    shutil.copy(live.path, dest)
    with dest.open("r+b") as f:
        for pgno in chosen:
            f.seek((pgno - 1) * live.page_size)
            f.write(live.pages[pgno])
    assert not Path(f"{dest}-wal").exists()
    return dest


def check(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [*CLI, "check", "--db", str(db), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("pick", "code"),
    [("header-and-half", 2), ("half-not-header", 1), ("other-half", 1)],
)
def test_check_names_the_usual_cause_of_a_damaged_file(
    live: LiveFile, tmp_path: Path, pick: str, code: int
) -> None:
    db = torn_copy(live, tmp_path / "copy.db", pick)
    before = db.read_bytes()
    cause = f"{db}-wal or {db}-shm deleted, or {db} copied or moved without them"
    for args in ((), ("--quick",)):
        proc = check(db, *args)
        out = proc.stdout + proc.stderr
        assert proc.returncode == code, out
        assert "Traceback" not in out
        assert cause in " ".join(out.split()), out
        assert "restore the file from a backup" in out
        assert '.backup copy.db"' in out
    if code == 1:
        report = json.loads(check(db, "--json").stdout)
        assert report["ok"] is False
        assert report["damaged"] is True
        assert cause in report["likely_cause"]
    else:
        assert check(db).stderr.startswith(f"jobqueue: {db}: the database file is damaged")
    assert db.read_bytes() == before  # check never writes the database file


def test_the_three_files_copied_together_check_clean(live: LiveFile, tmp_path: Path) -> None:
    db = tmp_path / "together.db"
    for suffix in ("", "-wal", "-shm"):  # with the writer holding them, as a running service
        shutil.copy(f"{live.path}{suffix}", f"{db}{suffix}")
    proc = check(db, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert (report["ok"], report["damaged"], report["likely_cause"]) == (True, False, None)
    assert report["jobs"] == {"pending": JOBS}
    proc = check(live.path)
    assert proc.returncode == 0
    assert "cause" not in proc.stdout + proc.stderr
