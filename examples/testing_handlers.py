"""Testing your handlers: jobqueue's pytest plugin and a clock that moves when told.

The first half is "your application": a function that registers handlers on a
service. The second half is its test suite, as you would write it in
``tests/test_jobs.py``. Installing jobqueue installs a pytest plugin, so the tests
need no configuration: ``async def`` tests just run, and the ``jobqueue_service``
fixture gives each test a service on a fresh file with a ``TestClock``. Delays,
retry backoffs, timeouts and durable sleeps wait for that clock, which
``run_until_idle()`` moves to the next deadline at once: an hour's delay and a
day's sleep take no real time. The whole suite runs in well under a second.

Run: python examples/testing_handlers.py   (needs pytest), from any directory,
or ``pytest examples/testing_handlers.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

try:
    from jobqueue import JobContext, JobFailedError, JobQueueService, Retry
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jobqueue import JobContext, JobFailedError, JobQueueService, Retry
from jobqueue.testing import TestClock, assert_events, assert_status

DAY = 24 * 3600

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
            raise Retry(delay=600, message="no users yet")  # ask again in 10 minutes
        for user in payload["users"]:
            await mailer.send(user)
            await ctx.checkpoint()  # where stop() and pause() take effect
        return len(payload["users"])

    @service.handler("trial_reminder")
    async def trial_reminder(ctx: JobContext, payload: dict[str, Any]) -> str:
        # A durable sleep: a restart during these two weeks does not start it over.
        await ctx.sleep("trial", 14 * DAY)
        await ctx.step("remind", lambda: mailer.send(payload["email"]))
        return "reminded"


# -- its tests --------------------------------------------------------------------------------


@pytest.fixture
def mailer() -> Mailer:
    return Mailer()


@pytest.fixture
def service(jobqueue_service: JobQueueService, mailer: Mailer) -> JobQueueService:
    # jobqueue_service: from jobqueue's pytest plugin; closed after each test.
    register(jobqueue_service, mailer)
    return jobqueue_service


async def test_welcome_mail_is_sent(service: JobQueueService, mailer: Mailer) -> None:
    job = await service.submit("welcome", {"email": "ada@example.com"})
    await service.run_until_idle()
    assert mailer.sent == ["ada@example.com"]
    done = await assert_status(service, job.id, "completed")
    assert done.result == {"sent": "ada@example.com", "attempt": 0}


async def test_a_bad_address_fails_with_the_error(service: JobQueueService) -> None:
    job = await service.submit("welcome", {"email": "nobody"})
    await service.run_until_idle()
    failed = await assert_status(service, job.id, "failed", reason="error")
    assert failed.error_type == "ValueError"
    with pytest.raises(JobFailedError, match="not an email address"):
        await service.wait(job.id)


async def test_retries_back_off_until_the_server_is_back(
    service: JobQueueService, mailer: Mailer, jobqueue_clock: TestClock
) -> None:
    mailer.down_for = 2
    start = jobqueue_clock.time()
    job = await service.submit("welcome", {"email": "bob@example.com"}, max_retries=3)
    await service.run_until_idle()  # runs the retries too, moving the clock past each backoff
    assert await service.wait(job.id) == {"sent": "bob@example.com", "attempt": 2}
    assert jobqueue_clock.time() - start >= 1.0  # two backoffs (1 s and 2 s, with jitter)


async def test_retries_run_out(service: JobQueueService, mailer: Mailer) -> None:
    mailer.down_for = 10
    job = await service.submit("welcome", {"email": "eve@example.com"}, max_retries=1)
    await service.run_until_idle()
    failed = await assert_status(service, job.id, "failed", attempt=1)
    assert failed.error_type == "ConnectionError"


async def test_events_reach_the_consumer(service: JobQueueService) -> None:
    job = await service.submit("welcome", {"email": "ada@example.com"})
    events = await assert_events(service, job.id, ["progress", "message", "end"])
    assert events[1].data == {"text": "sent to ada@example.com"}


async def test_an_hour_delay_runs_on_the_hour(
    service: JobQueueService, mailer: Mailer, jobqueue_clock: TestClock
) -> None:
    job = await service.submit("welcome", {"email": "late@example.com"}, delay=3600)
    await jobqueue_clock.advance(3599)
    await assert_status(service, job.id, "pending")  # not a second early
    await jobqueue_clock.advance(1)
    await service.run_until_idle()
    await assert_status(service, job.id, "completed")
    assert mailer.sent == ["late@example.com"]


async def test_a_two_week_durable_sleep(
    service: JobQueueService, mailer: Mailer, jobqueue_clock: TestClock
) -> None:
    start = jobqueue_clock.time()
    job = await service.submit("trial_reminder", {"email": "trial@example.com"})
    await service.run_until_idle()
    await assert_status(service, job.id, "completed")
    assert mailer.sent == ["trial@example.com"]
    assert jobqueue_clock.time() - start == pytest.approx(14 * DAY)


async def test_a_handler_asking_to_retry_uses_up_its_attempts(
    service: JobQueueService, jobqueue_clock: TestClock
) -> None:
    start = jobqueue_clock.time()
    job = await service.submit("digest", {"users": []}, max_retries=2)
    await service.run_until_idle()  # two Retry(delay=600): twenty minutes on the clock
    await assert_status(service, job.id, "failed", reason="retries_exhausted", attempt=2)
    assert jobqueue_clock.time() - start == pytest.approx(1200)


async def test_many_jobs_at_once(service: JobQueueService, mailer: Mailer) -> None:
    users = [f"user{i}@example.com" for i in range(50)]
    await service.submit_many("welcome", [{"email": u} for u in users])
    await service.submit("digest", {"users": users[:3]})
    await service.run_until_idle()
    assert sorted(mailer.sent) == sorted(users + users[:3])
    assert service.stats()["completed"] == 51


async def test_the_same_handlers_after_a_restart(tmp_path: Path, mailer: Mailer) -> None:
    """A test about persistence builds its own services on one file: reopen, read back."""
    db = tmp_path / "jobs.db"
    clock = TestClock()
    async with JobQueueService(db, clock=clock) as first:
        register(first, mailer)
        job = await first.submit("welcome", {"email": "ada@example.com"}, delay=60)
    async with JobQueueService(db, clock=clock) as second:
        register(second, mailer)
        await second.run_until_idle()
        await assert_status(second, job.id, "completed")


if __name__ == "__main__":
    import subprocess
    import tempfile

    # pytest in a fresh interpreter, from an empty directory: no configuration file, and
    # pytest-asyncio left out, so jobqueue's plugin alone runs the async tests.
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as empty:
        ini = Path(empty, "pytest.ini")
        ini.write_text("[pytest]\n")  # not the settings of whatever project holds this file
        args = ["-q", "-p", "no:cacheprovider", "-p", "no:asyncio", "-c", str(ini), __file__]
        code = subprocess.call([sys.executable, "-m", "pytest", *args], cwd=empty)
    print(f"the suite took {time.perf_counter() - started:.2f}s of real time")
    sys.exit(code)
