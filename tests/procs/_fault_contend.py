"""Helper for test_faults_contention: one of several processes hammering one database file.

Usage: python tests/procs/_fault_contend.py DB_PATH INDEX START_AT SECONDS RUNS_FILE

From START_AT (a wall-clock barrier shared by all processes) for SECONDS, it
submits jobs (single and batches of 10), reads them back (get, list, stats)
and runs whatever it claims; then it keeps running jobs until no job is
pending or running in the file. Every handler run is appended to RUNS_FILE
(one job id per line). Prints one JSON object with its counts, every
exception a call raised, and every warning or error logged by jobqueue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import time

from jobqueue import JobQueueService, TaskStatus


def _write_lines(path: str, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(f"{line}\n" for line in lines)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


async def main(path: str, index: int, start_at: float, seconds: float, runs_file: str) -> dict:
    logs = _Collect()
    logging.getLogger("jobqueue").addHandler(logs)
    runs: list[str] = []
    errors: list[str] = []
    ops = {"submit": 0, "submit_many": 0, "get": 0, "list": 0, "stats": 0}
    submitted = 0
    rnd = random.Random(index)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    async with JobQueueService(path, concurrency=4, poll_interval=0.05) as svc:

        @svc.handler("work")
        async def work(ctx, payload):
            runs.append(ctx.job_id)
            await asyncio.sleep(0)
            return payload["n"]

        mine: list[str] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                roll = rnd.random()
                if roll < 0.45:
                    mine.append((await svc.submit("work", {"n": submitted})).id)
                    ops["submit"] += 1
                    submitted += 1
                elif roll < 0.6:
                    jobs = await svc.submit_many("work", [{"n": submitted + i} for i in range(10)])
                    mine.extend(j.id for j in jobs)
                    ops["submit_many"] += 1
                    submitted += 10
                elif roll < 0.85 and mine:
                    await svc.get(rnd.choice(mine))
                    ops["get"] += 1
                elif roll < 0.97:
                    await svc.list(status=TaskStatus.COMPLETED, limit=20)
                    ops["list"] += 1
                else:
                    svc.stats()
                    ops["stats"] += 1
            except Exception as exc:  # every one is a failure the test reports
                errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0)
        # Drain: run until no job of any process is left pending or running.
        quiet_since = None
        drain_deadline = time.monotonic() + 90
        while time.monotonic() < drain_deadline:
            left = await svc.list(status=[TaskStatus.PENDING, TaskStatus.RUNNING], limit=1)
            if left:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 1.0:
                break
            await asyncio.sleep(0.1)
    _write_lines(runs_file, runs)
    return {
        "index": index,
        "submitted": submitted,
        "ran": len(runs),
        "ops": ops,
        "errors": errors,
        "logs": logs.lines,
    }


if __name__ == "__main__":
    path, index, start_at, seconds, runs_file = sys.argv[1:6]
    out = asyncio.run(main(path, int(index), float(start_at), float(seconds), runs_file))
    print(json.dumps(out))
