"""Owner bookkeeping of crash recovery: dead owners' rows do not pile up."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from jobqueue.runtime.owner import owner_identity


def _owners(db: Path) -> set[str]:
    with closing(sqlite3.connect(db)) as conn:
        return {r[0] for r in conn.execute("SELECT owner FROM owners")}


async def test_dead_owners_without_running_jobs_are_pruned_on_open(make_service, db_path) -> None:
    svc = await make_service()
    await svc.close()
    now = time.time()
    reused = f"{os.getpid()}:1"  # our pid with another start time: a reused pid
    gone = "999999999:1"  # no such pid
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.executemany(
            "INSERT INTO owners (owner, pid, started_at, heartbeat) VALUES (?, ?, ?, ?)",
            [(reused, os.getpid(), now, now), (gone, 999999999, now, now)],
        )
    assert {reused, gone} <= _owners(db_path)
    again = await make_service()
    # Each service is an owner of its own; the first two parts name this process.
    assert again.owner != svc.owner
    assert again.owner.split(":")[:2] == owner_identity().split(":")[:2]
    assert _owners(db_path) == {again.owner}


async def test_running_rows_without_owner_are_recovered_on_open(make_service, db_path) -> None:
    """Files from before owners were recorded: a running row with no owner is swept."""
    svc = await make_service()

    @svc.handler("work")
    async def work(ctx, payload) -> str:
        return "done"

    job = await svc.submit("work", delay=3600, max_retries=2)
    await svc.close()
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute(
            "UPDATE jobs SET status = 'running', owner = NULL, run_at = 0 WHERE id = ?", (job.id,)
        )
    again = await make_service()
    again.register("work", work)
    assert again.recovered.requeued == 1
    assert await again.wait(job.id, timeout=10) == "done"
    stored = await again.get(job.id)
    assert stored.attempt == 1
