"""Plain asyncio, no persistence: the same no-op jobs through an ``asyncio.Queue``.

Run: ``PYTHONPATH=. python bench/peers/asyncio_plain.py --workload throughput``

What an in-memory queue costs at best (the floor above which persistence is
paid for): per job a uuid4 id and a payload dict are made, the job is put on
an unbounded ``asyncio.Queue``, one of ``--workers`` worker coroutines (8)
takes it, awaits the async no-op handler and stores the outcome in a dict.
Timed from the first put until every outcome is stored; nothing touches disk.

Only the ``throughput`` workload lives here: submit->start latency and RSS of
plain asyncio are ``latency_asyncio`` and ``rss_asyncio`` in
``bench/throughput.py``, which ``bench/run.py`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any

try:
    from _harness import BENCH
except ImportError:  # imported as bench.peers.asyncio_plain
    from bench.peers._harness import BENCH

try:
    from _common import emit, log
except ImportError:
    from bench._common import emit, log

SETTINGS = {
    "journal_mode": "none (memory only)",
    "synchronous": "none",
    "consumer": "8 worker coroutines on an asyncio.Queue",
    "poll": "none (await queue.get())",
    "commits_per_job": 0,
}


async def run(n: int, workers: int) -> dict[str, Any]:
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    outcomes: dict[str, Any] = {}
    done = asyncio.Event()

    async def handler(payload: dict[str, Any]) -> None:
        return None

    async def worker() -> None:
        while True:
            job_id, payload = await queue.get()
            outcomes[job_id] = await handler(payload)
            if len(outcomes) >= n:
                done.set()

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        queue.put_nowait((uuid.uuid4().hex, {"i": i}))
    submit_s = time.perf_counter() - t0
    await done.wait()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "jobs": n,
        "jobs_per_s": round(n / elapsed, 1),
        "seconds": round(elapsed, 4),
        "submit_s": round(submit_s, 4),
        "cpu_us_per_job": round(cpu / n * 1e6, 2),
        "outcomes": {"completed": len(outcomes)},
        "ok": len(outcomes) == n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workload", default="throughput")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat-index", type=int, default=0)
    args = parser.parse_args(argv)
    n = args.jobs or (300 if args.quick else 20_000)
    base = {"bench": BENCH, "system": "asyncio_plain", "repeat": args.repeat_index}
    for workload in ("throughput", "latency", "rss") if args.workload == "all" else [args.workload]:
        if workload != "throughput":
            emit(
                {
                    **base,
                    "workload": workload,
                    "skipped": "measured by bench/throughput.py (latency_asyncio, rss_asyncio)",
                }
            )
            continue
        log(f"asyncio_plain: throughput, {n} jobs ...")
        fields = asyncio.run(run(n, args.workers))
        emit({**base, "workload": workload, **fields, "settings": SETTINGS})
    return 0


if __name__ == "__main__":
    sys.exit(main())
