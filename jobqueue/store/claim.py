"""Claiming due jobs: the one statement that moves pending (or resumed paused) jobs to running.

Runs on the database thread inside the writer's ``BEGIN IMMEDIATE``
transaction, so two processes never claim the same job and per-key
concurrency limits hold across every process on the file.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from jobqueue.store.jobs import Claimed

__all__ = ["PENDING_ORDER", "ClaimRequest", "claim"]

#: Claim order of pending jobs; matches the ``jobs_pending`` index (no sort step).
PENDING_ORDER: Final = "priority DESC, (started_at IS NOT NULL) DESC, run_at, seq"

_RETURNING: Final = (
    "RETURNING id, handler, payload, attempt, max_retries, timeout, priority, run_at, "
    "concurrency_key, seq"
)
_EVENT_SEQ: Final = ", (SELECT coalesce(max(e.seq), 0) FROM events e WHERE e.job_id = jobs.id)"
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
    """
    marks = ", ".join("?" * len(req.handlers))
    blocked = [hk for hk, room in req.key_room.items() if room <= 0]
    key_clause = ""
    params: list[Any] = [req.now, *req.handlers]
    if blocked:
        key_clause = (
            " AND (concurrency_key IS NULL OR (handler, concurrency_key) NOT IN "
            f"(VALUES {', '.join(['(?, ?)'] * len(blocked))}))"
        )
        params += [x for hk in blocked for x in hk]
    # A few spare candidates: some may be dropped for a per-handler or per-key limit.
    params.append(req.limit * 2 + 8)
    resumed = conn.execute(
        "SELECT seq, handler, concurrency_key, concurrency_limit, 0 FROM jobs "
        f"WHERE control = 'resume' AND status = 'paused' AND handler IN ({marks}) "
        f"AND {_KEY_ROOM}{key_clause} ORDER BY priority DESC, seq LIMIT ?",
        params[1:],
    ).fetchall()
    cursor = conn.execute(
        "SELECT seq, handler, concurrency_key, concurrency_limit, "
        "CASE WHEN concurrency_key IS NULL THEN 0 ELSE (SELECT count(*) FROM jobs r "
        "WHERE r.status = 'running' AND r.concurrency_key = jobs.concurrency_key) END "
        f"FROM jobs WHERE status = 'pending' AND run_at <= ? AND handler IN ({marks}) "
        f"AND {_KEY_ROOM}{key_clause} ORDER BY {PENDING_ORDER} LIMIT ?",
        params,
    )
    try:
        # The spare candidates are read only if a limit held some of the first ones back.
        pending = cursor.fetchmany(req.limit)
        picked = _pick(resumed + pending, req)
        if len(picked) < req.limit and len(pending) == req.limit:
            pending += cursor.fetchall()
            picked = _pick(resumed + pending, req)
    finally:
        cursor.close()
    claimed: list[Claimed] = []
    if picked:
        rows = conn.execute(
            "UPDATE jobs SET status = 'running', started_at = ?, updated_at = ?, owner = ?, "
            "heartbeat = ?, control = NULL, reason = CASE WHEN status = 'paused' THEN NULL "
            f"ELSE reason END WHERE seq IN ({', '.join('?' * len(picked))}) "
            f"{_RETURNING}{_EVENT_SEQ if req.event_seq else ''}",
            (req.now, req.now, req.owner, req.now, *picked),
        ).fetchall()
        order = {seq: i for i, seq in enumerate(picked)}
        rows.sort(key=lambda r: order[r[9]])
        claimed = [
            Claimed(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[10] if req.event_seq else 0
            )
            for r in rows
        ]
    next_at = None
    if len(claimed) < req.limit:
        # Only future jobs: due ones held back by a limit are retried when a slot frees.
        row = conn.execute(
            "SELECT min(run_at) FROM jobs WHERE status = 'pending' AND run_at > ? "
            f"AND handler IN ({marks})",
            (req.now, *req.handlers),
        ).fetchone()
        next_at = row[0] if row else None
    return claimed, next_at


def _pick(candidates: list[Any], req: ClaimRequest) -> list[int]:
    """Apply the limits the SQL cannot see within one batch; returns seqs to claim."""
    if not req.handler_room and all(c[2] is None for c in candidates[: req.limit]):
        return [c[0] for c in candidates[: req.limit]]  # no limit applies: the first ones
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
