"""Writer on the loop's thread: lone writes at once, the rest group-committed, never blocked."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest
from _parts import WAIT, fetch, new_job

from jobqueue.errors import DuplicateJobError
from jobqueue.store import jobs
from jobqueue.store.connection import Database
from jobqueue.store.schema import apply_migrations
from jobqueue.store.writer import Writer


async def _open(path: Path, **opts: object) -> Database:
    db = await Database.open(path, autocheckpoint=False, **opts)  # type: ignore[arg-type]
    await db.run(apply_migrations, str(path))
    return db


@pytest.fixture
async def quiet_db(db_path: Path) -> AsyncIterator[Database]:
    """A database as the runtime opens it: WAL, NORMAL, checkpoints off the commit path."""
    db = await _open(db_path)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def w(quiet_db: Database) -> AsyncIterator[Writer]:
    writer = Writer(quiet_db)
    writer.start()
    try:
        yield writer
    finally:
        await writer.close()


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


async def test_a_lone_write_commits_at_once_on_the_loop(quiet_db: Database, w: Writer) -> None:
    assert quiet_db.inline
    calls = quiet_db.calls
    assert w.now(jobs.INSERT, ([new_job("a")],)) == (True, [None])
    assert (w.batches, w.inline_batches) == (1, 1)
    assert quiet_db.calls == calls  # no hop to the database thread
    assert (await fetch(quiet_db, "a")).id == "a"  # committed: another call sees it


async def test_callers_of_one_loop_pass_share_a_batch(quiet_db: Database, w: Writer) -> None:
    async def submit(i: int) -> list[None]:
        done = w.now(jobs.INSERT, ([new_job(f"j{i}")],))
        if done is not None:
            return done[1]  # type: ignore[no-any-return]
        fut = w.enqueue(jobs.INSERT, [new_job(f"j{i}")])
        return await fut

    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(submit(i) for i in range(20)))
    # The first caller of the pass wrote at once; the other 19 were group-committed.
    assert w.inline_batches == 1
    assert w.batches == 2
    assert await quiet_db.run(_count) == 20


async def test_a_caller_that_never_waits_lets_the_loop_run(w: Writer) -> None:
    for at_once in range(100_000):
        if w.now(jobs.INSERT, ([new_job(f"k{at_once}")],)) is None:
            break
    else:
        raise AssertionError("a caller that never waits was never turned away")
    # Its turn ended after INLINE_TURN seconds of writes: the next write is queued (and
    # its caller waits for it, which lets the loop run everything else).
    assert at_once >= 1
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert w.now(jobs.INSERT, ([new_job("next-turn")],)) is not None


async def test_an_op_that_fails_fails_alone(quiet_db: Database, w: Writer) -> None:
    assert w.now(jobs.INSERT, ([new_job("dup")],)) == (True, [None])
    await asyncio.sleep(0)
    ok, err = w.now(jobs.INSERT, ([new_job("dup")],)) or (None, None)
    assert ok is False
    assert isinstance(err, DuplicateJobError)
    assert await quiet_db.run(_count) == 1


async def test_a_lock_held_elsewhere_sends_the_write_to_the_thread(
    db_path: Path, quiet_db: Database, w: Writer
) -> None:
    with closing(sqlite3.connect(db_path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process's write, in progress
        t0 = time.perf_counter()
        assert w.now(jobs.INSERT, ([new_job("x")],)) is None  # refused at once
        assert time.perf_counter() - t0 < 0.05  # busy_timeout 0 on the loop: no wait
        assert w.lock_waits == 1
        queued = w.enqueue(jobs.INSERT, [new_job("x")])
        await asyncio.sleep(0.05)
        assert not queued.done()  # the database thread waits for the lock
        other.execute("COMMIT")
    async with asyncio.timeout(WAIT):
        assert await queued == [None]
    assert w.inline_batches == 0


async def test_after_another_connection_writes_the_loop_stays_out(
    db_path: Path, quiet_db: Database, w: Writer
) -> None:
    assert w.now(jobs.INSERT, ([new_job("mine")],)) is not None
    with closing(sqlite3.connect(db_path, isolation_level=None)) as other:
        jobs.insert_jobs(other, [new_job("theirs")])
    await asyncio.sleep(0)
    # Another process writes the file: its checkpoints could stall a commit here.
    assert not quiet_db.quiet
    assert w.now(jobs.INSERT, ([new_job("later")],)) is None
    assert quiet_db.shared_seen == 1


async def test_nothing_runs_on_the_loop_while_a_commit_can_sync(tmp_path: Path) -> None:
    full = await _open(tmp_path / "full.db", synchronous="FULL")
    auto = await Database.open(tmp_path / "auto.db")  # automatic checkpoints on
    memory = await Database.open(":memory:")
    try:
        assert not full.inline
        assert not auto.inline
        assert memory.inline
    finally:
        for db in (full, auto, memory):
            await db.close()
