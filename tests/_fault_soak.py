"""Helper for test_faults_soak: 100,000 short jobs in a fresh process; prints RSS figures.

Usage: python tests/_fault_soak.py DB_PATH

A process of its own, so the measurement does not depend on what earlier
tests left in the allocator. Jobs send one event each (so each gets a
registry entry) and the reaper runs every 50 ms with 0.1 s retention. RSS is
sampled every 2,000 jobs, once the reaper has emptied the registry, after a
garbage collection and ``malloc_trim`` (memory that is free but still held
by glibc is not in use). The first 20,000 jobs are a warm-up. Growth is the
rise of the RSS floor (the lowest sample) from the first 20,000 measured
jobs to the last 20,000, per 1,000 jobs between them: the allocators move
RSS a few MiB up and down between samples, which does not move the floor,
while memory that is kept does. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import sys
import time

from jobqueue import JobQueueService

SOAK_JOBS = 100_000
WARMUP_JOBS = 20_000
STEP = 2_000
WINDOW = 20_000  # the first and last 20,000 measured jobs
CHUNK = 1_000


def rss() -> int:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares growth of RSS per job (bytes)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


async def registry_empties(svc: JobQueueService, within: float = 5.0) -> int:
    for _ in range(int(within / 0.02)):
        if not svc.stats()["registry"]:
            break
        await asyncio.sleep(0.02)
    return int(svc.stats()["registry"])


async def main(path: str) -> dict[str, object]:
    done = 0
    samples: list[tuple[int, int]] = []  # (jobs done, RSS bytes)
    registry_max = 0
    async with JobQueueService(path, concurrency=64, cleanup_interval=0.05, retention=0.1) as svc:

        @svc.handler("short")
        async def short(ctx, payload):
            nonlocal done
            ctx.events.on_progress(data={"n": payload})  # gives the job a registry entry
            done += 1
            return payload

        t0 = time.perf_counter()
        for start in range(0, SOAK_JOBS, STEP):
            for chunk in range(start, start + STEP, CHUNK):
                await svc.submit_many("short", list(range(chunk, chunk + CHUNK)))
            await svc.run_until_idle(timeout=300)
            registry_max = max(registry_max, await registry_empties(svc))
            samples.append((done, rss()))
        elapsed = time.perf_counter() - t0
        stats = svc.stats()
        waiters = len(svc.runtime.waiters)
    measured = [s for s in samples if s[0] >= WARMUP_JOBS]
    first, last = measured[0], measured[-1]
    # The floor of each end window: transient bumps of the allocators (a few MiB up and
    # down between samples) do not move it; memory that is kept does.
    early = [r for n, r in measured if n <= WARMUP_JOBS + WINDOW]
    late = [r for n, r in measured if n >= SOAK_JOBS - WINDOW]
    floor_growth = (min(late) - min(early)) / ((SOAK_JOBS - WARMUP_JOBS - WINDOW) / 1000)
    return {
        "jobs": done,
        "completed": stats["done"],
        "seconds": round(elapsed, 1),
        "jobs_per_s": round(done / elapsed),
        "rss_mib_at_20k": round(first[1] / 2**20, 1),
        "rss_mib_at_100k": round(last[1] / 2**20, 1),
        "rss_mib_min_max": [
            round(min(r for _, r in measured) / 2**20, 1),
            round(max(r for _, r in measured) / 2**20, 1),
        ],
        "rss_floor_growth_per_1k_jobs_kib": round(floor_growth / 1024, 2),
        "rss_slope_per_1k_jobs_kib": round(slope(measured) * 1000 / 1024, 2),
        "rss_end_to_end_per_1k_jobs_kib": round(
            (last[1] - first[1]) / ((last[0] - first[0]) / 1000) / 1024, 2
        ),
        "registry_after_each_step_max": registry_max,
        "waiters_after": waiters,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
