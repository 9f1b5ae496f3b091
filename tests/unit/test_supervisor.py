"""Supervisor alone, over a real database and writer: heartbeats, control requests, sweeps."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from _parts import WAIT, eventually, fetch, insert, new_job

from jobqueue.runtime.owner import here, owner_identity
from jobqueue.runtime.supervisor import MAX_HEARTBEAT_INTERVAL, Supervisor, recover_on_open
from jobqueue.status import TaskStatus
from jobqueue.store.connection import Database
from jobqueue.store.controls import request_control
from jobqueue.store.recovery import SweepResult, owner_alive
from jobqueue.store.writer import Writer

S = TaskStatus


def _dead_owner() -> str:
    """An identity of this PID namespace and boot whose pid cannot exist (above pid_max)."""
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except OSError:
        pid_max = 4_194_304
    me = here()
    owner = f"{pid_max + 1}:{me.start}:{me.pidns}:{me.boot}:1"
    assert owner_alive(owner) is not True
    return owner


def _heartbeats(conn: sqlite3.Connection) -> dict[str, float]:
    return dict(conn.execute("SELECT owner, heartbeat FROM owners").fetchall())


class Made:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.applied: list[tuple[str, str]] = []
        self.swept: list[SweepResult] = []


MakeSupervisor = Callable[..., Made]


@pytest.fixture
async def make(db: Database, writer: Writer) -> AsyncIterator[MakeSupervisor]:
    made: list[Made] = []

    def build(
        owner: str | None = None, poll_interval: float = 0.02, heartbeat: float | None = None
    ) -> Made:
        m: Made
        supervisor = Supervisor(
            db,
            writer,
            owner=owner or owner_identity(),
            boot_at=time.time(),
            poll_interval=poll_interval,
            apply=lambda job_id, kind: m.applied.append((job_id, kind)),
            swept=lambda result: m.swept.append(result),
        )
        m = Made(supervisor)
        if heartbeat is not None:
            # Not a constructor argument: at least 1 s otherwise (see the report).
            supervisor.heartbeat_interval = heartbeat
        made.append(m)
        return m

    yield build
    for m in made:
        await m.supervisor.close()


def test_intervals_follow_poll_interval(make) -> None:
    assert make(poll_interval=0.02).supervisor.heartbeat_interval == 1.0
    assert make(poll_interval=0.5).supervisor.heartbeat_interval == 2.0
    assert make(poll_interval=10).supervisor.heartbeat_interval == MAX_HEARTBEAT_INTERVAL
    assert make(poll_interval=0.5).supervisor.stale_after == 60.0


async def test_beat_writes_the_heartbeat(db: Database, make) -> None:
    m = make()
    owner = m.supervisor._owner
    before = time.time()
    await m.supervisor.beat()
    first = (await db.run(_heartbeats))[owner]
    assert first >= before
    await asyncio.sleep(0.01)
    await m.supervisor.beat()
    assert (await db.run(_heartbeats))[owner] > first


async def test_loop_writes_heartbeats_and_close_removes_the_row(db: Database, make) -> None:
    m = make(heartbeat=0.02)
    owner = m.supervisor._owner
    m.supervisor.start()
    await eventually(lambda: _has(db, owner))
    first = (await db.run(_heartbeats))[owner]

    async def newer() -> bool:
        return (await db.run(_heartbeats))[owner] > first

    await eventually(newer)
    async with asyncio.timeout(WAIT):
        await m.supervisor.close()
    assert owner not in await db.run(_heartbeats)


async def _has(db: Database, owner: str) -> bool:
    return owner in await db.run(_heartbeats)


async def test_control_request_is_applied_once(db: Database, writer: Writer, make) -> None:
    m = make(poll_interval=0.02)
    owner = m.supervisor._owner
    other = owner_identity()  # another live service of this process
    await insert(
        writer,
        new_job("mine", status=S.RUNNING, owner=owner),
        new_job("theirs", status=S.RUNNING, owner=other),
        new_job("idle"),
    )
    assert await writer.write(request_control, "mine", "pause") == owner
    assert await writer.write(request_control, "theirs", "stop") == other
    assert await writer.write(request_control, "idle", "stop") is None  # not running
    m.supervisor.start()
    await eventually(lambda: m.applied == [("mine", "pause")])
    await asyncio.sleep(0.1)  # five more polls: the request is still in the row
    assert m.applied == [("mine", "pause")]
    assert (await fetch(db, "mine")).control == "pause"
    # a stronger request on the same job is applied too, once
    await writer.write(request_control, "mine", "cancel")
    await eventually(lambda: len(m.applied) == 2)
    await asyncio.sleep(0.06)
    assert m.applied == [("mine", "pause"), ("mine", "cancel")]


async def test_dead_owners_running_job_is_swept_back_to_pending(
    db: Database, writer: Writer, make
) -> None:
    dead = _dead_owner()
    await insert(
        writer,
        new_job("orphan", status=S.RUNNING, owner=dead, max_retries=1),
        new_job("spent", status=S.RUNNING, owner=dead, max_retries=0),
        new_job("asked", status=S.RUNNING, owner=dead, max_retries=3),
    )
    await writer.write(request_control, "asked", "cancel")
    m = make(poll_interval=0.02, heartbeat=0.02)
    m.supervisor.start()
    await eventually(lambda: len(m.swept) == 1)
    (result,) = m.swept
    assert (result.requeued, result.crashed, result.controlled, result.owners) == (1, 1, 1, 1)
    orphan = await fetch(db, "orphan")
    assert (orphan.status, orphan.reason, orphan.attempt, orphan.owner) == (
        S.PENDING,
        "crashed",
        1,
        None,
    )
    spent = await fetch(db, "spent")
    assert (spent.status, spent.reason) == (S.FAILED, "crashed")
    asked = await fetch(db, "asked")
    assert (asked.status, asked.reason) == (S.CANCELLED, "cancelled")
    await asyncio.sleep(0.1)  # later sweeps find nothing more
    assert len(m.swept) == 1
    assert m.applied == []  # a dead owner's request is the sweep's, not ours


async def test_live_owners_jobs_are_left_alone(db: Database, writer: Writer, make) -> None:
    alive = owner_identity()  # this process: alive by /proc
    await insert(writer, new_job("busy", status=S.RUNNING, owner=alive, max_retries=1))
    m = make(poll_interval=0.02, heartbeat=0.02)
    m.supervisor.start()
    await eventually(lambda: _has(db, m.supervisor._owner))
    await asyncio.sleep(0.1)
    assert m.swept == []
    assert (await fetch(db, "busy")).status is S.RUNNING


async def test_recover_on_open(db: Database, writer: Writer) -> None:
    dead = _dead_owner()
    await insert(writer, new_job("orphan", status=S.RUNNING, owner=dead, max_retries=1))
    me = owner_identity()
    result = await db.run(recover_on_open, me, time.time())
    assert (result.requeued, result.owners) == (1, 1)
    assert (await fetch(db, "orphan")).status is S.PENDING
    assert me in await db.run(_heartbeats)  # the first heartbeat, in the same transaction
