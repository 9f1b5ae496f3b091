"""The dashboard's HTTP surface: who gets in, what a POST needs, what each route answers.

The app runs in this test's event loop behind httpx's ASGI transport, over a
real service on a temp file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from jobqueue import JobQueueService
from jobqueue.errors import InvalidArgumentError
from jobqueue.web import create_app
from tests.conftest import MakeService

TOKEN = "test-token-0123456789abcdef"
BASE = "http://dash.test"
GETS = (
    "/",
    "/static/app.js",
    "/static/app.css",
    "/api/me",
    "/api/overview",
    "/api/jobs",
    "/api/jobs/{id}",
    "/api/jobs/{id}/events",
)
POSTS = (
    "/api/jobs/{id}/cancel",
    "/api/jobs/{id}/pause",
    "/api/jobs/{id}/resume",
    "/api/jobs/{id}/stop",
    "/api/jobs/{id}/retry",
    "/api/bulk/cancel",
    "/api/bulk/retry",
)


def client(app: Any, base: str = BASE) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


async def seeded(make_service: MakeService, n: int = 3) -> tuple[JobQueueService, list[str]]:
    service = await make_service(persist_events=True)
    service.declare("email", "resize")
    ids = [(await service.submit("email", {"n": i}, session_id="s1")).id for i in range(n)]
    return service, ids


async def signed_in(app: Any) -> tuple[httpx.AsyncClient, str]:
    """A client holding the session cookie, and the session's CSRF value."""
    c = client(app)
    r = await c.get(f"/?token={TOKEN}")
    assert r.status_code == 303
    me = (await c.get("/api/me")).json()
    return c, me["csrf"]


