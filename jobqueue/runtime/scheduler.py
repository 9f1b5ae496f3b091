"""Decides when to claim pending jobs and how many; hands claimed jobs to the runner.

Pending jobs live in the database only. The scheduler keeps a count of free
slots and, whenever work may be waiting (a submit, a freed slot after a full
claim, a delayed job coming due, the poll timer for other processes'
submits), asks the writer to add one claim to its next batch. The claim runs
in the same transaction as the inserts queued before it, so a job submitted
while a slot is free starts after a single thread hop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any

from jobqueue.clock import SYSTEM, Clock, Timer
from jobqueue.limits import Limiter
from jobqueue.store.claim import claim
from jobqueue.store.jobs import Claimed
from jobqueue.store.writer import Writer

__all__ = ["Scheduler"]


class Scheduler:
    """Claim planner for the writer (see :class:`~jobqueue.store.writer.ClaimPlanner`)."""

    def __init__(
        self,
        writer: Writer,
        *,
        handlers: Callable[[], list[str]],
        concurrency: int,
        owner: str,
        start: Callable[[Claimed], None],
        poll_interval: float,
        limiter: Limiter,
        event_seq: bool = False,
        clock: Clock = SYSTEM,
    ) -> None:
        self.clock = clock
        self._writer = writer
        self._handlers = handlers
        self.capacity = concurrency
        self._owner = owner
        self._start = start
        self.poll_interval = poll_interval
        self.limiter = limiter
        self._event_seq = event_seq
        self.running = 0  # slots taken: running jobs plus a claim in flight
        self._reserved = 0
        self._want = True
        self._next_at: float | None = None
        self._rate_wake: float | None = None
        self._timer: Timer | None = None
        self._timer_at = 0.0  # when _timer fires, on the clock
        self._poller: asyncio.Task[None] | None = None
        self.closing = False
        self.idle = asyncio.Event()

    def start(self) -> None:
        """Start polling (for jobs submitted by other processes) and claim once."""
        self.closing = False
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="jobqueue-poll")
        self.want()

    def stop(self) -> None:
        """Stop claiming; running jobs are left to the caller."""
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._poller is not None:
            self._poller.cancel()

    def want(self) -> None:
        """Something may be claimable: claim in the next batch if a slot is free."""
        self._want = True
        self.idle.clear()
        if self.running < self.capacity:
            self._writer.kick()

    def release(self, handler: str) -> None:
        """A job gave its slot back: claim again (a limit may have held jobs back)."""
        self.running -= 1
        self.limiter.ended(handler)
        self._want = True
        self._writer.kick()

    # -- ClaimPlanner ---------------------------------------------------------

    @property
    def quiet(self) -> bool:
        """No claim wanted or in flight (a test clock waits for this before moving)."""
        if self._reserved:
            return False
        return not self._want or self.running >= self.capacity or not self._handlers()

    @property
    def reserved(self) -> int:
        """Jobs the claim planned last may take (the writer runs a small one on the loop)."""
        return self._reserved

    def plan_claim(self, most: int | None = None) -> Callable[[sqlite3.Connection], Any] | None:
        """Reserve the free slots (``most`` at most) and return the claim for this batch."""
        free = self.capacity - self.running
        if most is not None and free > most:
            free = most  # a claim that fills all of them asks for the next one
        names = self._handlers()
        if self.closing or not self._want or free <= 0 or not names:
            return None
        self._want = False
        req, wake = self.limiter.request(
            names, free, self._owner, self.clock.time(), self._event_seq
        )
        if wake is not None:
            self._wake_at(wake)  # a rate window frees up then
            self._rate_wake = wake
        if req is None:
            self._check_idle()
            return None
        self.running += free
        self._reserved = free
        return partial(claim, req=req)

    def claimed(self, result: tuple[list[Claimed], float | None]) -> None:
        """Start the claimed jobs; plan the next wake-up for delayed ones."""
        rows, next_at = result
        reserved, self._reserved = self._reserved, 0
        self.running -= reserved - len(rows)
        if len(rows) == reserved:
            self._want = True  # the claim was full: more may be due
        self._next_at = next_at
        if next_at is not None:
            self._wake_at(next_at)
        now = self.clock.time()
        for row in rows:
            self.limiter.started(row.handler, row.concurrency_key, now)
            self._start(row)
        self._check_idle()

    def claim_failed(self, exc: BaseException) -> None:
        """The claim's batch was rolled back: give the slots back, retry later."""
        self.running -= self._reserved
        self._reserved = 0
        self._wake_at(self.clock.time() + self.poll_interval)

    # -- timers -----------------------------------------------------------------

    def _wake_at(self, when: float) -> None:
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.clock.call_later(when - self.clock.time(), self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._rate_wake = None
        if not self.closing:
            self.want()

    async def _poll(self) -> None:
        while not self.closing:
            await asyncio.sleep(self.poll_interval)
            if self.running < self.capacity:
                self.want()

    def _check_idle(self) -> None:
        if (
            self.running == 0
            and not self._want
            and self._next_at is None
            and self._rate_wake is None
        ):
            self.idle.set()
