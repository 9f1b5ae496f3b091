"""Live job counts for ``stats()`` and the queue-length gauge.

Counts are read from the store at start and on every reaper pass, and kept
current in between with this process's own changes. Other processes sharing
the file change the store too, so between refreshes a count can drift; it is
never reported below zero.
"""

from __future__ import annotations

from collections import Counter

from jobqueue.status import TaskStatus
from jobqueue.store import overview
from jobqueue.store.connection import Database

__all__ = ["JobCounts"]


class JobCounts:
    """Job counts by status, pending jobs by handler, and queue lag."""

    __slots__ = ("by_status", "lag", "pending")

    def __init__(self) -> None:
        self.by_status: Counter[str] = Counter()
        #: Pending jobs by handler name ("" for bare jobs); the metrics gauge reads it.
        self.pending: Counter[str] = Counter()
        self.lag = 0.0

    def __getitem__(self, status: str) -> int:
        return max(0, self.by_status[status])

    async def refresh(self, db: Database, now: float) -> None:
        """Re-read counts and lag (as of ``now``, the service clock's time) from the store."""
        read = await db.run(overview.counts, now)
        self.by_status, self.pending = Counter(read.by_status), Counter(read.pending_by_handler)
        self.lag = 0.0 if read.oldest_due is None else max(0.0, now - read.oldest_due)

    def submitted(self, handler: str | None, count: int = 1) -> None:
        self.by_status["pending"] += count
        self.pending[handler or ""] += count

    def claimed(self, handler: str | None) -> None:
        self.by_status["pending"] -= 1
        self.by_status["running"] += 1
        self.pending[handler or ""] -= 1

    def moved(self, old: TaskStatus, new: TaskStatus, handler: str | None = None) -> None:
        """A job went from ``old`` to ``new`` (a retry, a pause, a finish)."""
        self.by_status[old._value_] -= 1  # _value_: .value is a slow descriptor
        self.by_status[new._value_] += 1
        if new is TaskStatus.PENDING:
            self.pending[handler or ""] += 1
        elif old is TaskStatus.PENDING:
            self.pending[handler or ""] -= 1

    def added(self, status: TaskStatus) -> None:
        self.by_status[status._value_] += 1

    def removed(self, status: TaskStatus, handler: str | None) -> None:
        """A job left ``status`` other than by running (e.g. cancelled while pending)."""
        self.by_status[status._value_] -= 1
        if status is TaskStatus.PENDING:
            self.pending[handler or ""] -= 1

    def queue_lengths(self) -> dict[str, int]:
        """Pending jobs by handler (safe to call from another thread)."""
        counts = dict(self.pending)  # one C-level copy: atomic under the GIL
        return {h: n if n > 0 else 0 for h, n in counts.items()}
