"""Callers waiting for a job: wake-ups, outcomes of jobs finished here, one read for the rest.

Two kinds of waiting:

* :meth:`Waiters.add` / :meth:`Waiters.wake`: a future that says "look again"
  (controls, event streams). A spurious wake-up is harmless.
* :meth:`Waiters.watch`: a future resolved with the job's terminal
  :class:`Finished` record (``service.wait()``, the task backends). A job that
  finishes in this process resolves it from the outcome the runner just
  committed, with no read; the others are read from the store by one
  ``SELECT`` for all the ids watched (soon after a watch starts, after a local
  change without an outcome, and every poll period, for jobs run by other
  processes).

Recently finished outcomes of this process are kept a while (bounded in
count, bytes and age), so a ``wait()`` that starts after its job ended here
needs no read either. A terminal status changes only by ``retry()``: a retry
made here, and the claim of a job here, forget the job's kept outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from jobqueue.errors import JobNotFoundError, ServiceClosedError
from jobqueue.status import TaskStatus
from jobqueue.store.jobs import Finished, finished_or_status

__all__ = ["Finished", "Waiters"]

log = logging.getLogger("jobqueue.service")

#: Ids per batched read (well under SQLite's limit of bound parameters).
READ_CHUNK: Final = 1000
#: Bounds of the outcomes kept for late ``wait()`` calls: a wait that starts just
#: after its job ended (a gather of submits, then waits), not a result store.
KEEP_COUNT: Final = 2048
KEEP_BYTES: Final = 4 << 20
KEEP_SECONDS: Final = 30.0


#: ``read(fn, *args)``: run ``fn(conn, *args)`` on the store (the runtime's read).
Read = Callable[..., Awaitable[Any]]
#: What the batched read finds per id: a terminal record, or the status of a live job.
Found = dict[str, "Finished | TaskStatus"]


class Waiters:
    """Per-job futures and the outcomes of jobs recently finished here.

    Args:
        read: runs a store function on the database (the runtime's ``read``); it
            reads the watched jobs that did not finish here.
    """

    def __init__(self, read: Read | None = None) -> None:
        self._futs: dict[str, set[asyncio.Future[None]]] = {}
        self._watch: dict[str, list[asyncio.Future[Finished]]] = {}
        self._check: set[str] = set()  # watched ids to read soon
        self._read = read
        #: Seconds between reads of every watched job (jobs run by other processes).
        self.poll = 2.0
        self._reader: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        # The oldest first. Values: (finished at, record).
        self._recent: OrderedDict[str, tuple[float, Finished]] = OrderedDict()
        self._recent_bytes = 0
        self._kept = 0
        #: Batched reads made (tests and benchmarks look).
        self.reads = 0

    def __len__(self) -> int:
        return len(self._futs) + len(self._watch)

    # -- "look again" --------------------------------------------------------------------

    def add(self, job_id: str) -> asyncio.Future[None]:
        """A new future for ``job_id``; pass it to :meth:`discard` when done with it."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futs.setdefault(job_id, set()).add(fut)
        return fut

    def discard(self, job_id: str, fut: asyncio.Future[None]) -> None:
        futs = self._futs.get(job_id)
        if futs is not None:
            futs.discard(fut)
            if not futs:
                del self._futs[job_id]

    def wake(self, job_id: str) -> None:
        """The job changed here: wake its waiters, and read it again for its watchers."""
        for fut in self._futs.pop(job_id, ()):
            if not fut.done():
                fut.set_result(None)
        if job_id in self._watch:
            self._check.add(job_id)
            self._kick.set()

    def wake_all(self) -> None:
        """Closing: wake everyone; watchers fail with :class:`ServiceClosedError`."""
        for job_id in list(self._futs):
            self.wake(job_id)
        watched, self._watch = self._watch, {}
        self._check.clear()
        for futs in watched.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(ServiceClosedError())
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None

    # -- terminal outcomes ---------------------------------------------------------------

    def recent(self, job_id: str) -> Finished | None:
        """The outcome of a job that finished here lately, if still kept."""
        kept = self._recent.get(job_id)
        return None if kept is None else kept[1]

    def finished(self, fin: Finished) -> None:
        """A job reached a terminal status here (committed): resolve, keep, wake."""
        futs = self._watch.pop(fin.id, None)
        if futs:
            for fut in futs:
                if not fut.done():
                    fut.set_result(fin)
        self._keep(fin)
        self.wake(fin.id)

    def _keep(self, fin: Finished) -> None:
        recent = self._recent
        now = time.monotonic()
        old = recent.pop(fin.id, None)
        if old is not None:
            self._recent_bytes -= old[1].size
        recent[fin.id] = (now, fin)
        self._recent_bytes += fin.size
        self._kept += 1
        if (
            len(recent) <= KEEP_COUNT
            and self._recent_bytes <= KEEP_BYTES
            and self._kept & 63  # the age bound is looked at every 64 outcomes
        ):
            return
        horizon = now - KEEP_SECONDS
        while recent:
            at, kept = next(iter(recent.values()))
            if len(recent) <= KEEP_COUNT and self._recent_bytes <= KEEP_BYTES and at >= horizon:
                break
            recent.popitem(last=False)  # O(1), where deleting a dict's first key is not
            self._recent_bytes -= kept.size

    def forget(self, job_id: str) -> None:
        """The job runs again (a retry): its kept outcome is not its last one any more."""
        kept = self._recent.pop(job_id, None)
        if kept is not None:
            self._recent_bytes -= kept[1].size

    def watch(self, job_id: str, *, read: bool = True) -> asyncio.Future[Finished]:
        """A future resolved with the job's terminal record (or failed: not found, closed).

        The job is read soon (batched with the other new watches; not with
        ``read=False``, for a job known to be running here), then every
        :attr:`poll` seconds, until it finishes here or is seen finished.
        Pass the future to :meth:`unwatch` when done with it.
        """
        fut: asyncio.Future[Finished] = asyncio.get_running_loop().create_future()
        self._watch.setdefault(job_id, []).append(fut)
        if read:
            self._check.add(job_id)
            self._kick.set()
        if self._reader is None or self._reader.done():
            self._kick = asyncio.Event()  # of this loop (a service may be reopened in another)
            self._reader = asyncio.get_running_loop().create_task(
                self._read_loop(), name="jobqueue-waits"
            )
        return fut

    def unwatch(self, job_id: str, fut: asyncio.Future[Finished]) -> None:
        futs = self._watch.get(job_id)
        if futs is not None and fut in futs:
            futs.remove(fut)
            if not futs:
                del self._watch[job_id]
                self._check.discard(job_id)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self.poll
        while self._watch:
            if not self._check:
                self._kick.clear()
                wait = next_poll - loop.time()
                if wait > 0:
                    try:
                        async with asyncio.timeout(wait):
                            await self._kick.wait()
                    except TimeoutError:
                        pass
            if loop.time() >= next_poll:
                ids = list(self._watch)  # poll: jobs run elsewhere finish unseen
                next_poll = loop.time() + self.poll
            else:
                ids = [i for i in self._check if i in self._watch]
            self._check.clear()
            for start in range(0, len(ids), READ_CHUNK):
                await self._read_some(ids[start : start + READ_CHUNK])

    async def _read_some(self, ids: Sequence[str]) -> None:
        if self._read is None:
            return
        try:
            self.reads += 1
            found: Found = await self._read(finished_or_status, ids)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store is closing or failing: tell the waiters
            self._fail(ids, exc)
            return
        for job_id in ids:
            got = found.get(job_id)
            if got is None:
                self._fail([job_id], JobNotFoundError(job_id))
            elif isinstance(got, Finished):
                for fut in self._watch.pop(job_id, ()):
                    if not fut.done():
                        fut.set_result(got)

    def _fail(self, ids: Sequence[str], exc: BaseException) -> None:
        for job_id in ids:
            for fut in self._watch.pop(job_id, ()):
                if not fut.done():
                    fut.set_exception(exc)
