"""A host application with the dashboard mounted at /jobs (run as a script).

``python tests/procs/_web_host.py DB PORT`` serves, on 127.0.0.1:PORT, a
Starlette app of its own (``/`` answers ``host app``) with
``Mount("/jobs", create_app(DB, authorize=...))``, as a FastAPI app would
mount it. It prints the dashboard's URL once it listens, and closes the
dashboard's service when it stops (SIGTERM).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from jobqueue.web import create_app


def build(path: str) -> Starlette:
    dashboard = create_app(path, authorize=lambda request: ("full", "tester"))

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("host app")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await dashboard.state.dashboard.aclose()  # a mounted app's lifespan is not run

    return Starlette(routes=[Route("/", home), Mount("/jobs", dashboard)], lifespan=lifespan)


class _Server(uvicorn.Server):
    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        await super().startup(sockets)
        print(f"http://127.0.0.1:{sys.argv[2]}/jobs/", flush=True)


if __name__ == "__main__":
    config = uvicorn.Config(
        build(sys.argv[1]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    _Server(config).run()
