"""huey with ``SqliteHuey`` on a file, its real consumer in this process (thread workers).

Run: ``PYTHONPATH=. python bench/peers/huey_sqlite.py --workload throughput``
(``--settings defaults`` for huey's own durability defaults).

Consumer: ``huey.create_consumer(workers=4, worker_type="thread")`` and
``consumer.start()``: the consumer that ``huey_consumer.py -k thread -w 4``
runs, embedded in the producer's process like jobqueue (so RSS counts both).
Its empty-queue polling starts at 1 ms and backs off to at most 10 ms
(huey's defaults are 100 ms to 10 s, which would only hurt its latency).

Durability: huey's ``SqliteStorage`` uses WAL; its ``fsync`` option offers only
``synchronous=FULL`` or ``OFF``. ``matched`` (default) sets
``synchronous=NORMAL`` on every huey connection, as jobqueue uses; ``defaults``
leaves huey's default (SQLite's ``FULL``: an fsync per commit). Each job is
three commits: enqueue (insert), dequeue (delete), result (``store_none=True``,
so the no-op's ``None`` outcome is stored in the ``kv`` table). An outcome
counts as stored when huey's ``SIGNAL_COMPLETE`` fires, which it sends after
``put_result``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

try:
    from _harness import CountingPeer, Handler, main_modes, settings_modes, sqlite_counts
except ImportError:  # imported as bench.peers.huey_sqlite
    from bench.peers._harness import (
        CountingPeer,
        Handler,
        main_modes,
        settings_modes,
        sqlite_counts,
    )

WORKERS = 4


class HueyPeer(CountingPeer):
    name = "huey_sqlite"

    def __init__(self, matched: bool = True) -> None:
        super().__init__()
        self.matched = matched
        self.path = ""
        self.huey: Any = None
        self.consumer: Any = None
        self.task: Any = None

    def open(self, directory: str, handler: Handler) -> None:
        from huey import SqliteHuey
        from huey import signals as S
        from huey.storage import SqliteStorage

        matched = self.matched

        class Storage(SqliteStorage):  # type: ignore[misc]
            def _create_connection(self) -> Any:
                conn = super()._create_connection()
                if matched:
                    conn.execute("pragma synchronous=NORMAL")
                return conn

        class Huey(SqliteHuey):  # type: ignore[misc]
            storage_class = Storage

        self.path = os.path.join(directory, "huey.db")
        huey = Huey("bench", filename=self.path, store_none=True)

        @huey.task()
        def noop(payload: dict[str, Any]) -> None:
            handler(payload)

        @huey.signal(S.SIGNAL_COMPLETE)
        def complete(signal: Any, task: Any, exc: Any = None) -> None:
            self._stored()

        self.huey, self.task = huey, noop
        self.consumer = huey.create_consumer(
            workers=WORKERS,
            worker_type="thread",
            periodic=False,
            initial_delay=0.001,
            backoff=1.15,
            max_delay=0.01,
            check_worker_health=False,
        )

    def start(self) -> None:
        self.consumer.start()

    def submit(self, payload: dict[str, Any]) -> None:
        self.task(payload)

    def close(self) -> None:
        self.consumer.stop(graceful=False)
        for _, thread in self.consumer.worker_threads:
            thread.join(5.0)
        self.consumer.scheduler.join(5.0)
        self.huey.storage.close()

    def outcomes(self) -> dict[str, int]:
        return sqlite_counts(
            self.path,
            "SELECT 'completed', count(*) FROM kv UNION ALL SELECT 'queued', count(*) FROM task",
        )


SETTINGS = settings_modes(
    {"journal_mode": "wal", "synchronous": "NORMAL"},
    {"journal_mode": "wal", "synchronous": "FULL (SQLite default; huey fsync=None)"},
    consumer=f"huey Consumer, {WORKERS} thread workers, in process",
    poll="1 ms backing off to 10 ms",
    commits_per_job=3,
)


if __name__ == "__main__":
    sys.exit(main_modes(HueyPeer, name="huey_sqlite", requires=("huey",), settings=SETTINGS))
