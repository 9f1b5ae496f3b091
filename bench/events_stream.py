"""Event streaming: events per second through ``EventManager`` vs a raw ``asyncio.Queue``.

Run (from the repository root)::

    PYTHONPATH=. python bench/events_stream.py               # 7 rounds x 50,000 events
    PYTHONPATH=. python bench/events_stream.py --quick       # 1 round x 2,000 events

One producer coroutine sends ``--events`` small token events (``{"chunk":
"tok"}``) to one consumer coroutine on the same loop; a run is timed from the
first send until the consumer has taken the last one. Variants, each run once
per round in an order that rotates from round to round (so a noisy neighbour
hits them alike), all queues bounded at 10,000 items (the library default):

``raw_queue``           the floor: ``await q.put(data)`` / ``await q.get()`` on an
                        ``asyncio.Queue``, the payload dict passed as is.
``eventmanager``        **the figure**: ``await manager.asend("token", data)`` (what
                        ``ctx.emit`` does) on the default ``EventManager`` over an
                        ``EventQueue``; the consumer takes Langflow's queue items
                        ``(event_id, bytes, put_time)`` with ``await queue.get()``.
                        Per event that is a JSON encoding, an id, a timestamp and
                        the consumer's time-in-queue callback slot.
``raw_queue_items``     the floor for Langflow's item format: the producer builds
                        each ``(f"token-{i}", json.dumps({"event": .., "data": ..})
                        .encode() + b"\\n\\n", time.time())`` itself and puts it
                        on an ``asyncio.Queue``; what any producer of that format pays.
``raw_queue_burst``     ``q.put_nowait(data)`` 100 at a time, then ``sleep(0)``.
``eventmanager_burst``  Langflow's synchronous ``manager.on_token(data=...)``, 100 at
                        a time, then ``sleep(0)`` (no coalescing: the queue never fills).
``service_events``      end to end in the durable layer: a job's handler calls
                        ``await ctx.emit("token", data)`` N times while a consumer
                        iterates ``service.events(job.id)`` (``Event`` objects),
                        in a ``JobQueueService`` on a file. Timed from submit
                        until the consumer has the ``end`` event. Target: >= 0.8
                        of ``eventmanager`` (the same events through the manager
                        alone).
``langflow_burst``      Langflow's own ``EventManager`` (lfx 1.13,
                        ``create_default_event_manager`` over an ``asyncio.Queue``),
                        the ``eventmanager_burst`` producer and consumer: Langflow
                        has no awaitable send, and its ``on_token`` drops events on
                        a full queue, so bursts of 100 with a ``sleep(0)`` between.
                        Target: ``eventmanager_burst`` >= 4x it. Skipped, saying
                        why, where lfx is not installed (``nox -s bench`` installs
                        it, without its dependencies but those its events module
                        imports).

The ratio of a variant to ``raw_queue`` is taken within each round and the
median over rounds reported (pairing cancels most of a shared machine's
noise). Target (issue 10): ``eventmanager`` >= 0.40 of ``raw_queue``. One JSON
line per round and variant on stdout, then a ``"system": "summary"`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

try:
    from _common import EVENT_VARIANTS, emit, figure, log, temp_db
except ImportError:  # imported as ``bench.events_stream``
    from bench._common import EVENT_VARIANTS, emit, figure, log, temp_db

BENCH: Final = "events"
TARGET_RATIO: Final = 0.40
QUEUE_SIZE: Final = 10_000
BURST: Final = 100
DATA: Final = {"chunk": "tok"}
VARIANTS: Final = EVENT_VARIANTS


def _check(count: int, n: int, coalesced: int = 0) -> None:
    if count != n or coalesced:
        raise RuntimeError(f"consumer got {count} of {n} events ({coalesced} coalesced)")


async def _race(
    n: int,
    produce: Callable[[], Awaitable[None]],
    consume: Callable[[], Awaitable[int]],
    coalescing: Any = None,
) -> float:
    """Run ``produce`` and ``consume`` together; the seconds until the consumer saw the end.

    The consumer must have counted ``n`` events, and ``coalescing`` (the
    EventQueue, if any) must have coalesced none of them.
    """
    t0 = time.perf_counter()
    _, count = await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - t0
    _check(count, n, coalescing.coalesced if coalescing is not None else 0)
    return elapsed


async def _consume_raw(q: asyncio.Queue[Any]) -> int:
    count = 0
    while await q.get() is not None:
        count += 1
    return count


async def raw_queue(n: int) -> float:
    q: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)

    async def produce() -> None:
        for _ in range(n):
            await q.put(DATA)
        await q.put(None)

    return await _race(n, produce, functools.partial(_consume_raw, q))


async def raw_queue_items(n: int) -> float:
    q: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)

    async def produce() -> None:
        dumps, now = json.dumps, time.time
        for i in range(n):
            raw = dumps({"event": "token", "data": DATA}).encode() + b"\n\n"
            await q.put((f"token-{i + 1}", raw, now()))
        await q.put((None, None, now()))

    return await _race(n, produce, functools.partial(_consume_items, q))


async def raw_queue_burst(n: int) -> float:
    q: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)

    async def produce() -> None:
        for i in range(n):
            q.put_nowait(DATA)
            if i % BURST == BURST - 1:
                await asyncio.sleep(0)
        q.put_nowait(None)

    return await _race(n, produce, functools.partial(_consume_raw, q))


def _lfx_missing() -> str | None:
    """Why Langflow's EventManager cannot be measured here, or ``None``."""
    try:
        import lfx.events.event_manager  # noqa: F401
    except Exception as exc:  # not installed, or one of its imports is missing
        return (
            f"lfx (Langflow's EventManager) cannot be imported here ({type(exc).__name__}: "
            f"{exc}); nox -s bench installs it (lfx==1.13.0 --no-deps, plus what its events "
            "module imports)"
        )
    return None


