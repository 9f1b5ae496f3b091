"""A web dashboard for jobqueue: a Starlette app the host mounts, or serves on its own.

Needs the ``web`` extra (``pip install "jobqueue[web]"``: Starlette and uvicorn).
``create_app(service, authorize=...)`` returns the app; ``python -m jobqueue web
--db FILE`` serves one on 127.0.0.1 with a one-time sign-in URL. See docs/web.md.
"""

from __future__ import annotations

from jobqueue.web.app import Dashboard, create_app
from jobqueue.web.security import Access, Authorize

__all__ = ["Access", "Authorize", "Dashboard", "create_app"]
