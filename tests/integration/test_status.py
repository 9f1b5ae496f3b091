"""The status lifecycle: the transition table, derived sets, and the store's guard."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from functools import partial

import pytest

from jobqueue import ACTIVE, TERMINAL, TaskStatus
from jobqueue.errors import InvalidTransition, JobNotFoundError
from jobqueue.status import TRANSITIONS, check_transition
from jobqueue.store import jobs

S = TaskStatus

EXPECTED = {
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.CANCELLED),
    # Our one addition to SPEC §3: stop() on a waiting job (e.g. in retry backoff).
    (S.PENDING, S.STOPPED),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.STOPPED),
    (S.RUNNING, S.PAUSED),
    (S.RUNNING, S.PENDING),
    (S.PAUSED, S.RUNNING),
    (S.PAUSED, S.CANCELLED),
    (S.PAUSED, S.STOPPED),
}


def test_values_are_lowercase() -> None:
    assert [s.value for s in S] == [
        "pending",
        "running",
        "paused",
        "completed",
        "failed",
        "cancelled",
        "stopped",
    ]
    for s in S:
        assert s.value == s.value.lower() == str(s)
        assert S(s.value) is s


def test_table_matches_spec() -> None:
    table = {(a, b) for a, nxt in TRANSITIONS.items() for b in nxt}
    assert table == EXPECTED
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_pair(current: TaskStatus, target: TaskStatus) -> None:
    if (current, target) in EXPECTED:
        check_transition("j", current, target)
    else:
        with pytest.raises(InvalidTransition) as ei:
            check_transition("j", current, target)
        assert ei.value.current == current.value
        assert ei.value.target == target.value
        assert "j" in str(ei.value)


def test_derived_sets() -> None:
    assert frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.STOPPED}) == TERMINAL
    assert frozenset({S.PENDING, S.RUNNING, S.PAUSED}) == ACTIVE
    assert not (TERMINAL & ACTIVE)
    assert set(S) == TERMINAL | ACTIVE
    for s in TERMINAL:
        assert not TRANSITIONS[s]


async def _row(db_path: object, job_id: str) -> tuple[object, ...]:
    conn = sqlite3.connect(str(db_path))
    try:
        return conn.execute(
            "SELECT status, updated_at, completed_at, result, attempt FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
    finally:
        conn.close()


async def test_store_refuses_illegal_transition(make_service, db_path) -> None:
    svc = await make_service()

    @svc.handler("ok")
    async def ok(ctx, payload):
        return payload

    job = await svc.submit("ok", 1, job_id="done")
    assert await svc.wait(job.id, timeout=10) == 1
    before = await _row(db_path, "done")
    assert before[0] == "completed"
    # completed -> running through the store's single write path
    with pytest.raises(InvalidTransition) as ei:
        await svc.runtime.writer.write(jobs.set_status, "done", S.RUNNING)
    assert (ei.value.current, ei.value.target) == ("completed", "running")
    # completed -> pending (a "retry" of a finished job)
    with pytest.raises(InvalidTransition):
        await svc.runtime.writer.write(partial(jobs.set_status, result="9"), "done", S.PENDING)
    assert await _row(db_path, "done") == before
    rec = await svc.get("done")
    assert rec.status is S.COMPLETED
    assert rec.result == 1
    # unknown id is its own error, not a transition error
    with pytest.raises(JobNotFoundError):
        await svc.runtime.writer.write(jobs.set_status, "nope", S.RUNNING)


async def test_cancel_completed_job_is_invalid(make_service, db_path) -> None:
    svc = await make_service()

    @svc.handler("ok")
    async def ok(ctx, payload):
        return "r"

    job = await svc.submit("ok", None)
    await svc.wait(job.id, timeout=10)
    before = await _row(db_path, job.id)
    with pytest.raises(InvalidTransition):
        await svc.cancel(job.id)
    assert await _row(db_path, job.id) == before
    assert (await svc.get(job.id)).status is S.COMPLETED


async def test_pending_to_completed_refused_with_expected_guard(make_service, db_path) -> None:
    svc = await make_service(concurrency=1)
    gate = asyncio.Event()

    @svc.handler("block")
    async def block(ctx, payload):
        await gate.wait()

    await svc.submit("block", None, job_id="b")
    p = await svc.submit("block", None, job_id="p", delay=60)
    before = await _row(db_path, p.id)
    with pytest.raises(InvalidTransition):
        await svc.runtime.writer.write(jobs.set_status, "p", S.COMPLETED)
    with pytest.raises(InvalidTransition):
        await svc.runtime.writer.write(
            partial(jobs.set_status, expected=(S.RUNNING,)), "p", S.CANCELLED
        )
    assert await _row(db_path, "p") == before
    gate.set()


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_a_refused_change_lists_only_what_a_caller_can_request(
    current: TaskStatus, target: TaskStatus
) -> None:
    from jobqueue.status import REQUESTS

    if (current, target) in EXPECTED:
        return
    with pytest.raises(InvalidTransition) as ei:
        check_transition("j", current, target)
    assert ei.value.allowed == list(REQUESTS[current])
    assert set(ei.value.allowed) <= {"cancel", "stop", "pause", "resume"}
    text = str(ei.value)
    instead = text.split(": ", 1)[1]  # after "cannot go from ... to ...:"
    for status in ("pending", "running", "completed", "failed"):
        assert f"be {status}" not in instead, text
        assert f", {status}" not in instead, text
    assert text.endswith("; nothing was changed")
    if current in TERMINAL:
        assert "submit a new job" in text
    else:
        assert "instead (" in text
