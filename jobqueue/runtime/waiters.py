"""Futures of callers waiting for a job to change (``wait()``, controls, streams)."""

from __future__ import annotations

import asyncio

__all__ = ["Waiters"]


class Waiters:
    """Per-job futures, resolved (never failed) when the job changes here.

    A woken caller re-reads the job: a wake-up says "look again", not what
    happened, so a spurious one is harmless.
    """

    __slots__ = ("_futs",)

    def __init__(self) -> None:
        self._futs: dict[str, set[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._futs)

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
        for fut in self._futs.pop(job_id, ()):
            if not fut.done():
                fut.set_result(None)

    def wake_all(self) -> None:
        """Wake everyone (closing): they re-check and find the service closed."""
        for job_id in list(self._futs):
            self.wake(job_id)
