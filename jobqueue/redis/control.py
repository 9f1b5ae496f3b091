"""Cancels and ownership of the Redis service: Langflow's calls, with confirmation.

A cancel for a job running here is applied at once; for a job elsewhere it is
published on ``langflow:cancel:{job}`` (every worker's dispatcher hears it)
and a marker key is set, which a worker starting the job later reads. With
``confirm=`` the caller waits until the job's stream ends and learns how.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from jobqueue.errors import BusUnavailableError, CancelNotConfirmedError
from jobqueue.redis import keys as k
from jobqueue.redis.base import MemoryJobQueueService, _end

__all__ = ["CancelsAndOwners"]

log = logging.getLogger("jobqueue.redis")


class CancelsAndOwners(MemoryJobQueueService):
    """The cancel, activity, owner and public-job calls of ``RedisJobQueueService``."""

    _POST_CANCEL_CLEANUP_TIMEOUT_S = 10.0

    if TYPE_CHECKING:  # set by RedisJobQueueService
        _client: Any
        _ttl: int
        _cancel_channel_enabled: bool
        _cancel_marker_ttl: int
        _polling_stale_threshold_s: float
        _cancel_stats: dict[str, int]
        _bridge_tasks: dict[str, asyncio.Task[None]]
        worker_id: str
        lease_s: float
        _dispatcher_ready: asyncio.Event
        _polling_watchdog_interval_s: float
        _job_start_times: dict[str, float]
        _DISPATCHER_RECONNECT_INITIAL_BACKOFF_S: float
        _DISPATCHER_RECONNECT_MAX_BACKOFF_S: float

        def _unavailable(self, exc: BaseException) -> BusUnavailableError: ...
        def _spawn_background(self, coro: Any) -> asyncio.Task[Any]: ...
        async def _forget(self, job_id: str, *, delete_stream: bool) -> None: ...
        async def wait_end(self, job_id: str, timeout: float | None = None) -> str: ...

    # -- cancel ------------------------------------------------------------------------------

    def _bump_cancel_stat(self, key: str, value: int = 1) -> None:
        self._cancel_stats[key] = self._cancel_stats.get(key, 0) + value

    def _cancel_marker_key(self, job_id: str) -> str:
        return k.Keys(job_id).marker

    async def _check_pending_cancel_marker(self, job_id: str) -> None:
        marker = k.Keys(job_id).marker
        try:
            if await self._client.delete(marker):
                self._bump_cancel_stat("marker_hit")
                await self._handle_cancel(job_id, source="marker")
        except Exception as exc:
            log.warning("cancel marker check of %s failed: %s", job_id, exc)

    async def _handle_cancel(self, job_id: str, *, source: str) -> None:
        await self._apply_cancel(job_id, source=source, wait_for_cleanup=False)

    async def _apply_cancel(self, job_id: str, *, source: str, wait_for_cleanup: bool) -> bool:
        """Cancel a job running here; its stream ends ``cancelled``. ``False``: not here."""
        entry = self._queues.get(job_id)
        if entry is None:
            self._bump_cancel_stat("dispatched_foreign")
            return False
        self._bump_cancel_stat("dispatched_owned")
        log.info("cancel applied to %s (source=%s)", job_id, source)
        queue, _, task, _ = entry
        if task is None or not task.done():
            self._outcomes.setdefault(job_id, "cancelled")
        if task is not None and not task.done():
            task.cancel()
        _end(queue)
        cleanup = self._spawn_background(self._post_cancel_cleanup(job_id))
        if wait_for_cleanup:
            await asyncio.shield(cleanup)
        return True

    async def _post_cancel_cleanup(self, job_id: str) -> None:
        """Once the end entry is written, forget the job here (its stream stays for readers)."""
        bridge = self._bridge_tasks.get(job_id)
        if bridge is not None and not bridge.done():
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(bridge), self._POST_CANCEL_CLEANUP_TIMEOUT_S)
        await self._forget(job_id, delete_stream=False)

    async def cancel_job(self, job_id: str, *, confirm: float | None = None) -> str | None:
        """Cancel a job: here at once, else through the bus.

        With ``confirm`` (seconds), wait until the job's stream ends and return its
        outcome (``cancelled``, or how it ended first); else return ``None``.
        """
        if await self._apply_cancel(job_id, source="local", wait_for_cleanup=True):
            return await self.wait_end(job_id, confirm) if confirm is not None else None
        if confirm is None and not self._cancel_channel_enabled:
            return None
        receivers = await self.signal_cancel(job_id)
        if confirm is None:
            return None
        return await self._confirm(job_id, confirm, receivers)

    async def signal_cancel(self, job_id: str, *, confirm: float | None = None) -> int:
        """Publish a cancel to every worker and set the marker (for a job not started yet).

        Returns the number of workers that got the signal. With ``confirm``
        (seconds), returns only once the job's stream has ended.

        Raises:
            CancelNotConfirmedError: ``confirm`` passed without an end.
            BusUnavailableError: Redis cannot be reached.
        """
        if not self._cancel_channel_enabled or self._client is None:
            return 0
        keys = k.Keys(job_id)
        try:
            await self._client.set(keys.marker, "1", ex=self._cancel_marker_ttl)
            receivers = int(await self._client.publish(keys.channel, "1"))
        except Exception as exc:
            self._bump_cancel_stat("publish_errors")
            if k.is_connection_error(exc):
                raise self._unavailable(exc) from exc
            raise
        self._bump_cancel_stat("published")
        if confirm is not None:
            await self._confirm(job_id, confirm, receivers)
        return receivers

    async def _confirm(self, job_id: str, timeout: float, receivers: int) -> str:
        try:
            outcome = await self.wait_end(job_id, timeout)
        except TimeoutError:
            raise CancelNotConfirmedError(job_id, timeout, receivers) from None
        self._bump_cancel_stat("confirmed")
        return outcome

    # -- activity, owners, public jobs ---------------------------------------------------

    async def touch_activity(self, job_id: str) -> None:
        """The job's client is still there (the polling watchdog reads it)."""
        if self._client is None or self._polling_stale_threshold_s <= 0:
            return
        ttl = max(int(self._polling_stale_threshold_s * 4), 60)
        try:
            await self._client.set(k.Keys(job_id).activity, str(time.time()), ex=ttl)
        except Exception:
            self._bump_cancel_stat("activity_touch_errors")

    def _owner_refresh_interval_s(self) -> float:
        return max(min(self._ttl / 2, 30.0), 0.1)

    async def _set_owner_key(self, job_id: str, user_id: UUID) -> None:
        if self._client is not None:
            await self._client.set(k.Keys(job_id).owner, str(user_id), ex=self._ttl)

    def _ensure_owner_refresh_task(self, job_id: str) -> None:
        """Owner keys of running jobs are refreshed by the worker's heartbeat loop."""

    async def register_job_owner(self, job_id: str, user_id: UUID) -> None:
        try:
            await self._set_owner_key(job_id, user_id)
        except Exception as exc:
            if k.is_connection_error(exc):
                raise self._unavailable(exc) from exc
            raise
        self._job_owners[job_id] = user_id

    async def get_job_owner(self, job_id: str) -> UUID | None:
        local = self._job_owners.get(job_id)
        if local is not None or self._client is None:
            return local
        key = k.Keys(job_id).owner
        try:
            value = await self._client.get(key)
            if not value:
                return None
            await self._client.expire(key, self._ttl)
        except Exception as exc:
            if k.is_connection_error(exc):
                raise self._unavailable(exc) from exc
            raise
        return UUID(value.decode())

    async def register_public_job(self, job_id: str) -> None:
        await super().register_public_job(job_id)
        if self._client is not None:
            try:
                await self._client.set(k.Keys(job_id).public, b"1", ex=self._ttl)
            except Exception as exc:
                if k.is_connection_error(exc):
                    raise self._unavailable(exc) from exc
                raise

    async def is_public_job_async(self, job_id: str) -> bool:
        if self.is_public_job(job_id):
            return True
        if self._client is None:
            return False
        try:
            return bool(await self._client.exists(k.Keys(job_id).public))
        except Exception as exc:
            if k.is_connection_error(exc):
                raise self._unavailable(exc) from exc
            raise
