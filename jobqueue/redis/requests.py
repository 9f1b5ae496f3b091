"""Control requests on the bus: ``RemoteJobs`` asks, the job's ``RedisBus`` answers.

A request is published on ``jobqueue:control`` as ``{"id", "op", "job"}``;
every bus hears it, and the one whose service's file holds the job applies
``service.<op>(job)`` and pushes ``{"status"}`` (or ``{"error"}``) to
``jobqueue:reply:{id}``, which the asker pops. A bus whose file lacks the job
stays silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Final, Protocol

from jobqueue.errors import JobNotFoundError, JobQueueError
from jobqueue.redis.keys import raise_if_cancelling


class RedisBus(Protocol):
    """What this module uses of :class:`jobqueue.redis.durable.RedisBus`."""

    service: Any  # a JobQueueService
    _client: Any
    applying: set[asyncio.Task[None]]
    stats: dict[str, int]

    def mark(self, job_id: str) -> None: ...


__all__ = ["CONTROL_CHANNEL", "OPS", "REPLY_PREFIX", "RedisBus", "serve_controls"]

log = logging.getLogger("jobqueue.redis")

CONTROL_CHANNEL: Final = "jobqueue:control"
REPLY_PREFIX: Final = "jobqueue:reply:"
OPS: Final = frozenset({"cancel", "stop", "pause", "resume"})


async def serve_controls(bus: RedisBus) -> None:
    """Subscribe to the control channel and apply each request; reconnect on errors."""
    while True:
        pubsub = bus._client.pubsub()
        try:
            await pubsub.subscribe(CONTROL_CHANNEL)
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                raise_if_cancelling()
                if msg is not None and msg.get("type") == "message":
                    task = asyncio.create_task(_apply(bus, msg["data"]))
                    bus.applying.add(task)
                    task.add_done_callback(bus.applying.discard)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)
            raise
        except Exception as exc:
            raise_if_cancelling()
            log.warning("control subscription lost (%s); again in 0.5 s", exc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pubsub.aclose(), 1.0)
        await asyncio.sleep(0.5)


async def _apply(bus: RedisBus, raw: bytes) -> None:
    try:
        request = json.loads(raw)
        op, job_id, reply_to = request["op"], request["job"], request["id"]
        if op not in OPS:
            return
        job = await getattr(bus.service, op)(job_id)
    except JobNotFoundError:
        return  # another service's job: it answers
    except (JobQueueError, ValueError, KeyError, TypeError) as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        bus.stats["controls"] += 1
        answer = {"status": job.status.value}
        bus.mark(job_id)
    key = REPLY_PREFIX + str(reply_to)
    with contextlib.suppress(Exception):
        pipe = bus._client.pipeline(transaction=False)
        pipe.rpush(key, json.dumps(answer))
        pipe.expire(key, 60)
        await pipe.execute()
