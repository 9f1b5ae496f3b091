"""Event-loop health probe shared by the tests: how late a 5 ms sleep wakes up."""

from __future__ import annotations

import asyncio
import time


class Ticker:
    """Measures how late ``asyncio.sleep`` wakes up, i.e. how long the loop was blocked."""

    PERIOD = 0.005

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(self.PERIOD)
            self.lags.append(time.perf_counter() - before - self.PERIOD)

    async def stop(self) -> float:
        """Stop ticking; returns the largest lag seen."""
        self._stop.set()
        assert self._task is not None
        await self._task
        return max(self.lags)
