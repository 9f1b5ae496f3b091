"""The dashboard's JSON and SSE endpoints (all under ``api/``, relative to the mount).

Reads go through the dashboard's :class:`~jobqueue.web.reader.Reader`
(a read-only connection of its own); controls go through the service,
whose Controller reaches a job wherever it runs (here, or in another process
through the store). Every change is logged on ``jobqueue.web`` with who asked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from jobqueue.errors import (
    AmbiguousJobIdError,
    InvalidArgumentError,
    InvalidTransition,
    JobNotFoundError,
    JobQueueError,
)
from jobqueue.status import REQUESTS, TaskStatus
from jobqueue.store import jobs, listing
from jobqueue.web.security import Viewer

if TYPE_CHECKING:
    from jobqueue.service import JobQueueService
    from jobqueue.web.reader import Reader
    from jobqueue.web.sse import Hub

__all__ = ["ACTIONS", "BULK_ACTIONS", "Api"]

log = logging.getLogger("jobqueue.web")

#: The controls of one job, as buttons.
ACTIONS: Final = ("cancel", "pause", "resume", "stop", "retry")
#: The controls applied to every job of the list's filter.
BULK_ACTIONS: Final = ("cancel", "retry")
#: Characters of a payload, result or traceback shown (the rest is cut, and said so).
SHOWN: Final = 20_000
#: Seconds the overview's counts are kept (a scan of an index of every job).
OVERVIEW_TTL: Final = 2.0
#: Rows per page of the job list, by default and at most.
PAGE_ROWS: Final = 50
MAX_PAGE_ROWS: Final = 500
_RETRYABLE: Final = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.STOPPED})


class Api:
    """The endpoints, over one service, reader and event hub."""

    def __init__(
        self,
        service: JobQueueService,
        reader: Reader,
        hub: Hub,
        opened: Callable[[], Awaitable[None]],
    ) -> None:
        self.service = service
        self.reader = reader
        self.hub = hub
        self._opened = opened  # the service is open (or refused, 503) once it returns
        self._overview: tuple[float, dict[str, Any]] | None = None

    # -- reads ---------------------------------------------------------------------------

    async def me(self, request: Request) -> Response:
        """The viewer's access level and CSRF value, and what this dashboard can show."""
        await self._opened()
        viewer = _viewer(request)
        return JSONResponse(
            {
                "access": viewer.access,
                "who": viewer.who,
                "csrf": viewer.csrf,
                "events": self.service.settings.persist_events,
                "path": self.service.path,
                "statuses": [s.value for s in TaskStatus],
            }
        )

    async def overview(self, request: Request) -> Response:
        """Counts by status and handler, queue lengths, oldest due job, recent finishes."""
        await self._opened()
        now = time.time()
        cached = self._overview
        if cached is None or now - cached[0] > OVERVIEW_TTL:  # one scan for every viewer
            found = await self.reader.read(listing.overview, now)
            body = {
                "now": now,
                "by_status": found.by_status,
                "by_handler": found.by_handler,
                "oldest_due_age": None if found.oldest_due is None else now - found.oldest_due,
                "finished": found.finished,
            }
            cached = self._overview = (now, body)
        return JSONResponse(cached[1])

    async def list_jobs(self, request: Request) -> Response:
        """One page of jobs: ``status`` (comma-separated), ``handler``, ``session``, ``id``."""
        await self._opened()
        q = request.query_params
        try:
            filters = _filters(q.get("status"), q.get("handler"), q.get("session"), q.get("id"))
            limit = _limit(q.get("limit"))
            found = await self.reader.read(listing.page, filters, q.get("cursor") or None, limit)
        except ValueError as exc:
            return _error(exc, 400)
        return JSONResponse({"rows": found.rows, "next": found.next})

    async def job(self, request: Request) -> Response:
        """One job: its record, payload, result, error, traceback, steps, last event seq."""
        await self._opened()
        try:
            found = await self.reader.read(listing.detail, request.path_params["job_id"])
        except JobNotFoundError as exc:
            return _error(exc, 404)
        except AmbiguousJobIdError as exc:
            return _error(exc, 409)
        job, last = found.job, found.last_seq
        record = {
            k: v for k, v in asdict(job).items() if k not in ("payload", "result", "traceback")
        }
        record["status"] = job.status.value
        return JSONResponse(
            {
                "job": record,
                "payload": _shown(job.payload),
                "result": _shown(job.result),
                "traceback": _cut(job.traceback),
                "steps": [{**asdict(s), "duration": s.duration} for s in found.steps],
                # Earlier runs (before a retry), without their tracebacks: kept short.
                "runs": [{**asdict(r), "traceback": None} for r in found.runs],
                "actions": _actions(job.status),
                "events": {
                    "available": self.service.settings.persist_events and job.handler is not None,
                    "last_seq": last,
                },
            }
        )

    async def events(self, request: Request) -> Response:
        """The job's events as Server-Sent Events, after ``Last-Event-ID`` or ``?after=``."""
        await self._opened()
        job_id = request.path_params["job_id"]
        given = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        try:
            after = int(given)
            if after < 0:
                raise ValueError(given)
            job = await self.reader.read(jobs.fetch, job_id)
        except JobNotFoundError as exc:
            return _error(exc, 404)
        except ValueError:
            return _error(InvalidArgumentError(f"after must be an event seq, got {given!r}"), 400)
        if not self.service.settings.persist_events or job.handler is None:
            # The in-memory queue belongs to the application's own consumer: not ours to take.
            why = (
                "live events need the persisted event log: open the service with "
                "persist_events=True"
            )
            return _error(InvalidArgumentError(why), 409)
        return StreamingResponse(
            self.hub.follow(job_id, after),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def changes(self, request: Request) -> Response:
        """An SSE message whenever the database file changed (the page then refetches)."""
        await self._opened()
        return StreamingResponse(
            self.hub.changes.follow(),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    # -- changes -------------------------------------------------------------------------

    async def control(self, request: Request) -> Response:
        """``POST api/jobs/{id}/{action}``: cancel, pause, resume, stop or retry one job."""
        await self._opened()
        job_id, action = request.path_params["job_id"], request.path_params["action"]
        if action not in ACTIONS:
            return _error(InvalidArgumentError(f"unknown action {action!r}; use {ACTIONS}"), 404)
        viewer = _viewer(request)
        try:
            job = await getattr(self.service, action)(job_id)
        except JobNotFoundError as exc:
            return _error(exc, 404)
        except InvalidTransition as exc:
            log.info("web: %s asked to %s job %s: refused (%s)", viewer.who, action, job_id, exc)
            return _error(exc, 409)
        except JobQueueError as exc:
            return _error(exc, 400)
        log.info("web: %s %s job %s -> %s", viewer.who, action, job_id, job.status.value)
        return JSONResponse({"id": job.id, "status": job.status.value})

    async def bulk(self, request: Request) -> Response:
        """``POST api/bulk/{action}`` with the list's filter as JSON: cancel or retry them all."""
        await self._opened()
        action = request.path_params["action"]
        if action not in BULK_ACTIONS:
            return _error(
                InvalidArgumentError(f"unknown bulk action {action!r}; use {BULK_ACTIONS}"), 404
            )
        viewer = _viewer(request)
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            filters = _filters(body.get("status"), body.get("handler"), body.get("session"), None)
            if not (filters.statuses or filters.handler or filters.session_id):
                raise ValueError("a bulk action needs a filter: status, handler or session")
            options: dict[str, Any] = {}
            if filters.statuses:
                options["status"] = list(filters.statuses)
            if filters.handler:
                options["handler"] = filters.handler
            if filters.session_id:
                options["session_id"] = filters.session_id
            changed: list[str] = await getattr(self.service, f"{action}_where")(**options)
        except (ValueError, JobQueueError) as exc:
            return _error(exc, 400)
        log.info("web: %s bulk %s %s: %d job(s)", viewer.who, action, options, len(changed))
        return JSONResponse({"action": action, "changed": changed, "count": len(changed)})


def _viewer(request: Request) -> Viewer:
    viewer: Viewer = request.scope["state"]["jobqueue_viewer"]
    return viewer


def _filters(status: Any, handler: Any, session: Any, id_prefix: Any) -> listing.Filters:
    """The list's filter from query values (or a bulk body); ``ValueError`` when bad."""
    if isinstance(status, str):
        status = [s for s in (p.strip().lower() for p in status.split(",")) if s]
    statuses = tuple(status or ())
    valid = {s.value for s in TaskStatus}
    bad = [s for s in statuses if s not in valid]
    if bad:
        raise ValueError(f"unknown status {bad[0]!r}; use one of {', '.join(sorted(valid))}")
    for name, value in (("handler", handler), ("session", session), ("id", id_prefix)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be text")
    return listing.Filters(statuses, handler or None, session or None, id_prefix or None)


def _limit(text: str | None) -> int:
    if text is None:
        return PAGE_ROWS
    value = int(text)
    if not 1 <= value <= MAX_PAGE_ROWS:
        raise ValueError(f"limit must be 1 to {MAX_PAGE_ROWS}, got {value}")
    return value


def _actions(status: TaskStatus) -> list[str]:
    allowed = list(REQUESTS[status])
    if status in _RETRYABLE:
        allowed.append("retry")
    return [a for a in ACTIONS if a in allowed]


def _shown(value: Any) -> dict[str, Any]:
    """A value as pretty JSON text, cut at :data:`SHOWN` characters."""
    if value is None:
        return {"text": None, "cut": False}
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)
    return {"text": text[:SHOWN], "cut": len(text) > SHOWN}


def _cut(text: str | None) -> dict[str, Any]:
    if text is None:
        return {"text": None, "cut": False}
    return {"text": text[-SHOWN:], "cut": len(text) > SHOWN}  # a traceback ends with the error


def _error(exc: Exception, status: int) -> JSONResponse:
    return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status)
