"""``stats [--watch]``: job counts, lag and the processes on the file (RagFlow's report).

The file is read through a :class:`~jobqueue.store.readonly.ReadOnlyStore`: never written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sqlite3
import time
from typing import Any

from jobqueue.cli.render import Output, fmt_age, fmt_duration, fmt_time, rich_console, rich_text
from jobqueue.store import overview
from jobqueue.store.readonly import ReadOnlyStore
from jobqueue.store.recovery import is_alive, owner_rows

__all__ = ["read_stats", "stats_command"]

#: The statuses of the report, named as the statuses are (and as ``service.stats()`` does).
_COUNTS = ("pending", "running", "paused", "completed", "failed", "cancelled", "stopped")


def read_stats(conn: sqlite3.Connection | None, me: str, now: float) -> dict[str, Any]:
    """Every count of the report in one read (runs on the database thread).

    ``lag`` is how long the oldest due pending job has been waiting to start
    (0 when none is due); ``processes`` are the live services that opened the
    file (workers, apps; ``me``, the caller's own, excluded) with their boot
    time and heartbeat. ``conn=None`` is a file with no schema yet: all zero.
    """
    if conn is None:
        counts = overview.Counts(by_status={}, pending_by_handler={}, due=0, oldest_due=None)
        running_by_owner: dict[str | None, int] = {}
        owners = []
    else:
        counts = overview.counts(conn, now)
        running_by_owner = overview.running_by_owner(conn)
        owners = owner_rows(conn)
    by_status = counts.by_status
    processes = [
        {
            "owner": row.owner,
            "pid": row.pid,
            "boot_at": row.started_at,
            "heartbeat_age": max(0.0, now - row.heartbeat),
            "running": running_by_owner.get(row.owner, 0),
        }
        for row in owners
        if row.owner != me and is_alive(row.owner, row.heartbeat, now)
    ]
    pending = by_status.get("pending", 0)
    return {
        "pending": pending,
        "due": counts.due,
        "delayed": pending - counts.due,
        "running": by_status.get("running", 0),
        "paused": by_status.get("paused", 0),
        "completed": by_status.get("completed", 0),
        "done": by_status.get("completed", 0),  # alias of "completed", as in service.stats()
        "failed": by_status.get("failed", 0),
        "cancelled": by_status.get("cancelled", 0),
        "stopped": by_status.get("stopped", 0),
        "lag": 0.0 if counts.oldest_due is None else max(0.0, now - counts.oldest_due),
        "queues": counts.pending_by_handler,
        "processes": processes,
        "now": now,
    }


def _fields(stats: dict[str, Any]) -> list[tuple[str, str]]:
    now = stats["now"]
    pending = f"{stats['pending']} (due {stats['due']}, delayed {stats['delayed']})"
    fields = [("pending", pending)]
    fields += [(name, str(stats[name])) for name in _COUNTS[1:]]
    fields.append(("lag", f"{fmt_duration(stats['lag'])} (how long the oldest due job has waited)"))
    queues = "  ".join(f"{h or '(none)'}={n}" for h, n in stats["queues"].items())
    fields.append(("queues", queues or "-"))
    procs = [
        f"pid {p['pid']}: up since {fmt_time(p['boot_at'])}, heartbeat "
        f"{fmt_age(now - p['heartbeat_age'], now)}, {p['running']} running"
        for p in stats["processes"]
    ]
    fields.append(("processes", "\n".join(procs) or "none (no worker has the file open)"))
    return fields


def _one_line(stats: dict[str, Any]) -> str:
    counts = " ".join(f"{name}={stats[name]}" for name in _COUNTS)
    when = time.strftime("%H:%M:%S", time.localtime(stats["now"]))
    return f"{when} {counts} lag={stats['lag']:.1f}s processes={len(stats['processes'])}"


def _rich_table(stats: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    # Text cells: handler names and the file name are shown, never read as markup.
    table = Table(title=rich_text(title), show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for name, value in _fields(stats):
        table.add_row(rich_text(name), rich_text(value))
    return table


async def stats_command(store: ReadOnlyStore, args: argparse.Namespace, out: Output) -> int:
    """``stats``: one report; ``--watch``: a new one every ``--interval`` seconds until stopped."""

    async def read() -> dict[str, Any]:
        if store.empty:
            return read_stats(None, "", time.time())
        return store.read(read_stats, "", time.time())  # milliseconds: a read-only snapshot

    if not args.watch:
        stats = await read()
        if args.json:
            out.json(stats, indent=2)
        else:
            out.fields(_fields(stats))
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    live = None
    try:
        if not args.json and out.fancy(out.stdout):
            from rich.live import Live

            live = Live(console=rich_console(out.stdout), auto_refresh=False)
            live.start()
        shown = 0
        while not stop.is_set():
            stats = await read()
            shown += 1
            if args.json:
                out.json(stats)
            elif live is not None:
                title = f"{args.db} at {fmt_time(stats['now'])} (Ctrl-C to stop)"
                live.update(_rich_table(stats, title), refresh=True)
            else:
                out.line(_one_line(stats))
            if args.count and shown >= args.count:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.interval)
    finally:
        if live is not None:
            live.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
    return 0
