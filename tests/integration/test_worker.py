"""``python -m jobqueue worker``: real worker processes, real signals, real database files.

Jobs are submitted from this process by a producer service on the same file
(see ``_worker_procs.submit``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _worker_procs import APP, WorkerProcess, eventually, row, submit, workers

from jobqueue import JobQueueService
from jobqueue.cli.main import main
from jobqueue.errors import WorkerAppError
from jobqueue.worker import Worker
from jobqueue.worker.loader import load_service, prepare_service


@pytest.fixture
def spawn(db_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ready worker processes on ``db_path``; killed at teardown."""
    with workers(db_path) as start:
        yield start


# -- signals -------------------------------------------------------------------------------


@pytest.mark.slow
def test_first_sigterm_drains_running_jobs_and_exits_0(db_path: Path, spawn: Any) -> None:
    w = spawn()
    ids = submit(db_path, *[("sleep", {"seconds": 1.0})] * 3)
    assert all(row(db_path, i)["owner"].startswith(f"{w.proc.pid}:") for i in ids)
    w.send(signal.SIGTERM)
    w.wait_log("draining")
    late = submit(db_path, ("sleep", {"seconds": 0.1}), running=False)[0]
    assert w.wait(20) == 0, w.text()
    assert [row(db_path, i)["status"] for i in ids] == ["completed"] * 3
    assert row(db_path, late) == {"status": "pending", "reason": None, "attempt": 0, "owner": None}
    assert "worker stopped" in w.text()


def test_second_sigterm_cancels_now_and_the_job_goes_back_to_pending(
    db_path: Path, spawn: Any
) -> None:
    w = spawn("--drain-timeout", "60")
    (job,) = submit(db_path, ("sleep", {"seconds": 60}))
    w.send(signal.SIGTERM)
    w.wait_log("draining")
    t0 = time.monotonic()
    w.send(signal.SIGINT)
    assert w.wait(10) == 0, w.text()
    assert time.monotonic() - t0 < 5
    assert "cancelling running jobs now" in w.text()
    r = row(db_path, job)
    assert (r["status"], r["reason"], r["attempt"]) == ("pending", "shutdown", 0)


@pytest.mark.slow
def test_a_handler_ignoring_cancellation_does_not_hold_the_exit(db_path: Path, spawn: Any) -> None:
    w = spawn("--drain-timeout", "1")
    (job,) = submit(db_path, ("stubborn", {"seconds": 60}))
    w.send(signal.SIGTERM)
    w.wait_log("draining")
    t0 = time.monotonic()
    w.send(signal.SIGTERM)
    assert w.wait(20) == 0, w.text()
    assert time.monotonic() - t0 < 10  # drain 1 s, then cancel_grace 1 s, twice at most
    assert "exiting without waiting for 1 task(s) that ignore cancellation" in w.text()
    assert row(db_path, job)["status"] != "running"  # recorded before the database closed


def test_third_signal_exits_at_once_and_the_job_is_not_lost(db_path: Path, spawn: Any) -> None:
    w = spawn("--drain-timeout", "60")
    (job,) = submit(db_path, ("stubborn", {"seconds": 60}))
    w.send(signal.SIGTERM)
    w.wait_log("draining")
    w.send(signal.SIGTERM)
    w.wait_log("cancelling running jobs now")
    t0 = time.monotonic()
    w.send(signal.SIGTERM)
    assert w.wait(10) == -signal.SIGTERM, w.text()
    assert time.monotonic() - t0 < 5
    assert "exiting now" in w.text()
    assert row(db_path, job)["status"] in ("running", "pending")  # recovered at next open


