"""Claiming due jobs: the one statement that moves pending (or resumed paused) jobs to running.

Runs on the database thread inside the writer's ``BEGIN IMMEDIATE``
transaction, so two processes never claim the same job and per-key
concurrency limits hold across every process on the file.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from jobqueue.store.groups import IN_GROUP, pending_groups
from jobqueue.store.jobs import Claimed
from jobqueue.store.rows import by_name, column, getter, getter_of

__all__ = ["PENDING_ORDER", "ClaimRequest", "claim"]

#: Claim order of pending jobs; matches the ``jobs_pending`` index (no sort step).
PENDING_ORDER: Final = "priority DESC, (started_at IS NOT NULL) DESC, run_at, seq"

#: The columns of :class:`Claimed`, in its field order (``event_seq`` follows when asked).
_CLAIMED: Final = (
    "id",
    "handler",
    "payload",
    "attempt",
    "max_retries",
    "timeout",
    "priority",
    "run_at",
    "concurrency_key",
)
#: A claim candidate, as :func:`_pick` reads it: these columns in this order (``running``:
#: same-key jobs running now).
_CANDIDATE: Final = ("seq", "handler", "concurrency_key", "concurrency_limit", "running")
_CANDIDATE_COLUMNS: Final = ", ".join(_CANDIDATE[:-1])
_RETURNING: Final = f"RETURNING {', '.join(_CLAIMED)}, seq"
_EVENT_SEQ: Final = (
    ", (SELECT coalesce(max(e.seq), 0) FROM events e WHERE e.job_id = jobs.id) AS event_seq"
)
# A keyed job is due only while fewer than its limit of same-key jobs run (in any process).
_KEY_ROOM: Final = (
    "(concurrency_key IS NULL OR concurrency_limit IS NULL OR concurrency_limit > "
    "(SELECT count(*) FROM jobs r WHERE r.status = 'running' "
    "AND r.concurrency_key = jobs.concurrency_key))"
)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What the scheduler may claim in this batch.

    Attributes:
        handlers: handler names this process runs and that have room now.
        limit: free slots.
        owner: this process's identity.
        now: the claim time (``run_at <= now`` is due).
        handler_room: remaining starts allowed per limited handler (others: ``limit``).
        key_room: remaining starts allowed per ``(handler, key)`` that has a rate limit.
        key_rates: per handler, the starts allowed per window for each of its keys.
        event_seq: also return each job's highest persisted event seq.
    """

    handlers: Sequence[str]
    limit: int
    owner: str
    now: float
    handler_room: Mapping[str, int] = field(default_factory=dict)
    key_room: Mapping[tuple[str, str], int] = field(default_factory=dict)
    key_rates: Mapping[str, int] = field(default_factory=dict)
    event_seq: bool = False


