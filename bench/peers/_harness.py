"""The workloads every peer adapter in ``bench/peers/`` runs, the same way for each.

An adapter is a small class (see :class:`Peer`) that knows how to open its
library on a file in a temp directory, start its consumer, submit one job,
and count the outcomes stored in the file. This module owns the workloads,
so every system is timed, loaded and read back identically:

``throughput``
    ``--jobs`` no-op jobs (20,000; see ``DEFAULT_JOBS`` for the few peers that
    run fewer) submitted one by one from the main thread while the consumer
    runs; timed from the first submit until the last outcome is stored.
    The outcomes are then counted in the file (``outcomes``); ``ok`` is false
    unless all of them are there.
``latency``
    50 warm-up jobs, then 2,000 jobs at a steady 500 jobs/s on absolute
    deadlines; ``t0 = perf_counter()`` is taken just before ``submit`` and the
    handler records ``perf_counter() - t0`` when it starts (submit -> start).
    ``producer_late_p99_ms`` says how late the producer woke for its deadlines
    (a ``submit`` that blocks delays the next arrival; that lateness is not
    in the latency, as in ``bench/throughput.py``).
``rss``
    After 200 warm-up jobs, the handler is gated (blocks on an Event) and
    10,000 jobs are submitted: all are in flight (queued or blocked in a
    handler). RSS growth and peak-RSS (VmHWM) growth from just before the
    submits to just after them, garbage collected first (``mem_snapshot``).
    The gate is then opened and the process exits without draining.

Each adapter runs in its own process, one workload per process (``--workload
all`` runs the three in one process, for ``--quick`` smoke runs). A peer whose
package is not installed prints one ``"skipped"`` line and exits 0; a
workload that fails prints an ``"error"`` line.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Final

_BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

from _common import emit, figure, log, mem_snapshot, summarize_ms, temp_db  # noqa: E402

__all__ = [
    "BENCH",
    "WORKLOADS",
    "CountingPeer",
    "Peer",
    "Sizes",
    "ThreadedPeer",
    "main",
    "main_modes",
    "settings_modes",
    "sqlite_counts",
]

BENCH: Final = "peers"
WORKLOADS: Final = ("throughput", "latency", "rss")
#: Issue 10: submit -> start p99 at 500 jobs/s.
TARGET_P99_MS: Final = 2.0
WARMUP_LATENCY: Final = 50
WARMUP_RSS: Final = 200
#: Throughput jobs unless an adapter runs fewer (``default_jobs``).
DEFAULT_JOBS: Final = 20_000

Handler = Callable[[dict[str, Any]], None]


class Sizes:
    """How many jobs each workload runs (``quick``: a smoke-test size)."""

    def __init__(self, jobs: int, quick: bool) -> None:
        self.jobs = jobs
        self.latency_jobs = 100 if quick else 2_000
        self.latency_rate = 500.0
        self.rss_jobs = 500 if quick else 10_000
        self.quick = quick


class Peer:
    """What an adapter implements. Methods run in the main thread unless noted."""

    #: The ``system`` name in the JSON lines.
    name: str = "?"
    #: The import the adapter needs; missing -> a ``skipped`` line.
    requires: tuple[str, ...] = ()
    #: How the peer was configured: journal mode, synchronous, workers, polling...
    settings: dict[str, Any] = {}  # noqa: RUF012 - overridden per class, never mutated

    def open(self, directory: str, handler: Handler) -> None:
        """Create the queue on a file in ``directory``; jobs run ``handler(payload)``."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the consumer (threads, or whatever the library documents)."""
        raise NotImplementedError

    def submit(self, payload: dict[str, Any]) -> None:
        """Submit one job with a JSON-able ``payload`` (blocks until the library returns)."""
        raise NotImplementedError

    def wait_done(self, total: int, timeout: float) -> int:
        """Wait until ``total`` outcomes are stored since ``open``; return the count seen."""
        raise NotImplementedError

    def outcomes(self) -> dict[str, int]:
        """Read the file back after ``close``: outcomes by state (``completed`` = stored)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the consumer and close the library (without draining the queue)."""
        raise NotImplementedError


class CountingPeer(Peer):
    """A peer that learns in-process when an outcome is stored (``_stored()`` from any thread)."""

    def __init__(self) -> None:
        self._done = 0
        self._cv = threading.Condition()

    def _stored(self) -> None:
        with self._cv:
            self._done += 1
            self._cv.notify_all()

    def wait_done(self, total: int, timeout: float) -> int:
        with self._cv:
            self._cv.wait_for(lambda: self._done >= total, timeout)
            return self._done


