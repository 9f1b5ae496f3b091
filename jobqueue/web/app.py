"""``create_app``: the dashboard as a Starlette app that a host mounts or uvicorn serves.

Nothing lives at module level: each app holds its own service (or the one it
was given), read connection, event feeds and sessions. Every URL the pages
use is relative, so the app works under any mount path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Collection
from importlib import resources
from typing import Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jobqueue.errors import InvalidArgumentError, JobQueueError, ServiceClosedError
from jobqueue.service import JobQueueService
from jobqueue.store import listing
from jobqueue.web.api import Api
from jobqueue.web.reader import Reader
from jobqueue.web.security import Authorize, Guard
from jobqueue.web.sse import Hub

__all__ = ["Dashboard", "create_app"]

log = logging.getLogger("jobqueue.web")

#: How often the dashboard's own service (given a path) looks at the file for changes.
OWN_POLL: Final = 0.2


class Dashboard:
    """What one app holds: its service, reader and event hub (``app.state.dashboard``)."""

    def __init__(self, service: JobQueueService, *, own: bool, heartbeat: float) -> None:
        self.service = service
        self.own = own
        self.reader = Reader(service)
        self.hub = Hub(service, heartbeat, self._version)
        self._lock = asyncio.Lock()

    async def opened(self) -> None:
        """Open the service if it is ours and not open yet; refuse when it cannot serve."""
        service = self.service
        if service.state == "open":
            return
        if self.own and service.state == "new":
            async with self._lock:
                if service.state == "new":
                    service.start()
        if service.state in ("new", "closing", "closed"):
            raise ServiceClosedError(f"the dashboard's job queue service is {service.state}")
        await service.runtime.ready()

    async def _version(self) -> tuple[int, int]:
        await self.opened()
        return await self.reader.read(listing.data_version)

    async def aclose(self) -> None:
        """End the event streams, close the read connection, and the service if it is ours."""
        await self.hub.close()
        await self.reader.close()
        if self.own:
            await self.service.close()


def create_app(
    service_or_path: JobQueueService | str | os.PathLike[str],
    *,
    token: str | None = None,
    read_only: bool = False,
    authorize: Authorize | None = None,
    heartbeat: float = 15.0,
    allowed_hosts: Collection[str] | None = None,
) -> Starlette:
    """The dashboard of a service, or of a database file, as a Starlette app.

    Mount it in the host (``app.mount("/jobs", create_app(service, authorize=...))``)
    or serve it (``python -m jobqueue web --db jobs.db``).

    Args:
        service_or_path: the host's :class:`~jobqueue.JobQueueService`, or a database
            file: the app then opens a service of its own on it (with the persisted
            event log and a 0.2 s poll), which runs no handlers; its controls reach
            jobs running in other processes through the file. It opens on the first
            request and closes when the app shuts down (``lifespan``), or with
            ``await app.state.dashboard.aclose()`` where a host does not run a
            mounted app's lifespan.
        token: a secret shown once as ``?token=...`` and exchanged for a session cookie.
        read_only: show, never change (no buttons; 403 to every ``POST``).
        authorize: ``authorize(request)`` returns ``"full"``, ``"read-only"`` or
            ``"forbidden"`` (or ``(level, who)``; may be ``async``).
        heartbeat: seconds between keep-alive comments on a quiet event stream.
        allowed_hosts: ``Host`` header values served (against DNS rebinding); ``None``
            leaves the check to the host application.

    Raises:
        InvalidArgumentError: neither ``token`` nor ``authorize``, a short token, or a
            heartbeat that is not positive.
    """
    if not heartbeat > 0:
        raise InvalidArgumentError(
            f"heartbeat must be a positive number of seconds, got {heartbeat}"
        )
    own = not isinstance(service_or_path, JobQueueService)
    if isinstance(service_or_path, JobQueueService):
        service = service_or_path
    else:
        service = JobQueueService(service_or_path, persist_events=True, poll_interval=OWN_POLL)
    dashboard = Dashboard(service, own=own, heartbeat=heartbeat)
    api = Api(service, dashboard.reader, dashboard.hub, dashboard.opened)
    static = resources.files("jobqueue.web").joinpath("static")
    index_html = static.joinpath("index.html").read_bytes()

    async def index(request: Request) -> Response:
        return Response(index_html, media_type="text/html; charset=utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dashboard.aclose()

    async def unavailable(request: Request, exc: Exception) -> Response:
        status = 503 if isinstance(exc, ServiceClosedError) else 500
        return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status)

    routes = [
        Route("/", index),
        Route("/api/me", api.me),
        Route("/api/overview", api.overview),
        Route("/api/changes", api.changes),
        Route("/api/jobs", api.list_jobs),
        Route("/api/jobs/{job_id}", api.job),
        Route("/api/jobs/{job_id}/events", api.events),
        Route("/api/jobs/{job_id}/{action}", api.control, methods=["POST"]),
        Route("/api/bulk/{action}", api.bulk, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(static))),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                Guard,
                token=token,
                authorize=authorize,
                read_only=read_only,
                allowed_hosts=allowed_hosts,
                on_refused=_log_refusal,
            )
        ],
        exception_handlers={JobQueueError: unavailable},
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    # Starlette builds its middleware on the first request; check the options now.
    Guard(app.router, token=token, authorize=authorize, read_only=read_only)
    return app


def _log_refusal(request: Request, status: int, message: str) -> None:
    if request.method not in ("GET", "HEAD"):
        client = request.client
        who = f"{client.host}:{client.port}" if client is not None else "unknown"
        log.warning(
            "web: %s %s %s refused (%d): %s", who, request.method, request.url.path, status, message
        )
