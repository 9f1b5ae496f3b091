"""``list``, ``show`` and the control commands (``cancel``, ``pause``, ``resume``, ``stop``,
``retry``).

``list`` and ``show`` read the file through a :class:`~jobqueue.store.readonly.ReadOnlyStore`
and never write to it; the controls change jobs through a service.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jobqueue.cli.render import Column, Output, fmt_age, fmt_attempt, fmt_duration, fmt_time
from jobqueue.errors import JobNotFoundError, JobQueueError, StoreError
from jobqueue.service import JobQueueService
from jobqueue.status import TaskStatus
from jobqueue.store import eventlog, jobs, lookup, recovery, retry, steps
from jobqueue.store.jobs import Job
from jobqueue.store.readonly import ReadOnlyStore

__all__ = [
    "CONTROLS",
    "control_command",
    "job_dict",
    "list_command",
    "not_found",
    "report_failure",
    "resolve_targets",
    "show_command",
]

#: The control commands and their help; each calls the service method of that name.
CONTROLS = {
    "cancel": "cancel a job now (a running one is interrupted)",
    "pause": "pause a job (a running one stops at its next checkpoint)",
    "resume": "resume a paused job",
    "stop": "stop a job gracefully (its current step finishes, then it ends stopped)",
    "retry": "run a failed, cancelled or stopped job again (a new attempt under its id)",
}
#: What a control request does when the job still shows as running in another process.
_PENDING_NOTE = {
    "cancel": "it is cancelled",
    "pause": "it is paused",
    "stop": "it stops after its current step",
}
#: ``list``'s columns; on a narrow terminal PRIORITY, then CREATED, are left out and a
#: long handler name or detail is cut with an ellipsis (``show`` has them whole).
_LIST_COLUMNS = [
    Column("ID"),
    Column("HANDLER", cut_to=20),
    Column("STATUS"),
    Column("ATTEMPT"),
    Column("PRIORITY", drop=2),
    Column("CREATED", drop=1),
    Column("DETAIL", flex=True),
]


def not_found(exc: JobNotFoundError, db: str) -> str:
    """The command line's message for an unknown id: where to look instead."""
    text = exc.job_id
    how = (
        f"no job's id is, starts or ends with {text!r}"
        if len(text) >= lookup.MIN_PART
        else f"a part of an id needs at least {lookup.MIN_PART} characters"
    )
    return f"no job with id {text!r} in {db} ({how}); `jobqueue list --db {db}` lists the jobs"


def job_dict(job: Job) -> dict[str, Any]:
    """The stored record as JSON-ready data (``status`` as its string value)."""
    d = dataclasses.asdict(job)
    d["status"] = job.status.value
    return d


#: The longest DETAIL of ``list`` (a terminal cuts it to its width; ``show`` has it all).
_DETAIL = 100


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _attempt(job: Job) -> str:
    """``2 of 3`` (see :func:`~jobqueue.cli.render.fmt_attempt`)."""
    return fmt_attempt(
        job.attempt,
        job.max_retries,
        ran=job.started_at is not None,
        pending=job.status is TaskStatus.PENDING,
    )


def _detail(job: Job, now: float, beats: Mapping[str, float] | None = None) -> str:
    """One phrase about where the job is: what it returned, why it failed, when it runs.

    ``beats``: the owners' heartbeats, to tell a running job whose process is gone
    (the read-only commands do not recover it: the next service to open the file does).
    """
    status = job.status
    request = f"; {job.control} requested" if job.control else ""
    if status is TaskStatus.PENDING:
        due = f"due {fmt_age(job.run_at, now)}" if job.run_at > now else "due now"
        why = "retried by request" if job.reason == "retried" else f"retry after {job.reason}"
        return due + (f" ({why})" if job.reason else "") + request
    if status is TaskStatus.RUNNING:
        since = f"for {fmt_duration(now - job.started_at)}" if job.started_at else "running"
        if not job.owner:
            return since
        pid = job.owner.split(":", 1)[0]
        if beats is not None and not recovery.is_alive(job.owner, beats.get(job.owner), now):
            return f"{since}, pid {pid} gone (recovered when a worker opens the file){request}"
        return f"{since}, pid {pid}{request}"
    if status is TaskStatus.COMPLETED:
        return "result " + _short(job.result, _DETAIL)
    if status is TaskStatus.FAILED:
        what = job.error or job.error_type or ""
        return _short(
            f"{job.reason}: {what}" if job.reason not in (None, "error") else what, _DETAIL
        )
    return _short(job.reason or "", _DETAIL) + request


