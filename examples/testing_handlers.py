"""Testing your handlers: an in-memory service and ``run_until_idle()``.

The first half is "your application": a function that registers handlers on
a service. The second half is its test suite, as you would write it in
``tests/test_jobs.py``: each test gets a fresh in-memory service
(``JobQueueService()``, nothing written to disk), submits jobs, awaits
``service.run_until_idle()`` and checks what happened. No sleeps, no
polling, no worker process: each test takes milliseconds.

Run: python examples/testing_handlers.py   (needs pytest and pytest-asyncio,
``pip install 'jobqueue[test]'``), from any directory. To run it with plain
``pytest``, give pytest-asyncio the two options a project sets in its
``pyproject.toml`` (see docs/testing.md), or it warns that
``asyncio_default_fixture_loop_scope`` is unset::

    pytest -o asyncio_mode=auto -o asyncio_default_fixture_loop_scope=function \
        examples/testing_handlers.py
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

try:
    from jobqueue import JobContext, JobFailedError, JobQueueService, Retry
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jobqueue import JobContext, JobFailedError, JobQueueService, Retry

# -- your application -------------------------------------------------------------------------


class Mailer:
    """A dependency the handlers use; tests pass a fake one."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.down_for = 0  # the next N sends fail

    async def send(self, to: str) -> None:
        if self.down_for:
            self.down_for -= 1
            raise ConnectionError("SMTP server unavailable")
        self.sent.append(to)


def register(service: JobQueueService, mailer: Mailer) -> None:
    """Register the application's handlers (call it once at start-up)."""

    @service.handler("welcome")
    async def welcome(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        if "@" not in payload["email"]:
            raise ValueError(f"not an email address: {payload['email']!r}")
        ctx.progress(0, 1, "sending")
        await mailer.send(payload["email"])
        await ctx.emit("message", {"text": f"sent to {payload['email']}"})
        return {"sent": payload["email"], "attempt": ctx.attempt}

    @service.handler("digest")
    async def digest(ctx: JobContext, payload: dict[str, Any]) -> int:
        if not payload["users"]:
            raise Retry(delay=0, message="no users yet")  # ask for another attempt
        for user in payload["users"]:
            await mailer.send(user)
            await ctx.checkpoint()  # where stop() and pause() take effect
        return len(payload["users"])


# -- its tests --------------------------------------------------------------------------------


@pytest.fixture
def mailer() -> Mailer:
    return Mailer()


@pytest_asyncio.fixture
async def service(mailer: Mailer) -> AsyncIterator[JobQueueService]:
    # No path: an in-memory store. retry_backoff=0: retries run at once, not seconds later.
    async with JobQueueService(retry_backoff=0) as service:
        register(service, mailer)
        yield service


@pytest.mark.asyncio
async def test_welcome_mail_is_sent(service: JobQueueService, mailer: Mailer) -> None:
    job = await service.submit("welcome", {"email": "ada@example.com"})
    await service.run_until_idle()
    assert mailer.sent == ["ada@example.com"]
    done = await service.get(job.id)
    assert done.status == "completed"
    assert done.result == {"sent": "ada@example.com", "attempt": 0}


@pytest.mark.asyncio
async def test_a_bad_address_fails_with_the_error(service: JobQueueService) -> None:
    job = await service.submit("welcome", {"email": "nobody"})
    await service.run_until_idle()
    failed = await service.get(job.id)
    assert (failed.status, failed.error_type) == ("failed", "ValueError")
    with pytest.raises(JobFailedError, match="not an email address"):
        await service.wait(job.id)


@pytest.mark.asyncio
async def test_retries_until_the_server_is_back(service: JobQueueService, mailer: Mailer) -> None:
    mailer.down_for = 2
    job = await service.submit("welcome", {"email": "bob@example.com"}, max_retries=3)
    await service.run_until_idle()  # runs the retries too
    assert await service.wait(job.id) == {"sent": "bob@example.com", "attempt": 2}


@pytest.mark.asyncio
async def test_retries_run_out(service: JobQueueService, mailer: Mailer) -> None:
    mailer.down_for = 10
    job = await service.submit("welcome", {"email": "eve@example.com"}, max_retries=1)
    await service.run_until_idle()
    failed = await service.get(job.id)
    assert (failed.status, failed.attempt, failed.error_type) == ("failed", 1, "ConnectionError")


@pytest.mark.asyncio
async def test_events_reach_the_consumer(service: JobQueueService) -> None:
    job = await service.submit("welcome", {"email": "ada@example.com"})
    seen = [(event.type, event.data) async for event in service.events(job.id)]
    assert ("message", {"text": "sent to ada@example.com"}) in seen
    assert seen[-1][0] == "end"


@pytest.mark.asyncio
async def test_many_jobs_at_once(service: JobQueueService, mailer: Mailer) -> None:
    users = [f"user{i}@example.com" for i in range(50)]
    await service.submit_many("welcome", [{"email": u} for u in users])
    await service.submit("digest", {"users": users[:3]})
    await service.run_until_idle()
    assert sorted(mailer.sent) == sorted(users + users[:3])
    assert service.stats()["done"] == 51


@pytest.mark.asyncio
async def test_a_handler_asking_to_retry_uses_up_its_attempts(service: JobQueueService) -> None:
    job = await service.submit("digest", {"users": []}, max_retries=2)
    await service.run_until_idle()
    failed = await service.get(job.id)
    assert (failed.status, failed.reason, failed.attempt) == ("failed", "retries_exhausted", 2)


@pytest.mark.asyncio
async def test_the_same_handlers_on_a_file(tmp_path: Path, mailer: Mailer) -> None:
    """A file-backed service when the test is about persistence: reopen and read back."""
    db = tmp_path / "jobs.db"
    async with JobQueueService(db) as first:
        register(first, mailer)
        job = await first.submit("welcome", {"email": "ada@example.com"})
        await first.run_until_idle()
    async with JobQueueService(db) as second:
        assert (await second.get(job.id)).status == "completed"


if __name__ == "__main__":  # pytest in a fresh interpreter, so it loads its plugins first
    import subprocess

    # The options a project sets in its pyproject.toml: given here, the example runs the
    # same (and without pytest-asyncio's warning) from any directory, in or out of a project.
    options = ["-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"]
    pytest_args = ["-q", "-p", "no:cacheprovider", *options, __file__]
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", *pytest_args]))
