"""New jobs: checking submit's options, building rows, storing them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import Any, Final

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

_NUMBERS: Final = (int, float)

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
        handlers = self._handlers
        if type(handler) is not str or not handlers.known(handler):  # known names were checked
            check_id(handler, "handler name")
            handlers.check_known(handler)
        if not (  # submit()'s defaults, the common case, need no further check
            timeout is None
            and idempotency_key is None
            and session_id is None
            and description is None
            and concurrency_key is None
            and concurrency_limit is None
            and type(priority) is int
            and priority == 0
            and type(max_retries) is int
            and max_retries == 0
            and type(delay) in _NUMBERS
            and delay == 0
        ):
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
                    concurrency_limit = handlers.key_concurrency(handler)
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
        # Ask for a claim first: it runs in the insert's transaction, so a job submitted
        # while a slot is free is claimed as it is stored.
        rt.want_claim()
        weight = len(rows)
        done = writer.now(jobs.INSERT, (rows,), weight)  # a lone caller: committed at once
        if done is not None:
            ok, existing = done
            self._inserted(rows, None, ok, existing)
            if not ok:
                raise existing
        else:
            # Group-committed with the other callers of this loop pass. Once queued the
            # insert is not withdrawn, even if our caller is cancelled: it is stored and
            # counted all the same.
            stored: asyncio.Future[list[Job | None]] = asyncio.get_running_loop().create_future()
            writer.then(
                jobs.INSERT,
                (rows,),
                partial(self._inserted, rows, stored),
                weight=weight,
                closing_ok=False,
            )
            existing = await stored
        return [
            row.as_pending(payload) if old is None else old
            for row, payload, old in zip(rows, payloads, existing, strict=True)
        ]

    def _inserted(
        self,
        rows: Sequence[NewJob],
        stored: asyncio.Future[list[Job | None]] | None,
        ok: bool,
        value: Any,
    ) -> None:
        if stored is not None and not stored.done():
            if ok:
                stored.set_result(value)
            else:
                stored.set_exception(value)
        if not ok:
            return
        rt = self._runtime
        if len(rows) == 1:  # submit(): no Counter to build
            if value[0] is None:
                row = rows[0]
                rt.counts.submitted(row.handler, 1)
                if rt.hooks.wants(HookKind.SUBMITTED):
                    rt.hooks.emit(Lifecycle(HookKind.SUBMITTED, row.id, row.handler))
            return
        added = [row for row, old in zip(rows, value, strict=True) if old is None]
        for handler, count in Counter(row.handler for row in added).items():
            rt.counts.submitted(handler, count)
        if added and rt.hooks.wants(HookKind.SUBMITTED):
            for row in added:
                rt.hooks.emit(Lifecycle(HookKind.SUBMITTED, row.id, row.handler))
