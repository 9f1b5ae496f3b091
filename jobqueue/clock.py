"""Where the engine reads the time and waits for it.

Everything that schedules a job by time goes through one :class:`Clock`: a delayed
submit's ``run_at``, retry backoffs, ``timeout=``, rate-limit windows, workflow step
backoffs and durable sleeps. The service uses :class:`SystemClock`; tests pass a
:class:`jobqueue.testing.TestClock` so that an hour's delay takes no time at all.

Heartbeats, owner leases and the poll for other processes' work stay on real time:
they are about live processes, not about when a job is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from jobqueue.errors import InvalidArgumentError

__all__ = ["Clock", "SystemClock", "Timer"]


class Timer(Protocol):
    """A callback planned with :meth:`Clock.call_later`."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The time of day (seconds since the epoch) and waiting for it to pass."""

    #: True for a clock that moves only when told (the engine then lets
    #: ``run_until_idle()`` move it to the next deadline instead of waiting).
    virtual: bool
    #: Tasks waiting in :meth:`sleep` (counted by a virtual clock only).
    sleepers: int

    def attach(self, settle: Callable[[], Awaitable[None]]) -> None:
        """Have a virtual clock await ``settle()`` before it moves (a service's)."""
        ...

    def detach(self, settle: Callable[[], Awaitable[None]]) -> None: ...

    async def jump(self) -> float | None:
        """Move a virtual clock to its next deadline; None when there is none."""
        ...

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer: ...

    async def sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Return after ``seconds``, or earlier once ``wake`` is set."""
        ...


class SystemClock:
    """The machine's clock; the loop's timers wait for it."""

    virtual = False
    sleepers = 0

    def attach(self, settle: Callable[[], Awaitable[None]]) -> None:
        pass  # real time moves by itself

    def detach(self, settle: Callable[[], Awaitable[None]]) -> None:
        pass

    async def jump(self) -> float | None:
        return None

    def time(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback, *args)

    async def sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        if wake is None:
            await asyncio.sleep(max(0.0, seconds))
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await wake.wait()


#: The clock of every service built without one.
SYSTEM = SystemClock()


def check_clock(clock: object) -> Clock:
    """``clock`` if it has what the engine calls, else a typed error saying what to pass."""
    needed = ("virtual", "sleepers", "time", "call_later", "sleep", "attach", "detach", "jump")
    missing = [name for name in needed if not hasattr(clock, name)]
    if missing:
        raise InvalidArgumentError(
            f"clock must be a jobqueue clock (jobqueue.testing.TestClock in tests), got "
            f"{type(clock).__name__} without {', '.join(missing)}"
        )
    return clock  # type: ignore[return-value]
