"""A clock for tests: time moves only when the test (or ``run_until_idle()``) moves it."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from jobqueue.validation import check_seconds

__all__ = ["TestClock"]

Settle = Callable[[], Awaitable[None]]


class _Timer:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class TestClock:
    """A virtual clock for :class:`~jobqueue.JobQueueService` in tests.

    Pass it as ``JobQueueService(path, clock=clock)``. Delays, retry backoffs,
    ``timeout=``, rate-limit windows, workflow step backoffs and durable sleeps then
    wait for this clock, which moves only when:

    * the test awaits :meth:`advance` (``await clock.advance(3600)``): every deadline
      on the way fires in order, and the service settles after each one (a retry that
      fails again plans its next backoff before the clock moves on);
    * ``await service.run_until_idle()`` finds nothing left to do but wait: it moves the
      clock to the next deadline at once, so a job delayed by an hour runs now.

    The clock starts at the machine's time (or ``start``). Time passes only while every
    running job waits on the clock (``ctx.nap``, ``ctx.sleep``, a retry, a delay); a
    handler awaiting real I/O or ``asyncio.sleep`` runs in real time meanwhile.
    """

    __test__ = False  # not a test class, for pytest's collector
    virtual = True

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else check_seconds(start, "start")
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()
        self._settles: list[Settle] = []
        #: Tasks waiting in :meth:`sleep` now (``run_until_idle`` moves the clock only
        #: when every running job is one of them).
        self.sleepers = 0

    def __repr__(self) -> str:
        return f"TestClock(time={self._now:.3f}, timers={self.pending})"

    # -- the Clock protocol -------------------------------------------------------------

    def time(self) -> float:
        """The clock's time, in seconds since the epoch."""
        return self._now

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _Timer:
        """Call ``callback(*args)`` once the clock has moved ``delay`` seconds on."""
        timer = _Timer(self._now + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    async def sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Return once the clock has moved ``seconds`` on, or earlier when ``wake`` is set."""
        event = wake if wake is not None else asyncio.Event()
        if event.is_set():
            return
        done = asyncio.Event()
        timer = self.call_later(seconds, done.set)
        self.sleepers += 1
        try:
            waits = [asyncio.ensure_future(done.wait())]
            if wake is not None:
                waits.append(asyncio.ensure_future(wake.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        finally:
            self.sleepers -= 1
            timer.cancel()

    # -- moving it ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Deadlines planned and not yet reached."""
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    @property
    def next_deadline(self) -> float | None:
        """The earliest planned deadline, or None."""
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else None

    async def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, firing every deadline on the way in order."""
        target = self._now + check_seconds(seconds, "advance()'s seconds")
        await self.settle()
        while (when := self.next_deadline) is not None and when <= target:
            self._fire_next()
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()

    async def jump(self) -> float | None:
        """Move the clock to its next deadline and fire it; the new time, or None if none."""
        if self.next_deadline is None:
            return None
        self._fire_next()
        await self.settle()
        return self._now

    def attach(self, settle: Settle) -> None:
        """Have :meth:`advance` await ``settle()`` between deadlines (a service does this)."""
        self._settles.append(settle)

    def detach(self, settle: Settle) -> None:
        """Undo :meth:`attach` (the service closed)."""
        if settle in self._settles:
            self._settles.remove(settle)

    async def settle(self) -> None:
        """Let every attached service finish what the last deadline started."""
        for _ in range(3):
            await asyncio.sleep(0)
        for settle in list(self._settles):
            await settle()

    def _drop_cancelled(self) -> None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)

    def _fire_next(self) -> None:
        self._drop_cancelled()
        when, _, timer = heapq.heappop(self._timers)
        self._now = max(self._now, when)
        timer.callback(*timer.args)
