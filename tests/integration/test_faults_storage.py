"""Storage faults: disk full, file size limit, I/O errors, read-only files and directories.

Every test uses a real file on a real filesystem: a 1 MiB tmpfs (mounted by
the test as root), a real ``RLIMIT_FSIZE`` in a child process, real file
permissions. Each checks the error type and that what was committed before
the fault is still there, byte for byte, after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _fault_util import integrity, python, remount, report, rows, sha, tmpfs

from jobqueue import JobQueueService, TaskStatus
from jobqueue.errors import StoreError, StoreFullError, StoreReadOnlyError

PAD = "x" * 4000


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted at teardown whatever happened."""
    with tmpfs(tmp_path / "mnt", "1m") as where:
        yield where


# -- disk full ----------------------------------------------------------------------------


async def test_disk_full_gives_typed_error_and_keeps_committed_jobs(tiny_fs: Path) -> None:
    path = tiny_fs / "jobs.db"
    committed: dict[str, str] = {}
    async with JobQueueService(str(path), poll_interval=0.05) as svc:
        svc.declare("later")  # stored but not run yet: only submits write
        refused = None
        for i in range(1000):
            try:
                job = await svc.submit("later", {"i": i, "pad": PAD}, job_id=f"j{i}")
            except StoreFullError as exc:
                refused, error = f"j{i}", exc
                break
            committed[job.id] = json.dumps({"i": i, "pad": PAD}, separators=(",", ":"))
        assert refused is not None, "the 1 MiB filesystem never filled"
        assert error.path == str(path)
        assert str(path) in str(error)
        assert "rolled back" in str(error)
        assert len(committed) >= 5, "the tmpfs filled before anything was stored"
        report("disk_full", committed_before_full=len(committed), payload_bytes=len(PAD))
        # Still full: a batch is refused whole; reads keep working.
        with pytest.raises(StoreFullError):
            await svc.submit_many("later", [{"pad": PAD}] * 5)
        assert {j.id for j in await svc.list(limit=10_000)} == set(committed)

        remount(tiny_fs, "size=16m")  # space returns
        assert integrity(path) == ["ok"]
        stored = rows(path)
        assert refused not in stored
        assert {k: v[1] for k, v in stored.items()} == committed  # byte for byte
        await svc.submit("later", {"after": True}, job_id="after")

        # The service keeps working: run everything that was stored.
        @svc.handler("later")
        async def later(ctx, payload):
            return payload.get("i")

        await svc.run_until_idle(timeout=30)
        assert await svc.wait("j0", timeout=5) == 0
    final = rows(path)
    assert set(final) == {*committed, "after"}
    assert {s for s, _ in final.values()} == {TaskStatus.COMPLETED.value}
    assert integrity(path) == ["ok"]


def _fill(where: Path) -> Path:
    """Write a ballast file until the filesystem is full; returns it."""
    ballast = where / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (1 << 16, 1 << 12):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return ballast


async def test_disk_full_while_jobs_run_loses_no_outcome(tiny_fs: Path) -> None:
    path = tiny_fs / "jobs.db"
    release = asyncio.Event()
    all_started = asyncio.Event()
    started = 0
    async with JobQueueService(str(path), poll_interval=0.05, concurrency=4) as svc:

        @svc.handler("big")
        async def big(ctx, payload):
            nonlocal started
            started += 1
            if started == 4:
                all_started.set()
            await release.wait()
            return "r" * 100_000  # the outcome needs fresh WAL pages

        ids = [(await svc.submit("big", {"i": i})).id for i in range(4)]
        await asyncio.wait_for(all_started.wait(), 10)
        ballast = _fill(tiny_fs)
        release.set()
        await asyncio.sleep(0.5)  # the outcomes' commits fail now
        ballast.unlink()  # space returns
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            if all([(await svc.get(i)).done for i in ids]):
                break
            await asyncio.sleep(0.1)
        statuses = {i: (await svc.get(i)).status for i in ids}
    assert integrity(path) == ["ok"]
    report(
        "disk_full_outcomes", completed=sum(s is TaskStatus.COMPLETED for s in statuses.values())
    )
    assert set(statuses.values()) == {TaskStatus.COMPLETED}, statuses


# -- file size limit --------------------------------------------------------------------------


