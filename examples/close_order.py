"""GoTick's "close the order 3 s after it is created", as a durable workflow.

Run it from the repository root::

    python examples/close_order.py

The workflow stores when the order was created (a memoised step), sleeps
3 s durably, then closes the order. To show that the sleep is durable, the
service is shut down while the workflow sleeps and a new one is started on
the same file: the order is still closed 3 s after it was created, not 3 s
after the restart, and no finished step runs twice.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

from jobqueue import JobContext, JobQueueService


def make_service(path: str) -> JobQueueService:
    """A service with the ``close_order`` workflow (the same code in both "processes")."""
    service = JobQueueService(path, poll_interval=0.1)

    @service.handler("close_order")
    async def close_order(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        # Memoised: every run of this job sees the time of the first one.
        start_at = await ctx.step("start_at", time.time)
        # Durable: the deadline is stored; a restart does not move it.
        await ctx.sleep("wait-close", 3)

        def close() -> dict[str, Any]:
            print(f"close-order at {time.time() - start_at:.2f}s")
            return {"order": payload["order"], "status": "closed"}

        return await ctx.step("close-order", close)

    return service


async def main() -> None:
    """Create an order, restart the service while it waits, then see it closed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "orders.db")
        async with make_service(path) as service:
            job = await service.submit("close_order", {"order": "A-1001"})
            for _ in range(200):  # wait until it reached the sleep (10 s at most)
                if (await service.get(job.id)).reason == "sleeping":
                    break
                await asyncio.sleep(0.05)
            print("order A-1001 created; the workflow sleeps and holds no slot")
        print("service stopped during the sleep; starting a new one on the same file")
        await asyncio.sleep(1.0)
        async with make_service(path) as service:
            result = await service.wait(job.id, timeout=30)
            print(f"result: {result}")
            print(f"status: {(await service.get(job.id)).status}")
            steps = await service.get_steps(job.id)
            print("steps: " + " ".join(f"{s.name}={s.status}" for s in steps))


if __name__ == "__main__":
    asyncio.run(main())
