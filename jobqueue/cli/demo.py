"""``python -m jobqueue demo``: a short showcase of the durable queue.

Submits a handful of jobs, follows their events with a live progress display
(``rich`` progress bars on a terminal, timestamped lines otherwise, both on
stderr), cancels one, lets one retry, and prints the final statuses read back
from the database file with the standard library's ``sqlite3`` (stdout).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

from jobqueue.cli.render import Column, Output, fmt_attempt, rich_console, rich_text, safe_text
from jobqueue.context import JobContext
from jobqueue.ids import short_id
from jobqueue.service import JobQueueService
from jobqueue.store import lookup, overview

__all__ = ["run_demo"]

WORDS = [
    "jobs",
    "survive",
    "crashes",
    "because",
    "every",
    "status",
    "change",
    "is",
    "committed",
    "to",
    "SQLite",
]
FINAL_HEADER = "final statuses read back from the database file"
#: The final table on an 80-column terminal: EVENTS goes first, RESULT takes what is left.
DEMO_COLUMNS = [
    Column("ID"),
    Column("HANDLER"),
    Column("STATUS"),
    Column("ATTEMPT"),
    Column("EVENTS", drop=1),
    Column("RESULT", flex=True),
]


class Display(Protocol):
    """What the demo tells as it goes (all of it on stderr)."""

    def add(self, label: str, total: int) -> None: ...
    def advance(self, label: str, done: float, text: str) -> None: ...
    def finish(self, label: str, status: str) -> None: ...
    def say(self, text: str) -> None: ...
    def close(self) -> None: ...


class PlainDisplay:
    """Timestamped lines, one per event."""

    def __init__(self, out: Output) -> None:
        self._out = out
        self._start = time.monotonic()

    def say(self, text: str) -> None:
        self._out.note(f"[{time.monotonic() - self._start:5.2f}s] {text}")

    def add(self, label: str, total: int) -> None:
        pass

    def advance(self, label: str, done: float, text: str) -> None:
        self.say(f"{label:6} token  {text!r}")

    def finish(self, label: str, status: str) -> None:
        self.say(f"{label:6} {status}")

    def close(self) -> None:
        pass


class RichDisplay:
    """One live progress bar per job (``rich``, on a terminal)."""

    def __init__(self, out: Output) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        # markup=False: the text column shows what the jobs streamed, as text.
        self._progress = Progress(
            TextColumn("{task.description:6}", markup=False),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[text]}", markup=False),
            console=rich_console(out.stderr),
        )
        self._tasks: dict[str, Any] = {}
        self._progress.start()

    def say(self, text: str) -> None:
        self._progress.console.print(rich_text(text))

    def add(self, label: str, total: int) -> None:
        self._tasks[label] = self._progress.add_task(label, total=total, text="pending")

    def advance(self, label: str, done: float, text: str) -> None:
        self._progress.update(self._tasks[label], completed=done, text=safe_text(text[-40:]))

    def finish(self, label: str, status: str) -> None:
        task = self._tasks[label]
        if status == "completed":
            self._progress.update(task, completed=self._progress.tasks[task].total)
        self._progress.update(task, text=safe_text(status))

    def close(self) -> None:
        self._progress.stop()


async def _demo(db: Path, out: Output, show: Display, *, temporary: bool = False) -> int:
    async with JobQueueService(db, concurrency=4, retry_backoff=0.2) as svc:

        @svc.handler("summarize")
        async def summarize(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
            words = WORDS[: payload["words"]]
            for i, word in enumerate(words, 1):
                ctx.events.on_token(data={"chunk": word + " "})
                ctx.progress(i, len(words))
                await asyncio.sleep(payload["pace"])
            return {"summary": " ".join(words), "words": len(words)}

        @svc.handler("flaky")
        async def flaky(ctx: JobContext, payload: dict[str, Any]) -> str:
            if ctx.attempt < 1:
                raise ConnectionError("upstream hiccup (retried automatically)")
            return "ok on attempt " + str(ctx.attempt + 1)

        if temporary:
            show.say(
                f"database: {db} (a temporary file, deleted when the demo ends; "
                "`jobqueue demo --db FILE` keeps it for list, show and stats)"
            )
        else:
            show.say(f"database: {db} (kept: `jobqueue list --db {db}` shows its jobs)")
        specs = [("job1", 6, 0.05, 0), ("job2", 10, 0.05, 5), ("job3", 4, 0.05, 1)]
        specs.append(("slow", 11, 0.5, 0))
        labels: dict[str, str] = {}
        for label, words, pace, priority in specs:
            job = await svc.submit("summarize", {"words": words, "pace": pace}, priority=priority)
            labels[job.id] = label
            show.add(label, words)
        retry = await svc.submit("flaky", {}, max_retries=2)
        labels[retry.id] = "flaky"
        show.add("flaky", 1)
        show.say(f"submitted {len(labels)} jobs")
        seen: dict[str, Counter[str]] = {job_id: Counter() for job_id in labels}

        async def follow(job_id: str) -> None:
            label, text, status = labels[job_id], "", "completed"
            async for ev in svc.events(job_id):
                seen[job_id][ev.type] += 1
                if ev.type == "token":
                    text += ev.data["chunk"]
                elif ev.type == "progress":
                    show.advance(label, ev.data["done"], text.strip())
                elif ev.type in ("end", "error"):
                    status = str(ev.data.get("status", ev.type))
            show.finish(label, status)

        followers = [asyncio.create_task(follow(job_id)) for job_id in labels]
        await asyncio.sleep(1.0)
        slow = next(job_id for job_id, label in labels.items() if label == "slow")
        show.say(f"cancelling the slow job {short_id(slow)}...")
        await svc.cancel(slow)
        await asyncio.gather(*followers)
        show.say(f"flaky job: {await svc.wait(retry.id)!r}")
        await svc.run_until_idle()
    show.close()

    # Read the final statuses straight from the file, on a plain sqlite3 connection.
    conn = sqlite3.connect(db)
    try:
        rows = overview.summaries(conn)
        shown = lookup.short_ids(conn, [row.id for row in rows])  # the random tails
        tries = lookup.attempts(conn, [row.id for row in rows])
    finally:
        conn.close()
    none: Counter[str] = Counter()  # a --db file may hold jobs from before this demo
    table = [
        [
            shown[row.id],
            str(row.handler),  # "None" for a bare coroutine job
            row.status,
            _attempt(row, tries.get(row.id)),
            "events=" + ",".join(f"{k}:{n}" for k, n in sorted(seen.get(row.id, none).items())),
            row.detail[:50],
        ]
        for row in rows
    ]
    out.table(DEMO_COLUMNS, table, title=FINAL_HEADER)
    return 0


def _attempt(row: overview.JobSummary, tries: lookup.Attempts | None) -> str:
    """``2 of 3``, as people count attempts (``row.attempt`` alone if the row went away)."""
    if tries is None:
        return str(row.attempt + 1)
    return fmt_attempt(
        tries.attempt, tries.max_retries, ran=tries.ran, pending=row.status == "pending"
    )


def run_demo(db: str | None = None, out: Output | None = None) -> int:
    """Run the showcase (about 2 seconds); returns the exit code.

    Args:
        db: the database file to use; by default a temporary one, removed afterwards.
        out: where to write (stdout: the final statuses; stderr: the live progress).
    """
    out = Output() if out is None else out
    show: Display = RichDisplay(out) if out.fancy(out.stderr) else PlainDisplay(out)
    try:
        if db is not None:
            return asyncio.run(_demo(Path(db), out, show))
        with tempfile.TemporaryDirectory(prefix="jobqueue-demo-") as tmp:
            code = asyncio.run(_demo(Path(tmp) / "demo.db", out, show, temporary=True))
        out.note(
            f"{Path(tmp) / 'demo.db'} was a temporary file and is deleted now; "
            "run `jobqueue demo --db demo.db` to keep the database"
        )
        return code
    finally:
        show.close()