def test_file_size_limit_gives_typed_error_and_keeps_committed_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    done = python("_fault_fsize.py", str(path), str(64 * 1024))
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    error = out["error"]
    assert error is not None, "the size cap was never reached"
    assert error["type"] == "StoreFullError", error
    assert error["path"] == str(path)
    assert "RLIMIT_FSIZE" in error["message"]
    assert out["still_capped"] == "StoreFullError"
    stored = rows(path)
    assert integrity(path) == ["ok"]
    assert error["job_id"] not in stored
    assert set(stored) == {*out["committed"], out["after"]}  # nothing lost, nothing half-kept
    report("file_size_limit", committed_before_limit=len(out["committed"]), headroom_kib=64)


# -- I/O errors ---------------------------------------------------------------------------------


def _fds_of(target: Path) -> list[int]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == str(target):
                found.append(int(fd))
    return found


@contextlib.contextmanager
def _unwritable_wal(path: Path) -> Iterator[int]:
    """Every write to the open ``-wal`` fails with EBADF (SQLITE_IOERR_WRITE) until exit.

    The process's descriptors of the WAL are pointed at a read-only descriptor of
    the same file and restored afterwards. SQLite holds no POSIX lock on the WAL
    file itself, so no lock is lost by the swap.
    """
    wal = Path(str(path) + "-wal")
    fds = _fds_of(wal)
    if not fds:
        pytest.skip("no open -wal descriptor found under /proc/self/fd")
    saved = {fd: os.dup(fd) for fd in fds}
    ro = os.open(wal, os.O_RDONLY)
    try:
        for fd in fds:
            os.dup2(ro, fd)
        yield len(fds)
    finally:
        for fd, keep in saved.items():
            os.dup2(keep, fd)
            os.close(keep)
        os.close(ro)


async def test_io_error_gives_typed_error_and_database_stays_intact(make_service, db_path) -> None:
    svc = await make_service(poll_interval=0.05)
    svc.declare("h")
    for i in range(10):
        await svc.submit("h", {"i": i}, job_id=f"a{i}")
    before = rows(db_path)
    with _unwritable_wal(db_path):
        for i in range(3):
            with pytest.raises(StoreError) as ei:
                await svc.submit("h", {"i": i}, job_id=f"b{i}")
            assert "disk I/O error" in str(ei.value)
            assert ei.value.path == str(db_path)
        assert len(await svc.list(limit=100)) == 10  # reads still work
    await svc.submit("h", {}, job_id="after")
    after = rows(db_path)
    assert integrity(db_path) == ["ok"]
    assert {k: v for k, v in after.items() if k != "after"} == before
    assert "after" in after


# -- read-only files and directories -------------------------------------------------------------


def _make_db(directory: Path) -> Path:
    path = directory / "jobs.db"

    async def make() -> None:
        async with JobQueueService(str(path), poll_interval=60) as svc:
            svc.declare("h")
            await svc.submit("h", {}, job_id="keep")

    asyncio.run(make())
    return path


def _open_as_user(path: Path) -> dict[str, object]:
    """Open in a child that obeys permission bits even as root (see _fault_open.py)."""
    done = python("_fault_open.py", str(path))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "case",
    [
        "read-only file",
        "read-only directory, existing file",
        "read-only directory, new file",
        "unreadable file",
    ],
)
def test_unwritable_database_gives_typed_error_at_open(tmp_path: Path, case: str) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    path = directory / "jobs.db"
    if case != "read-only directory, new file":
        _make_db(directory)
    if case == "read-only file":
        path.chmod(0o444)
    elif case == "unreadable file":
        path.chmod(0o000)
    else:
        directory.chmod(0o555)
    before = sha(path) if path.exists() and case != "unreadable file" else None
    try:
        out = _open_as_user(path)
    finally:
        directory.chmod(0o755)
        if path.exists():
            path.chmod(0o644)
    assert out["type"] == "StoreReadOnlyError", out
    assert out["path"] == str(path)
    assert str(path) in str(out["message"])
    if before is not None:
        assert sha(path) == before
        assert list(rows(path)) == ["keep"]


def test_read_only_filesystem_gives_typed_error_at_open(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "4m") as where:
        path = _make_db(where)
        before = sha(path)
        remount(where, "ro")
        out = _open_as_user(path)
        assert sha(path) == before
        assert out["type"] == StoreReadOnlyError.__name__, out
        assert out["path"] == str(path)
