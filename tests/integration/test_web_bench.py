"""``bench/web.py`` still runs, at smoke sizes (no timing is asserted: a shared machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_bench_web_quick() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "bench/web.py", "--quick", "--jobs", "3000", "--seconds", "0.5"]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=85, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    kinds = {x["kind"] for x in lines if x.get("bench") == "web_endpoint"}
    assert {"first_page", "deep_page", "status", "handler", "detail", "overview"} <= kinds
    (followers,) = [x for x in lines if x.get("bench") == "web_followers"]
    assert followers["all_events_in_order_once"] is True  # every follower, every event, once
    assert followers["received"] == [followers["expected_events"]] * 10