async def langflow_burst(n: int) -> float:
    from lfx.events.event_manager import create_default_event_manager

    queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)
    manager = create_default_event_manager(queue)

    async def produce() -> None:
        on_token = manager.on_token
        for i in range(n):
            on_token(data=DATA)
            if i % BURST == BURST - 1:
                await asyncio.sleep(0)
        queue.put_nowait((None, None, time.time()))  # what Langflow's service puts

    return await _race(n, produce, functools.partial(_consume_items, queue))


def _manager() -> tuple[Any, Any]:
    from jobqueue.events import EventQueue, create_default_event_manager

    queue = EventQueue(QUEUE_SIZE)
    return queue, create_default_event_manager(queue)


async def _consume_items(queue: Any) -> int:
    count = 0
    while True:
        item = await queue.get()
        if item[0] is None:
            return count
        count += 1


async def eventmanager(n: int) -> float:
    queue, manager = _manager()

    async def produce() -> None:
        asend = manager.asend
        for _ in range(n):
            await asend("token", DATA)
        manager.end_stream()

    return await _race(n, produce, functools.partial(_consume_items, queue), queue)


async def eventmanager_burst(n: int) -> float:
    queue, manager = _manager()

    async def produce() -> None:
        on_token = manager.on_token
        for i in range(n):
            on_token(data=DATA)
            if i % BURST == BURST - 1:
                await asyncio.sleep(0)
        manager.end_stream()

    return await _race(n, produce, functools.partial(_consume_items, queue), queue)


class _Service:
    """One open ``JobQueueService`` reused by every ``service_events`` run."""

    def __init__(self, path: str) -> None:
        from jobqueue import JobQueueService

        self.svc = JobQueueService(path, concurrency=8)
        self.n = 0

        @self.svc.handler("stream")
        async def stream(ctx: Any, payload: Any) -> None:
            emit_ = ctx.emit
            for _ in range(payload["n"]):
                await emit_("token", DATA)

    async def run(self, n: int) -> float:
        svc = self.svc
        t0 = time.perf_counter()
        job = await svc.submit("stream", {"n": n})
        count = 0
        async for event in svc.events(job.id):
            if event.type == "token":
                count += 1
        elapsed = time.perf_counter() - t0
        _check(count, n)
        return elapsed


