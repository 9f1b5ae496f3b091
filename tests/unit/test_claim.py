"""The claim statement alone, on a real file: order across groups, delayed jobs never scanned."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from jobqueue.status import TaskStatus
from jobqueue.store import jobs
from jobqueue.store.claim import ClaimRequest, claim
from jobqueue.store.groups import pending_groups
from jobqueue.store.jobs import NewJob
from jobqueue.store.overview import counts
from jobqueue.store.schema import apply_migrations


@pytest.fixture
def conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(db_path, isolation_level=None)) as c:
        c.execute("PRAGMA journal_mode = WAL")
        apply_migrations(c, str(db_path))
        yield c


def _add(
    conn: sqlite3.Connection,
    job_id: str,
    *,
    at: float,
    priority: int = 0,
    handler: str = "h",
    started: bool = False,
) -> None:
    now = time.time()
    row = NewJob(job_id, handler, "null", TaskStatus.PENDING, now, at, priority)
    conn.execute("BEGIN IMMEDIATE")
    jobs.insert_jobs(conn, [row])
    if started:  # a retry or a workflow back from a durable sleep
        conn.execute("UPDATE jobs SET started_at = ? WHERE id = ?", (now - 5, job_id))
    conn.execute("COMMIT")


def _add_many(conn: sqlite3.Connection, prefix: str, n: int, *, at: float, priority: int) -> None:
    now = time.time()
    rows = [
        NewJob(f"{prefix}{i:06d}", "h", "null", TaskStatus.PENDING, now, at + i * 1e-6, priority)
        for i in range(n)
    ]
    conn.execute("BEGIN IMMEDIATE")
    jobs.insert_jobs(conn, rows)
    conn.execute("COMMIT")


def _claim(
    conn: sqlite3.Connection, limit: int = 10, handlers: tuple[str, ...] = ("h",)
) -> tuple[list[str], float | None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows, next_at = claim(conn, ClaimRequest(list(handlers), limit, "me:1", time.time()))
    finally:
        conn.execute("ROLLBACK")
    return [r.id for r in rows], next_at


def test_claim_order_across_priorities_and_started_groups(conn: sqlite3.Connection) -> None:
    now = time.time()
    _add(conn, "p0-new", at=now - 30)
    _add(conn, "p0-started", at=now - 1, started=True)
    _add(conn, "p0-later", at=now + 60)
    _add(conn, "p5-new", at=now - 2, priority=5)
    _add(conn, "p5-delayed", at=now + 30, priority=5)
    _add(conn, "p-3-new", at=now - 100, priority=-3)
    _add(conn, "p5-started-delayed", at=now + 10, priority=5, started=True)
    _add(conn, "other", at=now - 500, handler="elsewhere")
    assert list(pending_groups(conn)) == [(5, 1), (5, 0), (0, 1), (0, 0), (-3, 0)]
    ids, next_at = _claim(conn)
    assert ids == ["p5-new", "p0-started", "p0-new", "p-3-new"]
    assert next_at == pytest.approx(now + 10)  # the earliest delayed job of any group
    ids, _ = _claim(conn, limit=2)
    assert ids == ["p5-new", "p0-started"]
    ids, next_at = _claim(conn, handlers=("elsewhere",))
    assert ids == ["other"]
    assert next_at is None


def test_no_pending_jobs(conn: sqlite3.Connection) -> None:
    assert list(pending_groups(conn)) == []
    assert _claim(conn) == ([], None)
    got = counts(conn, time.time())
    assert (got.due, got.oldest_due) == (0, None)


def test_due_counts_add_up_over_groups(conn: sqlite3.Connection) -> None:
    now = time.time()
    _add(conn, "a", at=now - 5, priority=2)
    _add(conn, "b", at=now - 9, started=True)
    _add(conn, "c", at=now + 50, priority=2)
    _add(conn, "d", at=now - 1, priority=-1)
    got = counts(conn, now)
    assert got.due == 3
    assert got.oldest_due == pytest.approx(now - 9)
    assert got.by_status == {"pending": 4}


def _vm_steps(conn: sqlite3.Connection) -> int:
    """SQLite virtual-machine instructions one claim executes (a measure of rows read)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        _claim(conn, limit=8)
    finally:
        conn.set_progress_handler(None, 1)
    return steps


@pytest.mark.parametrize("delayed_priority", [0, 5])
def test_delayed_jobs_are_not_scanned(conn: sqlite3.Connection, delayed_priority: int) -> None:
    now = time.time()
    _add_many(conn, "due", 3, at=now - 10, priority=0)
    _add_many(conn, "soon", 10, at=now + 3600, priority=delayed_priority)
    few = _vm_steps(conn)
    _add_many(conn, "later", 5000, at=now + 7200, priority=delayed_priority)
    many = _vm_steps(conn)
    assert _claim(conn, limit=8)[0] == ["due000000", "due000001", "due000002"]
    # The same work with 10 or 5,010 delayed jobs: the claim reads the due ones and
    # one index entry past them per group, never the delayed range.
    assert many < few * 1.2, (few, many)
