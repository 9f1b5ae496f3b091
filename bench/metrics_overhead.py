"""What metrics cost: throughput of no-op jobs with telemetry off, hooked, and on.

Run from the repository root::

    PYTHONPATH=. python bench/metrics_overhead.py          # 40 rounds x 2000 jobs, 5 x 3 processes
    PYTHONPATH=. python bench/metrics_overhead.py --quick    # a few seconds

Variants:

- ``off``: no subscriber on ``service.hooks``; emit sites skip building records.
- ``hooks``: a no-op subscriber to the kinds ``JobMetrics`` asks for, so the
  service builds and emits those lifecycle records; isolates the cost of the
  hook sites from the metrics.
- ``metrics``: ``JobMetrics`` attached, with the service's live pending counts.

Three measurements, one JSON line per figure on stdout:

1. ``interleaved`` (the verdict): one process, one service, rounds of N jobs;
   each round runs every variant once (attach/detach between them, order
   rotated), and the cost is the median over rounds of the paired ratio
   ``cpu(metrics) / cpu(off) - 1`` (process CPU time per job, SQLite thread
   included). Pairing within a round cancels most of the noise of a shared
   machine, where two identical processes differ by +-20 %.
2. ``replay``: the lifecycle records of a real run, replayed through a bus
   with a no-op subscriber and through one with ``JobMetrics``; the
   difference is the subscriber's own cost per job, without any noise.
3. ``processes``: each variant in fresh child processes (interleaved over
   repetitions), which also counts what importing the OpenTelemetry SDK adds
   to garbage collection; noisy, for comparison. After the timed run the
   endpoint is scraped over a real socket and the finished-job count checked.

The last line is a ``"variant": "summary"``; the target is a cost <= 0.05.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any, Final

try:
    from _common import emit, log, temp_db
except ImportError:  # imported as ``bench.metrics_overhead``
    from bench._common import emit, log, temp_db

BENCH: Final = "metrics_overhead"
VARIANTS: Final = ("off", "hooks", "metrics")
TARGET_COST: Final = 0.05
REPO_ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _metrics_kinds() -> set[Any]:
    from jobqueue.hooks import HookKind

    return {HookKind.STARTED, HookKind.FINISHED, HookKind.RETRYING, HookKind.EVENT_CONSUMED}


async def _batch(svc: Any, lo: int, hi: int) -> tuple[float, float]:
    """Submit and run jobs ``lo..hi``; returns (wall s, CPU s)."""
    gc.collect()  # every batch starts from the same collector state
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(lo, hi, 1000):
        await svc.submit_many("noop", [{"i": i} for i in range(start, min(hi, start + 1000))])
    await svc.run_until_idle()
    return time.perf_counter() - wall, time.process_time() - cpu


async def _noop(ctx: Any, payload: Any) -> None:
    return None


# --- 1 and 2: one process ----------------------------------------------------------


async def interleaved(rounds: int, jobs: int, concurrency: int) -> dict[str, Any]:
    """Rounds of ``jobs`` jobs per variant, each on a fresh service and database.

    A fresh database per run keeps the SQLite cost per job the same for every
    run (a table that grows run after run would inflate the baseline).
    """
    from prometheus_client import CollectorRegistry

    from jobqueue import JobQueueService
    from jobqueue.telemetry import JobMetrics

    metrics = JobMetrics(prometheus_registry=CollectorRegistry())
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rate: dict[str, list[float]] = {v: [] for v in VARIANTS}
    records: list[Any] = []
    expected = 0

    async def run(variant: str) -> tuple[float, float]:
        nonlocal expected
        with temp_db() as path:
            async with JobQueueService(path, concurrency=concurrency) as svc:
                svc.handler("noop")(_noop)
                await _batch(svc, 0, min(500, jobs))  # warm-up, off
                if variant == "metrics":
                    metrics.attach(svc.hooks, queue_lengths=svc.queue_lengths)
                    expected += jobs
                elif variant == "hooks":
                    svc.hooks.subscribe(lambda record: None, _metrics_kinds())
                elif variant == "record":
                    svc.hooks.subscribe(records.append, _metrics_kinds())
                result = await _batch(svc, 0, jobs)
                metrics.detach()
                return result

    await run("record")  # the lifecycle records of one real run, for the replay
    for r in range(rounds):
        order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
        for variant in order if r % 2 == 0 else order[::-1]:
            wall, c = await run(variant)
            cpu[variant].append(c / jobs * 1e6)
            rate[variant].append(jobs / wall)
    finished = _scrape_finished(metrics)
    out: dict[str, Any] = {"bench": BENCH, "variant": "interleaved", "rounds": rounds}
    out.update({"jobs_per_run": jobs, "concurrency": concurrency})
    for v in VARIANTS:
        out[f"{v}_cpu_us_per_job"] = round(statistics.median(cpu[v]), 2)
        out[f"{v}_jobs_per_s"] = round(statistics.median(rate[v]), 1)
    for v in ("hooks", "metrics"):
        out[f"cost_{v}_cpu"] = _paired(cpu[v], cpu["off"], lambda a, b: a / b - 1)
        out[f"cost_{v}_throughput"] = _paired(rate[v], rate["off"], lambda a, b: 1 - a / b)
    out["metrics_finished"] = finished
    if finished != expected:
        out["warning"] = f"finished-job counter says {finished}, ran {expected}"
    return {**out, **replay(records, jobs)}


def _paired(xs: list[float], base: list[float], f: Any) -> float:
    return round(statistics.median(f(a, b) for a, b in zip(xs, base, strict=True)), 4)


def replay(records: list[Any], jobs: int, repeat: int = 7) -> dict[str, Any]:
    """The subscriber's own CPU time per job: the records of ``jobs`` real jobs, replayed."""
    from prometheus_client import CollectorRegistry

    from jobqueue.hooks import Hooks
    from jobqueue.telemetry import JobMetrics

    def timed(hooks: Hooks) -> float:
        emit_ = hooks.emit
        t = time.process_time()
        for rec in records:
            emit_(rec)
        return time.process_time() - t

    best = {"noop": float("inf"), "metrics": float("inf")}
    for _ in range(repeat):
        noop = Hooks()
        noop.subscribe(lambda record: None, _metrics_kinds())
        best["noop"] = min(best["noop"], timed(noop))
        with JobMetrics(prometheus_registry=CollectorRegistry()) as metrics:
            bus = Hooks()
            metrics.attach(bus, queue_lengths=dict)
            best["metrics"] = min(best["metrics"], timed(bus))
    return {
        "replay_records_per_job": round(len(records) / jobs, 2),
        "replay_noop_us_per_job": round(best["noop"] / jobs * 1e6, 3),
        "replay_metrics_us_per_job": round(best["metrics"] / jobs * 1e6, 3),
        "subscriber_us_per_job": round((best["metrics"] - best["noop"]) / jobs * 1e6, 3),
    }


