"""The SQLite store: migrations, concurrent first open, damaged files, payload checks,
pragmas and group commit. Every test uses a real database file."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import sqlite3
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path

import pytest

from jobqueue import JobQueueService, TaskStatus
from jobqueue.errors import PayloadError, PayloadTooLargeError, StoreCorruptedError
from jobqueue.store.schema import Migration, latest_version

ROOT = Path(__file__).resolve().parents[2]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _user_version(path: Path) -> int:
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


# -- migrations ---------------------------------------------------------------------


def _build_v1(path: Path, rows: list[tuple[str, str]]) -> None:
    sql = resources.files("jobqueue.store").joinpath("migrations/001_jobs.sql").read_text("utf-8")
    conn = sqlite3.connect(str(path))
    try:
        for stmt in Migration(1, "001_jobs.sql", sql).statements():
            conn.execute(stmt)
        now = time.time()
        for job_id, status in rows:
            conn.execute(
                "INSERT INTO jobs (id, handler, payload, status, created_at, updated_at, run_at) "
                "VALUES (?, 'h', '{}', ?, ?, ?, ?)",
                (job_id, status, now, now, now + 3600),
            )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    finally:
        conn.close()


async def test_uppercase_statuses_are_lowercased(db_path: Path) -> None:
    _build_v1(db_path, [("r", "RUNNING"), ("c", "COMPLETED"), ("p", "PENDING"), ("x", "failed")])
    assert _user_version(db_path) == 1
    async with JobQueueService(str(db_path), poll_interval=60) as svc:
        got = {j.id: j.status for j in await svc.list(limit=10)}
        assert (await svc.get("c")).status is TaskStatus.COMPLETED
    assert got["c"] is TaskStatus.COMPLETED
    assert got["p"] is TaskStatus.PENDING
    assert got["x"] is TaskStatus.FAILED
    # "r" was running under no live owner: crash recovery may move it on, but its
    # stored value is lowercase and valid either way.
    assert got["r"] in set(TaskStatus)
    conn = sqlite3.connect(str(db_path))
    try:
        raw = dict(conn.execute("SELECT id, status FROM jobs").fetchall())
    finally:
        conn.close()
    assert all(v == v.lower() for v in raw.values()), raw
    assert raw["c"] == "completed"
    assert raw["p"] == "pending"
    assert _user_version(db_path) == latest_version() >= 2


# -- concurrent first open ------------------------------------------------------------


async def test_open_waits_for_a_writer_on_a_new_file(db_path: Path) -> None:
    """Deterministic form of the race: another connection holds the write lock briefly."""
    other = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, other.rollback)
    release.start()
    try:
        async with JobQueueService(str(db_path), busy_timeout=5, poll_interval=60) as svc:
            assert await svc.list() == []
    finally:
        release.join()
        other.close()
    assert _user_version(db_path) == latest_version()


@pytest.mark.slow
def test_concurrent_first_open_by_processes(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    n = 4
    start_at = time.time() + 2.0  # after every interpreter has imported jobqueue
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ROOT / "tests" / "procs" / "_open_worker.py"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "procs" / "_open_worker.py"),
                str(db),
                str(start_at),
                f"w{i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for i in range(n)
    ]
    outs = [p.communicate(timeout=40) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
        assert out.decode().startswith("ok")
    assert _user_version(db) == latest_version()
    conn = sqlite3.connect(str(db))
    try:
        ids = sorted(r[0] for r in conn.execute("SELECT id FROM jobs"))
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    finally:
        conn.close()
    assert ids == [f"w{i}" for i in range(n)]
    assert tables.count("jobs") == 1


# -- damaged and foreign files ----------------------------------------------------------


def _random_file(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _text_file(path: Path) -> None:
    path.write_bytes(b"id,name\n1,not a database\n" * 100)


def _foreign_db(path: Path) -> None:
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.commit()
    conn.close()


def _header_then_garbage(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(4096 - 16))


def _wal_header_then_garbage(path: Path) -> None:
    """A header whose read version byte says WAL: opening it makes -wal and -shm files."""
    garbage = bytearray(os.urandom(4096 - 16))
    garbage[2:4] = b"\x02\x02"  # bytes 18 and 19 of the file: write and read versions
    path.write_bytes(b"SQLite format 3\x00" + bytes(garbage))


@pytest.mark.parametrize(
    "damage",
    [
        _random_file,
        _text_file,
        _foreign_db,
        _header_then_garbage,
        _wal_header_then_garbage,
    ],
    ids=["random", "text", "foreign-db", "header-then-garbage", "wal-header-then-garbage"],
)
async def test_damaged_file_is_refused_untouched(db_path: Path, damage) -> None:
    damage(db_path)
    before = _sha(db_path)
    listing = sorted(os.listdir(db_path.parent))
    svc = JobQueueService(str(db_path))
    with pytest.raises(StoreCorruptedError) as ei:
        async with svc:
            pass
    assert str(db_path) in str(ei.value)
    assert ei.value.path == str(db_path)
    assert _sha(db_path) == before
    assert sorted(os.listdir(db_path.parent)) == listing  # no -wal/-shm left behind
    # the service is closed, not half-open
    with pytest.raises(RuntimeError):
        svc.create_queue("x")


def _truncate_half(path: Path) -> int:
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size // 2)
    return size


async def test_truncated_jobqueue_db(db_path: Path) -> None:
    async with JobQueueService(str(db_path), poll_interval=60) as svc:

        @svc.handler("noop")
        async def noop(ctx, payload):
            return None

        await svc.submit_many("noop", [{"pad": "x" * 500}] * 200, delay=3600)
    size = _truncate_half(db_path)
    assert size > 16384
    before = _sha(db_path)
    with pytest.raises(StoreCorruptedError) as ei:
        async with JobQueueService(str(db_path)):
            pass
    assert str(db_path) in str(ei.value)
    assert _sha(db_path) == before


# -- payloads -----------------------------------------------------------------------------


class _Obj:
    pass


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"x": math.nan}, PayloadError),
        ({"x": math.inf}, PayloadError),
        ([-math.inf], PayloadError),
        ({"s": {1, 2}}, PayloadError),
        (_Obj(), PayloadError),
        (b"bytes", PayloadError),
        ({"big": "x" * 300}, PayloadTooLargeError),
    ],
    ids=["nan", "inf", "-inf", "set", "object", "bytes", "too-large"],
)
async def test_bad_payload_rejected_and_nothing_stored(make_service, payload, error) -> None:
    svc = await make_service(max_payload_bytes=256)

    @svc.handler("h")
    async def h(ctx, p):
        return None

    with pytest.raises(error) as ei:
        await svc.submit("h", payload)
    assert "payload" in str(ei.value)
    with pytest.raises(error):
        await svc.submit_many("h", [{"ok": 1}, payload])
    assert await svc.list() == []
    # a payload just under the cap is fine
    await svc.submit("h", {"big": "x" * 200}, delay=3600)
    assert len(await svc.list()) == 1


async def test_payload_too_large_reports_sizes(make_service) -> None:
    svc = await make_service(max_payload_bytes=100)

    @svc.handler("h")
    async def h(ctx, p):
        return None

    with pytest.raises(PayloadTooLargeError) as ei:
        await svc.submit("h", "y" * 200)
    assert ei.value.limit == 100
    assert ei.value.size > 100


# -- pragmas -------------------------------------------------------------------------------


@pytest.mark.parametrize(("sync", "code"), [("NORMAL", 1), ("FULL", 2)])
async def test_wal_and_synchronous(make_service, db_path: Path, sync: str, code: int) -> None:
    svc = await make_service(synchronous=sync)
    conn = sqlite3.connect(str(db_path))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()

    def pragmas(c):
        return (
            c.execute("PRAGMA synchronous").fetchone()[0],
            c.execute("PRAGMA busy_timeout").fetchone()[0],
            c.execute("PRAGMA foreign_keys").fetchone()[0],
        )

    synchronous, busy, fk = await svc.runtime.db.run(pragmas)
    assert synchronous == code
    assert busy == 5000
    assert fk == 1


# -- group commit -------------------------------------------------------------------------


async def test_group_commit(make_service, db_path: Path) -> None:
    svc = await make_service(poll_interval=60)

    @svc.handler("later")
    async def later(ctx, p):
        return None

    batches0 = svc.runtime.writer.batches
    jobs_ = await asyncio.gather(
        *(svc.submit("later", {"i": i}, delay=3600, job_id=f"g{i}") for i in range(200))
    )
    batches = svc.runtime.writer.batches - batches0
    assert len(jobs_) == 200
    # committed the moment gather returns: visible to an independent connection
    conn = sqlite3.connect(str(db_path))
    try:
        n = conn.execute("SELECT count(*) FROM jobs WHERE id LIKE 'g%'").fetchone()[0]
    finally:
        conn.close()
    assert n == 200
    assert 1 <= batches <= 20, batches


# -- bulk outcomes ------------------------------------------------------------------------


def _running_rows(path: Path, n: int) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    now = time.time()
    conn.executemany(
        "INSERT INTO jobs (id, handler, status, payload, run_at, created_at, updated_at, "
        "owner) VALUES (?, 'h', 'running', 'null', ?, ?, ?, 'me')",
        [(f"r{i}", now, now, now) for i in range(n)],
    )
    return conn


@pytest.mark.parametrize("changed", [(), (3,), (0, 7), tuple(range(8))], ids=str)
async def test_bulk_outcomes_skip_jobs_changed_by_someone_else(
    make_service, db_path: Path, changed: tuple[int, ...]
) -> None:
    """One prepared UPDATE for the batch; if any job was changed first (cancelled by
    another process, swept), nothing of that attempt is kept and the per-row path
    stores exactly the others, plus a retry in the same batch."""
    from jobqueue.store.outcomes import Outcome, finish_many

    svc = await make_service()
    await svc.close()
    conn = _running_rows(db_path, 9)
    try:
        for i in changed:
            conn.execute("UPDATE jobs SET status = 'cancelled' WHERE id = ?", (f"r{i}",))
        now = time.time()
        done = Outcome(TaskStatus.COMPLETED, result='{"ok":1}')
        items = [(f"r{i}", done, now) for i in range(8)]
        conn.execute("BEGIN IMMEDIATE")
        result = finish_many(conn, items)
        conn.execute("COMMIT")
        assert result == [i not in changed for i in range(8)]
        rows = dict(conn.execute("SELECT id, status FROM jobs WHERE id != 'r8'").fetchall())
        assert rows == {f"r{i}": "cancelled" if i in changed else "completed" for i in range(8)}
        retry = Outcome(TaskStatus.PENDING, error="again", run_at=now + 60)
        conn.execute("BEGIN IMMEDIATE")
        assert finish_many(conn, [("r8", retry, now), ("r0", done, now)]) == [True, False]
        conn.execute("COMMIT")
        assert conn.execute("SELECT status, attempt FROM jobs WHERE id = 'r8'").fetchone() == (
            "pending",
            1,
        )
    finally:
        conn.close()
