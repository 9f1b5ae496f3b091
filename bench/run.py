"""Run every benchmark, three times, and write docs/benchmarks.md from the run (issue 10).

Run (from the repository root; ``nox -s bench`` does the same on a fresh machine)::

    python bench/run.py                 # full run, about 10 minutes on the 2-core box
    python bench/run.py --quick         # smoke run: small sizes, 1 repeat, ~20 s
    python bench/run.py --only peers --peers huey_sqlite,litequeue_file

Steps (each script runs its systems in fresh child processes):

``throughput``  ``bench/throughput.py``: the stdlib sqlite3 group-commit ceiling,
                aiosqlite baselines, jobqueue (``submit_many`` and gathered
                ``submit``), submit->start latency and RSS of jobqueue and of
                plain asyncio. Run once per repeat.
``peers``       ``bench/peers/<peer>.py`` for each peer and workload (throughput,
                latency, rss), one process each, once per repeat; the
                ``*_defaults`` variants (the peer's own durability settings)
                run the throughput workload only, with fewer jobs (not in
                ``--quick``).
``paths``       ``bench/paths.py``: the paths users take, each beside its limit
                and the peers (one-at-a-time submit, submit then wait, the
                claim with many delayed jobs). Run once per repeat.
``events``      ``bench/events_stream.py``: EventManager vs raw asyncio.Queue,
                ``service.events()`` and Langflow's own EventManager,
                interleaved rounds in one process (``--events-python``: an
                interpreter with lfx installed, when this one lacks it).
``recovery``    ``bench/recovery.py --only rss``: RSS growth for 100,000 pending jobs.
``metrics``     ``bench/metrics_overhead.py``: the cost of metrics on.

Repeats are rep-major: repeat 1 of throughput and of every peer, then repeat
2, ..., so each repeat of every system sees the machine at about the same
time. Every JSON line of every step is echoed to stdout and written to
``<out>/benchmarks-last-run.jsonl`` as it arrives (a ``"step"`` field added;
the driver's repeat index replaces a script's own); at the end
``bench/render_md.py`` turns that file into ``<out>/benchmarks.md`` and the
driver prints one ``"bench": "targets"`` line per target and a summary line.
``--out`` defaults to ``docs/`` for a full run and to a temp directory for
``--quick`` (so a smoke run never overwrites the published figures).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Final, TextIO

BENCH_DIR: Final = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT: Final = os.path.dirname(BENCH_DIR)
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

from _common import emit, log  # noqa: E402

STEPS: Final = ("throughput", "peers", "paths", "events", "recovery", "metrics")
#: Peer adapters (bench/peers/<name>.py) and the workloads each runs.
PEERS: Final[dict[str, tuple[str, ...]]] = {
    "huey_sqlite": ("throughput", "latency", "rss"),
    "persistqueue_ack": ("throughput", "latency", "rss"),
    "litequeue_file": ("throughput", "latency", "rss"),
    "dbos_sqlite": ("throughput", "latency", "rss"),
    "asyncio_plain": ("throughput",),
}
#: The peers' own durability defaults (synchronous=FULL...): throughput only, fewer jobs.
DEFAULTS_VARIANTS: Final[dict[str, int]] = {
    "huey_sqlite": 2_000,
    "persistqueue_ack": 2_000,
    "dbos_sqlite": 500,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat")
    parser.add_argument("--repeat", type=int, default=None, help="repeats (3; quick 1)")
    parser.add_argument(
        "--jobs", type=int, default=None, help="throughput jobs per system (20000; quick 300)"
    )
    parser.add_argument("--only", default=",".join(STEPS), help="steps: " + ", ".join(STEPS))
    parser.add_argument(
        "--peers", default=",".join(PEERS), help="peer adapters: " + ", ".join(PEERS)
    )
    parser.add_argument("--no-defaults", action="store_true", help="skip the *_defaults variants")
    parser.add_argument("--out", default=None, help="directory for the .md and .jsonl")
    parser.add_argument(
        "--events-python",
        default=os.environ.get("JOBQUEUE_BENCH_EVENTS_PYTHON", sys.executable),
        help="interpreter for the events step (one with lfx, for Langflow's column)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per child script (900; quick 120)"
    )
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.only.split(",") if s.strip()]
    args.peer_list = [p.strip() for p in args.peers.split(",") if p.strip()]
    for step in args.steps:
        if step not in STEPS:
            parser.error(f"unknown step {step!r}; choose from {', '.join(STEPS)}")
    for peer in args.peer_list:
        if peer not in PEERS:
            parser.error(f"unknown peer {peer!r}; choose from {', '.join(PEERS)}")
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.timeout is None:
        args.timeout = 120.0 if args.quick else 900.0
    if args.out is None:
        args.out = (
            tempfile.mkdtemp(prefix="jobqueue-bench-quick-")
            if args.quick
            else os.path.join(REPO_ROOT, "docs")
        )
    return args


class Recorder:
    """Echoes JSON lines to stdout and appends them to the run's .jsonl file."""

    def __init__(self, fh: TextIO) -> None:
        self.fh = fh
        self.lines: list[dict[str, Any]] = []

    def add(self, line: dict[str, Any]) -> None:
        emit(line)
        self.fh.write(json.dumps(line) + "\n")
        self.fh.flush()
        self.lines.append(line)