def _scrape_finished(metrics: Any) -> int | None:
    """Scrape the metrics once over a real socket; the finished-job count."""
    from jobqueue.telemetry import serve_metrics

    server = serve_metrics(0, registry=metrics.prometheus_registry)
    with server, urllib.request.urlopen(server.url, timeout=10) as resp:
        text = resp.read().decode()
    metrics.shutdown()
    line = 'jobqueue_jobs_finished_total{handler="noop",status="completed"}'
    counted = [float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)]
    return int(counted[0]) if counted else None


# --- 3: fresh processes --------------------------------------------------------------


async def _child_run(variant: str, path: str, jobs: int, concurrency: int) -> dict[str, Any]:
    from jobqueue import JobQueueService

    opts: dict[str, Any] = {"concurrency": concurrency}
    metrics: Any = None
    if variant == "metrics":
        from prometheus_client import CollectorRegistry

        from jobqueue.telemetry import JobMetrics

        metrics = opts["metrics"] = JobMetrics(prometheus_registry=CollectorRegistry())
    async with JobQueueService(path, **opts) as svc:
        if variant == "hooks":
            svc.hooks.subscribe(lambda record: None, _metrics_kinds())
        svc.handler("noop")(_noop)
        await _batch(svc, 0, min(500, jobs))  # warm-up
        with _GcTimer() as gc_time:
            wall, cpu = await _batch(svc, 0, jobs)
    out: dict[str, Any] = {"jobs": jobs, "concurrency": concurrency}
    out.update(jobs_per_s=round(jobs / wall, 1), cpu_us_per_job=round(cpu / jobs * 1e6, 2))
    out["gc_us_per_job"] = round(gc_time.seconds / jobs * 1e6, 2)
    if metrics is not None:
        out["metrics_finished"] = finished = _scrape_finished(metrics)
        if finished != jobs + min(500, jobs):
            out["warning"] = f"finished-job counter says {finished}, ran {jobs + min(500, jobs)}"
    return out


