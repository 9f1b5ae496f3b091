"""The pytest plugin installed with jobqueue (entry point ``pytest11``: ``jobqueue``).

* ``jobqueue_clock``: a :class:`~jobqueue.testing.TestClock`.
* ``jobqueue_service``: a :class:`~jobqueue.JobQueueService` on ``tmp_path / "jobs.db"``
  with that clock; it opens on first use and is closed when the test ends.
* ``async def`` tests run on a fresh event loop with no configuration. When
  pytest-asyncio (or anyio) runs a test, it keeps doing so; this plugin only runs the
  coroutine tests nobody else claimed, where pytest alone would fail them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobqueue.service import JobQueueService
from jobqueue.testing.clock import TestClock

__all__ = ["jobqueue_clock", "jobqueue_service"]

_SERVICE = "jobqueue_service"
_OTHER_RUNNERS = ("asyncio", "anyio", "trio")  # markers of plugins that run coroutines


@pytest.fixture
def jobqueue_clock() -> TestClock:
    """A virtual clock: ``await jobqueue_clock.advance(3600)`` moves an hour on at once."""
    return TestClock()


@pytest.fixture
def jobqueue_service(tmp_path: Path, jobqueue_clock: TestClock) -> Iterator[JobQueueService]:
    """A service on a fresh file with the test clock; register handlers on it in the test.

    ``await jobqueue_service.run_until_idle()`` runs every job, delayed ones included,
    moving the clock to each deadline instead of waiting for it.
    """
    service = JobQueueService(tmp_path / "jobs.db", clock=jobqueue_clock, poll_interval=0.05)
    yield service
    if service.state not in ("new", "closed"):
        # The test's loop is gone: the test wrapper below closes it while the loop runs.
        raise AssertionError(f"{_SERVICE} was still {service.state} after the test")


def _closing(
    fn: Callable[..., Coroutine[Any, Any, Any]], item: pytest.Function
) -> Callable[..., Any]:
    """``fn`` that closes the fixture's service on the test's own loop before returning."""

    @functools.wraps(fn)
    async def test(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        finally:
            # Asked for directly or through another fixture: it is among the item's values.
            service = item.funcargs.get(_SERVICE)
            if isinstance(service, JobQueueService) and service.state != "new":
                await service.close(drain_timeout=0)

    return test


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and _SERVICE in item.fixturenames
            and inspect.iscoroutinefunction(item.obj)
        ):
            item.obj = _closing(item.obj, item)


def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test no other plugin claimed, on a fresh event loop."""
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None  # a plain test, or one pytest-asyncio already wrapped to run itself
    if any(pyfuncitem.get_closest_marker(name) for name in _OTHER_RUNNERS):
        return None
    if "anyio_backend" in pyfuncitem.funcargs:
        return None
    names = inspect.signature(fn).parameters
    kwargs = {name: pyfuncitem.funcargs[name] for name in names if name in pyfuncitem.funcargs}
    with asyncio.Runner() as runner:
        runner.run(fn(**kwargs))
    return True
