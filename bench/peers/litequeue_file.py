"""litequeue's ``LiteQueue`` on a file, consumed by worker threads.

Run: ``PYTHONPATH=. python bench/peers/litequeue_file.py --workload throughput``

litequeue is a queue, not a job runner, and has no blocking get: each of the
four worker threads opens its own ``LiteQueue`` on the file (one connection
per thread, as its docs advise for concurrency), ``pop()``s, runs the job and
calls ``done(message_id)``; when the queue is empty it sleeps 1 ms and polls
again. The producer has its own ``LiteQueue``.

Durability: litequeue already opens WAL with ``synchronous=NORMAL`` (as
jobqueue does), so its defaults are the matched settings. Each job is three
commits: put (insert ``READY``), pop (``UPDATE ... RETURNING`` to ``LOCKED``
in a ``BEGIN IMMEDIATE`` transaction), done (``DONE``: the stored outcome;
no result value is kept).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

try:
    from _harness import Handler, ThreadedPeer, main, sqlite_counts
except ImportError:  # imported as bench.peers.litequeue_file
    from bench.peers._harness import Handler, ThreadedPeer, main, sqlite_counts

WORKERS = 4
POLL_S = 0.001


class LiteQueuePeer(ThreadedPeer):
    name = "litequeue_file"
    workers = WORKERS

    def __init__(self) -> None:
        super().__init__()
        self.path = ""
        self.producer: Any = None

    def open(self, directory: str, handler: Handler) -> None:
        from litequeue import LiteQueue

        self.path = os.path.join(directory, "litequeue.db")
        self.handler = handler
        self.producer = LiteQueue(self.path)

    def _work(self) -> None:
        from litequeue import LiteQueue

        queue = LiteQueue(self.path)
        handler = self.handler
        assert handler is not None
        try:
            while not self.stop.is_set():
                message = queue.pop()
                if message is None:
                    time.sleep(POLL_S)
                    continue
                handler(json.loads(message.data))
                queue.done(message.message_id)
                self._stored()
        finally:
            queue.close()

    def submit(self, payload: dict[str, Any]) -> None:
        self.producer.put(json.dumps(payload))

    def close(self) -> None:
        self._join_workers()
        self.producer.close()

    def outcomes(self) -> dict[str, int]:
        # MessageStatus: READY 0, LOCKED 1, DONE 2, FAILED 3.
        return sqlite_counts(
            self.path,
            "SELECT CASE status WHEN 2 THEN 'completed' WHEN 1 THEN 'locked' ELSE 'queued' END, "
            "count(*) FROM Queue GROUP BY 1",
        )


SETTINGS = {
    "journal_mode": "wal",
    "synchronous": "NORMAL (litequeue's default)",
    "consumer": f"{WORKERS} threads, a LiteQueue each: pop() / done(id)",
    "poll": f"{POLL_S * 1e3:g} ms sleep when empty",
    "commits_per_job": 3,
}

if __name__ == "__main__":
    sys.exit(main(LiteQueuePeer, name="litequeue_file", requires=("litequeue",), settings=SETTINGS))
