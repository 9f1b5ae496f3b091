"""The benchmark scripts still run: ``bench/run.py --quick`` end to end, at smoke sizes.

No figure is asserted (a shared machine makes timings meaningless in a test):
only that every step ran, each peer either measured or said why it was
skipped (its package is an optional ``bench`` extra), the outcomes were read
back from the files, and docs-style markdown came out. The run writes to a
temp directory, never to ``docs/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEERS = ("huey_sqlite", "persistqueue_ack", "litequeue_file", "dbos_sqlite", "asyncio_plain")


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_bench_run_quick(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "bench/run.py", "--quick", "--jobs", "120", "--out", str(tmp_path)]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=85, check=False
    )
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]

    lines = [
        json.loads(x) for x in (tmp_path / "benchmarks-last-run.jsonl").read_text().splitlines()
    ]
    stdout = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert len(stdout) == len(lines)  # every line echoed, one JSON object per line
    errors = [ln for ln in lines if "error" in ln]
    assert not errors, errors

    steps = {ln.get("step") for ln in lines}
    assert {"throughput", "peers", "paths", "events", "recovery", "metrics"} <= steps

    for peer in PEERS:
        mine = [ln for ln in lines if ln.get("bench") == "peers" and ln.get("system") == peer]
        assert mine, f"no line from {peer}"
        for ln in mine:
            if "skipped" in ln:
                assert "not installed" in ln["skipped"] or "throughput.py" in ln["skipped"]
            elif ln["workload"] == "throughput":
                assert ln["ok"], ln  # every outcome read back from the peer's file
                assert ln["jobs_per_s"] > 0

    jq = [ln for ln in lines if ln.get("system") == "jobqueue_submit_many"]
    assert jq
    assert jq[0]["statuses"] == {"completed": 120}

    paths = {ln["system"]: ln for ln in lines if ln.get("bench") == "paths"}
    assert paths["seq_jobqueue"]["statuses"] == {"pending": 220}  # 100 warm-up + 120
    assert paths["seq_jobqueue"]["jobs_per_s"] > 0
    assert paths["seq_sqlite3"]["statuses"] == {"pending": 120}
    for system in ("wait_limit", "wait_jobqueue", "wait_jobqueue_later", "wait_tasks"):
        assert paths[system]["statuses"] == {"completed": 320}, paths[system]  # 200 warm-up
    assert "skipped" in paths["wait_persistqueue"]  # no call tells one item's outcome
    for system in ("seq_huey", "seq_litequeue", "seq_persistqueue", "wait_huey", "wait_litequeue"):
        assert "jobs_per_s" in paths[system] or "not installed" in paths[system]["skipped"]
    assert paths["claim_delayed"]["claimed"] == 3
    assert paths["claim_backlog"]["claimed"] == 8
    events = next(ln for ln in lines if ln.get("bench") == "events" and ln["system"] == "summary")
    assert events["ratios"]["service_events_vs_eventmanager"] is not None
    langflow = [ln for ln in lines if ln.get("system") == "langflow_burst"]
    assert langflow
    assert "events_per_s" in langflow[0] or "lfx" in langflow[0]["skipped"]

    targets = {ln["system"]: ln for ln in lines if ln.get("bench") == "targets"}
    assert set(targets) == {
        "jobqueue_vs_sqlite3_ceiling",
        "jobqueue_vs_huey_sqlite",
        "latency_p99_ms",
        "rss_100k_pending_mib",
        "events_vs_raw_queue",
        "metrics_cost",
        "seq_submit_vs_sqlite3",
        "submit_wait_vs_submit_many",
        "service_events_vs_eventmanager",
        "eventmanager_vs_langflow",
        "claim_50k_delayed_ms",
    }
    assert targets["seq_submit_vs_sqlite3"]["value"] is not None
    assert targets["claim_50k_delayed_ms"]["value"] is not None
    assert targets["jobqueue_vs_sqlite3_ceiling"]["value"] is not None

    md = (tmp_path / "benchmarks.md").read_text()
    assert md.startswith("# Benchmarks")
    assert "## Targets" in md
    assert "| **jobqueue** (`submit_many`" in md
    assert "## The paths users take" in md
    assert took < 80, f"the smoke run took {took:.0f} s"


@pytest.mark.timeout(60)
def test_split_cpu_profile_runs(tmp_path: Path) -> None:
    """bench/profiles/split_cpu.py wraps the writer's batch: it must still match it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "bench/profiles/split_cpu.py", "--runs", "1", "--jobs", "2000"]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=55, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run, summary = (json.loads(x) for x in proc.stdout.splitlines())
    assert run["jobs"] == 2000
    assert {"insert_jobs", "finish", "claim", "commit"} <= set(run["db_by_kind_us"])
    assert run["db_cpu_us"] > 0
    assert run["loop_cpu_us"] > 0
    assert summary["system"] == "summary"
