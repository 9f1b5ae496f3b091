"""Profile jobqueue's 20,000 no-op job workload with pyinstrument; write the top as text.

Run (from the repository root; needs the ``bench`` extra for pyinstrument)::

    PYTHONPATH=. python bench/profiles/profile_jobqueue.py                 # both variants
    PYTHONPATH=. python bench/profiles/profile_jobqueue.py --variant submit_many --jobs 20000

The workload is ``bench/throughput.py``'s (the same function, ``_jobqueue_throughput``):
``submit_many`` in chunks of 1,000 (or 500 gathered ``submit`` calls per
chunk), then ``run_until_idle()``, concurrency 512, on a file in a temp dir.

pyinstrument samples the event-loop thread (every 0.5 ms, async mode); the
SQLite work of the group-commit writer runs on aiosqlite's thread, which it
does not see, so the header also gives the CPU time of each OS thread of the
process (from ``/proc/self/task``) and the wall time, which shows which
thread is the bottleneck. Output per variant, in ``bench/profiles/``:
``jobqueue_<variant>.txt``: the header, the flat profile (self time per
function, top 45) and the call tree (frames >= 1 % of the samples).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)

import throughput  # noqa: E402
from _common import count_statuses, temp_db  # noqa: E402

import jobqueue  # noqa: E402,F401  imported before profiling: import time is not the hot path

FLAT_LINES = 45


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each OS thread of this process, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def profile(variant: str, jobs: int, interval: float) -> str:
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer

    args = throughput.parse_args(["--jobs", str(jobs), "--only", f"jobqueue_{variant}"])
    cfg = throughput.make_config(args)
    profiler = Profiler(interval=interval, async_mode="enabled")
    with temp_db() as path:
        before = thread_cpu()
        wall0 = time.perf_counter()
        profiler.start()
        fields: dict[str, Any] = asyncio.run(throughput._jobqueue_throughput(cfg, path, variant))
        profiler.stop()
        wall = time.perf_counter() - wall0
        after = thread_cpu()
        statuses = count_statuses(path)
    main_tid = os.getpid()
    main_cpu = after.get(main_tid, 0.0) - before.get(main_tid, 0.0)
    # aiosqlite's threads are gone by now (joined on close): their CPU is the process
    # total minus what the live threads account for.
    total = os.times()
    process_cpu = total.user + total.system
    others = process_cpu - sum(after.values())
    session = profiler.last_session
    assert session is not None
    flat = ConsoleRenderer(flat=True, time="percent_of_total", unicode=False, color=False)
    flat_text = "\n".join(flat.render(session).splitlines()[: FLAT_LINES + 8])
    tree = ConsoleRenderer(
        unicode=False,
        color=False,
        time="percent_of_total",
        processor_options={"filter_threshold": 0.01},
    ).render(session)
    header = [
        f"# jobqueue, {jobs:,} no-op jobs, variant {variant} (bench/throughput.py's workload)",
        f"# under pyinstrument (interval {interval * 1e3:g} ms, async mode): "
        f"{fields['jobs_per_s']:,.0f} jobs/s, {fields['seconds']:.2f} s from first submit to idle",
        f"# statuses read back: {statuses}",
        f"# wall time profiled (open, run, close): {wall:.2f} s",
        f"# CPU of the event-loop thread: {main_cpu:.2f} s "
        f"({main_cpu / wall:.0%} of the wall time) -- profiler overhead included",
        f"# CPU of the other threads (aiosqlite's SQLite thread, checkpointer): "
        f"{max(others, 0.0):.2f} s",
        f"# the whole process: {process_cpu:.2f} s",
        "#",
        f"# Flat profile: self time per function, % of the loop thread's samples "
        f"(top {FLAT_LINES})",
    ]
    return "\n".join([*header, flat_text, "", "# Call tree (frames >= 1 % of samples)", tree])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--variant", choices=("submit_many", "submit_gather", "both"), default="both"
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--interval", type=float, default=0.0005, help="seconds (0.0005)")
    parser.add_argument("--out", default=HERE, help="directory for the .txt files")
    args = parser.parse_args(argv)
    variants = ("submit_many", "submit_gather") if args.variant == "both" else (args.variant,)
    for variant in variants:
        text = profile(variant, args.jobs, args.interval)
        path = os.path.join(args.out, f"jobqueue_{variant}.txt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text.rstrip() + "\n")
        sys.stderr.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
