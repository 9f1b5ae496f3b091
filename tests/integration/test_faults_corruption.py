"""Damaged files: truncated, random pages, not SQLite, a WAL of another database, bad rows.

Each damaged file must give :class:`StoreCorruptedError` naming it, and must
be left exactly as it was (same bytes, no file added or removed beside it).
Complements tests/integration/test_store.py (random file, text file, another program's
database, header then garbage, a database truncated to half).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from _fault_util import integrity, report, sha

from jobqueue import JobQueueService, TaskStatus
from jobqueue.errors import JobQueueError, StoreCorruptedError

PAGE = 4096


def _make(path: Path, n: int = 300) -> None:
    async def make() -> None:
        async with JobQueueService(str(path), poll_interval=60) as svc:
            svc.declare("h")
            await svc.submit_many("h", [{"pad": "x" * 300}] * n)

    asyncio.run(make())


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed, checkpointed jobqueue database of 300 jobs (about 55 pages)."""
    path = tmp_path_factory.mktemp("pristine") / "jobs.db"
    _make(path)
    assert not Path(str(path) + "-wal").exists()
    return path


def _size(path: Path) -> int:
    return path.stat().st_size


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _remove_sidecars(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def _snapshot(directory: Path) -> dict[str, str]:
    return {p.name: sha(p) for p in sorted(directory.iterdir()) if p.is_file()}


async def _refused(path: Path, **opts) -> StoreCorruptedError:
    """Open must fail with StoreCorruptedError naming the file and change nothing on disk."""
    before = _snapshot(path.parent)
    svc = JobQueueService(str(path), poll_interval=60, **opts)
    with pytest.raises(StoreCorruptedError) as ei:
        async with svc:
            pass
    assert ei.value.path == str(path)
    assert str(path) in str(ei.value)
    after = _snapshot(path.parent)
    assert {k: after.get(k) for k in before} == before  # every file as it was, byte for byte
    # SQLite's read-only check of a WAL-mode file may leave an empty -wal and a -shm
    # (its shared-memory index) beside it; nothing else may appear.
    added = set(after) - set(before)
    assert added <= {path.name + "-wal", path.name + "-shm"}, added
    if path.name + "-wal" in added:
        assert _size(Path(str(path) + "-wal")) == 0
    return ei.value


# -- truncated ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keep", [1, 50, 100, 511, PAGE, PAGE + 1, 2 * PAGE, "half", "all but 4096", "all but 1000"]
)
async def test_truncated_database_is_refused_untouched(
    pristine: Path, tmp_path: Path, keep: int | str
) -> None:
    path = tmp_path / "jobs.db"
    shutil.copy(pristine, path)
    size = path.stat().st_size
    cut = {"half": size // 2, "all but 4096": size - PAGE, "all but 1000": size - 1000}
    os.truncate(path, cut.get(keep, keep) if isinstance(keep, str) else keep)
    await _refused(path)


# -- random bytes in pages ---------------------------------------------------------------------


async def test_random_bytes_over_any_page_are_refused_untouched(
    pristine: Path, tmp_path: Path
) -> None:
    pages = _size(pristine) // PAGE
    assert pages > 20
    rnd = random.Random(9)  # the same damage every run
    for page in range(pages):
        path = tmp_path / f"p{page}" / "jobs.db"
        path.parent.mkdir()
        shutil.copy(pristine, path)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, rnd.randbytes(PAGE), page * PAGE)
        finally:
            os.close(fd)
        await _refused(path)
    report("random_pages", pages=pages, refused=pages)


async def test_damaged_page_is_refused_even_with_quick_check_off(
    pristine: Path, tmp_path: Path
) -> None:
    """Page 1 (the header and schema) is read by every open, check or not."""
    path = tmp_path / "jobs.db"
    shutil.copy(pristine, path)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, random.Random(1).randbytes(PAGE), 0)
    finally:
        os.close(fd)
    await _refused(path, check_on_open=False)


# -- not SQLite ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"\0" * 8192, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20, b"SQLite format 3\0", b"{}"],
    ids=["zeros", "png", "sqlite-magic-only", "two-bytes"],
)
async def test_non_sqlite_file_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(content)
    await _refused(path)


# -- a WAL from another database -------------------------------------------------------------------


