"""``python -m jobqueue`` (also installed as ``jobqueue``): the command line.

Subcommands: ``demo``, ``worker``, ``list``, ``show``, ``cancel``, ``pause``,
``resume``, ``stop``, ``retry``, ``stats``, ``check``, ``metrics``. Data goes to
stdout, notes, progress and logs to stderr.

Exit codes:

* ``0``: done (for ``check``: the file is healthy).
* ``1``: the command could not do what was asked: an unknown or ambiguous job id, a change
  the status table does not allow (a retry of a job that has not ended), ``check``
  found problems, the metrics port is taken, a bulk ``retry``/``cancel`` declined at
  its prompt.
* ``2``: bad usage (unknown option, missing ``--db``, bad ``MODULE:ATTR``, a bulk
  ``retry``/``cancel`` without ``--yes`` and no terminal to ask on) or a
  database file that cannot be used: missing, a directory, damaged, not a
  SQLite file, another program's database, a newer schema, locked, read-only.
* ``130``: interrupted by Ctrl-C (``stats --watch`` and ``metrics`` treat
  Ctrl-C as their normal end and exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence

from jobqueue import __version__
from jobqueue.cli.bulk import BULK, add_bulk_options, bulk_command, wants_bulk
from jobqueue.cli.jobs import CONTROLS, not_found
from jobqueue.cli.render import Output, log_to_stderr
from jobqueue.cli.web import add_web_parser
from jobqueue.cli.worker import add_worker_parser, port_number
from jobqueue.errors import InvalidArgumentError, JobNotFoundError, JobQueueError, StoreError
from jobqueue.status import TaskStatus

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "entrypoint", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Environment variable giving ``--db`` for the commands that inspect or control a file.
DB_ENV = "JOBQUEUE_DB"
_NEEDS_DB = ("list", "show", *CONTROLS, "stats", "check", "metrics", "web")


def _statuses(text: str) -> list[str]:
    """``--status pending,running``: validated status values."""
    wanted = [s.strip().lower() for s in text.split(",") if s.strip()]
    valid = [s.value for s in TaskStatus]
    bad = [s for s in wanted if s not in valid]
    if bad or not wanted:
        raise argparse.ArgumentTypeError(
            f"unknown status {', '.join(bad) or repr(text)}; use one of {', '.join(valid)} "
            "(several: pending,running)"
        )
    return wanted


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int, _count = _int_at_least(1), _int_at_least(0)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m jobqueue``."""

    # Options every subcommand takes, before or after the subcommand's name. SUPPRESS
    # keeps a value given before the name from being reset by the subcommand's default.
    def shared(db_help: str) -> argparse.ArgumentParser:
        parent = argparse.ArgumentParser(add_help=False)
        parent.add_argument("--db", metavar="FILE", default=argparse.SUPPRESS, help=db_help)
        parent.add_argument(
            "--plain",
            action="store_true",
            default=argparse.SUPPRESS,
            help="plain text even on a terminal (no rich tables or progress bars)",
        )
        return parent

    common = shared(f"the jobqueue database file (default: ${DB_ENV})")
    p = argparse.ArgumentParser(
        prog="jobqueue",
        description="Embedded, crash-safe asyncio job queue on SQLite.",
        epilog="Exit codes: 0 done, 1 the command failed (unknown job, change not allowed, "
        "check found problems), 2 bad usage or an unusable database file, 130 interrupted.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"jobqueue {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    def cmd(name: str, help_: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=description or help_, parents=[common])

    sub.add_parser(
        "demo",
        parents=[shared("keep the demo's database in FILE (default: a temporary file)")],
        help="run a 2-second showcase with a live progress display",
        description="Run a showcase: submit jobs, follow their events with a live progress display "
        "(stderr), cancel one, retry one, then print the statuses read back from the "
        "database file (stdout). --db keeps the file; by default a temporary one is used.",
    )
    add_worker_parser(
        sub, parents=[shared("database file (default: the path the service was created with)")]
    )

    ls = cmd("list", "list jobs, newest first")
    ls.add_argument(
        "--status", type=_statuses, metavar="S[,S...]", help="only these statuses (comma-separated)"
    )
    ls.add_argument("--handler", metavar="NAME", help="only jobs of this handler")
    ls.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="at most N jobs (default 50)"
    )
    ls.add_argument("--json", action="store_true", help="one JSON object per line (all fields)")

    show = cmd("show", "show one job: its record, workflow steps and last events")
    show.add_argument("job", metavar="JOB", help="the job id")
    show.add_argument(
        "--events",
        type=_count,
        default=10,
        metavar="N",
        help="how many of the last persisted events to show (default 10)",
    )
    show.add_argument("--json", action="store_true", help="one JSON object")

    for name, help_ in CONTROLS.items():
        c = cmd(name, help_)
        if name in BULK:
            c.add_argument("job", metavar="JOB", nargs="*", help="job id(s), or a filter:")
            add_bulk_options(c, name, _statuses)
        else:
            c.add_argument("job", metavar="JOB", nargs="+", help="job id(s)")
        c.add_argument(
            "--busy-timeout",
            type=_non_negative,
            default=5.0,
            metavar="S",
            help="seconds to wait while another process holds the write lock, then exit 2 "
            "(default 5; 0: do not wait)",
        )

    st = cmd("stats", "job counts by status, lag, queues and live processes")
    st.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    st.add_argument(
        "--interval",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="seconds between refreshes (default 2)",
    )
    st.add_argument(
        "--count", type=_positive_int, metavar="N", help="with --watch: stop after N reports"
    )
    st.add_argument("--json", action="store_true", help="JSON (one object per line with --watch)")

    ck = cmd(
        "check",
        "integrity and schema version of a database file (read-only)",
        "Check a database file without writing to it: SQLite's integrity_check, the "
        "schema version, stored statuses, foreign keys, journal mode, running jobs of "
        "dead processes. Exit 0 healthy, 1 problems found, 2 not a usable SQLite file.",
    )
    ck.add_argument("--quick", action="store_true", help="quick_check instead of integrity_check")
    ck.add_argument("--json", action="store_true", help="one JSON object")

    met = cmd("metrics", "serve Prometheus metrics until SIGINT/SIGTERM")
    met.add_argument(
        "--port",
        type=port_number,
        required=True,
        metavar="PORT",
        help="TCP port (0: a free one; the URL is printed on stdout)",
    )
    met.add_argument(
        "--addr", default="127.0.0.1", metavar="ADDR", help="bind address (default: 127.0.0.1)"
    )
    met.add_argument(
        "--interval",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="seconds between reads of the file (default 5)",
    )
    met.add_argument(
        "--history",
        type=_non_negative,
        default=900.0,
        metavar="S",
        help="at start, also count the jobs that finished in the last S seconds (default 900)",
    )
    add_web_parser(sub, parents=[common])
    return p


def _exit_code(exc: JobQueueError) -> int:
    if isinstance(exc, StoreError | InvalidArgumentError):
        return EXIT_USAGE
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Never raises ``SystemExit``: tests and embedding programs call it directly.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.cmd is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    out = Output(plain=getattr(args, "plain", False))
    args.db = getattr(args, "db", None)
    if args.db is None and args.cmd in _NEEDS_DB:
        args.db = os.environ.get(DB_ENV) or None
        if args.db is None:
            out.error(f"{args.cmd} needs --db FILE (or the {DB_ENV} environment variable)")
            return EXIT_USAGE
    if args.cmd != "worker" and not logging.getLogger().handlers:  # the worker sets its own
        log_to_stderr(logging.WARNING, "jobqueue: %(levelname)s %(message)s")
    try:
        return _dispatch(args, out)
    except JobNotFoundError as exc:
        out.error(not_found(exc, args.db))
        return EXIT_FAILED
    except JobQueueError as exc:
        out.error(str(exc))
        return _exit_code(exc)
    except KeyboardInterrupt:
        out.error("interrupted")
        return EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace, out: Output) -> int:
    if args.cmd == "demo":
        from jobqueue.cli.demo import run_demo

        return run_demo(args.db, out)
    if args.cmd == "worker":
        from jobqueue.cli.worker import run_worker_command

        return run_worker_command(args)
    if os.path.isdir(args.db):
        out.error(f"{args.db} is a directory; --db takes a database file such as jobs.db")
        return EXIT_USAGE
    if not os.path.exists(args.db):
        out.error(
            f"no database file at {args.db}; check the path ({args.cmd} never creates one: "
            "a worker or your application does)"
        )
        return EXIT_USAGE
    if args.cmd == "check":
        from jobqueue.cli.check import check_command

        return check_command(args, out)
    if args.cmd == "metrics":
        from jobqueue.cli.metrics import metrics_command

        return asyncio.run(metrics_command(args, out))
    if args.cmd == "web":
        from jobqueue.cli.web import web_command

        return web_command(args, out)
    if args.cmd in BULK and wants_bulk(args):
        return bulk_command(args, out)
    if args.cmd in CONTROLS:
        if not args.job:
            out.error(
                f"{args.cmd} needs JOB (a job id) or a filter: --status, --handler, --session"
            )
            return EXIT_USAGE
        return asyncio.run(_control(args, out))
    return _read_only(args, out)


