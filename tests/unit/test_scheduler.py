"""Scheduler alone, with a real Writer: claims up to capacity, releases, delays, order, stop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from _parts import WAIT, eventually, fetch, insert, new_job

from jobqueue.limits import Limiter, Limits
from jobqueue.runtime.scheduler import Scheduler
from jobqueue.status import TaskStatus
from jobqueue.store.connection import Database
from jobqueue.store.controls import barrier
from jobqueue.store.jobs import Claimed
from jobqueue.store.writer import Writer

OWNER = "scheduler-test-owner"
S = TaskStatus


class Made:
    def __init__(self, scheduler: Scheduler, started: list[Claimed]) -> None:
        self.scheduler = scheduler
        self.started = started

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.started]


MakeScheduler = Callable[..., Made]


@pytest.fixture
async def make(writer: Writer) -> AsyncIterator[MakeScheduler]:
    made: list[Scheduler] = []

    def build(
        capacity: int = 2,
        handlers: tuple[str, ...] = ("h",),
        poll_interval: float = 60.0,
        limits: dict[str, Limits] | None = None,
    ) -> Made:
        started: list[Claimed] = []
        scheduler = Scheduler(
            writer,
            handlers=lambda: list(handlers),
            concurrency=capacity,
            owner=OWNER,
            start=started.append,
            poll_interval=poll_interval,
            limiter=Limiter(limits or {}),
        )
        writer.planner = scheduler
        scheduler.start()
        made.append(scheduler)
        return Made(scheduler, started)

    yield build
    for scheduler in made:
        scheduler.stop()
    await asyncio.sleep(0)  # the cancelled poll task ends


async def _settle(writer: Writer, rounds: int = 3) -> None:
    """A few committed batches: any claim that was going to happen has happened."""
    for _ in range(rounds):
        await writer.write(barrier)


def _statuses(conn: sqlite3.Connection) -> dict[str, tuple[str, str | None]]:
    rows = conn.execute("SELECT id, status, owner FROM jobs").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


async def test_claims_due_jobs_up_to_capacity(db: Database, writer: Writer, make) -> None:
    m = make(capacity=2)
    m.scheduler.want()  # as a submit does: the claim joins the insert's transaction
    await insert(writer, *(new_job(f"j{i}") for i in range(5)))
    assert m.ids == ["j0", "j1"]  # claimed in the insert's own batch, in submit order
    await _settle(writer)
    assert len(m.started) == 2
    assert m.scheduler.running == 2
    rows = await db.run(_statuses)
    assert rows["j0"] == ("running", OWNER)
    assert rows["j1"] == ("running", OWNER)
    assert {rows[f"j{i}"][0] for i in (2, 3, 4)} == {"pending"}
    started = m.started[0]
    assert (started.handler, started.attempt, started.payload) == ("h", 0, "null")


async def test_release_claims_again(writer: Writer, make) -> None:
    m = make(capacity=2)
    m.scheduler.want()
    await insert(writer, *(new_job(f"j{i}") for i in range(4)))
    assert len(m.started) == 2
    m.scheduler.release("h")
    await eventually(lambda: len(m.started) == 3)
    m.scheduler.release("h")
    m.scheduler.release("h")
    await eventually(lambda: len(m.started) == 4)
    assert m.ids == ["j0", "j1", "j2", "j3"]
    assert m.scheduler.running == 1  # one release per claimed job: j3 is left
    m.scheduler.release("h")
    async with asyncio.timeout(WAIT):
        await m.scheduler.idle.wait()  # nothing left: idle
    assert m.scheduler.running == 0


async def test_delayed_job_is_claimed_when_due(db: Database, writer: Writer, make) -> None:
    m = make(capacity=2)
    m.scheduler.want()
    job = new_job("later", delay=0.15)
    await insert(writer, job)
    await _settle(writer)
    assert m.started == []
    assert not m.scheduler.idle.is_set()  # a delayed job is waiting: not idle
    await eventually(lambda: len(m.started) == 1)
    assert time.time() >= job.run_at
    assert (await fetch(db, "later")).status is S.RUNNING


async def test_priority_order(writer: Writer, make) -> None:
    m = make(capacity=4)
    await insert(
        writer,
        new_job("low", priority=0),
        new_job("high", priority=5),
        new_job("mid", priority=1),
        new_job("low2", priority=0),
    )
    m.scheduler.want()
    await eventually(lambda: len(m.started) == 4)
    assert m.ids == ["high", "mid", "low", "low2"]


async def test_priority_order_one_slot(writer: Writer, make) -> None:
    m = make(capacity=1)
    await insert(
        writer, new_job("a", priority=0), new_job("b", priority=2), new_job("c", priority=1)
    )
    m.scheduler.want()
    for n in (1, 2, 3):
        await eventually(lambda n=n: len(m.started) == n)
        m.scheduler.release("h")
    assert m.ids == ["b", "c", "a"]


async def test_only_this_processs_handlers(db: Database, writer: Writer, make) -> None:
    m = make(capacity=4, handlers=("h",))
    m.scheduler.want()
    await insert(writer, new_job("mine", "h"), new_job("theirs", "other"))
    await _settle(writer)
    assert m.ids == ["mine"]
    assert (await fetch(db, "theirs")).status is S.PENDING


async def test_per_handler_concurrency_limit(writer: Writer, make) -> None:
    m = make(capacity=4, limits={"h": Limits(concurrency=1)})
    m.scheduler.want()
    await insert(writer, *(new_job(f"j{i}") for i in range(3)))
    await _settle(writer)
    assert m.ids == ["j0"]
    m.scheduler.release("h")
    await eventually(lambda: len(m.started) == 2)


async def test_poll_finds_jobs_nobody_announced(writer: Writer, make) -> None:
    m = make(capacity=2, poll_interval=0.03)
    await _settle(writer)
    await insert(writer, new_job("quiet"))  # as another process would: no want()
    await eventually(lambda: m.ids == ["quiet"])


async def test_rolled_back_claim_gives_slots_back(writer: Writer, make) -> None:
    m = make(capacity=2)
    await _settle(writer)  # the start's claim found nothing; the scheduler wants nothing now
    await insert(writer, new_job("j"))  # stored, not claimed

    def boom(conn: sqlite3.Connection) -> None:
        # As a full disk or an I/O error does: SQLite itself ends the transaction.
        conn.execute("ROLLBACK")
        raise sqlite3.OperationalError("roll back")

    m.scheduler.want()
    with pytest.raises(sqlite3.OperationalError, match="roll back"):
        await writer.write(boom)  # the claim was in this batch: rolled back with it
    assert m.started == []
    assert m.scheduler.running == 0  # both reserved slots given back
    m.scheduler.want()
    await eventually(lambda: m.ids == ["j"])
    assert m.scheduler.running == 1


async def test_stop(writer: Writer, make) -> None:
    m = make(capacity=2, poll_interval=0.02)
    await _settle(writer)
    m.scheduler.stop()
    assert m.scheduler.closing
    assert m.scheduler.plan_claim() is None
    m.scheduler.want()
    await insert(writer, new_job("after-stop"))
    await asyncio.sleep(0.08)  # several poll intervals
    await _settle(writer)
    assert m.started == []


async def test_no_handlers_no_claim(writer: Writer, make) -> None:
    m: Any = make(capacity=2, handlers=())
    await insert(writer, new_job("j"))
    m.scheduler.want()
    await _settle(writer)
    assert m.started == []
    assert m.scheduler.running == 0
