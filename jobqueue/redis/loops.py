"""The Redis service's background loops, one of each per worker.

* :func:`heartbeat`: keeps this worker's lease (``jobqueue:lease:{worker}``,
  expiring ``lease_s / 2`` after the last renewal, renewed every ``lease_s / 6``)
  and, less often, the owner keys of the jobs running here;
* :func:`cancel_dispatcher`: one ``PSUBSCRIBE langflow:cancel:*`` per
  worker, reconnecting with backoff; a cancel for a job running here is applied;
* :func:`polling_watchdog`: cancels a job with a registered owner whose client
  stopped calling ``touch_activity`` (Langflow's polling watchdog).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING

from jobqueue.redis.keys import CANCEL_CHANNEL_PREFIX, LEASE_PREFIX, Keys, raise_if_cancelling

if TYPE_CHECKING:
    from jobqueue.redis.control import CancelsAndOwners

__all__ = ["cancel_dispatcher", "heartbeat", "polling_watchdog"]

log = logging.getLogger("jobqueue.redis")


async def heartbeat(svc: CancelsAndOwners) -> None:
    """Renew the worker's lease; refresh the owner keys of running jobs."""
    lease_key = LEASE_PREFIX + svc.worker_id
    every = svc.lease_s / 6
    lease_ms = max(1, int(svc.lease_s * 500))
    owners_every = svc._owner_refresh_interval_s()
    owners_done = time.monotonic()
    value = f"pid={os.getpid()}"
    while True:
        client = svc._client
        try:
            if client is not None:
                await client.set(lease_key, value, px=lease_ms)
                if time.monotonic() - owners_done >= owners_every:
                    owners_done = time.monotonic()
                    await _refresh_owners(svc)
            wait = every
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise_if_cancelling()
            svc._bump_cancel_stat("lease_errors")
            log.debug("lease renewal failed: %s", exc)
            wait = min(every, 0.1)
        raise_if_cancelling()
        await asyncio.sleep(wait)


async def _refresh_owners(svc: CancelsAndOwners) -> None:
    for job_id in list(svc._queues):
        user_id = svc._job_owners.get(job_id)
        entry = svc._queues.get(job_id)
        if user_id is None or entry is None or svc._client is None:
            continue
        task = entry[2]
        if task is not None and not task.done():
            await svc._set_owner_key(job_id, user_id)


async def cancel_dispatcher(svc: CancelsAndOwners) -> None:
    """Apply every cancel published for a job running here; reconnect when the link drops."""
    pattern = f"{CANCEL_CHANNEL_PREFIX}*"
    backoff = svc._DISPATCHER_RECONNECT_INITIAL_BACKOFF_S
    while True:
        pubsub = svc._client.pubsub()
        try:
            await pubsub.psubscribe(pattern)
            backoff = svc._DISPATCHER_RECONNECT_INITIAL_BACKOFF_S
            svc._dispatcher_ready.set()
            while True:
                # A timeout, not listen(): an idle link must not trip the socket timeout.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                raise_if_cancelling()
                if message is None or message.get("type") != "pmessage":
                    continue
                channel = message.get("channel")
                text = channel.decode() if isinstance(channel, bytes) else str(channel)
                if text.startswith(CANCEL_CHANNEL_PREFIX):
                    await svc._handle_cancel(text[len(CANCEL_CHANNEL_PREFIX) :], source="pubsub")
        except asyncio.CancelledError:
            svc._dispatcher_ready.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)
            raise
        except Exception as exc:
            raise_if_cancelling()
            svc._dispatcher_ready.clear()
            svc._bump_cancel_stat("dispatcher_reconnects")
            log.warning("cancel dispatcher lost its link (%s); again in %.1f s", exc, backoff)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pubsub.aclose(), 1.0)
        raise_if_cancelling()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, svc._DISPATCHER_RECONNECT_MAX_BACKOFF_S)


async def polling_watchdog(svc: CancelsAndOwners) -> None:
    """Cancel owned jobs whose activity heartbeat is older than the threshold."""
    interval = max(svc._polling_watchdog_interval_s, 0.05)
    threshold = svc._polling_stale_threshold_s
    while True:
        raise_if_cancelling()
        await asyncio.sleep(interval)
        client = svc._client
        if svc._closed or client is None:
            continue
        now, now_mono = time.time(), time.monotonic()
        for job_id in list(svc._queues):
            if job_id not in svc._job_owners:
                continue  # internal tasks have no polling client
            try:
                raw = await client.get(Keys(job_id).activity)
            except Exception:
                svc._bump_cancel_stat("activity_get_errors")
                continue
            if raw is None:
                started = svc._job_start_times.get(job_id)
                if started is None or now_mono - started < threshold:
                    continue
                age = float("inf")
            else:
                try:
                    age = now - float(raw)
                except ValueError:
                    svc._bump_cancel_stat("activity_parse_errors")
                    continue
            if age <= threshold:
                continue
            svc._bump_cancel_stat("polling_watchdog_kills")
            log.info("polling watchdog: cancelling abandoned job %s (%.1f s)", job_id, age)
            await svc._handle_cancel(job_id, source="watchdog")
            with contextlib.suppress(Exception):
                await client.delete(Keys(job_id).activity)