def _read_only(args: argparse.Namespace, out: Output) -> int:
    """``list``, ``show``, ``stats``: on a read-only connection; the file is never written."""
    from jobqueue.cli.jobs import list_command, show_command
    from jobqueue.cli.stats import stats_command
    from jobqueue.store.readonly import ReadOnlyStore

    with ReadOnlyStore(args.db, command=args.cmd) as store:
        if args.cmd == "list":
            return list_command(store, args, out)
        if args.cmd == "show":
            return show_command(store, args, out)
        return asyncio.run(stats_command(store, args, out))


async def _control(args: argparse.Namespace, out: Output) -> int:
    """Look every id up read-only, then change the jobs found through a service."""
    from jobqueue.cli.jobs import control_command, report_failure, resolve_targets
    from jobqueue.service import JobQueueService
    from jobqueue.store import lookup
    from jobqueue.store.readonly import ReadOnlyStore

    with ReadOnlyStore(
        args.db, command=args.cmd, busy_timeout=args.busy_timeout, allow_older=True
    ) as store:
        targets = resolve_targets(store, args.job)
        found = [t for _, t in targets if isinstance(t, str)]
        shown = store.read(lookup.short_ids, found) if found else {}
    if not found:  # nothing to change: no service (it would write a schema into an empty file)
        if len(targets) == 1 and isinstance(targets[0][1], JobQueueError):
            raise targets[0][1]
        for _, target in targets:
            if isinstance(target, JobQueueError):
                report_failure(target, args.db, out)
        return EXIT_FAILED
    async with JobQueueService(args.db, busy_timeout=args.busy_timeout) as svc:
        return await control_command(svc, args, out, targets, shown)


def entrypoint() -> None:
    """Console-script entry point: exit with :func:`main`'s code."""
    sys.exit(main())
