"""What a memoised workflow step costs compared with a plain ``await`` (issue 7).

Run from the repository root::

    PYTHONPATH=. python bench/workflow_step.py            # 5 rounds, a few seconds
    PYTHONPATH=. python bench/workflow_step.py --quick    # 2 small rounds
    PYTHONPATH=. python bench/workflow_step.py --rounds 9 --steps 1000

Everything runs in one process, on one service and one database file (WAL,
``synchronous=NORMAL``, the defaults), inside one handler; each round
measures every variant once, and the figures are medians over rounds:

- ``plain``: ``await fn()`` of a trivial ``async def`` (the floor).
- ``step_first``: ``await ctx.step(f"s{i}", fn)``, one after another: runs
  ``fn`` and commits its JSON result before returning (one group commit each).
- ``step_replay``: the same job run again (a ``Retry``), every step returning
  its stored result without running ``fn``; includes the one read of the
  stored steps at the run's first step.
- ``map_first``: ``ctx.map(name, items, fn, limit=64)``: items in parallel,
  their commits shared by the group-commit writer; per item.

One JSON line per variant and round on stdout (``bench``, ``variant``,
``round``, ``per_call_us``), then one figure line per step variant
(``figure()``: median ``overhead_us`` = per-call time minus ``plain``'s, with
``plain`` as the baseline), then a ``"variant": "summary"`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any, Final

try:
    from _common import emit, figure, log, temp_db
except ImportError:  # imported as ``bench.workflow_step``
    from bench._common import emit, figure, log, temp_db

from jobqueue import JobContext, JobQueueService, Retry

BENCH: Final = "workflow_step"
#: Targets for the overhead per step over a plain await, in microseconds.
TARGETS_US: Final = {"step_first": 2000.0, "step_replay": 50.0, "map_first": 500.0}


async def _value(i: int) -> int:
    return i


async def run_round(svc: JobQueueService, rnd: int, steps: int, items: int) -> dict[str, float]:
    """One round: every variant once, in one job (two runs); per-call microseconds."""
    out: dict[str, float] = {}

    async def handler(ctx: JobContext, payload: Any) -> int:
        if ctx.attempt == 0:
            t0 = time.perf_counter()
            for i in range(steps):
                await _value(i)
            out["plain"] = (time.perf_counter() - t0) / steps
            t0 = time.perf_counter()
            for i in range(steps):
                await ctx.step(f"s{i}", lambda i=i: _value(i))
            out["step_first"] = (time.perf_counter() - t0) / steps
            t0 = time.perf_counter()
            await ctx.map("m", range(items), _value, limit=64)
            out["map_first"] = (time.perf_counter() - t0) / items
            raise Retry(delay=0)  # run again: everything below replays
        t0 = time.perf_counter()
        total = 0
        for i in range(steps):
            total += await ctx.step(f"s{i}", lambda i=i: _value(i))
        out["step_replay"] = (time.perf_counter() - t0) / steps
        return total

    name = f"round{rnd}"
    svc.register(name, handler)
    job = await svc.submit(name, max_retries=1)
    result = await svc.wait(job.id, timeout=600)
    assert result == sum(range(steps)), result
    stored = await svc.get_steps(job.id)
    assert len(stored) == steps + items, len(stored)
    return {k: v * 1e6 for k, v in out.items()}


async def main(args: argparse.Namespace) -> None:
    with temp_db() as path:
        async with JobQueueService(path, concurrency=4) as svc:
            rounds: list[dict[str, float]] = []
            for rnd in range(args.rounds):
                got = await run_round(svc, rnd, args.steps, args.items)
                rounds.append(got)
                for variant, us in got.items():
                    emit({"bench": BENCH, "variant": variant, "round": rnd, "per_call_us": us})
                log(f"round {rnd}: " + ", ".join(f"{k} {v:.2f} us" for k, v in got.items()))
    plain = statistics.median(r["plain"] for r in rounds)
    summary: dict[str, Any] = {"bench": BENCH, "variant": "summary", "plain_us": round(plain, 3)}
    for variant, target in TARGETS_US.items():
        per_call = statistics.median(r[variant] for r in rounds)
        overhead = per_call - plain
        line = {
            "bench": BENCH,
            "variant": variant,
            "rounds": len(rounds),
            "steps": args.items if variant == "map_first" else args.steps,
            "per_call_us": round(per_call, 3),
            **figure(
                "overhead_us",
                round(overhead, 3),
                "us",
                target,
                baseline="plain",
                baseline_value=round(plain, 3),
            ),
        }
        emit(line)
        summary[f"{variant}_overhead_us"] = line["value"]
        summary[f"{variant}_meets_target"] = line["meets_target"]
    emit(summary)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    parser.add_argument("--steps", type=int, default=500, help="sequential steps per round (500)")
    parser.add_argument("--items", type=int, default=2000, help="map items per round (2000)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 100 steps, 200 items")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.items = 2, 100, 200
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