def test_sigusr1_writes_a_memory_snapshot(db_path: Path, spawn: Any) -> None:
    w = spawn()
    (job,) = submit(db_path, ("sleep", {"seconds": 30}))
    snaps = Path(str(db_path) + ".snapshots")
    found: list[Path] = []
    for n in (1, 2):
        w.send(signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while len(found := sorted(snaps.glob("snapshot-*.json"))) < n:
            assert time.monotonic() < deadline, w.text()
            time.sleep(0.02)
    first, second = (json.loads(p.read_text()) for p in found)
    assert first["pid"] == w.proc.pid
    assert [j["id"] for j in first["running_jobs"]] == [job]
    assert first["running"] == 1
    assert first["memory"]["rss_bytes"] > 0
    assert first["memory"]["tracemalloc"]["started_now"] is True
    traced = second["memory"]["tracemalloc"]
    assert traced["tracing"] is True
    assert traced["started_now"] is False
    assert traced["top"][0]["size_bytes"] > 0
    assert "growth" in traced
    assert "memory snapshot written to" in w.text()
    w.send(signal.SIGTERM)
    w.wait_log("draining")  # (two signals sent at once may arrive as one)
    w.send(signal.SIGTERM)
    assert w.wait(10) == 0, w.text()


# -- a bad module:attr ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.procs._worker_app", "is not of the form module:attr"),
        ("tests._no_such_module:service", "no module named 'tests._no_such_module'"),
        ("tests.procs._worker_app:nope", "has no attribute 'nope' (services defined there:"),
        ("tests.procs._worker_app:not_a_service", "is a int, not a JobQueueService"),
        ("tests.procs._worker_app:empty", "has no handlers registered"),
    ],
)
def test_bad_target_exits_2_with_one_line(
    target: str, message: str, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", target, "--db", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("jobqueue: ")
    assert err.count("\n") == 1
    assert not db_path.exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise RuntimeError('boom')", "raised RuntimeError: boom; fix the module"),
        ("import jobqueue_no_such_dependency", "install the missing package"),
    ],
)
def test_a_module_that_fails_to_import(
    source: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"jq_app_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["worker", f"{name}:service", "--db", str(tmp_path / "jobs.db")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_bad_target_in_a_real_process(db_path: Path) -> None:
    w = WorkerProcess(db_path, app="tests.procs._worker_app:nope")
    assert w.wait(30) == 2
    assert w.text().startswith("jobqueue: module 'tests.procs._worker_app' has no attribute 'nope'")


def test_a_factory_and_a_service_without_a_file() -> None:
    svc = load_service("tests.procs._worker_app:make_service")
    assert isinstance(svc, JobQueueService)
    assert svc is not load_service(APP)
    with pytest.raises(WorkerAppError, match="has no database file"):
        prepare_service(svc, target="tests.procs._worker_app:make_service")
    with pytest.raises(WorkerAppError, match="concurrency must be an int >= 1"):
        prepare_service(svc, path="x.db", concurrency=0)


# -- the library, in this process ------------------------------------------------------------


async def test_worker_in_process_drain_then_cancel_now(db_path: Path) -> None:
    svc = load_service("tests.procs._worker_app:make_service")
    prepare_service(svc, path=db_path, concurrency=2)
    worker = Worker(svc, drain_timeout=60, report_interval=0)
    run = asyncio.ensure_future(worker.run(install_signals=False))
    await asyncio.wait_for(worker.ready.wait(), 10)
    quick = await svc.submit("sleep", {"seconds": 0.2})
    slow = await svc.submit("sleep", {"seconds": 60})

    async def both_run() -> bool:
        return bool(svc.stats()["running"] == 2)

    await eventually(both_run)
    worker.request_stop()

    async def quick_done() -> bool:  # it finishes while draining
        return bool((await asyncio.to_thread(row, db_path, quick.id))["status"] == "completed")

    await eventually(quick_done)
    await asyncio.sleep(0.1)
    assert not run.done()  # the slow one holds the drain
    worker.request_stop()
    await asyncio.wait_for(run, 5)
    async with JobQueueService(db_path) as check:
        assert (await check.get(quick.id)).status == "completed"
        job = await check.get(slow.id)
        assert (job.status, job.reason, job.attempt) == ("pending", "shutdown", 0)


async def test_status_report_and_snapshot_in_process(
    db_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    svc = load_service("tests.procs._worker_app:make_service")
    prepare_service(svc, path=db_path)
    worker = Worker(svc, report_interval=0.05, snapshot_dir=tmp_path / "snaps")
    caplog.set_level("INFO", logger="jobqueue.worker")
    run = asyncio.ensure_future(worker.run(install_signals=False))
    await asyncio.wait_for(worker.ready.wait(), 10)
    await svc.submit("sleep", {"seconds": 0})
    await svc.run_until_idle(10)
    path = await worker.write_snapshot()
    worker.stop_tracing()

    async def reported() -> bool:
        return "status report" in caplog.text

    await eventually(reported)
    worker.request_stop()
    await asyncio.wait_for(run, 10)
    assert path is not None
    assert path.parent == tmp_path / "snaps"
    data = json.loads(path.read_text())
    assert (data["done"], data["owner"]) == (1, svc.owner)
    report = next(r.message for r in caplog.records if r.message.startswith("status report"))
    assert json.loads(report.split(": ", 1)[1])["done"] == 1


def test_cancel_now_logs_the_time_the_drain_actually_waited(db_path: Path, spawn: Any) -> None:
    import re

    w = spawn("--drain-timeout", "10")
    submit(db_path, ("sleep", {"seconds": 60}), ("sleep", {"seconds": 60}))
    w.send(signal.SIGTERM)
    w.wait_log("draining")
    time.sleep(0.5)
    w.send(signal.SIGINT)  # the second Ctrl-C, half a second after the first
    assert w.wait(20) == 0, w.text()
    found = re.search(r"close: 2 job\(s\) still running after ([0-9.]+)s; cancelling", w.text())
    assert found is not None, w.text()
    assert 0.4 <= float(found.group(1)) < 3.0, found.group(0)  # not the 10.0s it was given
