"""Writer alone over a real Database: group commit, per-op errors, rollback, close."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import pytest
from _parts import WAIT, fetch, insert, new_job

from jobqueue.errors import DuplicateJobError, JobNotFoundError, ServiceClosedError, StoreError
from jobqueue.store import jobs
from jobqueue.store.connection import Database
from jobqueue.store.writer import Writer


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def _slow(conn: sqlite3.Connection, seconds: float) -> str:
    time.sleep(seconds)  # on the database thread: holds this batch in flight
    return "slow"


def _boom(conn: sqlite3.Connection) -> None:
    raise ValueError("not a store error")


def _in_transaction(conn: sqlite3.Connection) -> bool:
    return conn.in_transaction


async def test_writes_of_one_loop_turn_commit_in_one_batch(db: Database, writer: Writer) -> None:
    assert writer.batches == 0
    futs = [writer.enqueue(jobs.insert_jobs, [new_job(f"j{i}")]) for i in range(5)]
    futs.append(writer.enqueue(_in_transaction))
    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*futs)
    assert results == [[None]] * 5 + [True]  # each op ran inside the batch's transaction
    assert writer.batches == 1
    assert writer.ops_written == 6
    assert await db.run(_count) == 5
    # the next turn's write is a batch of its own
    await insert(writer, new_job("later"))
    assert writer.batches == 2


async def test_batches_grow_while_one_is_in_flight(writer: Writer) -> None:
    slow = writer.enqueue(_slow, 0.05)
    await asyncio.sleep(0.01)  # the slow batch is on the database thread now
    rest = [writer.enqueue(jobs.insert_jobs, [new_job(f"j{i}")]) for i in range(10)]
    async with asyncio.timeout(WAIT):
        assert await slow == "slow"
        await asyncio.gather(*rest)
    assert writer.batches == 2  # ten writes queued meanwhile: one more batch, not ten


async def test_failing_op_raises_to_its_own_caller_only(db: Database, writer: Writer) -> None:
    await insert(writer, new_job("taken"))
    ok_before = writer.enqueue(jobs.insert_jobs, [new_job("a")])
    dup = writer.enqueue(jobs.insert_jobs, [new_job("taken")])
    missing = writer.enqueue(jobs.fetch, "no-such-job")
    ok_after = writer.enqueue(jobs.insert_jobs, [new_job("b")])
    async with asyncio.timeout(WAIT):
        assert await ok_before == [None]
        with pytest.raises(DuplicateJobError, match="taken"):
            await dup
        with pytest.raises(JobNotFoundError):
            await missing
        assert await ok_after == [None]
    assert writer.batches == 2
    assert {(await fetch(db, j)).id for j in ("a", "b", "taken")} == {"a", "b", "taken"}


async def test_an_unexpected_error_fails_only_its_own_op(db: Database, writer: Writer) -> None:
    first = writer.enqueue(jobs.insert_jobs, [new_job("a")])
    bad = writer.enqueue(_boom)
    half = writer.enqueue(_half_then_boom)
    last = writer.enqueue(jobs.insert_jobs, [new_job("b")])
    async with asyncio.timeout(WAIT):
        assert await first == [None]
        for fut in (bad, half):
            with pytest.raises(StoreError, match="undone alone") as info:
                await fut
            assert isinstance(info.value.__cause__, (ValueError, sqlite3.IntegrityError))
        assert await last == [None]
    assert await db.run(_count) == 2  # a and b; the half-done op left nothing behind
    assert writer.batches == 1


def _half_then_boom(conn: sqlite3.Connection) -> None:
    """Writes one row, then fails: its row must be undone with it, and only it."""
    jobs.insert_jobs(conn, [new_job("half")])
    conn.execute("UPDATE jobs SET status = NULL WHERE id = 'half'")  # NOT NULL: fails


async def test_then_calls_back_after_commit(db: Database, writer: Writer) -> None:
    got: list[tuple[bool, Any]] = []
    done = asyncio.Event()

    def callback(ok: bool, value: Any) -> None:
        got.append((ok, value))
        if len(got) == 2:
            done.set()

    writer.then(jobs.insert_jobs, ([new_job("x")],), callback)
    writer.then(jobs.insert_jobs, ([new_job("x")],), callback)
    async with asyncio.timeout(WAIT):
        await done.wait()
    assert got[0] == (True, [None])
    assert got[1][0] is False
    assert isinstance(got[1][1], DuplicateJobError)
    assert (await fetch(db, "x")).id == "x"


async def test_cancelled_write_before_its_batch_is_dropped(db: Database, writer: Writer) -> None:
    slow = writer.enqueue(_slow, 0.05)
    await asyncio.sleep(0.01)  # a batch is in flight; the next write waits for it
    task = asyncio.create_task(writer.write(jobs.insert_jobs, [new_job("gone")]))
    await asyncio.sleep(0)  # queued
    task.cancel()
    async with asyncio.timeout(WAIT):
        await slow
        await insert(writer, new_job("kept"))
    assert task.cancelled()
    with pytest.raises(JobNotFoundError):
        await fetch(db, "gone")
    assert (await fetch(db, "kept")).id == "kept"


async def test_close_flushes_queued_writes(db: Database) -> None:
    writer = Writer(db)
    writer.start()
    futs = [writer.enqueue(jobs.insert_jobs, [new_job(f"j{i}")]) for i in range(3)]
    async with asyncio.timeout(WAIT):
        await writer.close()
    assert all(f.done() and f.result() == [None] for f in futs)
    assert await db.run(_count) == 3
    with pytest.raises(ServiceClosedError):
        writer.enqueue(jobs.insert_jobs, [new_job("late")])
    with pytest.raises(ServiceClosedError):
        await writer.write(jobs.insert_jobs, [new_job("late")])
    with pytest.raises(ServiceClosedError):
        writer.then(jobs.insert_jobs, ([new_job("late")],), lambda ok, v: None)
    await writer.close()  # twice: fine


async def test_unstarted_writer_refuses_and_closes(db: Database) -> None:
    writer = Writer(db)
    with pytest.raises(ServiceClosedError):
        writer.enqueue(jobs.insert_jobs, [new_job("x")])
    await writer.close()


class _CountingPlanner:
    """A ClaimPlanner that reads, at the end of each batch, what the batch inserted."""

    def __init__(self) -> None:
        self.want = True
        self.results: list[int] = []
        self.failures: list[BaseException] = []

    def plan_claim(self, most: int | None = None) -> Any:
        if not self.want:
            return None
        self.want = False
        return _count

    def claimed(self, result: Any) -> None:
        self.results.append(result)

    def claim_failed(self, exc: BaseException) -> None:
        self.failures.append(exc)


async def test_planner_claim_ends_the_same_transaction(db: Database) -> None:
    planner = _CountingPlanner()
    writer = Writer(db)
    writer.planner = planner
    writer.start()
    try:
        async with asyncio.timeout(WAIT):
            await writer.write(jobs.insert_jobs, [new_job("a"), new_job("b")])
            planner.want = True
            await writer.write(jobs.insert_jobs, [new_job("c")])
            planner.want = True
            with pytest.raises(StoreError, match="not a store error"):
                await writer.write(_boom)  # fails alone: the claim still runs
    finally:
        await writer.close()
    # each claim saw the inserts of its own batch, before the commit
    assert planner.results == [2, 3, 3]
    assert planner.failures == []


async def test_a_bad_op_in_a_bulk_run_fails_alone(db: Database, writer: Writer) -> None:
    from jobqueue.store import eventlog

    await insert(writer, new_job("j"))
    results: list[tuple[bool, Any]] = []
    done = asyncio.Event()

    def record(ok: bool, value: Any) -> None:
        results.append((ok, value))
        if len(results) == 5:
            done.set()

    for seq, event_type in enumerate(["token", "token", None, "token", "token"], start=1):
        writer.then(eventlog.APPEND, ("j", seq, event_type, "{}", 1.0), record)
    async with asyncio.timeout(WAIT):
        await done.wait()
    assert [ok for ok, _ in results] == [True, True, False, True, True]
    assert isinstance(results[2][1], StoreError)
    rows = await db.run(eventlog.read_after, "j", 0, 10)
    assert [r[0] for r in rows] == [1, 2, 4, 5]
