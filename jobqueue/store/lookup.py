"""Finding a job by part of its id, and the shortest part that tells it apart.

The command line shows ids short and takes any unique part of one, as git
does for commits: :func:`resolve_id` finds the one job whose id is, starts
with or ends with what was typed; :func:`short_ids` lengthens a short id
(:func:`jobqueue.ids.short_id`) where another job of the file starts or ends
with the same characters, so what is shown can always be typed back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final, NamedTuple

from jobqueue.errors import AmbiguousJobIdError, JobNotFoundError
from jobqueue.ids import SHORT_ID_LEN, has_random_tail
from jobqueue.store.rows import by_name

__all__ = ["MIN_PART", "Attempts", "attempts", "resolve_id", "short_ids"]

#: The fewest characters matched as a prefix or suffix (shorter text must be a whole id).
MIN_PART: Final = 4
#: Candidates an ambiguous id error names.
_SHOWN: Final = 5
#: Lengths a short id grows through before the whole id is shown.
_LENGTHS: Final = (SHORT_ID_LEN, 12, 16, 20)


def resolve_id(conn: sqlite3.Connection, text: str) -> str:
    """The id of the job that ``text`` names: its whole id, or a unique prefix or suffix.

    A whole id always wins. Otherwise ``text`` (at least :data:`MIN_PART`
    characters) must start or end the id of exactly one job.

    Raises:
        JobNotFoundError: no job's id is, starts or ends with ``text``.
        AmbiguousJobIdError: several do (the newest few are named).
    """
    cur = by_name(conn)
    if cur.execute("SELECT 1 AS x FROM jobs WHERE id = ?", (text,)).fetchone() is not None:
        return text
    if len(text) < MIN_PART:
        raise JobNotFoundError(text)
    found = [
        r["id"]
        for r in cur.execute(
            "SELECT id FROM jobs WHERE substr(id, 1, :n) = :t OR substr(id, -:n) = :t "
            "ORDER BY seq DESC LIMIT :limit",
            {"n": len(text), "t": text, "limit": _SHOWN + 1},
        )
    ]
    if not found:
        raise JobNotFoundError(text)
    if len(found) > 1:
        raise AmbiguousJobIdError(text, found[:_SHOWN], more=len(found) > _SHOWN)
    return str(found[0])


class Attempts(NamedTuple):
    """A job's stored attempt count, its retries allowed, and whether it ever started."""

    attempt: int
    max_retries: int
    ran: bool


def attempts(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, Attempts]:
    """``{id: Attempts}`` for the jobs of ``ids`` that exist."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, Attempts] = {}
    for start in range(0, len(wanted), 500):  # under SQLite's limit of bound parameters
        chunk = wanted[start : start + 500]
        rows = by_name(conn).execute(
            "SELECT id, attempt, max_retries, started_at IS NOT NULL AS ran FROM jobs "
            f"WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for r in rows:
            found[r["id"]] = Attempts(r["attempt"], r["max_retries"], bool(r["ran"]))
    return found


def short_ids(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, str]:
    """``{id: what to show}``: the shortest tail that names only that job in the file.

    A generated id shows its last 8 characters, or 12, 16, 20 when another
    job's id starts or ends with those (or is them), then the whole id. An id
    the submitter chose is shown whole. One scan of the ids per length used.
    """
    out = {job_id: job_id for job_id in ids}
    todo = [job_id for job_id in out if has_random_tail(job_id)]
    for n in _LENGTHS:
        todo = [job_id for job_id in todo if n < len(job_id)]
        if not todo:
            break
        hits = _hits(conn, n, {job_id[-n:] for job_id in todo})
        for job_id in todo:
            if hits.get(job_id[-n:], 0) <= 1:  # itself only
                out[job_id] = job_id[-n:]
        todo = [job_id for job_id in todo if hits.get(job_id[-n:], 0) > 1]
    return out


def _hits(conn: sqlite3.Connection, n: int, parts: set[str]) -> dict[str, int]:
    """How many jobs' ids start or end with each of ``parts`` (all ``n`` characters long)."""
    marks = ", ".join("?" * len(parts))
    wanted = sorted(parts)
    rows = by_name(conn).execute(
        f"SELECT substr(id, 1, ?) AS head, substr(id, -?) AS tail FROM jobs "
        f"WHERE substr(id, 1, ?) IN ({marks}) OR substr(id, -?) IN ({marks})",
        (n, n, n, *wanted, n, *wanted),
    )
    counts: dict[str, int] = {}
    for r in rows:
        for part in {r["head"], r["tail"]} & parts:
            counts[part] = counts.get(part, 0) + 1
    return counts
