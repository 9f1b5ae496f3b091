"""``jobqueue worker MODULE:ATTR`` calls nothing but a factory of the application's own code.

A target that is not a ``JobQueueService`` and not a factory returning one is
refused before anything is called: one line on stderr, exit code 2, and the
database file (made by a real service, with a pending job in it) untouched.
Before, ``os:system`` and ``json:loads`` were called and failed with a
traceback (exit 1), ``os:fork`` forked, and ``sys:exit`` ended the worker
with exit code 0.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobqueue import JobQueueService
from jobqueue.errors import WorkerAppError
from jobqueue.worker.loader import load_service

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = shutil.which("jobqueue", path=str(Path(sys.executable).parent))
CLI = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "jobqueue"]

APP = textwrap.dedent(
    """
    import sys

    from jobqueue import JobQueueService

    service = JobQueueService()


    @service.handler("summarize")
    async def summarize(ctx, payload):
        return payload


    async def make_async():
        return service


    def broken_factory():
        raise RuntimeError("no settings\\nfound")


    def exiting_factory():
        sys.exit(0)


    def returns_dict():
        return {"not": "a service"}


    def make_service(name="worker"):
        return service


    class Factories:
        @classmethod
        def create(cls):
            return service

        def __call__(self):
            return service


    factories = Factories()
    """
)

POINT = "point the worker at the JobQueueService the handlers are registered on"
REFUSED = [
    ("os:system", "os:system is a builtin_function_or_method, not a JobQueueService"),
    ("json:loads", "json:loads is a function of the standard library (json)"),
    ("os:fork", "os:fork is a builtin_function_or_method"),
    ("sys:exit", "sys:exit is a builtin_function_or_method"),
    ("os:environ.clear", "os:environ.clear is a method of the standard library"),
    ("collections:OrderedDict", "is a class of the standard library (collections)"),
    ("jobqueue:JobQueueService", "is a class of jobqueue (jobqueue.service)"),
    (
        "hostile_app:summarize",
        "hostile_app:summarize is a function that takes arguments (ctx, payload)",
    ),
    ("hostile_app:make_async", "hostile_app:make_async is an async function"),
    ("hostile_app:factories", "hostile_app:factories is a Factories, not a JobQueueService"),
    (
        "hostile_app:broken_factory",
        "calling hostile_app:broken_factory() raised RuntimeError: no settings found; fix",
    ),
    ("hostile_app:exiting_factory", "calling hostile_app:exiting_factory() raised SystemExit"),
    ("hostile_app:returns_dict", "hostile_app:returns_dict() returned a dict"),
]


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the application module and a database holding one pending job."""
    tmp = tmp_path_factory.mktemp("targets")
    (tmp / "hostile_app.py").write_text(APP)

    async def summarize(ctx: object, payload: object) -> object:
        return payload

    async def fill() -> None:
        async with JobQueueService(tmp / "jobs.db") as svc:
            svc.register("summarize", summarize)
            await svc.submit("summarize", {"x": 1}, job_id="waiting", delay=3600)

    asyncio.run(fill())
    return tmp


def _rows(db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, status, attempt FROM jobs").fetchall()
    conn.close()
    return rows


@pytest.mark.parametrize(("target", "message"), REFUSED, ids=[t for t, _ in REFUSED])
def test_worker_refuses_a_target_before_calling_it(
    target: str, message: str, app_dir: Path
) -> None:
    db = app_dir / "jobs.db"
    before = _rows(db)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [*CLI, "worker", target, "--db", str(db)],
        cwd=app_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line (a fork would print two)
    assert proc.stderr.startswith("jobqueue: ")
    assert message in proc.stderr
    if "calling" not in message and "returned" not in message:
        assert POINT in proc.stderr
    assert _rows(db) == before == [("waiting", "pending", 0)]


def test_factories_of_the_application_are_still_called(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(app_dir))
    monkeypatch.delitem(sys.modules, "hostile_app", raising=False)
    service = load_service("hostile_app:service")
    assert load_service("hostile_app:make_service") is service  # defaults are fine
    assert load_service("hostile_app:Factories.create") is service  # a classmethod
    with pytest.raises(WorkerAppError, match="takes arguments"):
        load_service("hostile_app:summarize")
    monkeypatch.delitem(sys.modules, "hostile_app", raising=False)