class _GcTimer:
    """CPU time spent in the garbage collector while the ``with`` block runs."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start

    def __enter__(self) -> _GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def child(args: argparse.Namespace) -> None:
    base = {"bench": BENCH, "variant": args.child, "repeat": args.repeat_index}
    with temp_db() as path:
        try:
            fields = asyncio.run(_child_run(args.child, path, args.jobs, args.concurrency))
        except Exception as exc:
            fields = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    emit({**base, **fields})


def spawn(variant: str, args: argparse.Namespace, repeat: int) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant]
    cmd += ["--jobs", str(args.process_jobs)]
    cmd += ["--concurrency", str(args.concurrency), "--repeat-index", str(repeat)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    base = {"bench": BENCH, "variant": variant, "repeat": repeat}
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=600)
    except subprocess.TimeoutExpired:
        return {**base, "error": "child timed out"}
    for raw in reversed(proc.stdout.splitlines()):
        try:
            line: dict[str, Any] = json.loads(raw)
            return line
        except json.JSONDecodeError:
            continue
    return {**base, "error": f"child printed no result (exit status {proc.returncode})"}


def processes_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the fresh-process runs, and paired (same repeat) costs."""
    out: dict[str, Any] = {}
    by_rep: dict[int, dict[str, dict[str, Any]]] = {}
    for r in results:
        if "cpu_us_per_job" in r:
            by_rep.setdefault(r["repeat"], {})[r["variant"]] = r
    for v in VARIANTS:
        for key in ("cpu_us_per_job", "gc_us_per_job"):
            vals = [rep[v][key] for rep in by_rep.values() if v in rep]
            out[f"processes_{v}_{key}"] = round(statistics.median(vals), 2) if vals else None
    pairs = [rep for rep in by_rep.values() if {"off", "metrics"} <= set(rep)]

    def cost(f: Any) -> float | None:
        return round(statistics.median(f(r["metrics"]) / f(r["off"]) - 1 for r in pairs), 4)

    out["processes_cost_metrics_cpu"] = cost(lambda r: r["cpu_us_per_job"]) if pairs else None
    out["processes_cost_metrics_cpu_without_gc"] = (
        cost(lambda r: r["cpu_us_per_job"] - r["gc_us_per_job"]) if pairs else None
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (40)")
    parser.add_argument("--jobs", type=int, default=2_000, help="jobs per round or process (2000)")
    parser.add_argument("--processes", type=int, default=5, help="fresh-process repeats (5)")
    parser.add_argument(
        "--process-jobs", type=int, default=10_000, help="jobs per fresh process (10000)"
    )
    parser.add_argument("--concurrency", type=int, default=512, help="service concurrency (512)")
    parser.add_argument("--quick", action="store_true", help="10 rounds, 1 process repeat")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--repeat-index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.quick:
        args.rounds, args.processes, args.process_jobs = 10, 1, 2000
    log(f"interleaved: {args.rounds} rounds x {args.jobs} jobs x {len(VARIANTS)} variants")
    inter = asyncio.run(interleaved(args.rounds, args.jobs, args.concurrency))
    emit(inter)
    results = []
    for rep in range(args.processes):
        for variant in VARIANTS if rep % 2 == 0 else VARIANTS[::-1]:
            log(f"processes: repeat {rep}: {variant}")
            results.append(spawn(variant, args, rep))
            emit(results[-1])
    cost = inter["cost_metrics_cpu"]
    summary: dict[str, Any] = {"bench": BENCH, "variant": "summary", "cost_metrics_cpu": cost}
    summary["cost_metrics_throughput"] = inter["cost_metrics_throughput"]
    summary["cost_hooks_cpu"] = inter["cost_hooks_cpu"]
    summary["off_cpu_us_per_job"] = inter["off_cpu_us_per_job"]
    summary["subscriber_us_per_job"] = inter["subscriber_us_per_job"]
    off = inter["off_cpu_us_per_job"]
    summary["cost_subscriber_cpu"] = round(inter["subscriber_us_per_job"] / off, 4)
    summary.update(processes_summary(results))
    summary["target_cost"] = TARGET_COST
    summary["target_met"] = cost <= TARGET_COST
    summary["errors"] = [r["error"] for r in results if "error" in r]
    summary["warnings"] = [r["warning"] for r in [inter, *results] if "warning" in r]
    emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
