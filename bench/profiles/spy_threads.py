"""Which thread limits jobqueue's 20,000-job workload: py-spy over every thread, and the GIL.

Run (from the repository root; needs ``py-spy``, in the ``bench`` extra)::

    PYTHONPATH=. python bench/profiles/spy_threads.py            # both variants, 3 runs each

pyinstrument (``profile_jobqueue.py``) sees only the event-loop thread. This
records the same workload (``bench/throughput.py``'s ``_jobqueue_throughput``,
run ``--runs`` times in one child process) twice with ``py-spy record
--threads``, at 1 kHz:

* ``--idle``: every sample of every thread, so the share of time each thread
  is busy or waiting (the loop waiting in ``epoll``, aiosqlite's threads
  waiting on their request queues) shows whether the two alternate or
  overlap. aiosqlite's threads (the writer's connection and the
  checkpointer's, new ones each run) are summed, so their busy time is also
  given as a share of the loop thread's lifetime, i.e. of the wall time;
* ``--gil``: only samples of the thread holding the GIL, so the shares say
  where the process's Python-level time goes: on a 2-core box the GIL, not a
  core, bounds a pure-Python hot path.

Output: ``bench/profiles/jobqueue_<variant>_threads.txt``, per thread the
busy share and the top leaf frames (self time).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
TOP = 25

CHILD = """
import asyncio, sys
sys.path.insert(0, {bench!r})
import throughput
from _common import temp_db
import jobqueue
variant, runs, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3]
args = throughput.parse_args(["--jobs", "20000", "--only", "jobqueue_" + variant])
cfg = throughput.make_config(args)
for _ in range(runs):
    with temp_db() as path:
        out = asyncio.run(throughput._jobqueue_throughput(cfg, path, variant))
        with open(rates, "a") as fh:
            fh.write(str(round(out["jobs_per_s"])) + " ")
"""

#: Leaf frames that mean "waiting", not working.
_IDLE = ("select (selectors", "_connection_worker_thread (aiosqlite", "wait (threading")


LOOP = "event loop (main thread)"


def _thread_kind(first: str) -> str:
    if "MainThread" in first:
        return LOOP
    if "_connection_worker_thread" in first:
        return "aiosqlite threads (SQLite)"
    return "main thread before the loop (imports)"


def summarize(
    raw_path: str,
) -> tuple[dict[str, int], dict[str, int], dict[str, collections.Counter[str]]]:
    samples: collections.Counter[str] = collections.Counter()
    busy: collections.Counter[str] = collections.Counter()
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    with open(raw_path, encoding="utf-8") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            kind = _thread_kind(frames[0])
            n = int(count)
            samples[kind] += n
            leaf = re.sub(r":\d+\)$", ")", frames[-1])
            idle = any(mark in leaf for mark in _IDLE)
            if not idle:
                busy[kind] += n
            leaves[kind][("[waiting] " if idle else "") + leaf] += n
    return dict(samples), dict(busy), leaves


def record(variant: str, runs: int, mode: str, out_dir: str) -> str:
    raw = os.path.join(out_dir, f"{variant}-{mode}.txt")
    child = os.path.join(out_dir, "child.py")
    with open(child, "w", encoding="utf-8") as fh:
        fh.write(CHILD.format(bench=BENCH))
    env = {**os.environ, "PYTHONPATH": ROOT}
    cmd = ["py-spy", "record", "--threads", f"--{mode}", "-r", "1000", "-f", "raw", "-o", raw]
    rates = os.path.join(out_dir, f"{variant}-{mode}.rates")
    cmd += ["--", sys.executable, child, variant, str(runs), rates]
    subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    with open(rates, encoding="utf-8") as fh:
        return raw + "|" + fh.read().strip()


def report(variant: str, runs: int) -> str:
    out = [
        f"# jobqueue, 20,000 no-op jobs x {runs} runs, variant {variant}: py-spy --threads, 1 kHz",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for mode, title in (
            ("idle", "all samples: how busy each thread is (waiting frames marked)"),
            ("gil", "GIL-holding samples only: where the Python-level time goes"),
        ):
            raw, _, rates = record(variant, runs, mode, tmp).partition("|")
            samples, busy, leaves = summarize(raw)
            total = sum(samples.values())
            wall = samples.get(LOOP, 0) or 1  # the loop thread lives for the whole run
            out += ["", f"## --{mode}: {title}", f"# jobs/s per run under py-spy: {rates}"]
            for kind in sorted(samples, key=lambda k: -samples[k]):
                n = samples[kind]
                if mode == "gil":
                    share = f"holds the GIL in {n / total:.0%} of the GIL-held samples"
                else:
                    share = (
                        f"busy {busy.get(kind, 0) / n:.0%} of its samples = "
                        f"{busy.get(kind, 0) / wall:.0%} of the loop thread's lifetime (wall)"
                    )
                out.append(f"\n{kind}: {n} samples, {share}")
                for leaf, c in leaves[kind].most_common(TOP):
                    out.append(f"  {c / n:6.1%}  {leaf}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--variant", default="both", help="submit_many, submit_gather or both")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=HERE)
    args = parser.parse_args(argv)
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed (pip install -e '.[bench]')")
    variants = ("submit_many", "submit_gather") if args.variant == "both" else (args.variant,)
    for variant in variants:
        path = os.path.join(args.out, f"jobqueue_{variant}_threads.txt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(report(variant, args.runs))
        sys.stderr.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
