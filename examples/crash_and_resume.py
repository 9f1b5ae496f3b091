"""Crash and resume: a worker is killed mid-job; the next process finishes the job.

1. This process submits a ``charge`` job (it only *declares* the handler, so
   it does not run the job itself) and starts a worker process.
2. The worker starts the job. Its first attempt is slow, and this process
   kills the worker with SIGKILL while the job is running: no cleanup, no
   ``finally``, exactly like a power cut or the OOM killer.
3. The file still says ``running``, under an owner that no longer exists.
4. A new service opens the file: its crash sweep sees that the owner is
   dead and puts the job back to ``pending`` (attempt 1), then runs it.
5. The payment is written with ``ctx.effect``, in the same transaction that
   records the job ``completed``, so it is in the ledger exactly once even
   though the handler ran twice.

Run: python examples/crash_and_resume.py   (Linux/macOS: it uses SIGKILL)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from jobqueue import JobContext, JobQueueService
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jobqueue import JobContext, JobQueueService


def record_payment(conn: sqlite3.Connection, order: str, amount: int) -> None:
    """The job's effect: runs inside the transaction that marks the job completed."""
    conn.execute("CREATE TABLE IF NOT EXISTS ledger (order_id TEXT PRIMARY KEY, amount INTEGER)")
    conn.execute("INSERT INTO ledger VALUES (?, ?)", (order, amount))


def make_service(db: Path) -> JobQueueService:
    """The application's service: the same code in the worker and after the restart."""
    service = JobQueueService(db, poll_interval=0.05)

    @service.handler("charge")
    async def charge(ctx: JobContext, payload: dict[str, Any]) -> str:
        print(f"  [pid {os.getpid()}] charging {payload['order']}, attempt {ctx.attempt}")
        await asyncio.sleep(60 if ctx.attempt == 0 else 0.1)  # the first attempt is slow
        ctx.effect(record_payment, payload["order"], payload["amount"])
        return f"charged {payload['amount']} for {payload['order']}"

    return service


async def worker(db: Path) -> None:
    """The worker process: run jobs until killed."""
    async with make_service(db):
        await asyncio.Event().wait()


def status_of(db: Path, job_id: str) -> tuple[str, str | None, int]:
    """Read the job straight from the file with the standard library."""
    conn = sqlite3.connect(db)
    try:
        status, owner, attempt = conn.execute(
            "SELECT status, owner, attempt FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    finally:
        conn.close()
    return status, owner, attempt


async def main(db: Path) -> None:
    async with JobQueueService(db) as producer:
        producer.declare("charge")  # submitted here, run by a worker
        job = await producer.submit("charge", {"order": "A-1", "amount": 42}, max_retries=3)
    print(f"submitted job {job.id}")

    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--worker", str(db))
    deadline = time.monotonic() + 30
    while status_of(db, job.id)[0] != "running":
        if proc.returncode is not None or time.monotonic() > deadline:
            raise SystemExit("the worker did not start the job")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    status, owner, attempt = status_of(db, job.id)
    print(f"killed worker pid {proc.pid} with SIGKILL")
    print(f"stored status after the crash: {status} (owner {owner}, attempt {attempt})")

    async with make_service(db) as service:
        print(f"crash sweep on open: {service.recovered}")
        result = await service.wait(job.id, timeout=30)
        record = await service.get(job.id)
    print(f"after restart: {record.status}, attempt {record.attempt}: {result}")

    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT order_id, amount FROM ledger").fetchall()
    finally:
        conn.close()
    print(f"ledger rows: {rows} (one payment, though the handler ran twice)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        asyncio.run(worker(Path(sys.argv[2])))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(Path(tmp) / "jobs.db"))
