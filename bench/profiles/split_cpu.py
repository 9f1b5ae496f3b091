"""Where a job's CPU goes: the event-loop thread vs the SQLite thread, by kind of write.

Run (from the repository root)::

    PYTHONPATH=. python bench/profiles/split_cpu.py              # 3 runs x 20,000 jobs
    PYTHONPATH=. python bench/profiles/split_cpu.py --runs 1 --jobs 5000

The workload is ``bench/throughput.py``'s: ``submit_many`` in chunks of 1,000
no-op jobs, then ``run_until_idle()``, concurrency 512, on a file in a temp
dir. The writer's batch function is wrapped (at run time, no library edit) to
time, with the SQLite thread's own CPU clock, each kind of op in a batch
(``insert_jobs``, ``finish``, the claim, the commit). The loop thread's CPU is
its own clock over the same span. One JSON line per run, then a summary line
with the medians; all figures are microseconds per job.

Read it this way: when ``wall_us`` is about ``loop_cpu_us + db_cpu_us``, the
two threads take turns rather than overlap.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import jobqueue.store.writer as writer_mod  # noqa: E402
from jobqueue import JobQueueService  # noqa: E402

CHUNK = 1_000


def _timed_batch(spent: collections.Counter[str]) -> Any:
    """A stand-in for ``writer._run_batch`` that adds each op kind's thread CPU to ``spent``."""

    def run_batch(conn: Any, ops: Sequence[tuple[Any, tuple[Any, ...]]], claim: Any) -> Any:
        clock = time.thread_time
        out: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        i = 0
        while i < len(ops):
            fn, args = ops[i]
            t = clock()
            if isinstance(fn, writer_mod.Batchable):
                j = i + 1
                while j < len(ops) and ops[j][0] is fn:
                    j += 1
                out.extend((True, r) for r in fn.many(conn, [a for _, a in ops[i:j]]))
                i = j
            else:
                out.append((True, fn(conn, *args)))
                i += 1
            named = fn.one if isinstance(fn, writer_mod.Batchable) else fn
            spent[getattr(named, "__name__", "op")] += clock() - t
        t = clock()
        claimed = claim(conn) if claim is not None else None
        spent["claim"] += clock() - t
        t = clock()
        conn.execute("COMMIT")
        spent["commit"] += clock() - t
        return out, claimed

    return run_batch


async def one_run(jobs: int) -> dict[str, Any]:
    spent: collections.Counter[str] = collections.Counter()
    original = writer_mod._run_batch
    writer_mod._run_batch = _timed_batch(spent)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with JobQueueService(os.path.join(tmp, "jobs.db"), concurrency=512) as svc:

                @svc.handler("noop")
                async def noop(ctx: Any, payload: Any) -> None:
                    return None

                wall0, cpu0 = time.perf_counter(), time.thread_time()
                for start in range(0, jobs, CHUNK):
                    await svc.submit_many("noop", [{"i": i} for i in range(start, start + CHUNK)])
                await svc.run_until_idle()
                wall, loop_cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    finally:
        writer_mod._run_batch = original
    per = 1e6 / jobs
    return {
        "bench": "split_cpu",
        "jobs": jobs,
        "jobs_per_s": round(jobs / wall, 1),
        "wall_us": round(wall * per, 2),
        "loop_cpu_us": round(loop_cpu * per, 2),
        "db_cpu_us": round(sum(spent.values()) * per, 2),
        "db_by_kind_us": {k: round(v * per, 2) for k, v in spent.most_common()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per run (20000)")
    parser.add_argument("--runs", type=int, default=3, help="runs (3)")
    args = parser.parse_args(argv)
    lines = []
    for _ in range(args.runs):
        line = asyncio.run(one_run(args.jobs))
        print(json.dumps(line), flush=True)
        lines.append(line)
    keys = ("jobs_per_s", "wall_us", "loop_cpu_us", "db_cpu_us")
    summary = {k: statistics.median(line[k] for line in lines) for k in keys}
    print(json.dumps({"bench": "split_cpu", "system": "summary", "runs": args.runs, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
