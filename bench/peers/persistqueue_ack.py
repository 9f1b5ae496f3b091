"""persist-queue's ``SQLiteAckQueue`` on a file, consumed by worker threads.

Run: ``PYTHONPATH=. python bench/peers/persistqueue_ack.py --workload throughput``
(``--settings defaults`` for persist-queue's own durability defaults).

persist-queue is a queue, not a job runner, so the consumer is the loop its
README shows: ``get(raw=True)`` (blocking; woken by the in-process put event),
run the job, ``ack(id=...)``. Four worker threads share one queue object
(``multithreading=True``: separate put and get connections, its own locks).

Durability: persist-queue opens WAL with SQLite's default ``synchronous=FULL``
(an fsync per commit). ``matched`` (default) sets ``synchronous=NORMAL`` on its
connections, as jobqueue uses; ``defaults`` leaves ``FULL``. Each job is three
commits: put (insert, ``ready``), get (``unack``), ack (``acked``: the stored
outcome; no result value is kept). Pickle serializer (its default).
"""

from __future__ import annotations

import sys
from typing import Any

try:
    from _harness import Handler, ThreadedPeer, main_modes, settings_modes, sqlite_counts
except ImportError:  # imported as bench.peers.persistqueue_ack
    from bench.peers._harness import (
        Handler,
        ThreadedPeer,
        main_modes,
        settings_modes,
        sqlite_counts,
    )

WORKERS = 4


class PersistQueuePeer(ThreadedPeer):
    name = "persistqueue_ack"
    workers = WORKERS

    def __init__(self, matched: bool = True) -> None:
        super().__init__()
        self.matched = matched
        self.directory = ""
        self.queue: Any = None

    def open(self, directory: str, handler: Handler) -> None:
        from persistqueue import SQLiteAckQueue

        self.directory = directory
        self.handler = handler
        self.queue = SQLiteAckQueue(directory, multithreading=True, auto_resume=False)
        if self.matched:
            for conn in {id(c): c for c in (self.queue._getter, self.queue._putter)}.values():
                conn.execute("PRAGMA synchronous=NORMAL")

    def _work(self) -> None:
        from persistqueue.exceptions import Empty

        queue, handler = self.queue, self.handler
        assert handler is not None
        while not self.stop.is_set():
            try:
                item = queue.get(block=True, timeout=0.05, raw=True)
            except Empty:
                continue
            handler(item["data"])
            queue.ack(id=item["pqid"])
            self._stored()

    def submit(self, payload: dict[str, Any]) -> None:
        self.queue.put(payload)

    def close(self) -> None:
        self._join_workers()
        self.queue.close()

    def outcomes(self) -> dict[str, int]:
        # AckStatus: inited 0, ready 1, unack 2, acked 5, ack_failed 9.
        return sqlite_counts(
            f"{self.directory}/data.db",
            "SELECT CASE status WHEN 5 THEN 'completed' WHEN 2 THEN 'unack' ELSE 'queued' END, "
            "count(*) FROM ack_queue_default GROUP BY 1",
        )


SETTINGS = settings_modes(
    {"journal_mode": "wal", "synchronous": "NORMAL"},
    {"journal_mode": "wal", "synchronous": "FULL (SQLite default)"},
    consumer=f"{WORKERS} threads: get(raw=True) / ack(id)",
    poll="in-process put event (0.05 s timeout)",
    commits_per_job=3,
)

if __name__ == "__main__":
    sys.exit(
        main_modes(
            PersistQueuePeer, name="persistqueue_ack", requires=("persistqueue",), settings=SETTINGS
        )
    )