def list_command(store: ReadOnlyStore, args: argparse.Namespace, out: Output) -> int:
    """``list``: stored jobs, newest first (``--json``: one JSON object per line)."""
    statuses = None if args.status is None else [TaskStatus(s) for s in args.status]
    found: list[Job] = []
    beats: dict[str, float] = {}
    if not store.empty:
        found = store.read(jobs.list_jobs, statuses, args.handler, None, args.limit, 0)
        beats = store.read(recovery.heartbeats)
    if args.json:
        for job in found:
            out.json(job_dict(job))
        return 0
    if not found:
        which = f" with status {', '.join(args.status)}" if args.status else ""
        new = " (an empty file: no jobqueue schema yet)" if store.empty else ""
        out.note(f"no jobs{which} in {args.db}{new}")
        return 0
    now = time.time()
    shown = store.read(lookup.short_ids, [job.id for job in found])
    rows = [
        [
            shown[job.id],
            job.handler or "(coroutine)",
            job.status.value,
            _attempt(job),
            str(job.priority),
            fmt_age(job.created_at, now),
            _detail(job, now, beats),
        ]
        for job in found
    ]
    out.table(_LIST_COLUMNS, rows)
    if len(found) == args.limit:
        out.note(f"(the newest {args.limit} shown; --limit N shows more)")
    return 0


def _last_events(store: ReadOnlyStore, job_id: str, count: int) -> list[dict[str, Any]]:
    """The job's newest ``count`` persisted events, oldest first (none without the log)."""
    if count <= 0:
        return []
    newest = store.read(eventlog.max_seq, job_id)
    rows = store.read(eventlog.read_after, job_id, max(0, newest - count), count)
    out = []
    for seq, kind, data, created_at in rows:
        try:
            decoded = json.loads(data)
        except ValueError:
            decoded = data
        out.append({"seq": seq, "type": kind, "data": decoded, "created_at": created_at})
    return out


def _plain(value: Any) -> Any:
    """A step record (dataclass, mapping, named tuple, object) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif hasattr(value, "_asdict"):
        value = value._asdict()
    elif not isinstance(value, Mapping) and hasattr(value, "__dict__"):
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, TaskStatus):
        return value.value
    return value


def _steps(store: ReadOnlyStore, job_id: str) -> list[Any]:
    """The job's durable workflow steps (``ctx.step``/``ctx.sleep``), as plain data."""
    return [_plain(s) for s in store.read(steps.list_steps, job_id)]