@pytest.fixture
async def app_of(make_service: MakeService) -> AsyncIterator[Callable[..., Any]]:
    apps: list[Any] = []

    def make(service: JobQueueService, **options: Any) -> Any:
        app = create_app(service, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.state.dashboard.aclose()


async def test_every_route_needs_the_token(make_service: MakeService, app_of: Any) -> None:
    service, ids = await seeded(make_service)
    app = app_of(service, token=TOKEN)
    async with client(app) as c:
        for path in GETS:
            r = await c.get(path.format(id=ids[0]))
            assert r.status_code == 401, path
            assert "token" in r.json()["error"]
        for path in POSTS:
            r = await c.post(path.format(id=ids[0]), headers={"x-csrf-token": "x"})
            assert r.status_code == 401, path
        r = await c.get("/api/jobs", headers={"cookie": "jobqueue_session=forged"})
        assert r.status_code == 401
    assert (await service.get(ids[0])).status.value == "pending"


async def test_forbidden_by_authorize_everywhere(make_service: MakeService, app_of: Any) -> None:
    service, ids = await seeded(make_service)
    app = app_of(service, authorize=lambda request: "forbidden")
    async with client(app) as c:
        for path in GETS + POSTS:
            method = c.post if path in POSTS else c.get
            r = await method(path.format(id=ids[0]))
            assert r.status_code == 403, path


async def test_the_token_buys_one_httponly_strict_cookie(
    make_service: MakeService, app_of: Any
) -> None:
    service, _ = await seeded(make_service)
    app = app_of(service, token=TOKEN)
    async with client(app) as c:
        r = await c.get(f"/?token={TOKEN}&x=1")
        assert r.status_code == 303
        assert r.headers["location"] == "/?x=1"  # the token leaves the URL
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/" in cookie
        assert (await c.get("/api/me")).json()["access"] == "full"
        assert (await c.get("/")).status_code == 200
    async with client(app) as other:  # the token was spent: a leaked URL is useless
        r = await other.get(f"/?token={TOKEN}")
        assert r.status_code == 401
        assert (await other.get("/api/me")).status_code == 401
    async with client(app) as wrong:
        assert (await wrong.get("/?token=not-the-token-at-all")).status_code == 401


async def test_post_needs_csrf_header_and_same_origin(
    make_service: MakeService, app_of: Any
) -> None:
    service, ids = await seeded(make_service)
    app = app_of(service, token=TOKEN)
    c, csrf = await signed_in(app)
    try:
        cancel = f"/api/jobs/{ids[0]}/cancel"
        assert (await c.post(cancel)).status_code == 403
        assert (await c.post(cancel, headers={"x-csrf-token": "wrong"})).status_code == 403
        evil = {"x-csrf-token": csrf, "origin": "http://evil.example"}
        assert (await c.post(cancel, headers=evil)).status_code == 403
        cross = {"x-csrf-token": csrf, "sec-fetch-site": "cross-site"}
        assert (await c.post(cancel, headers=cross)).status_code == 403
        assert (await service.get(ids[0])).status.value == "pending"
        good = {"x-csrf-token": csrf, "origin": BASE, "sec-fetch-site": "same-origin"}
        r = await c.post(cancel, headers=good)
        assert r.status_code == 200
        assert r.json() == {"id": ids[0], "status": "cancelled"}
    finally:
        await c.aclose()
    assert (await service.get(ids[0])).status.value == "cancelled"


async def test_read_only_refuses_every_control(make_service: MakeService, app_of: Any) -> None:
    service, ids = await seeded(make_service)
    for options in (
        {"authorize": lambda request: "read-only"},
        {"authorize": lambda request: "full", "read_only": True},
    ):
        app = app_of(service, **options)
        async with client(app) as c:
            me = (await c.get("/api/me")).json()
            assert me["access"] == "read-only"
            for path in GETS[:-1]:
                assert (await c.get(path.format(id=ids[0]))).status_code == 200, path
            headers = {"x-csrf-token": me["csrf"]}
            for path in POSTS:
                r = await c.post(
                    path.format(id=ids[0]), headers=headers, json={"status": "pending"}
                )
                assert r.status_code == 403, path
                assert "read-only" in r.json()["error"]
    assert [(await service.get(i)).status.value for i in ids] == ["pending"] * 3


async def test_async_authorize_names_who_in_the_action_log(
    make_service: MakeService, app_of: Any, caplog: pytest.LogCaptureFixture
) -> None:
    service, ids = await seeded(make_service)

    async def authorize(request: Request) -> tuple[str, str]:
        user = request.headers.get("x-user", "")
        return ("full", user) if user == "ada" else ("forbidden", user)

    app = app_of(service, authorize=authorize)
    async with client(app) as c:
        assert (await c.get("/api/me", headers={"x-user": "eve"})).status_code == 403
        me = (await c.get("/api/me", headers={"x-user": "ada"})).json()
        assert me["who"] == "ada"
        with caplog.at_level(logging.INFO, logger="jobqueue.web"):
            r = await c.post(
                f"/api/jobs/{ids[1]}/stop", headers={"x-user": "ada", "x-csrf-token": me["csrf"]}
            )
        assert r.json()["status"] == "stopped"
    assert any(
        "ada" in m and "stop" in m and ids[1] in m for m in (r.getMessage() for r in caplog.records)
    )


async def test_security_headers_on_pages_and_api(make_service: MakeService, app_of: Any) -> None:
    service, ids = await seeded(make_service)
    app = app_of(service, authorize=lambda request: "full")
    async with client(app) as c:
        for path in ("/", "/static/app.js", "/api/jobs", f"/api/jobs/{ids[0]}", "/api/nope"):
            r = await c.get(path)
            csp = r.headers["content-security-policy"]
            assert "default-src 'self'" in csp, path
            assert "frame-ancestors 'none'" in csp, path
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["cache-control"] == "no-store", path
        page = (await c.get("/")).text
        assert '<script src="static/app.js">' in page  # relative: works under any mount
        assert "http" not in page.replace("http-equiv", "")  # nothing from another site


async def test_host_header_checked_against_rebinding(
    make_service: MakeService, app_of: Any
) -> None:
    service, _ = await seeded(make_service)
    app = app_of(service, token=TOKEN, allowed_hosts=["127.0.0.1", "localhost"])
    async with client(app, "http://127.0.0.1:8080") as c:
        assert (await c.get(f"/?token={TOKEN}")).status_code == 303
        assert (await c.get("/api/me")).status_code == 200
        r = await c.get("/api/me", headers={"host": "attacker.example:8080"})
        assert r.status_code == 403
        assert "Host" in r.json()["error"]


async def test_list_pages_by_keyset_with_filters(make_service: MakeService, app_of: Any) -> None:
    service = await make_service()
    service.declare("email", "resize")
    made = []
    for i in range(25):
        job = await service.submit("email" if i % 2 else "resize", {"i": i}, session_id=f"s{i % 3}")
        made.append(job.id)
    for job_id in made[:6]:
        await service.cancel(job_id)
    app = app_of(service, authorize=lambda request: "full")
    async with client(app) as c:

        async def all_pages(query: str) -> list[dict[str, Any]]:
            rows, cursor = [], ""
            while True:
                page = (await c.get(f"/api/jobs?limit=4&{query}&cursor={cursor}")).json()
                rows += page["rows"]
                if page["next"] is None:
                    return rows
                cursor = page["next"]

        everything = await all_pages("")
        assert [r["id"] for r in everything] == made[::-1]
        for query, keep in (
            ("status=cancelled", lambda i: i < 6),
            ("status=pending,cancelled", lambda i: True),
            ("handler=email", lambda i: i % 2 == 1),
            ("handler=email&status=pending", lambda i: i % 2 == 1 and i >= 6),
            ("session=s1", lambda i: i % 3 == 1),
            ("session=s1&status=cancelled&handler=email", lambda i: i % 3 == 1 and i < 6 and i % 2),
        ):
            rows = await all_pages(query)
            assert [r["id"] for r in rows] == [made[i] for i in range(24, -1, -1) if keep(i)], query
        prefix = made[7][:-3]
        rows = await all_pages(f"id={prefix}")
        assert [r["id"] for r in rows] == sorted(
            (m for m in made if m.startswith(prefix)), reverse=True
        )
        assert made[7] in [r["id"] for r in rows]
        bad = await c.get("/api/jobs?status=done")
        assert bad.status_code == 400
        assert "pending" in bad.json()["error"]
        assert (await c.get("/api/jobs?cursor=zzz")).status_code == 400
        assert (await c.get("/api/jobs?limit=0")).status_code == 400


async def test_detail_overview_and_missing_jobs(make_service: MakeService, app_of: Any) -> None:
    service, ids = await seeded(make_service)
    await service.cancel(ids[2])
    app = app_of(service, authorize=lambda request: "full")
    async with client(app) as c:
        d = (await c.get(f"/api/jobs/{ids[0]}")).json()
        assert d["job"]["status"] == "pending"
        assert d["payload"]["text"] == '{\n  "n": 0\n}'
        assert d["actions"] == ["cancel", "stop"]
        assert d["events"]["available"] is True
        assert (await c.get(f"/api/jobs/{ids[2]}")).json()["actions"] == ["retry"]
        missing = await c.get("/api/jobs/no-such-job")
        assert missing.status_code == 404
        assert "no job" in missing.json()["error"]
        by_tail = (await c.get(f"/api/jobs/{ids[1][-8:]}")).json()  # the short id the list shows
        assert by_tail["job"]["id"] == ids[1]
        o = (await c.get("/api/overview")).json()
        assert o["by_status"] == {"pending": 2, "cancelled": 1}
        assert o["by_handler"] == {"email": {"pending": 2, "cancelled": 1}}
        assert o["oldest_due_age"] >= 0
        await service.submit("email", job_id="report-2026-01")
        await service.submit("email", job_id="report-2026-02")
        ambiguous = await c.get("/api/jobs/report-2026")
        assert ambiguous.status_code == 409
        assert "report-2026-01" in ambiguous.json()["error"]


async def test_controls_and_bulk_actions(make_service: MakeService, app_of: Any) -> None:
    service, ids = await seeded(make_service, 4)
    app = app_of(service, authorize=lambda request: "full")
    async with client(app) as c:
        h = {"x-csrf-token": (await c.get("/api/me")).json()["csrf"]}
        r = await c.post(f"/api/jobs/{ids[0]}/cancel", headers=h)
        assert r.json()["status"] == "cancelled"
        again = await c.post(f"/api/jobs/{ids[0]}/cancel", headers=h)
        assert again.status_code == 409
        assert (await c.post(f"/api/jobs/{ids[0]}/retry", headers=h)).json()["status"] == "pending"
        runs = (await c.get(f"/api/jobs/{ids[0]}")).json()["runs"]
        assert [(r["seq"], r["status"]) for r in runs] == [(1, "cancelled")]
        assert (await c.post(f"/api/jobs/{ids[0]}/explode", headers=h)).status_code == 404
        assert (await c.post("/api/bulk/cancel", headers=h, json={})).status_code == 400
        r = await c.post("/api/bulk/cancel", headers=h, json={"handler": "email", "session": "s1"})
        assert r.json()["count"] == 4
        r = await c.post("/api/bulk/retry", headers=h, json={"status": "cancelled"})
        assert sorted(r.json()["changed"]) == sorted(ids)
    assert {(await service.get(i)).status.value for i in ids} == {"pending"}


async def test_mounted_under_a_host_app(make_service: MakeService, app_of: Any) -> None:
    service, ids = await seeded(make_service)
    dash = app_of(service, token=TOKEN)
    host = Starlette(routes=[Mount("/jobs", app=dash)])
    async with client(host) as c:
        assert (await c.get("/jobs/api/me")).status_code == 401
        r = await c.get(f"/jobs/?token={TOKEN}")
        assert r.status_code == 303
        assert r.headers["location"] == "/jobs/"
        assert "path=/jobs/" in r.headers["set-cookie"].lower()
        assert (await c.get("/jobs/")).status_code == 200
        assert (await c.get("/jobs/static/app.js")).status_code == 200
        rows = (await c.get("/jobs/api/jobs")).json()["rows"]
        assert {r["id"] for r in rows} == set(ids)


def test_no_dashboard_without_a_token_or_authorize(tmp_path: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="authorize"):
        create_app(str(tmp_path / "x.db"))
    with pytest.raises(InvalidArgumentError, match="16 characters"):
        create_app(str(tmp_path / "x.db"), token="short")


async def test_a_path_opens_its_own_service(tmp_path: Any) -> None:
    path = str(tmp_path / "own.db")
    async with JobQueueService(path) as producer:
        producer.declare("email")
        job = await producer.submit("email", {"x": 1})
    app = create_app(path, authorize=lambda request: "full")
    try:
        async with client(app) as c:
            me = (await c.get("/api/me")).json()
            assert me["events"] is True
            rows = (await c.get("/api/jobs")).json()["rows"]
            assert [r["id"] for r in rows] == [job.id]
            r = await c.post(f"/api/jobs/{job.id}/cancel", headers={"x-csrf-token": me["csrf"]})
            assert r.json()["status"] == "cancelled"
    finally:
        await app.state.dashboard.aclose()
    assert app.state.dashboard.service.state == "closed"


async def test_old_pending_jobs_past_the_window_are_listed(
    make_service: MakeService, app_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobqueue.store import listing

    monkeypatch.setattr(listing, "WINDOW", 4)  # pending rows beyond it come from jobs_pending
    service = await make_service()
    service.declare("email", "resize")
    made = [
        (await service.submit("email" if i % 2 else "resize", {"i": i}, delay=3600)).id
        for i in range(12)
    ]
    for job_id in made[4:]:
        await service.cancel(job_id)  # the newest rows are not pending: the old ones are
    app = app_of(service, authorize=lambda request: "full")
    async with client(app) as c:
        for query, keep in (
            ("status=pending", lambda i: i < 4),
            ("handler=email", lambda i: i % 2 == 1),
            ("handler=resize&status=pending", lambda i: i < 4 and i % 2 == 0),
        ):
            rows, cursor = [], ""
            while True:
                page = (await c.get(f"/api/jobs?limit=3&{query}&cursor={cursor}")).json()
                rows += page["rows"]
                if page["next"] is None:
                    break
                cursor = page["next"]
            assert [r["id"] for r in rows] == [made[i] for i in range(11, -1, -1) if keep(i)], query


async def test_a_workflow_job_shows_its_steps_and_wake_time(
    make_service: MakeService, app_of: Any
) -> None:
    service = await make_service()

    @service.handler("flow")
    async def flow(ctx: Any, payload: Any) -> None:
        async def fetch() -> int:
            return 7

        await ctx.step("fetch", fetch)
        await ctx.sleep("nap", 3600)

    job = await service.submit("flow", {})
    async with asyncio.timeout(10):
        while not (steps := await service.get_steps(job.id)) or steps[-1].status != "sleeping":  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    app = app_of(service, authorize=lambda request: "full")
    async with client(app) as c:
        d = (await c.get(f"/api/jobs/{job.id}")).json()
    fetch_step, nap = d["steps"]
    assert (fetch_step["name"], fetch_step["status"], fetch_step["result"]) == (
        "fetch",
        "completed",
        7,
    )
    assert fetch_step["duration"] >= 0
    assert (nap["kind"], nap["status"]) == ("sleep", "sleeping")
    assert nap["wake_at"] > d["job"]["created_at"] + 3500
