"""Every example runs on its own and prints what it promises (so the docs never rot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
EXPECT = {
    "close_order.py": [
        "close-order at 3.",
        "status: completed",
        "steps: start_at=completed wait-close=completed close-order=completed",
    ],
    "langflow_streaming.py": ["token-", "end", "stored status: completed"],
    "quickstart.py": ["result: {'words': 4}", "failed as expected", "ValueError: bad input"],
    "resumable_events.py": ["without gap or repeat"],
    "crash_and_resume.py": [
        "stored status after the crash: running",
        "requeued=1",
        "after restart: completed, attempt 1: charged 42 for A-1",
        "ledger rows: [('A-1', 42)]",
    ],
    "prometheus_scrape.py": [
        'jobqueue_jobs_finished_total{handler="resize",status="completed"} 4',
        'jobqueue_job_errors_total{error_type="ValueError",handler="resize"} 1',
        'jobqueue_queue_length{handler="resize"} 1',
        "scrape_configs:",
    ],
    "testing_handlers.py": ["10 passed"],
    "celery_scale_out.py": [
        "celery: thumbnail img3.png -> [128, 128] in a worker process",
        "failed as expected: ValueError: cannot decode 'blob'",
        "revoked: cancelled",
        "in process: thumbnail local.png -> [128, 128]",
    ],
}
#: An example that needs something absent (Redis, an extra) prints this and exits 0.
SKIPPED = "SKIPPED: "


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )


#: Examples that take seconds (processes, a Celery worker): left out of the quick suite.
SLOW = {"close_order.py", "celery_scale_out.py", "locks_across_processes.py"}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p for p in EXAMPLES],
    ids=[p.name for p in EXAMPLES],
)
def test_example_runs(path: Path) -> None:
    proc = _run([str(path)])
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.startswith(SKIPPED):
        pytest.skip(proc.stdout.strip())
    for text in EXPECT.get(path.name, []):
        assert text in proc.stdout, f"{path.name} output lacks {text!r}:\n{proc.stdout}"


def test_every_example_is_checked() -> None:
    assert len(EXAMPLES) >= 3
    assert set(EXPECT) <= {p.name for p in EXAMPLES}


@pytest.mark.slow
def test_demo_command() -> None:
    proc = _run(["-m", "jobqueue", "demo"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "final statuses read back from the database file" in out
    tail = out.split("final statuses read back from the database file:")[1]
    statuses = [line.split()[2] for line in tail.strip().splitlines()]
    assert statuses.count("completed") == 4
    assert statuses.count("cancelled") == 1
    assert "token" in out
