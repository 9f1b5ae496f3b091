"""New jobs: checking submit's options, building rows, storing them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import Any

from jobqueue import codec
from jobqueue.errors import InvalidArgumentError
from jobqueue.handlers import HandlerTable
from jobqueue.hooks import HookKind, Lifecycle
from jobqueue.ids import new_job_id
from jobqueue.runtime.engine import Runtime
from jobqueue.status import TaskStatus
from jobqueue.store import jobs
from jobqueue.store.jobs import Job, NewJob
from jobqueue.validation import check_id, check_number, check_text

__all__ = ["MANY_DEFAULTS", "Submitter"]

#: The options ``submit_many`` takes, with their defaults (the same for every job).
MANY_DEFAULTS: dict[str, Any] = {
    "priority": 0,
    "timeout": None,
    "max_retries": 0,
    "delay": 0.0,
    "session_id": None,
    "description": None,
    "concurrency_key": None,
    "concurrency_limit": None,
}


def _check_int(value: Any, name: str, minimum: int | None) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or (minimum is not None and value < minimum)
    ):
        bound = "" if minimum is None else f" >= {minimum}"
        raise InvalidArgumentError(f"{name} must be an int{bound}, got {value!r}")


class Submitter:
    """Builds the rows of new jobs and stores them through the runtime's writer."""

    def __init__(self, runtime: Runtime, handlers: HandlerTable) -> None:
        self._runtime = runtime
        self._handlers = handlers

    def row(
        self,
        handler: str,
        payload: Any,
        *,
        now: float,
        job_id: str | None = None,
        priority: int = 0,
        timeout: float | None = None,
        max_retries: int = 0,
        delay: float = 0.0,
        idempotency_key: str | None = None,
        session_id: str | None = None,
        description: str | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
    ) -> NewJob:
        """One checked row (raises the typed error of the first bad option); defaults as submit."""
        check_id(handler, "handler name")
        self._handlers.check_known(handler)
        _check_int(priority, "priority", None)
        _check_int(max_retries, "max_retries", 0)
        check_number(timeout, "timeout", positive=True)
        check_number(delay, "delay")
        if idempotency_key is not None:
            check_id(idempotency_key, "idempotency_key")
        if session_id is not None:
            check_id(session_id, "session_id")
        if description is not None:
            check_text(description, "description")
        if concurrency_key is not None:
            check_id(concurrency_key, "concurrency_key")
            if concurrency_limit is None:
                concurrency_limit = self._handlers.key_concurrency(handler)
            else:
                _check_int(concurrency_limit, "concurrency_limit", 1)
        elif concurrency_limit is not None:
            raise InvalidArgumentError("concurrency_limit needs a concurrency_key")
        text = codec.encode(payload, "payload", self._runtime.settings.max_payload_bytes)
        return NewJob(
            new_job_id() if job_id is None else check_id(job_id, "job_id"),
            handler,
            text,
            TaskStatus.PENDING,
            now,
            now + delay,
            priority,
            max_retries,
            timeout,
            idempotency_key,
            session_id,
            description,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
        )

    def rows(
        self, handler: str, payloads: Sequence[Any], options: dict[str, Any], now: float
    ) -> list[NewJob]:
        """Rows for ``submit_many``: the shared options are checked once, with the first."""
        if "job_id" in options or "idempotency_key" in options:
            raise InvalidArgumentError("submit_many takes no job_id or idempotency_key; use submit")
        if isinstance(payloads, str | bytes | dict) or not isinstance(payloads, Sequence):
            raise InvalidArgumentError(
                f"payloads must be a list (or tuple) of payloads, one per job, got "
                f"{type(payloads).__name__}"
            )
        unknown = set(options) - set(MANY_DEFAULTS)
        if unknown:
            raise InvalidArgumentError(f"unknown option(s) for submit_many: {sorted(unknown)}")
        if not payloads:
            return []
        opts = {**MANY_DEFAULTS, **options}
        first = self.row(handler, payloads[0], job_id=None, idempotency_key=None, now=now, **opts)
        rows = [first]
        encode, limit = codec.encode, self._runtime.settings.max_payload_bytes
        template = first.copy_with
        rows += [template(new_job_id(), encode(p, "payload", limit)) for p in payloads[1:]]
        return rows

    async def insert(self, rows: Sequence[NewJob], payloads: Sequence[Any]) -> list[Job]:
        """Store ``rows``; returns the new jobs (or the first job of a repeated idempotency key)."""
        rt = self._runtime
        writer = await rt.ready()
        # Ask for a claim before the insert is queued: both go into the same
        # transaction, so a job submitted while a slot is free starts after one hop.
        rt.want_claim()
        stored = writer.enqueue(jobs.insert_jobs, rows)
        # Counted when committed, even if our caller is cancelled meanwhile: once
        # queued, the insert is not withdrawn (shield), so the counts stay exact.
        stored.add_done_callback(partial(self._inserted, rows))
        existing = await asyncio.shield(stored)
        return [
            row.as_pending(payload) if old is None else old
            for row, payload, old in zip(rows, payloads, existing, strict=True)
        ]

    def _inserted(self, rows: Sequence[NewJob], stored: asyncio.Future[Any]) -> None:
        if stored.cancelled() or stored.exception() is not None:
            return
        rt = self._runtime
        added = [row for row, old in zip(rows, stored.result(), strict=True) if old is None]
        for handler, count in Counter(row.handler for row in added).items():
            rt.counts.submitted(handler, count)
        if added and rt.hooks.wants(HookKind.SUBMITTED):
            for row in added:
                rt.hooks.emit(Lifecycle(HookKind.SUBMITTED, row.id, row.handler))
