"""``RemoteJobs``: the jobs of every service on a Redis bus, from any machine.

Reads what :class:`~jobqueue.redis.durable.RedisBus` publishes (a job's record
in ``jobqueue:job:{job}``, its events in ``langflow:queue:{job}``) and sends
controls (cancel, stop, pause, resume) that the job's service applies and
answers. Nothing here opens a database file.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from jobqueue.errors import (
    BusUnavailableError,
    ControlNotConfirmedError,
    InvalidArgumentError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
)
from jobqueue.redis.durable import JOB_PREFIX
from jobqueue.redis.keys import is_connection_error, redact_url
from jobqueue.redis.reader import StreamReader
from jobqueue.redis.requests import CONTROL_CHANNEL, REPLY_PREFIX
from jobqueue.status import TERMINAL, TaskStatus

__all__ = ["RemoteJob", "RemoteJobs"]


@dataclass(frozen=True, slots=True)
class RemoteJob:
    """A job's record as its service last published it."""

    id: str
    status: TaskStatus
    handler: str | None
    attempt: int
    max_retries: int
    result: Any
    error: str | None
    reason: str | None
    owner: str | None
    updated_at: float

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class RemoteJobs:
    """Get, wait for, stream and control jobs run by any service on the bus.

    Args:
        url: the Redis URL the services' ``RedisBus`` use.
        lease_s, outage_s: as for :class:`~jobqueue.redis.reader.StreamReader`.
    """

    def __init__(
        self, url: str, *, lease_s: float = 5.0, outage_s: float = 30.0, socket_timeout: float = 5.0
    ) -> None:
        from redis.asyncio import Redis

        self.url = url
        self._where = redact_url(url)
        self._lease_s = lease_s
        self._outage_s = outage_s
        self._client: Any = Redis.from_url(url, socket_timeout=socket_timeout)

    async def __aenter__(self) -> RemoteJobs:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._client, method)(*args, **kwargs)
        except Exception as exc:
            if is_connection_error(exc):
                raise BusUnavailableError(self._where, exc) from exc
            raise

    async def get(self, job_id: str) -> RemoteJob:
        """The job's last published record.

        Raises:
            JobNotFoundError: no service on the bus published this job.
        """
        raw = await self._call("hgetall", JOB_PREFIX + job_id)
        if not raw:
            raise JobNotFoundError(job_id)
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return RemoteJob(
            id=f["id"],
            status=TaskStatus(f["status"]),
            handler=f["handler"] or None,
            attempt=int(f["attempt"]),
            max_retries=int(f["max_retries"]),
            result=json.loads(f["result"]),
            error=f["error"] or None,
            reason=f["reason"] or None,
            owner=f["owner"] or None,
            updated_at=float(f["updated_at"]),
        )

    async def wait(self, job_id: str, timeout: float | None = None) -> Any:
        """The job's result once it completed, as ``service.wait`` gives it.

        Raises:
            JobFailedError, JobCancelledError: it ended otherwise.
            TimeoutError: it did not end within ``timeout`` seconds.
        """
        nap = 0.02
        async with asyncio.timeout(timeout):
            while True:
                try:
                    job = await self.get(job_id)
                except JobNotFoundError:
                    job = None  # not published yet (submitted elsewhere a moment ago)
                if job is not None and job.done:
                    break
                await asyncio.sleep(nap)
                nap = min(nap * 2, 0.25)
        if job.status is TaskStatus.COMPLETED:
            return job.result
        if job.status is TaskStatus.FAILED:
            raise JobFailedError(job_id, job.error, job.reason)
        raise JobCancelledError(job_id, job.status.value)

    def events(self, job_id: str, *, after: int = 0) -> StreamReader:
        """The job's events after seq ``after``: ``async for event in remote.events(job)``."""
        return StreamReader(
            self._client,
            job_id,
            url=self._where,
            after=f"0-{after}",
            startup_grace_s=self._outage_s,
            lease_s=self._lease_s,
            outage_s=self._outage_s,
        )

    async def cancel(self, job_id: str, *, timeout: float = 10.0) -> str:
        """Cancel the job wherever it runs; its status once its service applied it."""
        return await self._control("cancel", job_id, timeout)

    async def stop(self, job_id: str, *, timeout: float = 10.0) -> str:
        return await self._control("stop", job_id, timeout)

    async def pause(self, job_id: str, *, timeout: float = 10.0) -> str:
        return await self._control("pause", job_id, timeout)

    async def resume(self, job_id: str, *, timeout: float = 10.0) -> str:
        return await self._control("resume", job_id, timeout)

    async def _control(self, op: str, job_id: str, timeout: float) -> str:
        request = uuid.uuid4().hex
        message = json.dumps({"id": request, "op": op, "job": job_id})
        receivers = int(await self._call("publish", CONTROL_CHANNEL, message))
        deadline = time.monotonic() + timeout
        while receivers and (left := deadline - time.monotonic()) > 0:
            # Short blocking pops: a pop must end before the socket timeout does.
            reply = await self._call("blpop", [REPLY_PREFIX + request], timeout=min(1.0, left))
            if reply is None:
                continue
            answer = json.loads(reply[1])
            if "error" in answer:
                raise InvalidArgumentError(f"{op} of job {job_id!r} refused: {answer['error']}")
            return str(answer["status"])
        raise ControlNotConfirmedError(job_id, op, timeout, receivers)
