"""Who may see and change what: the guard in front of every route of the dashboard.

Every request, pages and static files included, is either let through with
an :data:`Access` level or refused:

- ``authorize(request)`` (the host's resolver) returns ``"full"``,
  ``"read-only"`` or ``"forbidden"`` (or a ``(level, who)`` pair naming the
  user for the action log); it may be ``async``.
- with a ``token``, a browser shows it once, as ``?token=...`` on any page
  URL, and gets an ``HttpOnly``, ``SameSite=Strict`` session cookie in
  exchange; the token is spent, so a URL left in a history or a log is
  useless. Without a valid cookie the answer is 401.
- ``read_only`` caps the level at ``"read-only"``.

Every ``POST`` must carry the session's CSRF value in the ``X-CSRF-Token``
header, and, when the browser names an origin (``Origin`` or
``Sec-Fetch-Site``), come from the dashboard's own. Every answer carries a
strict Content-Security-Policy (``default-src 'self'``, ``frame-ancestors
'none'``), ``nosniff`` and ``no-store``. The standalone server also checks
the ``Host`` header against the names it serves (DNS rebinding).
"""

from __future__ import annotations

import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobqueue.errors import InvalidArgumentError

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "Access",
    "Authorize",
    "Guard",
    "Viewer",
    "security_headers",
]

Access = Literal["full", "read-only", "forbidden"]
#: The host's resolver: the access level of a request, or ``(level, who)``.
Authorize = Callable[
    [Request], "Access | tuple[Access, str] | Awaitable[Access | tuple[Access, str]]"
]

COOKIE: Final = "jobqueue_session"
CSRF_HEADER: Final = "x-csrf-token"
_LEVELS: Final = get_args(Access)
_CSP: Final = (
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)


@dataclass(frozen=True, slots=True)
class Viewer:
    """What the guard decided for one request: the level, who it is, the CSRF value."""

    access: Access
    who: str
    csrf: str


@dataclass(slots=True)
class _Sessions:
    """Session cookies handed out in exchange for the token (this app's, in memory)."""

    token: str | None
    spent: bool = False
    ids: dict[str, str] = field(default_factory=dict)  # session id -> its CSRF value

    def exchange(self, offered: str) -> str | None:
        """A new session id for the right, unspent token; ``None`` otherwise."""
        if self.token is None or self.spent or not hmac.compare_digest(offered, self.token):
            return None
        self.spent = True
        sid = secrets.token_urlsafe(32)
        self.ids[sid] = secrets.token_urlsafe(24)
        return sid