class ThreadedPeer(CountingPeer):
    """A counting peer whose consumer is ``workers`` daemon threads running ``_work``.

    ``_work`` loops until ``self.stop`` is set; ``close`` sets it and joins them
    (``_join_workers``) before closing the library.
    """

    workers: int = 4

    def __init__(self) -> None:
        super().__init__()
        self.handler: Handler | None = None
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def _work(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self._work, daemon=True) for _ in range(self.workers)
        ]
        for thread in self.threads:
            thread.start()

    def _join_workers(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5.0)


def sqlite_counts(path: str, sql: str) -> dict[str, int]:
    """``{state: count}`` from ``sql`` (two columns) on ``path``, read-only."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {str(k): int(v) for k, v in conn.execute(sql).fetchall()}
    finally:
        conn.close()


# --------------------------------------------------------------------------- workloads


class _Run:
    """The handler every job runs, switchable between the workloads' behaviours."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.record = False
        self.gate: threading.Event | None = None

    def __call__(self, payload: dict[str, Any]) -> None:
        if self.record:
            self.latencies.append(time.perf_counter() - payload["t"])
        gate = self.gate
        if gate is not None:
            gate.wait()


def _timeout(n: int) -> float:
    return 60.0 + n / 20.0  # generous: 20 jobs/s would still finish


def throughput(peer: Peer, run: _Run, sz: Sizes) -> dict[str, Any]:
    n = sz.jobs
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        peer.submit({"i": i})
    submit_s = time.perf_counter() - t0
    seen = peer.wait_done(n, _timeout(n))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    fields: dict[str, Any] = {
        "jobs": n,
        "jobs_per_s": round(n / elapsed, 1),
        "seconds": round(elapsed, 4),
        "submit_s": round(submit_s, 4),
        "submit_per_s": round(n / submit_s, 1) if submit_s > 0 else None,
        "cpu_us_per_job": round(cpu / n * 1e6, 1),
        "seen_done": seen,
    }
    if seen < n:
        fields["warning"] = f"only {seen} of {n} outcomes stored before the timeout"
    return fields


def latency(peer: Peer, run: _Run, sz: Sizes) -> dict[str, Any]:
    for i in range(WARMUP_LATENCY):
        peer.submit({"w": i})
    peer.wait_done(WARMUP_LATENCY, 60.0)
    n, interval = sz.latency_jobs, 1.0 / sz.latency_rate
    run.latencies.clear()
    run.record = True
    submit_s: list[float] = []
    lateness: list[float] = []
    first = time.perf_counter() + 0.02
    for k in range(n):
        deadline = first + k * interval
        delay = deadline - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        lateness.append(max(0.0, t0 - deadline))
        peer.submit({"t": t0})
        submit_s.append(time.perf_counter() - t0)
    producer_s = time.perf_counter() - first
    seen = peer.wait_done(WARMUP_LATENCY + n, _timeout(n))
    run.record = False
    lat = list(run.latencies)
    fields: dict[str, Any] = {
        "jobs": n,
        "rate_per_s": sz.latency_rate,
        "achieved_rate_per_s": round((n - 1) / producer_s, 1) if producer_s > 0 else None,
        "started": len(lat),
        **summarize_ms(lat),
        **summarize_ms(submit_s, prefix="submit_"),
        "producer_late_p99_ms": summarize_ms(lateness)["p99_ms"],
        "warmup": WARMUP_LATENCY,
    }
    if len(lat) < n or seen < WARMUP_LATENCY + n:
        fields["warning"] = f"{len(lat)} of {n} jobs started, {seen} outcomes stored"
    fields.update(
        figure(
            "p99_ms",
            fields["p99_ms"] if lat else None,
            "ms",
            TARGET_P99_MS,
            ok=len(lat) == n,
        )
    )
    return fields


def rss(peer: Peer, run: _Run, sz: Sizes) -> dict[str, Any]:
    for i in range(WARMUP_RSS):
        peer.submit({"w": i})
    peer.wait_done(WARMUP_RSS, 60.0)
    n = sz.rss_jobs
    run.gate = threading.Event()
    time.sleep(0.05)
    before = mem_snapshot()
    t0 = time.perf_counter()
    for i in range(n):
        peer.submit({"i": i})
    submit_s = time.perf_counter() - t0
    time.sleep(0.2)  # let the consumer take what it takes while the handler is gated
    after = mem_snapshot()
    done_in_flight = peer.wait_done(0, 0.0)
    run.gate.set()
    rss_kib = after["rss_kib"] - before["rss_kib"]
    return {
        "jobs": n,
        "in_flight": n - (done_in_flight - WARMUP_RSS),
        "submit_s": round(submit_s, 4),
        "rss_before_mib": round(before["rss_kib"] / 1024, 2),
        "rss_mib": round(after["rss_kib"] / 1024, 2),
        "hwm_mib": round(after["hwm_kib"] / 1024, 2),
        "rss_growth_mib": round(rss_kib / 1024, 2),
        "rss_growth_kib_per_job": round(rss_kib / n, 3),
        "peak_rss_growth_mib": round((after["hwm_kib"] - before["hwm_kib"]) / 1024, 2),
        "blocks_growth": after["blocks"] - before["blocks"],
    }


