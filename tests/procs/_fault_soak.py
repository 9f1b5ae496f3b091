"""Helper for test_faults_soak: 100,000 short jobs in a fresh process; prints memory figures.

Usage: python tests/procs/_fault_soak.py DB_PATH

A process of its own, so the measurement does not depend on what earlier
tests left in the allocator. Jobs send one event each (so each gets a
registry entry) and the reaper runs every 50 ms with 0.1 s retention. Memory
is sampled every 2,000 jobs, once the reaper has emptied the registry and
after a garbage collection. The first 20,000 jobs are a warm-up.

Memory kept is judged by what the allocators themselves count as live, which
does not depend on the machine's load:

* Python: ``tracemalloc`` starts at the end of the warm-up, so what it traces
  is what was allocated since then and is still alive;
* SQLite: ``sqlite3_memory_used()`` of the library the ``sqlite3`` module uses
  (page caches, statements), read through ctypes where the library exports it.

Growth is the rise of the floor (the lowest sample) from the first 20,000
measured jobs to the last 20,000, per 1,000 jobs between them. RSS is reported
the same way, but it also moves with the allocator's fragmentation and with
when glibc hands pages back, which depend on timing: on a loaded machine its
floor can rise a few MiB over the run with nothing kept. Prints one JSON object.
"""

from __future__ import annotations

import _sqlite3
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from jobqueue import JobQueueService

SOAK_JOBS = 100_000
WARMUP_JOBS = 20_000
STEP = 2_000
WINDOW = 20_000  # the first and last 20,000 measured jobs
CHUNK = 1_000


def _sqlite_memory_used() -> Callable[[], int] | None:
    """``sqlite3_memory_used`` of the SQLite library in this process, if reachable."""
    try:
        fn = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (OSError, AttributeError):  # a build without the symbol in reach
        return None
    fn.restype = ctypes.c_int64
    fn.argtypes = []
    return lambda: int(fn())


SQLITE_MEMORY_USED = _sqlite_memory_used()


def rss() -> int:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sample(done: int) -> dict[str, Any]:
    gc.collect()
    return {
        "done": done,
        "python": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
        "sqlite": SQLITE_MEMORY_USED() if SQLITE_MEMORY_USED else None,
        "rss": rss(),
    }


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares growth per job (bytes)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def floor_growth_kib(measured: list[dict[str, Any]], key: str) -> float | None:
    """Rise of the floor of ``key`` from the first to the last window, KiB per 1,000 jobs.

    The floor of each end window: transient bumps (a batch in flight, a cache
    refilled, the allocator moving a few MiB up and down) do not move it;
    memory that is kept does.
    """
    early = [s[key] for s in measured if s["done"] <= WARMUP_JOBS + WINDOW]
    late = [s[key] for s in measured if s["done"] >= SOAK_JOBS - WINDOW]
    if None in early or None in late:
        return None
    between = (SOAK_JOBS - WARMUP_JOBS - WINDOW) / 1000
    return round((min(late) - min(early)) / between / 1024, 2)


async def main(path: str) -> dict[str, object]:
    done = 0
    samples: list[dict[str, Any]] = []
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
            if done >= WARMUP_JOBS - STEP and not tracemalloc.is_tracing():
                # Traced from the last step of the warm-up on: what is traced was allocated
                # after it. (Its own sample, at zero, is not among the measured ones.)
                tracemalloc.start()
            samples.append(sample(done))
        elapsed = time.perf_counter() - t0
        stats = svc.stats()
        waiters = len(svc.runtime.waiters)
    tracemalloc.stop()
    measured = [s for s in samples if s["done"] >= WARMUP_JOBS]
    first, last = measured[0], measured[-1]
    rss_points = [(s["done"], s["rss"]) for s in measured]
    return {
        "jobs": done,
        "completed": stats["done"],
        "seconds": round(elapsed, 1),
        "jobs_per_s": round(done / elapsed),
        "python_floor_growth_per_1k_jobs_kib": floor_growth_kib(measured, "python"),
        "python_kib_min_max": [
            round(min(s["python"] for s in measured) / 1024, 1),
            round(max(s["python"] for s in measured) / 1024, 1),
        ],
        "sqlite_floor_growth_per_1k_jobs_kib": floor_growth_kib(measured, "sqlite"),
        "sqlite_kib_at_20k_100k": (
            [round(first["sqlite"] / 1024, 1), round(last["sqlite"] / 1024, 1)]
            if SQLITE_MEMORY_USED
            else None
        ),
        "rss_mib_at_20k": round(first["rss"] / 2**20, 1),
        "rss_mib_at_100k": round(last["rss"] / 2**20, 1),
        "rss_mib_min_max": [
            round(min(r for _, r in rss_points) / 2**20, 1),
            round(max(r for _, r in rss_points) / 2**20, 1),
        ],
        "rss_floor_growth_per_1k_jobs_kib": floor_growth_kib(measured, "rss"),
        "rss_slope_per_1k_jobs_kib": round(slope(rss_points) * 1000 / 1024, 2),
        "registry_after_each_step_max": registry_max,
        "waiters_after": waiters,
    }


async def registry_empties(svc: JobQueueService, within: float = 5.0) -> int:
    for _ in range(int(within / 0.02)):
        if not svc.stats()["registry"]:
            break
        await asyncio.sleep(0.02)
    return int(svc.stats()["registry"])


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
