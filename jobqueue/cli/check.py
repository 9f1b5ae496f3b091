"""``check``: a read-only health check of a database file.

Unlike every other command it does not open a service: the file is opened
read-only (``mode=ro``), so a damaged file is never written to, an old one is
reported as it is (not migrated), and nothing is recovered. It runs SQLite's
``integrity_check`` (``--quick``: ``quick_check``), then checks the schema
version, the stored statuses, foreign keys, the journal mode and running jobs
whose process is gone.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from typing import Any

from jobqueue.cli.render import Output
from jobqueue.errors import StoreError
from jobqueue.status import TaskStatus
from jobqueue.store import overview
from jobqueue.store.connection import map_sqlite_error
from jobqueue.store.health import (
    damaged,
    diagnose,
    foreign_key_violations,
    integrity,
    integrity_failed,
    journal_mode,
    likely_cause,
    open_read_only,
)
from jobqueue.store.recovery import heartbeats, is_alive
from jobqueue.store.schema import latest_version, newer_schema, refuse_foreign, user_version

__all__ = ["check_command", "check_file", "likely_cause"]

#: The schema version that lowercased statuses (older files may hold ``RUNNING``).
_LOWERCASE_VERSION = 2


def _connect(path: str) -> sqlite3.Connection:
    try:
        return open_read_only(path, busy_timeout=5.0)
    except sqlite3.Error as exc:
        raise map_sqlite_error(exc, path) or StoreError(f"{path}: {exc}", path) from exc


def check_file(path: str, *, quick: bool = False) -> dict[str, Any]:
    """Check ``path`` without writing to it; returns the report.

    The report's ``problems`` are what makes the file unusable or wrong
    (``ok`` is false when there are any); ``warnings`` are worth knowing
    but harmless (an older schema is migrated at the next open, a dead
    process's running jobs are recovered then). When SQLite finds the file
    itself damaged, ``damaged`` is true and ``likely_cause`` says what
    usually did it and what to do (:func:`likely_cause`). Each problem is
    worded as every other command words it (:func:`~jobqueue.store.health.diagnose`).

    Raises:
        StoreCorruptedError: not a SQLite file, truncated, too damaged to open,
            or a database of another program (the message every command gives).
        StoreError: the file cannot be read.
    """
    diagnose(path, check=None)  # what every command says about a file it cannot use
    conn = _connect(path)
    try:
        report = _check(conn, path, quick)
    finally:
        conn.close()
    if report["damaged"]:
        report["likely_cause"] = likely_cause(path)
    return report


def _check(conn: sqlite3.Connection, path: str, quick: bool) -> dict[str, Any]:
    latest = latest_version()
    report: dict[str, Any] = {
        "path": path,
        "ok": False,
        "integrity": None,
        "schema_version": None,
        "supported_version": latest,
        "journal_mode": None,
        "size_bytes": os.path.getsize(path),
        "jobs": {},
        "problems": [],
        "warnings": [],
        "damaged": False,  # the b-tree is broken (not merely an unexpected value)
        "likely_cause": None,
    }
    problems: list[str] = report["problems"]
    warnings: list[str] = report["warnings"]
    try:
        found = integrity(conn, quick)
        version = user_version(conn)
        report["journal_mode"] = journal_mode(conn)
    except sqlite3.DatabaseError as exc:
        report["integrity"] = [str(exc)]
        report["damaged"] = True
        problems.append(str(damaged(path, str(exc))))
        return report
    report["integrity"] = "ok" if found == ["ok"] else found[:20]
    if found != ["ok"]:
        report["damaged"] = True
        problems.append(str(integrity_failed(path, found)))
    report["schema_version"] = version
    if version == 0:
        refuse_foreign(conn, path)  # raises for another program's database
        warnings.append("empty: no jobqueue schema yet (the first service to open it creates it)")
        report["ok"] = not problems
        return report
    if version > latest:
        problems.append(str(newer_schema(path, version)))
    elif version < latest:
        warnings.append(
            f"schema version {version} is older than this jobqueue's ({latest}); the next "
            "service to open the file migrates it"
        )
    if report["journal_mode"] != "wal":
        warnings.append(
            f"journal_mode is {report['journal_mode']!r}, not 'wal' (the next open switches it)"
        )
    try:
        _check_rows(conn, version, report)
    except sqlite3.DatabaseError as exc:
        report["damaged"] = True
        problems.append(str(damaged(path, f"reading the jobs failed: {exc}")))
    report["ok"] = not problems
    return report


def _check_rows(conn: sqlite3.Connection, version: int, report: dict[str, Any]) -> None:
    valid = {s.value for s in TaskStatus}
    counts: dict[str, int] = {}
    for status, n in overview.count_by_status(conn).items():
        key = status.lower() if isinstance(status, str) and version < _LOWERCASE_VERSION else status
        if key in valid:
            counts[key] = counts.get(key, 0) + n
            continue
        example = overview.example_with_status(conn, status)
        report["problems"].append(
            f"{n} job(s) have the invalid status {status!r} (e.g. job {example!r}); "
            f"valid statuses are {', '.join(sorted(valid))}. Fix or delete those rows."
        )
    report["jobs"] = counts
    fk = foreign_key_violations(conn)
    if fk:
        report["problems"].append(f"{len(fk)} row(s) break a foreign key (first: {fk[0]!r})")
    running = overview.running_by_owner(conn)
    beats = heartbeats(conn)  # owners /proc here cannot judge: by their heartbeat
    for owner, n in running.items():
        if owner is not None and not is_alive(owner, beats.get(owner)):
            report["warnings"].append(
                f"{n} running job(s) belong to process {owner.split(':')[0]}, which is gone; "
                "the next service to open the file puts them back to pending"
            )


def check_command(args: argparse.Namespace, out: Output) -> int:
    """``check``: 0 healthy, 1 problems found (listed), 2 not a usable SQLite file at all."""
    report = check_file(args.db, quick=args.quick)
    if args.json:
        out.json(report, indent=2)
    else:
        integrity = report["integrity"]
        version = report["schema_version"]
        fields = [
            ("file", f"{report['path']} ({report['size_bytes']:,} bytes)"),
            ("integrity", integrity if isinstance(integrity, str) else "FAILED"),
            ("schema", f"version {version} (this jobqueue: {report['supported_version']})"),
            ("journal", str(report["journal_mode"])),
            ("jobs", ", ".join(f"{s} {n}" for s, n in sorted(report["jobs"].items())) or "none"),
        ]
        fields += [("problem", p) for p in report["problems"]]  # a damaged file's: its cause
        fields += [("warning", w) for w in report["warnings"]]
        out.fields(fields)
        out.note("check: ok" if report["ok"] else f"check: {len(report['problems'])} problem(s)")
    return 0 if report["ok"] else 1