def security_headers(api: bool) -> list[tuple[bytes, bytes]]:
    """The headers every answer carries (``no-store`` on all of them: job data is live)."""
    headers = [
        (b"content-security-policy", _CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cache-control", b"no-store"),
    ]
    if api:
        headers.append((b"cross-origin-resource-policy", b"same-origin"))
    return headers


class Guard:
    """ASGI middleware: authenticates, authorises and checks every request (see module doc).

    It stores the :class:`Viewer` in ``scope["state"]["jobqueue_viewer"]``.
    Written as plain ASGI so that event streams pass through unbuffered.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        authorize: Authorize | None,
        read_only: bool,
        allowed_hosts: Collection[str] | None = None,
        on_refused: Callable[[Request, int, str], None] | None = None,
    ) -> None:
        if token is None and authorize is None:
            raise InvalidArgumentError(
                "the dashboard needs token= (a secret shown once as ?token=...) or "
                "authorize= (a function of the request returning 'full', 'read-only' or "
                "'forbidden'); pass authorize=lambda request: 'full' to let everyone in"
            )
        if token is not None and len(token) < 16:
            raise InvalidArgumentError(
                "token must be at least 16 characters; use secrets.token_urlsafe()"
            )
        self.app = app
        self.authorize = authorize
        self.read_only = read_only
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None
        self.sessions = _Sessions(token)
        self._app_csrf = secrets.token_urlsafe(24)  # authorize mode: one value per app
        self._on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the dashboard has none: refuse before any route
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        api = _is_api(scope)
        refused = self._host_refusal(request)
        if refused is None:
            exchanged = self._exchange(request)
            if exchanged is not None:
                await _with_headers(exchanged, api)(scope, receive, send)
                return
            viewer, refused = await self._viewer(request)
            if refused is None and request.method not in ("GET", "HEAD"):
                refused = self._post_refusal(request, viewer)
            if refused is None:
                scope.setdefault("state", {})["jobqueue_viewer"] = viewer
                await self.app(scope, receive, _sending_headers(send, api))
                return
        status, message = refused
        if self._on_refused is not None:
            self._on_refused(request, status, message)
        await _with_headers(JSONResponse({"error": message}, status), api)(scope, receive, send)

    def _host_refusal(self, request: Request) -> tuple[int, str] | None:
        if self.allowed_hosts is None:
            return None
        host = request.headers.get("host", "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host in self.allowed_hosts or name in self.allowed_hosts:
            return None
        return 403, f"Host {host!r} is not served here; open the URL the server printed"

    def _exchange(self, request: Request) -> Response | None:
        """``?token=...`` on a GET: the session cookie, and the same URL without the token."""
        offered = request.query_params.get("token")
        if offered is None or request.method != "GET":
            return None
        sid = self.sessions.exchange(offered)
        if sid is None:
            return JSONResponse(
                {
                    "error": "this token is wrong or was already used; restart the server for a "
                    "new URL"
                },
                401,
            )
        rest = urlencode([(k, v) for k, v in parse_qsl(request.url.query) if k != "token"])
        target = request.url.path + (f"?{rest}" if rest else "")
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE,
            sid,
            path=_root(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def _viewer(self, request: Request) -> tuple[Viewer, tuple[int, str] | None]:
        nobody = Viewer("forbidden", "", "")
        who = _client(request)
        csrf = self._app_csrf
        if self.sessions.token is not None:
            sid = request.cookies.get(COOKIE)
            found = self.sessions.ids.get(sid) if sid is not None else None
            if found is None:
                return nobody, (401, "sign in: open the URL with ?token=... the server printed")
            csrf, who = found, f"session {sid[:6]}@{who}" if sid else who
        access: Access = "full"
        if self.authorize is not None:
            verdict: Any = self.authorize(request)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if isinstance(verdict, tuple):
                verdict, who = verdict[0], str(verdict[1])
            access = verdict if verdict in _LEVELS else "forbidden"
        if access == "forbidden":
            return nobody, (403, "forbidden: the dashboard's authorize() refused this request")
        if self.read_only:
            access = "read-only"
        return Viewer(access, who, csrf), None

    def _post_refusal(self, request: Request, viewer: Viewer) -> tuple[int, str] | None:
        if viewer.access != "full":
            return 403, "read-only: this dashboard does not change jobs"
        offered = request.headers.get(CSRF_HEADER, "")
        if not offered or not hmac.compare_digest(offered, viewer.csrf):
            return 403, f"missing or wrong {CSRF_HEADER} header; reload the page"
        if not _same_origin(request):
            return 403, "cross-origin request refused; use the dashboard's own page"
        return None


def _same_origin(request: Request) -> bool:
    headers: Headers = request.headers
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser (no Origin): the CSRF header is the check
    own = f"{request.url.scheme}://{headers.get('host', '')}"
    return origin.lower() == own.lower()


def _client(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client is not None else "unknown"


def _root(request: Request) -> str:
    """The path the dashboard is mounted at, with a trailing slash (the cookie's path)."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return root + "/"


def _is_api(scope: Scope) -> bool:
    root = str(scope.get("root_path", ""))
    path = str(scope.get("path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.startswith("/api/")


def _with_headers(response: Response, api: bool) -> Response:
    for name, value in security_headers(api):
        response.headers[name.decode()] = value.decode()
    return response


def _sending_headers(send: Send, api: bool) -> Send:
    extra = security_headers(api)
    names = {name for name, _ in extra}

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
            message = {**message, "headers": headers + extra}
        await send(message)

    return sender
