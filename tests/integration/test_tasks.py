"""TaskService: one contract, two backends (in-process and Celery).

The contract tests run once per backend. The Celery ones use a real Redis at
127.0.0.1:6379 and a real worker subprocess (threads pool, started once for
the session), never eager mode; without Redis or Celery they are skipped with
the reason, and the in-process ones still run.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from _celery_app import HANDLERS, PREFIX, make_backend
from _celery_worker import (
    REDIS_HOST,
    REDIS_PORT,
    ROOT,
    START_REDIS,
    CeleryWorker,
    delete_keys,
    redis_answers,
)

from jobqueue import JobCancelledError, JobFailedError, JobNotFoundError, TaskStatus
from jobqueue.errors import (
    BackendUnavailableError,
    DuplicateJobError,
    PayloadError,
    TaskFailedError,
    TaskNotFoundError,
    UnknownHandlerError,
)
from jobqueue.tasks import InProcessBackend, TaskInfo, TaskService

MakeService = Any


def _need_celery() -> None:
    pytest.importorskip(
        "celery", reason="Celery is not installed: pip install -e '.[celery]' (or jobqueue[celery])"
    )


@pytest.fixture(scope="session")
def celery_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorker]:
    """One real Celery worker for the whole session; skips when Redis does not answer."""
    _need_celery()
    if not redis_answers():
        pytest.skip(f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}: {START_REDIS}")
    worker = CeleryWorker(tmp_path_factory.mktemp("celery") / "worker.log")
    backend = make_backend()
    try:
        worker.wait_ready(backend)
        yield worker
    finally:
        worker.stop()
        backend._close()
        delete_keys(PREFIX)


@pytest.fixture(params=["inprocess", "celery"])
def backend_name(request: pytest.FixtureRequest) -> str:
    """Which backend the contract test runs on (the Celery one needs the worker)."""
    if request.param == "celery":
        request.getfixturevalue("celery_worker")
    return str(request.param)


@pytest.fixture
async def tasks(backend_name: str, make_service: MakeService) -> AsyncIterator[TaskService]:
    """A TaskService on the backend under test, with the handlers of ``_celery_app``."""
    if backend_name == "inprocess":
        service = await make_service(poll_interval=0.05)
        for name, fn in HANDLERS.items():
            service.register(name, fn)
        async with TaskService(service) as ts:
            yield ts
    else:
        async with TaskService(make_backend()) as ts:
            yield ts


async def _until_status(ts: TaskService, task_id: str, status: TaskStatus) -> TaskInfo:
    for _ in range(500):
        info = await ts.get_task(task_id)
        if info.status is status:
            return info
        await asyncio.sleep(0.02)
    raise AssertionError(f"task never became {status}: {info}")


# -- the contract, on both backends ------------------------------------------------------


async def test_launch_returns_before_the_task_has_run(tasks: TaskService) -> None:
    start = time.monotonic()
    task_id = await tasks.launch_task("sleepy", {"seconds": 0.5})
    assert time.monotonic() - start < 0.4  # Langflow's AnyIO backend awaited it here
    info = await tasks.get_task(task_id)
    assert info.status in (TaskStatus.PENDING, TaskStatus.RUNNING)
    assert not info.done
    assert await tasks.wait_task(task_id, timeout=10) == "slept"


async def test_task_ids_are_unique_uuid4_hex(tasks: TaskService) -> None:
    ids = [await tasks.launch_task("add", {"a": i, "b": 0}) for i in range(5)]
    assert len(set(ids)) == 5
    for task_id in ids:
        assert len(task_id) == 32
        assert uuid.UUID(hex=task_id).version == 4
    assert [(await tasks.wait_task(t, timeout=10))["sum"] for t in ids] == list(range(5))


async def test_launch_and_await_returns_the_result(tasks: TaskService) -> None:
    result = await tasks.launch_and_await_task("add", {"a": 2, "b": 3}, timeout=10)
    assert result["sum"] == 5
    assert result["attempt"] == 0


async def test_get_task_reports_status_and_result(tasks: TaskService) -> None:
    task_id = await tasks.launch_task("add", {"a": 1, "b": 2})
    assert (await tasks.wait_task(task_id, timeout=10))["task_id"] == task_id  # ctx.job_id
    info = await tasks.get_task(task_id)
    assert info.id == task_id
    assert info.name == "add"
    assert info.status is TaskStatus.COMPLETED
    assert info.status == "completed"
    assert info.done
    assert info.backend == tasks.backend_name
    assert info.result == {"sum": 3, "task_id": task_id, "attempt": 0}
    assert info.failure is None
    assert info.outcome() == info.result


async def test_failure_carries_type_message_and_traceback(tasks: TaskService) -> None:
    task_id = await tasks.launch_task("boom", 5)
    with pytest.raises(TaskFailedError) as caught:
        await tasks.wait_task(task_id, timeout=10)
    err = caught.value
    assert isinstance(err, JobFailedError)  # existing `except JobFailedError` still works
    assert err.error == "ValueError: bad input: 5"
    assert err.error_type == "ValueError"
    assert err.reason == "error"
    assert err.traceback is not None
    assert 'raise ValueError(f"bad input' in err.traceback
    assert task_id in str(err)

    info = await tasks.get_task(task_id)
    assert info.status is TaskStatus.FAILED
    assert info.failure is not None
    assert (info.failure.error_type, info.failure.message) == ("ValueError", "bad input: 5")
    assert info.failure.traceback is not None
    assert "Traceback (most recent call last)" in info.failure.traceback
    assert "in boom" in info.failure.traceback
    assert info.result is None


async def test_launch_and_await_raises_the_failure(tasks: TaskService) -> None:
    with pytest.raises(TaskFailedError, match=r"ValueError: bad input: 'x'"):
        await tasks.launch_and_await_task("boom", "x", timeout=10)


async def test_revoke_a_running_task(tasks: TaskService) -> None:
    task_id = await tasks.launch_task("sleepy", {"seconds": 20})
    await _until_status(tasks, task_id, TaskStatus.RUNNING)
    start = time.monotonic()
    info = await tasks.revoke_task(task_id)
    assert info.status is TaskStatus.CANCELLED
    assert time.monotonic() - start < 3
    with pytest.raises(JobCancelledError):
        await tasks.wait_task(task_id, timeout=5)
    await asyncio.sleep(0.2)  # a late result must not overwrite the revoke
    assert (await tasks.get_task(task_id)).status is TaskStatus.CANCELLED


async def test_revoke_right_after_launch_never_completes(tasks: TaskService) -> None:
    task_id = await tasks.launch_task("sleepy", {"seconds": 0.3})
    info = await tasks.revoke_task(task_id)
    assert info.status is TaskStatus.CANCELLED
    await asyncio.sleep(0.6)  # longer than the task would have taken
    info = await tasks.get_task(task_id)
    assert info.status is TaskStatus.CANCELLED
    assert info.result is None


async def test_revoke_a_finished_task_changes_nothing(tasks: TaskService) -> None:
    task_id = await tasks.launch_task("add", {"a": 1, "b": 1})
    await tasks.wait_task(task_id, timeout=10)
    info = await tasks.revoke_task(task_id)
    assert info.status is TaskStatus.COMPLETED
    assert info.result["sum"] == 2


async def test_unknown_task_id(tasks: TaskService) -> None:
    missing = uuid.uuid4().hex
    with pytest.raises(TaskNotFoundError, match="no task with id") as caught:
        await tasks.get_task(missing)
    assert isinstance(caught.value, JobNotFoundError)
    assert isinstance(caught.value, LookupError)
    assert caught.value.backend == tasks.backend_name
    with pytest.raises(TaskNotFoundError):
        await tasks.wait_task(missing, timeout=2)
    with pytest.raises(TaskNotFoundError):
        await tasks.revoke_task(missing)


async def test_bad_launches_are_refused_up_front(tasks: TaskService) -> None:
    with pytest.raises(UnknownHandlerError, match="nope"):
        await tasks.launch_task("nope", {})
    with pytest.raises(PayloadError):
        await tasks.launch_task("add", {"a": float("nan"), "b": 1})
    task_id = await tasks.launch_task(
        "add", {"a": 1, "b": 1}, task_id="fixed-id-" + uuid.uuid4().hex
    )
    with pytest.raises(DuplicateJobError):
        await tasks.launch_task("add", {"a": 1, "b": 1}, task_id=task_id)
    assert (await tasks.wait_task(task_id, timeout=10))["sum"] == 2


async def test_time_limit_fails_with_reason_timeout(tasks: TaskService) -> None:
    task_id = await tasks.launch_task("slow_until", {"fast_on": 99}, time_limit=0.2)
    with pytest.raises(TaskFailedError) as caught:
        await tasks.wait_task(task_id, timeout=15)
    assert caught.value.reason == "timeout"
    info = await tasks.get_task(task_id)
    assert info.status is TaskStatus.FAILED
    assert info.reason == "timeout"
    assert info.failure is not None
    assert info.failure.error_type in (
        "TimeoutError",  # in process: the job's timeout
        "SoftTimeLimitExceeded",  # Celery: the soft limit, after 3 tries
    )


# -- Celery specifics ---------------------------------------------------------------------


@pytest.fixture
async def celery_tasks(celery_worker: CeleryWorker) -> AsyncIterator[TaskService]:
    async with TaskService(make_backend()) as ts:
        yield ts


async def test_celery_soft_time_limit_gives_up_after_three_tries(
    celery_tasks: TaskService,
) -> None:
    # A limit well above a busy machine's scheduling stalls: the slow tries sleep 30 s.
    task_id = await celery_tasks.launch_task("slow_until", {"fast_on": 99}, time_limit=1.0)
    info = await celery_tasks.backend.wait_task(task_id, timeout=30)
    assert info.status is TaskStatus.FAILED
    assert info.failure is not None
    assert info.failure.error_type == "SoftTimeLimitExceeded"
    assert "try 3 of 3; giving up" in info.failure.message
    assert "1s soft time limit" in info.failure.message
    assert info.reason == "timeout"


async def test_celery_soft_time_limit_retries_until_a_try_fits(celery_tasks: TaskService) -> None:
    # 1 s, not 0.2: the fast try overran 0.2 s once on a loaded 2-core machine (its
    # thread not scheduled in time), and that try was then the last.
    task_id = await celery_tasks.launch_task("slow_until", {"fast_on": 2}, time_limit=1.0)
    assert await celery_tasks.wait_task(task_id, timeout=30) == {"attempt": 2}  # third try


async def test_celery_handler_without_sqlite_effects(celery_tasks: TaskService) -> None:
    with pytest.raises(TaskFailedError, match=r"ctx.effect\(\) writes in the SQLite") as caught:
        await celery_tasks.launch_and_await_task("uses_effect", None, timeout=10)
    assert caught.value.error_type == "InvalidArgumentError"


async def test_celery_launcher_without_handlers_leaves_names_to_the_worker(
    celery_worker: CeleryWorker,
) -> None:
    from jobqueue.tasks import CeleryBackend

    backend = CeleryBackend(
        None, broker=make_backend().url, app=make_backend().app, key_prefix=PREFIX
    )
    async with TaskService(backend) as ts:
        task_id = await ts.launch_task("nope", {})
        info = await ts.backend.wait_task(task_id, timeout=10)
    assert info.status is TaskStatus.FAILED, info
    assert info.reason == "unknown_handler", info
    assert info.failure is not None
    assert "no handler registered as 'nope'" in info.failure.message
    assert info.failure.error_type == "UnknownHandlerError"  # not pickled down to a base class


async def test_celery_revoked_before_any_worker_saw_it_stays_revoked(
    celery_worker: CeleryWorker,
) -> None:
    from jobqueue.tasks import CeleryBackend

    nobody = CeleryBackend(  # a queue no worker consumes
        HANDLERS, broker=make_backend().url, queue=f"{PREFIX}nobody", key_prefix=PREFIX
    )
    async with TaskService(nobody) as ts:
        task_id = await ts.launch_task("add", {"a": 1, "b": 1})
        start = time.monotonic()
        info = await ts.revoke_task(task_id)
        assert time.monotonic() - start < 2  # not waiting for a worker
        assert info.status is TaskStatus.CANCELLED
        # A worker that gets the message later must not flip it back to running.
        assert nobody.record_started(task_id, "late-worker") is False
        assert (await ts.get_task(task_id)).status is TaskStatus.CANCELLED


# -- without a broker ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("PENDING", "pending"),
        ("RECEIVED", "pending"),
        ("STARTED", "running"),
        ("RETRY", "running"),
        ("PROGRESS", "running"),  # a custom state
        ("SUCCESS", "completed"),
        ("FAILURE", "failed"),
        ("REJECTED", "failed"),
        ("REVOKED", "cancelled"),
    ],
)
def test_celery_states_map_to_lowercase_statuses(state: str, status: str) -> None:
    _need_celery()
    from jobqueue.tasks.celery import info_from_meta

    info = info_from_meta("t1", "add", {"status": state, "result": None})
    assert info.status == status
    assert info.state == state
    assert info.backend == "celery"


def test_celery_failure_meta_is_read_without_importing_the_exception() -> None:
    _need_celery()
    from jobqueue.tasks.celery import info_from_meta

    meta = {
        "status": "FAILURE",
        "result": {"exc_type": "QuotaError", "exc_message": ["over quota"], "exc_module": "x.y"},
        "traceback": "Traceback (most recent call last):\n...\nx.y.QuotaError: over quota\n",
    }
    info = info_from_meta("t1", "add", meta)
    assert info.failure is not None
    assert info.failure.error == "QuotaError: over quota"
    assert info.reason == "error"
    with pytest.raises(TaskFailedError) as caught:
        info.outcome()
    assert caught.value.traceback == meta["traceback"]


def test_celery_worker_keeps_exception_names_celery_cannot_rebuild() -> None:
    _need_celery()
    import threading

    from jobqueue.tasks.celery_worker import HandlerFailed, _portable

    class Local(Exception):
        pass

    plain = ValueError("x")
    assert _portable(plain) is plain
    with_lock = ValueError("y")
    with_lock.lock = threading.Lock()  # type: ignore[attr-defined]
    for exc, name in [
        (UnknownHandlerError("n", ["a"]), "UnknownHandlerError"),  # __init__(name, known)
        (Local("z"), "Local"),  # not importable by its qualified name
        (with_lock, "ValueError"),  # an attribute that cannot be copied
    ]:
        stand_in = _portable(exc)
        assert isinstance(stand_in, HandlerFailed)
        assert stand_in.args == (name, str(exc))


async def test_celery_broker_down_is_a_typed_error() -> None:
    _need_celery()
    from jobqueue.tasks import CeleryBackend

    backend = CeleryBackend(HANDLERS, broker="redis://127.0.0.1:1/0")
    async with TaskService(backend) as ts:
        start = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="redis-server --daemonize yes"):
            await ts.launch_task("add", {"a": 1, "b": 1})
        with pytest.raises(BackendUnavailableError, match=r"127\.0\.0\.1:1\b"):
            await ts.get_task("anything")
    assert time.monotonic() - start < 10


async def test_taskservice_wants_a_backend() -> None:
    with pytest.raises(TypeError, match="TaskBackend or a JobQueueService"):
        TaskService(object())  # type: ignore[arg-type]


async def test_taskservice_on_a_service_is_the_inprocess_backend(
    make_service: MakeService,
) -> None:
    service = await make_service()
    ts = TaskService(service)
    assert isinstance(ts.backend, InProcessBackend)
    assert ts.backend_name == "inprocess"


def test_importing_jobqueue_does_not_import_celery() -> None:
    code = (
        "import sys, jobqueue, jobqueue.tasks\n"
        "from jobqueue import TaskService\n"
        "assert 'celery' not in sys.modules and 'kombu' not in sys.modules, 'imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(ROOT), timeout=30
    )
    assert proc.returncode == 0, proc.stderr