async def rounds(n: int, k: int, variants: tuple[str, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    fns: dict[str, Callable[[int], Awaitable[float]]] = {
        "raw_queue": raw_queue,
        "raw_queue_items": raw_queue_items,
        "raw_queue_burst": raw_queue_burst,
        "eventmanager": eventmanager,
        "eventmanager_burst": eventmanager_burst,
    }
    if "langflow_burst" in variants:
        missing = _lfx_missing()
        if missing is None:
            fns["langflow_burst"] = langflow_burst
        else:
            log(f"events: langflow_burst skipped: {missing}")
            out.append({"bench": BENCH, "system": "langflow_burst", "skipped": missing})
            emit(out[-1])
            variants = tuple(v for v in variants if v != "langflow_burst")
    with temp_db() as path:
        service = _Service(path) if "service_events" in variants else None
        if service is not None:
            await service.svc.__aenter__()
            fns["service_events"] = service.run
        try:
            for fn in fns.values():  # warm-up: imports, code paths, the connection
                await fn(min(n, 2_000))
            for r in range(k):
                order = variants[r % len(variants) :] + variants[: r % len(variants)]
                for variant in order:
                    gc.collect()
                    cpu0 = time.process_time()
                    elapsed = await fns[variant](n)
                    cpu = time.process_time() - cpu0
                    line = {
                        "bench": BENCH,
                        "system": variant,
                        "repeat": r,
                        "events": n,
                        "events_per_s": round(n / elapsed, 1),
                        "seconds": round(elapsed, 4),
                        "cpu_us_per_event": round(cpu / n * 1e6, 3),
                    }
                    emit(line)
                    out.append(line)
        finally:
            if service is not None:
                await service.svc.__aexit__(None, None, None)
    return out


def summarize(lines: list[dict[str, Any]], n: int, k: int) -> dict[str, Any]:
    by_round: dict[int, dict[str, float]] = {}
    skipped = {ln["system"]: ln["skipped"] for ln in lines if "skipped" in ln}
    lines = [ln for ln in lines if "skipped" not in ln]
    for line in lines:
        by_round.setdefault(line["repeat"], {})[line["system"]] = line["events_per_s"]
    systems = sorted({line["system"] for line in lines}, key=VARIANTS.index)
    med = {
        s: round(statistics.median(r[s] for r in by_round.values() if s in r), 1) for s in systems
    }

    def paired(num: str, den: str) -> float | None:
        vals = [r[num] / r[den] for r in by_round.values() if num in r and den in r]
        return round(statistics.median(vals), 3) if vals else None

    ratios = {
        "eventmanager_vs_raw_queue": paired("eventmanager", "raw_queue"),
        "eventmanager_vs_raw_queue_items": paired("eventmanager", "raw_queue_items"),
        "eventmanager_burst_vs_raw_queue_burst": paired("eventmanager_burst", "raw_queue_burst"),
        "service_events_vs_raw_queue": paired("service_events", "raw_queue"),
        "service_events_vs_eventmanager": paired("service_events", "eventmanager"),
        "eventmanager_burst_vs_langflow_burst": paired("eventmanager_burst", "langflow_burst"),
    }
    ratio = ratios["eventmanager_vs_raw_queue"]
    return {
        "bench": BENCH,
        "system": "summary",
        "events": n,
        "rounds": k,
        "median_events_per_s": med,
        "ratios": ratios,
        "skipped_variants": skipped,
        **figure(
            "eventmanager_vs_raw_queue",
            ratio,
            "ratio",
            TARGET_RATIO,
            baseline="raw_queue",
            higher_is_better=True,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=None, help="events per run (50000)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (7)")
    parser.add_argument("--only", default="", help="comma-separated variants (all)")
    parser.add_argument("--quick", action="store_true", help="1 round x 2000 events")
    args = parser.parse_args(argv)
    n = args.events or (2_000 if args.quick else 50_000)
    k = args.rounds or (1 if args.quick else 7)
    variants = tuple(v for v in VARIANTS if not args.only or v in args.only.split(","))
    log(f"events: {k} rounds x {n} events x {len(variants)} variants")
    started = time.perf_counter()
    lines = asyncio.run(rounds(n, k, variants))
    summary = summarize(lines, n, k)
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