def _script_lines(
    cmd: list[str], timeout: float, python: str = sys.executable
) -> Iterator[dict[str, Any]]:
    """Run one script; yield its JSON stdout lines (stderr passes through)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(
            [python, *cmd],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        yield {"error": f"{' '.join(cmd)} timed out after {exc.timeout} s"}
        return
    got = False
    for raw in proc.stdout.splitlines():
        raw = raw.strip()
        if not raw.startswith("{"):
            continue
        try:
            yield json.loads(raw)
            got = True
        except json.JSONDecodeError:
            log(f"ignoring non-JSON line from {cmd[0]}: {raw[:200]}")
    if proc.returncode != 0:
        yield {"error": f"{' '.join(cmd)} exited with status {proc.returncode}"}
    elif not got:
        yield {"error": f"{' '.join(cmd)} printed no JSON line"}


def _run(
    rec: Recorder,
    step: str,
    cmd: list[str],
    args: argparse.Namespace,
    python: str = sys.executable,
    **tag: Any,
) -> None:
    t0 = time.perf_counter()
    for line in _script_lines(cmd, args.timeout, python):
        line.setdefault("bench", step)
        rec.add({**line, **tag, "step": step})
    log(f"{step} {' '.join(cmd[1:])}: {time.perf_counter() - t0:.1f} s")


def run_throughput(rec: Recorder, args: argparse.Namespace, rep: int) -> None:
    cmd = ["bench/throughput.py", "--repeat", "1", "--jobs", str(args.jobs)]
    if args.quick:
        cmd.append("--quick")
    _run(rec, "throughput", cmd, args, repeat=rep)


def run_peers(rec: Recorder, args: argparse.Namespace, rep: int) -> None:
    for peer in args.peer_list:
        script = f"bench/peers/{peer}.py"
        common = ["--repeat-index", str(rep)]
        if args.quick:
            # One process for the three workloads: a smoke test, not a measurement.
            _run(rec, "peers", [script, "--workload", "all", "--quick", *common], args)
        else:
            for workload in PEERS[peer]:
                cmd = [script, "--workload", workload, *common]
                if peer != "dbos_sqlite" or args.jobs != 20_000:
                    cmd += ["--jobs", str(args.jobs)]
                _run(rec, "peers", cmd, args)
        if peer in DEFAULTS_VARIANTS and not args.no_defaults and not args.quick:
            jobs = min(DEFAULTS_VARIANTS[peer], args.jobs)
            cmd = [script, "--settings", "defaults", "--workload", "throughput", *common]
            _run(rec, "peers", [*cmd, "--jobs", str(jobs)], args)


def run_paths(rec: Recorder, args: argparse.Namespace, rep: int) -> None:
    cmd = ["bench/paths.py", "--repeat", "1"]
    if args.quick:
        cmd += ["--quick", "--jobs", str(args.jobs)]
    _run(rec, "paths", cmd, args, repeat=rep)


def run_events(rec: Recorder, args: argparse.Namespace) -> None:
    cmd = ["bench/events_stream.py", *(["--quick"] if args.quick else [])]
    _run(rec, "events", cmd, args, args.events_python)


def run_recovery(rec: Recorder, args: argparse.Namespace) -> None:
    cmd = ["bench/recovery.py", "--only", "rss", "--repeat", str(args.repeat)]
    _run(rec, "recovery", cmd + (["--quick"] if args.quick else []), args)


def run_metrics(rec: Recorder, args: argparse.Namespace) -> None:
    cmd = ["bench/metrics_overhead.py"]
    if args.quick:  # smaller than its own --quick: this only proves the script runs
        cmd += ["--rounds", "2", "--jobs", "300", "--processes", "1", "--process-jobs", "300"]
    _run(rec, "metrics", cmd, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.jobs is None:
        args.jobs = 300 if args.quick else 20_000
    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, "benchmarks-last-run.jsonl")
    md = os.path.join(args.out, "benchmarks.md")
    started = time.perf_counter()
    durations: dict[str, float] = {}
    log(f"bench/run.py: steps {args.steps}, {args.repeat} repeat(s), writing {args.out}")
    with open(jsonl, "w", encoding="utf-8") as fh:
        rec = Recorder(fh)
        rec.add(
            {
                "bench": "run",
                "system": "config",
                "quick": args.quick,
                "repeats": args.repeat,
                "jobs": args.jobs,
                "steps": args.steps,
                "peers": args.peer_list,
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
                "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
        )
        for rep in range(args.repeat):
            for step, fn in (
                ("throughput", run_throughput),
                ("peers", run_peers),
                ("paths", run_paths),
            ):
                if step in args.steps:
                    t0 = time.perf_counter()
                    log(f"repeat {rep + 1}/{args.repeat}: {step}")
                    fn(rec, args, rep)
                    durations[step] = durations.get(step, 0.0) + time.perf_counter() - t0
        for step, once in (
            ("events", run_events),
            ("recovery", run_recovery),
            ("metrics", run_metrics),
        ):
            if step in args.steps:
                t0 = time.perf_counter()
                once(rec, args)
                durations[step] = time.perf_counter() - t0
        wall = round(time.perf_counter() - started, 1)
        import render_md

        report = render_md.Report(rec.lines, wall_s=wall)
        for target in report.targets():
            rec.add({"bench": "targets", **target})
        errors = [f"{ln.get('system')}: {ln['error']}" for ln in rec.lines if "error" in ln]
        rec.add(
            {
                "bench": "run",
                "system": "summary",
                "wall_s": wall,
                "step_s": {k: round(v, 1) for k, v in durations.items()},
                "errors": errors,
                "skipped": sorted(
                    {f"{ln['system']}: {ln['skipped']}" for ln in rec.lines if "skipped" in ln}
                ),
                "out": args.out,
            }
        )
    with open(md, "w", encoding="utf-8") as fh:
        fh.write(render_md.render_report(report))
    log(f"wrote {md} and {jsonl} in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
