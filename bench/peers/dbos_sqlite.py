"""DBOS Transact with its SQLite system database: workflows on a DBOS queue.

Run: ``PYTHONPATH=. python bench/peers/dbos_sqlite.py --workload throughput``
(``--settings defaults`` for DBOS's own SQLite settings).

Configuration as DBOS documents it: ``DBOS(config={"name": ...,
"system_database_url": "sqlite:///<file>"})``, a ``@DBOS.workflow()`` no-op,
``DBOS.launch()``, then ``DBOS.register_queue("bench",
polling_interval_sec=0.01, worker_concurrency=16)`` and ``queue.enqueue(noop,
payload)`` per job. The queue runs the workflows on DBOS's executor threads in
this process. The queue poll is 10 ms (DBOS's default is 1 s, which would only
hurt its latency); ``worker_concurrency=16`` was as fast as no limit and faster
than 4 in a trial (2,000 jobs: 238, 240 and 138 jobs/s), and it bounds what a
gated RSS run holds dequeued in memory.

Outcomes: a workflow's row in ``workflow_status`` goes ``ENQUEUED`` ->
``PENDING`` -> ``SUCCESS`` with its output stored. DBOS has no in-process
completion callback for queued workflows, so ``wait_done`` polls the count of
``SUCCESS`` rows from a read-only connection every 5 ms (at most 5 ms added
to a multi-second run).

Durability: DBOS opens SQLite with its rollback journal and
``synchronous=FULL`` (an fsync per commit). ``matched`` (default) sets WAL
and ``synchronous=NORMAL`` on each new SQLite connection (a class-level
SQLAlchemy pool ``connect`` listener), as jobqueue uses; ``defaults`` leaves
DBOS's settings. DBOS runs fewer jobs by default (``DEFAULT_JOBS``): it is
slow enough that 20,000 would dominate the whole run; the rate is what is compared.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from typing import Any

try:
    from _harness import Handler, Peer, main_modes, settings_modes, sqlite_counts
except ImportError:  # imported as bench.peers.dbos_sqlite
    from bench.peers._harness import Handler, Peer, main_modes, settings_modes, sqlite_counts

DEFAULT_JOBS = 5_000
DEFAULT_JOBS_DEFAULTS = 500
POLL_S = 0.01
WORKER_CONCURRENCY = 16
_HANDLER: list[Handler] = []


class DbosPeer(Peer):
    name = "dbos_sqlite"

    def __init__(self, matched: bool = True) -> None:
        self.matched = matched
        self.path = ""
        self.queue: Any = None
        self.workflow: Any = None
        self._reader: sqlite3.Connection | None = None

    def open(self, directory: str, handler: Handler) -> None:
        import logging

        from dbos import DBOS

        if self.matched:
            from sqlalchemy import event
            from sqlalchemy.pool import Pool

            def pragmas(dbapi_conn: Any, record: Any) -> None:
                if isinstance(dbapi_conn, sqlite3.Connection):
                    dbapi_conn.execute("PRAGMA journal_mode=WAL")
                    dbapi_conn.execute("PRAGMA synchronous=NORMAL")

            event.listen(Pool, "connect", pragmas)

        self.path = os.path.join(directory, "dbos.sqlite")
        _HANDLER[:] = [handler]
        DBOS(
            config={
                "name": "jobqueue-bench",
                "system_database_url": f"sqlite:///{self.path}",
                "run_admin_server": False,
                "log_level": "WARNING",
            }
        )

        @DBOS.workflow()
        def noop(payload: dict[str, Any]) -> None:
            _HANDLER[0](payload)

        self.workflow = noop
        logging.getLogger("dbos").setLevel(logging.WARNING)

    def start(self) -> None:
        from dbos import DBOS

        DBOS.launch()
        self.queue = DBOS.register_queue(
            "bench", polling_interval_sec=POLL_S, worker_concurrency=WORKER_CONCURRENCY
        )
        self._reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)

    def submit(self, payload: dict[str, Any]) -> None:
        self.queue.enqueue(self.workflow, payload)

    def _count(self) -> int:
        assert self._reader is not None
        row = self._reader.execute(
            "SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS' AND queue_name = 'bench'"
        ).fetchone()
        return int(row[0])

    def wait_done(self, total: int, timeout: float) -> int:
        deadline = time.perf_counter() + timeout
        seen = self._count()
        while seen < total and time.perf_counter() < deadline:
            time.sleep(0.005)
            seen = self._count()
        return seen

    def close(self) -> None:
        from dbos import DBOS

        if self._reader is not None:
            # Let dequeued workflows (a gated RSS run's) finish before the files go away.
            deadline = time.perf_counter() + 5.0
            while (
                time.perf_counter() < deadline
                and self._reader.execute(
                    "SELECT count(*) FROM workflow_status WHERE status = 'PENDING'"
                ).fetchone()[0]
            ):
                time.sleep(0.01)
            self._reader.close()
        DBOS.destroy(destroy_registry=True)

    def outcomes(self) -> dict[str, int]:
        states = sqlite_counts(
            self.path,
            "SELECT lower(status), count(*) FROM workflow_status WHERE queue_name = 'bench' "
            "GROUP BY 1",
        )
        states["completed"] = states.pop("success", 0)
        return states


SETTINGS = settings_modes(
    {
        "journal_mode": "wal (set by a pool connect listener)",
        "synchronous": "NORMAL (set likewise)",
    },
    {"journal_mode": "delete (DBOS's default)", "synchronous": "FULL (SQLite default)"},
    consumer="DBOS queue, workflows on its executor threads, in process",
    poll=f"queue polling_interval_sec={POLL_S:g}, worker_concurrency={WORKER_CONCURRENCY}",
    commits_per_job="3+ (enqueue, dequeue, output)",
)

if __name__ == "__main__":
    sys.exit(
        main_modes(
            DbosPeer,
            name="dbos_sqlite",
            requires=("dbos",),
            settings=SETTINGS,
            default_jobs={"matched": DEFAULT_JOBS, "defaults": DEFAULT_JOBS_DEFAULTS},
        )
    )
