"""``retry`` and ``cancel`` on every job that matches ``--status``, ``--handler``, ``--session``.

The matching jobs are counted read-only first. On a terminal the command asks
before changing them; elsewhere ``--yes`` must say so (a script never changes
a whole file by accident). The change itself is one call of a service:
``retry_where`` or ``cancel_where``, whose ids are printed one per line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final, TextIO

from jobqueue.cli.render import Output, is_terminal
from jobqueue.status import TaskStatus
from jobqueue.store import retry as retries

__all__ = ["BULK", "add_bulk_options", "bulk_command", "wants_bulk"]

#: The control commands that also take a filter instead of job ids.
BULK: Final = ("cancel", "retry")
_ALLOWED: Final = {"retry": retries.RETRYABLE, "cancel": retries.CANCELLABLE}
_DONE: Final = {"retry": ("retried", "pending"), "cancel": ("cancelled", "cancelled")}
#: Exit codes (as jobqueue.cli.main's).
_OK, _FAILED, _USAGE = 0, 1, 2


def add_bulk_options(
    parser: argparse.ArgumentParser, name: str, statuses: Callable[[str], list[str]]
) -> None:
    """``--status``, ``--handler``, ``--session`` and ``--yes`` for ``name``."""
    allowed = ",".join(s.value for s in _ALLOWED[name])
    parser.add_argument(
        "--status",
        type=statuses,
        metavar="S[,S...]",
        help=f"instead of JOB: every job in these statuses (of {allowed}; default all of them "
        "when --handler or --session is given)",
    )
    parser.add_argument("--handler", metavar="NAME", help="instead of JOB: jobs of this handler")
    parser.add_argument("--session", metavar="ID", help="instead of JOB: jobs of this session id")
    parser.add_argument(
        "--yes", action="store_true", help="do not ask before changing the matching jobs"
    )


def wants_bulk(args: argparse.Namespace) -> bool:
    """A filter was given (the command acts on the jobs that match, not on ids)."""
    return any(getattr(args, k, None) is not None for k in ("status", "handler", "session"))


def bulk_command(args: argparse.Namespace, out: Output, stdin: TextIO | None = None) -> int:
    """Count the matching jobs, ask (or check ``--yes``), then change them all."""
    from jobqueue.store.readonly import ReadOnlyStore

    cmd = args.cmd
    if args.job:
        out.error(f"{cmd}: give job ids or --status/--handler/--session, not both")
        return _USAGE
    allowed = _ALLOWED[cmd]
    given = args.status
    bad = [s for s in given or () if TaskStatus(s) not in allowed]
    if bad:
        out.error(
            f"{cmd} --status {','.join(bad)}: {cmd} acts on jobs that are "
            f"{', '.join(s.value for s in allowed)}; pass those (or leave --status out)"
        )
        return _USAGE
    statuses = [TaskStatus(s) for s in given] if given else list(allowed)
    what = _describe(statuses, args.handler, args.session)
    with ReadOnlyStore(
        args.db, command=cmd, busy_timeout=args.busy_timeout, allow_older=True
    ) as store:
        matching = partial(retries.matching, runnable=cmd == "retry")
        found = [] if store.empty else store.read(matching, statuses, args.handler, args.session)
    if not found:
        out.note(f"no jobs that are {what} in {args.db}: nothing to {cmd}")
        return _OK
    if not args.yes:
        stdin = sys.stdin if stdin is None else stdin
        if not is_terminal(stdin):
            out.error(
                f"{cmd} would change {len(found)} job(s) that are {what}; add --yes to do it "
                "(no terminal to ask on)"
            )
            return _USAGE
        print(
            f"{cmd} {len(found)} job(s) that are {what} in {args.db}? [y/N] ",
            end="",
            file=out.stderr,
            flush=True,
        )
        if stdin.readline().strip().lower() not in ("y", "yes"):
            out.note("nothing was changed")
            return _FAILED
    return asyncio.run(_apply(args, out, given is not None, statuses, len(found)))


async def _apply(
    args: argparse.Namespace, out: Output, filtered: bool, statuses: list[TaskStatus], seen: int
) -> int:
    from jobqueue.service import JobQueueService
    from jobqueue.store import lookup

    async with JobQueueService(args.db, busy_timeout=args.busy_timeout) as svc:
        call = svc.retry_where if args.cmd == "retry" else svc.cancel_where
        ids = await call(
            status=statuses if filtered else None, handler=args.handler, session_id=args.session
        )
        shown = await svc.runtime.read(lookup.short_ids, ids) if ids else {}
    verb, status = _DONE[args.cmd]
    for job_id in ids:
        out.line(f"{shown.get(job_id, job_id)} {status}")
    note = f"{verb} {len(ids)} job(s)"
    if len(ids) < seen:
        note += (
            f"; {seen - len(ids)} changed meanwhile (finished, or taken by a worker) and were left"
        )
    out.note(note)
    return _OK


def _describe(statuses: Sequence[TaskStatus], handler: str | None, session: str | None) -> str:
    """``failed or stopped, of handler 'send', in session 's1'``."""
    names = [s.value for s in statuses]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    if handler is not None:
        text += f", of handler {handler!r}"
    if session is not None:
        text += f", in session {session!r}"
    return text