def claim(conn: sqlite3.Connection, req: ClaimRequest) -> tuple[list[Claimed], float | None]:
    """Atomically move up to ``req.limit`` due jobs to running for ``req.owner``.

    Resumed paused jobs go first, then pending ones by priority; within a
    priority, jobs that already started once (workflows waking from a durable
    sleep, retries, crash recoveries) before new ones; then by ``run_at`` and
    submission order (:data:`PENDING_ORDER`, served by the ``jobs_pending``
    index). Returns the claimed jobs in that order, and when fewer than
    ``limit`` were claimed, the ``run_at`` of the next delayed job (or ``None``).

    Pending jobs are read one ``(priority, started)`` group of the index at a
    time, each a range that ends at the first job not yet due: delayed jobs
    are never scanned, however many there are (see :func:`pending_groups`).
    """
    marks = ", ".join("?" * len(req.handlers))
    blocked = [hk for hk, room in req.key_room.items() if room <= 0]
    key_clause = ""
    key_params: list[Any] = []
    if blocked:
        key_clause = (
            " AND (concurrency_key IS NULL OR (handler, concurrency_key) NOT IN "
            f"(VALUES {', '.join(['(?, ?)'] * len(blocked))}))"
        )
        key_params = [x for hk in blocked for x in hk]
    # A few spare candidates: some may be dropped for a per-handler or per-key limit.
    spare = req.limit * 2 + 8
    resumed_cur = conn.execute(
        f"SELECT {_CANDIDATE_COLUMNS}, 0 AS running FROM jobs "
        f"WHERE control = 'resume' AND status = 'paused' AND handler IN ({marks}) "
        f"AND {_KEY_ROOM}{key_clause} ORDER BY priority DESC, seq LIMIT ?",
        (*req.handlers, *key_params, spare),
    )
    found = resumed_cur.fetchall()
    resumed = list(map(getter(resumed_cur, *_CANDIDATE), found)) if found else []
    due_sql = (
        f"SELECT {_CANDIDATE_COLUMNS}, "
        "CASE WHEN concurrency_key IS NULL THEN 0 ELSE (SELECT count(*) FROM jobs r "
        "WHERE r.status = 'running' AND r.concurrency_key = jobs.concurrency_key) END AS running "
        f"FROM jobs WHERE {IN_GROUP} AND run_at <= ? AND handler IN ({marks}) "
        f"AND {_KEY_ROOM}{key_clause} ORDER BY run_at, seq LIMIT ?"
    )
    groups = pending_groups(conn)

    def due(want: int, seen: list[tuple[int, int]]) -> list[tuple[Any, ...]]:
        """Up to ``want`` due candidates in claim order, group after group."""
        out: list[tuple[Any, ...]] = []
        for group in _cached(groups, seen):
            cur = conn.execute(
                due_sql, (*group, req.now, *req.handlers, *key_params, want - len(out))
            )
            out += map(getter_of(due_sql, cur, *_CANDIDATE), cur)
            if len(out) >= want:
                break
        return out

    seen: list[tuple[int, int]] = []
    pending = due(req.limit, seen)
    picked = _pick(resumed + pending, req)
    if len(picked) < req.limit and len(pending) == req.limit:
        # The spare candidates are read only if a limit held some of the first ones back.
        pending = due(spare, seen)
        picked = _pick(resumed + pending, req)
    claimed: list[Claimed] = []
    if picked:
        cur = conn.execute(
            "UPDATE jobs SET status = 'running', started_at = ?, updated_at = ?, owner = ?, "
            "heartbeat = ?, control = NULL, reason = CASE WHEN status = 'paused' THEN NULL "
            f"ELSE reason END WHERE seq IN ({', '.join('?' * len(picked))}) "
            f"{_RETURNING}{_EVENT_SEQ if req.event_seq else ''}",
            (req.now, req.now, req.owner, req.now, *picked),
        )
        rows = cur.fetchall()
        # In Claimed's field order, found by column name (plain tuples: the hot path).
        fields = getter(cur, *_CLAIMED, *(("event_seq",) if req.event_seq else ()))
        seq = column(cur, "seq")
        order = {s: i for i, s in enumerate(picked)}
        rows.sort(key=lambda r: order[r[seq]])
        claimed = [Claimed(*fields(r)) for r in rows]
    next_at = None
    if len(claimed) < req.limit:
        # Only future jobs: due ones held back by a limit are retried when a slot frees.
        # The first one of each group, after now: one index seek per group.
        next_sql = (
            f"SELECT min(run_at) AS next_at FROM jobs WHERE {IN_GROUP} AND run_at > ? "
            f"AND handler IN ({marks})"
        )
        for group in _cached(groups, seen):
            cur = by_name(conn).execute(next_sql, (*group, req.now, *req.handlers))
            at = cur.fetchone()["next_at"]
            if at is not None and (next_at is None or at < next_at):
                next_at = at
    return claimed, next_at


def _cached(
    groups: Iterator[tuple[int, int]], seen: list[tuple[int, int]]
) -> Iterator[tuple[int, int]]:
    """The groups found so far (``seen``), then the next ones of ``groups``, remembered."""
    yield from list(seen)
    for group in groups:
        seen.append(group)
        yield group


def _pick(candidates: list[tuple[Any, ...]], req: ClaimRequest) -> list[int]:
    """Apply the limits the SQL cannot see within one batch; returns seqs to claim.

    Each candidate holds the :data:`_CANDIDATE` columns, in that order.
    """
    first = candidates[: req.limit]
    if not req.handler_room and all(c[2] is None for c in first):  # no concurrency_key
        return [c[0] for c in first]  # no limit applies: the first ones, by seq
    picked: list[int] = []
    per_handler: Counter[str] = Counter()
    per_key: Counter[str] = Counter()
    per_handler_key: Counter[tuple[str, str]] = Counter()
    for seq, handler, key, key_limit, running in candidates:
        if len(picked) >= req.limit:
            break
        if per_handler[handler] >= req.handler_room.get(handler, req.limit):
            continue
        if key is not None:
            if key_limit is not None and running + per_key[key] >= key_limit:
                continue
            rate = req.key_rates.get(handler)
            if rate is not None:
                room = req.key_room.get((handler, key), rate)
                if per_handler_key[handler, key] >= room:
                    continue
            per_key[key] += 1
            per_handler_key[handler, key] += 1
        per_handler[handler] += 1
        picked.append(seq)
    return picked