_WORKLOAD_FNS: Final[dict[str, Callable[[Peer, _Run, Sizes], dict[str, Any]]]] = {
    "throughput": throughput,
    "latency": latency,
    "rss": rss,
}


def _run_one(make: Callable[[], Peer], workload: str, sz: Sizes) -> dict[str, Any]:
    peer = make()
    run = _Run()
    with temp_db() as path:
        directory = os.path.dirname(path)
        peer.open(directory, run)
        try:
            peer.start()
            fields = _WORKLOAD_FNS[workload](peer, run, sz)
        finally:
            if run.gate is not None:
                run.gate.set()
            peer.close()
        if workload == "throughput":
            stored = peer.outcomes()
            fields["outcomes"] = stored
            fields["ok"] = stored.get("completed", 0) >= sz.jobs
            if not fields["ok"]:
                fields["warning"] = f"expected {sz.jobs} stored outcomes, read back {stored}"
    return fields


def _missing(requires: tuple[str, ...]) -> str | None:
    import importlib.util

    for module in requires:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[bench]')"
    return None


def main(
    make: Callable[[], Peer],
    *,
    name: str,
    requires: tuple[str, ...],
    settings: dict[str, Any],
    default_jobs: int = DEFAULT_JOBS,
    argv: list[str] | None = None,
) -> int:
    """Command line of an adapter: ``--workload``, ``--jobs``, ``--quick``, ``--repeat-index``."""
    parser = argparse.ArgumentParser(description=f"{name}: the peer workloads (bench/peers)")
    parser.add_argument("--workload", choices=(*WORKLOADS, "all"), default="all")
    parser.add_argument("--jobs", type=int, default=None, help=f"throughput jobs ({default_jobs})")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes")
    parser.add_argument("--repeat-index", type=int, default=0)
    args = parser.parse_args(argv)
    jobs = args.jobs or (min(default_jobs, 300) if args.quick else default_jobs)
    sz = Sizes(jobs, args.quick)
    workloads = WORKLOADS if args.workload == "all" else (args.workload,)
    missing = _missing(requires)
    for workload in workloads:
        base = {"bench": BENCH, "system": name, "workload": workload, "repeat": args.repeat_index}
        if missing:
            emit({**base, "skipped": missing})
            continue
        log(f"{name}: {workload} ...")
        gc.collect()
        try:
            fields = _run_one(make, workload, sz)
        except Exception as exc:
            log(f"{name} {workload} failed:\n{traceback.format_exc()}")
            emit({**base, "error": f"{type(exc).__name__}: {exc}"[:500], "settings": settings})
            continue
        emit({**base, **fields, "settings": settings})
    return 0


def settings_modes(
    matched: dict[str, Any], defaults: dict[str, Any], **common: Any
) -> dict[str, dict[str, Any]]:
    """``{"matched": ..., "defaults": ...}`` settings: each mode's own keys, then ``common``."""
    return {"matched": {**matched, **common}, "defaults": {**defaults, **common}}


def main_modes(
    make: Callable[[bool], Peer],
    *,
    name: str,
    requires: tuple[str, ...],
    settings: dict[str, dict[str, Any]],
    default_jobs: dict[str, int] | None = None,
) -> int:
    """:func:`main` for a peer with ``--settings matched|defaults`` (``matched`` unless given).

    ``make(matched)`` builds the peer; the ``defaults`` mode is reported as
    ``<name>_defaults``.
    """
    argv = sys.argv[1:]
    mode = "matched"
    if "--settings" in argv:
        i = argv.index("--settings")
        mode = argv[i + 1]
        del argv[i : i + 2]
    matched = mode == "matched"
    return main(
        lambda: make(matched),
        name=name if matched else f"{name}_defaults",
        requires=requires,
        settings=settings[mode],
        default_jobs=default_jobs[mode] if default_jobs else DEFAULT_JOBS,
        argv=argv,
    )
