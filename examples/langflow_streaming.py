"""Langflow-style streaming: create_queue, start_job, read events to the end sentinel.

Run: python examples/langflow_streaming.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from jobqueue import EventManager, JobQueueService


async def build_flow(em: EventManager) -> None:
    """A producer written against Langflow's EventManager."""
    for word in ["tokens", "stream", "to", "the", "consumer"]:
        em.on_token(data={"chunk": word + " "})
        await asyncio.sleep(0.02)
    em.on_end(data={"status": "done"})


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with JobQueueService(Path(tmp) / "jobs.db") as service:
            queue, em = service.create_queue("flow-1")
            service.start_job("flow-1", build_flow(em))
            while True:
                event_id, data, put_time = await queue.get()
                if event_id is None:  # (None, None, t): the stream is over
                    break
                assert data is not None
                body = json.loads(data)
                waited_ms = (time.time() - put_time) * 1000
                print(f"{event_id:46} {body['data']}  ({waited_ms:.2f} ms)")
            record = await service.get("flow-1")
            print("stored status:", record.status)
            await service.cleanup_job("flow-1")


if __name__ == "__main__":
    asyncio.run(main())