def _foreign_wal(directory: Path) -> Path:
    """The -wal of another program's WAL-mode database, left by a process that died."""
    other = directory / "other.db"
    code = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "c.execute('CREATE TABLE notes (body BLOB)')\n"
        "c.executemany('INSERT INTO notes VALUES (?)', [(os.urandom(300),) for _ in range(50)])\n"
        "c.commit()\n"
        "os._exit(0)  # no close: the WAL is left behind, as after a crash\n"
    )
    subprocess.run([sys.executable, "-c", code, str(other)], check=True, timeout=30)
    wal = Path(str(other) + "-wal")
    assert wal.stat().st_size > PAGE
    return wal


@pytest.mark.parametrize("check", [True, False], ids=["quick_check", "no-check"])
async def test_wal_of_another_database_is_refused_and_nothing_written(
    pristine: Path, tmp_path: Path, check: bool
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    wal = _foreign_wal(elsewhere)
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    path = db_dir / "jobs.db"
    shutil.copy(pristine, path)
    shutil.copy(wal, str(path) + "-wal")
    await _refused(path, check_on_open=check)
    # Once the stray WAL is removed, every job is there.
    _remove_sidecars(path)
    async with JobQueueService(str(path), poll_interval=60) as svc:
        assert len(await svc.list(limit=1000)) == 300


async def test_garbage_wal_is_ignored_and_committed_jobs_kept(
    pristine: Path, tmp_path: Path
) -> None:
    """A -wal whose header checksum fails holds no commit: SQLite ignores it, nothing is lost."""
    path = tmp_path / "jobs.db"
    shutil.copy(pristine, path)
    _write(Path(str(path) + "-wal"), random.Random(3).randbytes(10 * PAGE))
    async with JobQueueService(str(path), poll_interval=60) as svc:
        assert len(await svc.list(limit=1000)) == 300
    assert integrity(path) == ["ok"]


# -- damaged rows ---------------------------------------------------------------------------


def _poke(path: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(str(path))
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def _copy_with_bad_job(pristine: Path, tmp_path: Path, payload_sql: str) -> Path:
    """A copy of ``pristine`` plus a pending job ``'bad'`` stored with payload ``payload_sql``
    (an SQL expression, written past the library)."""
    path = tmp_path / "jobs.db"
    shutil.copy(pristine, path)
    _poke(
        path,
        "INSERT INTO jobs (id, handler, payload, status, created_at, updated_at, run_at) "
        f"VALUES ('bad', 'h', {payload_sql}, 'pending', 0, 0, 1e12)",
    )
    return path


async def test_stored_text_that_is_not_utf8_gives_typed_error(
    pristine: Path, tmp_path: Path
) -> None:
    path = _copy_with_bad_job(pristine, tmp_path, "CAST(X'7B22FF227D' AS TEXT)")
    async with JobQueueService(str(path), poll_interval=60) as svc:
        with pytest.raises(StoreCorruptedError) as ei:
            await svc.get("bad")
        assert str(path) in str(ei.value)
        with pytest.raises(StoreCorruptedError):
            await svc.list(limit=1000)
        # The rest of the store keeps working.
        assert len(await svc.list(status="pending", limit=10, offset=1)) == 10
        svc.declare("h")
        await svc.submit("h", {}, job_id="after")
        assert (await svc.get("after")).status is TaskStatus.PENDING


async def test_stored_payload_that_is_not_json_gives_typed_error(
    pristine: Path, tmp_path: Path
) -> None:
    path = _copy_with_bad_job(pristine, tmp_path, "'{\"a\": garbage'")
    async with JobQueueService(str(path), poll_interval=60) as svc:
        with pytest.raises(JobQueueError):
            await svc.get("bad")


async def test_claimed_job_with_a_damaged_payload_fails_alone(tmp_path: Path) -> None:
    """The runner turns an undecodable payload into a failed job; the others still run."""
    path = tmp_path / "jobs.db"
    async with JobQueueService(str(path), poll_interval=0.05) as svc:
        svc.declare("h")
        await svc.submit("h", {"ok": 1}, job_id="good", delay=0.5)
        await svc.submit("h", {"ok": 2}, job_id="bad", delay=0.5)
    _poke(path, "UPDATE jobs SET payload = '{\"a\": garbage' WHERE id = 'bad'")
    ran = []
    async with JobQueueService(str(path), poll_interval=0.05) as svc:

        @svc.handler("h")
        async def h(ctx, payload):
            ran.append(payload)
            return payload

        await svc.run_until_idle(timeout=20)
        assert await svc.wait("good", timeout=5) == {"ok": 1}
    assert ran == [{"ok": 1}]
    conn = sqlite3.connect(str(path))
    try:
        status, reason = conn.execute("SELECT status, reason FROM jobs WHERE id = 'bad'").fetchone()
    finally:
        conn.close()
    assert status == "failed"
    assert reason
