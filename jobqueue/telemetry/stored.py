"""Metrics of a database file, for a process that runs no jobs (``jobqueue metrics``).

:class:`StoredMetrics` reads the file (through a ``read`` function, such as
:meth:`jobqueue.store.readonly.ReadOnlyStore.read`) every time
:meth:`~StoredMetrics.refresh` is called, and feeds a :class:`JobMetrics`:

* ``jobqueue_jobs{handler,status}``: the file's jobs by handler and status;
* ``jobqueue_queue_length{handler}`` and ``jobqueue_jobs_active{handler}``:
  its pending and running jobs (every process's);
* ``jobqueue_queue_oldest_age_seconds{handler}``: how long the oldest due
  pending job has waited;
* ``jobqueue_jobs_finished_total``, ``jobqueue_job_errors_total`` and the
  ``jobqueue_job_duration_seconds`` histogram: from the jobs that reached a
  final status since the previous read (``completed_at - started_at`` of their
  last run), delivered as ``FINISHED`` lifecycle records, as a process that
  runs jobs records its own. The first read also takes those of the last
  ``history`` seconds, so a new exporter has recent figures at once.

Wait times are not in the file (a retried job's earlier runs leave no trace),
so ``jobqueue_job_wait_time_seconds`` stays empty here; a worker's own
endpoint (``jobqueue worker --metrics-port``) has it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from jobqueue.hooks import HookKind, Hooks, Lifecycle
from jobqueue.store.tallies import Finished, Tallies, finished_since, tallies
from jobqueue.telemetry.metrics import JobMetrics

__all__ = ["StoredMetrics"]

Read = Callable[..., Any]

#: Seconds of overlap between two reads of finished jobs: a job whose outcome
#: committed after the previous read with an earlier ``completed_at`` (another
#: process's clock, a batch still committing) is still found; ids seen are skipped.
OVERLAP = 30.0


class StoredMetrics:
    """Feeds ``metrics`` from a database file at each :meth:`refresh`.

    Args:
        read: ``read(fn, *args)`` runs a store function on a connection to the file.
        metrics: the recorder to feed; attached here to a lifecycle bus of its own.
        history: on the first read, also count the jobs that finished this many
            seconds before (0: only those that finish from now on).
    """

    def __init__(self, read: Read, metrics: JobMetrics, *, history: float = 900.0) -> None:
        self._read = read
        self.metrics = metrics
        self.hooks = Hooks()
        self._history = history
        self._tallies = Tallies({}, {})
        self._since: float | None = None  # completed_at already read up to
        self._seen: dict[str, float] = {}  # ids finished within OVERLAP of _since
        metrics.attach(self.hooks, queue_lengths=self.queue_lengths, active=self.running)

    # -- live sources for JobMetrics (called on the scraping thread) ------------------

    def queue_lengths(self) -> dict[str, int]:
        """Pending jobs per handler, as last read."""
        return self._by_status("pending")

    def running(self) -> dict[str, int]:
        """Running jobs per handler (every process's), as last read."""
        return self._by_status("running")

    def _by_status(self, status: str) -> dict[str, int]:
        counts = self._tallies.by_handler_status  # replaced whole by refresh()
        return {h: n for (h, s), n in counts.items() if s == status}

    # -- reading --------------------------------------------------------------------

    def refresh(self, now: float | None = None) -> int:
        """Read the file again; returns how many newly finished jobs were recorded."""
        now = time.time() if now is None else now
        read = self._tallies = self._read(tallies, now)
        self.metrics.record_stored(read.by_handler_status, read.oldest_due)
        since = now - self._history if self._since is None else self._since - OVERLAP
        found: list[Finished] = self._read(finished_since, since)
        new = [f for f in found if f.id not in self._seen]
        for f in new:
            self._seen[f.id] = f.completed_at
            self.hooks.emit(
                Lifecycle(
                    HookKind.FINISHED,
                    f.id,
                    f.handler or None,
                    f.status,
                    f.reason,
                    f.error_type,
                    None,  # the wait is not in the file
                    None if f.started_at is None else max(0.0, f.completed_at - f.started_at),
                )
            )
        latest = max((f.completed_at for f in found), default=None)
        if latest is not None:
            self._since = max(self._since or latest, latest)
        elif self._since is None:
            self._since = since
        floor = self._since - OVERLAP
        self._seen = {i: t for i, t in self._seen.items() if t > floor}
        return len(new)