def _step_table(job_id: str, steps: list[Any]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows for the steps: every key the records have, times as clock times."""
    keys: list[str] = []
    for step in steps:
        for key in step if isinstance(step, dict) else ["step"]:
            if key not in keys and key != "job_id":
                keys.append(key)

    def cell(step: Any, key: str) -> str:
        value = step.get(key) if isinstance(step, dict) else step
        if value is None:
            return "-"
        if key.endswith("_at") and isinstance(value, int | float):
            return fmt_time(value)
        return _short(value, 40)

    return [k.upper() for k in keys], [[cell(s, k) for k in keys] for s in steps]


def _record_fields(job: Job, now: float, shown: str) -> list[tuple[str, str]]:
    def when(ts: float | None) -> str:
        return "-" if ts is None else f"{fmt_time(ts)} ({fmt_age(ts, now)})"

    status = job.status.value + (f" (reason: {job.reason})" if job.reason else "")
    fields = [
        ("id", job.id if shown == job.id else f"{job.id} (short: {shown})"),
        ("handler", job.handler or "(a coroutine started with start_job)"),
        ("status", status),
        (
            "attempt",
            f"{_attempt(job)} (stored: attempt {job.attempt}, max_retries {job.max_retries})",
        ),
        ("priority", str(job.priority)),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("completed", when(job.completed_at)),
        ("updated", when(job.updated_at)),
    ]
    if job.status is TaskStatus.PENDING:
        fields.append(("run at", when(job.run_at)))
    optional = [
        ("timeout", None if job.timeout is None else f"{job.timeout:g}s"),
        ("owner", None if job.owner is None else f"{job.owner} (pid {job.owner.split(':')[0]})"),
        ("control", None if job.control is None else f"{job.control} requested, not yet applied"),
        ("session", job.session_id),
        ("idempotency key", job.idempotency_key),
        ("description", job.description),
        ("concurrency key", job.concurrency_key),
        ("workspace", job.workspace),
        ("report", job.report_path),
    ]
    fields += [(name, value) for name, value in optional if value is not None]
    fields.append(("payload", json.dumps(job.payload, indent=2, default=str)))
    if job.status is TaskStatus.COMPLETED:
        fields.append(("result", json.dumps(job.result, indent=2, default=str)))
    if job.error is not None or job.error_type is not None:
        fields.append(("error", job.error or str(job.error_type)))
    if job.traceback:
        # split at newlines only: a CR or U+2028 inside a message stays in its line, escaped
        lines = job.traceback.replace("\r\n", "\n").rstrip().split("\n")
        fields.append(("traceback", "\n".join(lines[-8:])))
    return fields


def show_command(store: ReadOnlyStore, args: argparse.Namespace, out: Output) -> int:
    """``show JOB``: the record, its workflow steps, runs before a retry and last events."""
    if store.empty:
        raise JobNotFoundError(args.job)
    job = store.read(jobs.fetch, store.read(lookup.resolve_id, args.job))
    found = _steps(store, job.id)
    events = _last_events(store, job.id, args.events)
    earlier = store.read(retry.list_retries, job.id)
    if args.json:
        data = job_dict(job)
        data["steps"] = found
        data["events"] = events
        data["retries"] = [dataclasses.asdict(r) for r in earlier]
        out.json(data, indent=2)
        return 0
    now = time.time()
    out.fields(_record_fields(job, now, store.read(lookup.short_ids, [job.id])[job.id]))
    out.line("")
    if found:
        columns, rows = _step_table(job.id, found)
        out.table(columns, rows, title=f"steps ({len(found)})")
    else:
        out.line("steps: none recorded")
    out.line("")
    if earlier:  # runs that ended before a retry: their errors stay readable here
        rows = [
            [
                fmt_time(r.retried_at),
                str(r.attempt + 1),
                r.status,
                _short(r.error or r.reason or ""),
            ]
            for r in earlier
        ]
        out.table(
            ["RETRIED", "ATTEMPT", "ENDED", "ERROR"],
            rows,
            title=f"runs before a retry ({len(earlier)})",
        )
        out.line("")
    if events:
        rows = [
            [str(e["seq"]), fmt_time(e["created_at"]), e["type"], _short(e["data"], 70)]
            for e in events
        ]
        out.table(["SEQ", "TIME", "TYPE", "DATA"], rows, title=f"last {len(events)} events")
    else:
        out.line("events: none persisted (open the service with persist_events=True to keep them)")
    return 0


def _control_line(svc: JobQueueService, cmd: str, job: Job, shown: str) -> str:
    """``"<id> <status>"``, plus what happens next when the request is not applied yet."""
    line = f"{shown} {job.status}"
    if cmd == "retry":
        return line + f" (attempt {_attempt(job)}; a worker with its handler runs it)"
    if cmd == "resume" and job.status == "paused":
        return line + (
            " (resume requested: a worker with its handler claims it like a due pending job "
            f"within its poll interval; `show {shown}` tells when)"
        )
    owner = job.owner
    if job.status == "running" and owner is not None and owner != svc.owner:
        pid = owner.split(":", 1)[0]
        line += (
            f" ({cmd} requested: the worker running it, pid {pid}, applies it within its "
            f"poll interval, then {_PENDING_NOTE[cmd]}; `show {shown}` tells when)"
        )
    return line


#: What each id given to a control command names: the job's whole id, or why none.
Targets = list[tuple[str, "str | JobQueueError"]]


def resolve_targets(store: ReadOnlyStore, given: Sequence[str]) -> Targets:
    """Each id given (a whole id, or a unique prefix or suffix), looked up read-only.

    Two parts that name the same job count once. A file with no schema has no jobs.

    Raises:
        StoreError: the file cannot be read (no point trying the other ids).
    """
    found: Targets = []
    seen: set[str] = set()
    for text in _unique(given):
        try:
            if store.empty:
                raise JobNotFoundError(text)
            job_id = store.read(lookup.resolve_id, text)
        except StoreError:
            raise
        except JobQueueError as exc:
            found.append((text, exc))
            continue
        if job_id not in seen:
            seen.add(job_id)
            found.append((text, job_id))
    return found


def report_failure(exc: JobQueueError, db: str, out: Output) -> None:
    """One line on stderr for an id that could not be controlled."""
    out.error(not_found(exc, db) if isinstance(exc, JobNotFoundError) else str(exc))


async def control_command(
    svc: JobQueueService,
    args: argparse.Namespace,
    out: Output,
    targets: Targets,
    shown: dict[str, str],
) -> int:
    """``cancel|pause|resume|stop JOB...``: one ``<short id> <status>`` line per job.

    ``targets`` come from :func:`resolve_targets`; ``shown`` maps whole ids to
    the short ids printed. Every job is tried; the exit code is 1 if any failed.
    """
    method = getattr(svc, args.cmd)  # stop needs the id: without one it closes the service
    failed = 0
    for _, target in targets:
        try:
            if isinstance(target, JobQueueError):
                raise target
            job: Job = await method(target)
        except StoreError:
            raise  # the file itself is the problem: no point trying the other ids
        except JobQueueError as exc:
            if len(targets) == 1:
                raise
            report_failure(exc, args.db, out)
            failed += 1
            continue
        out.line(_control_line(svc, args.cmd, job, shown.get(job.id, job.id)))
    return 1 if failed else 0


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))
