"""Submitter over a real Runtime: the checks of new rows, submit_many's rows, the insert."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _parts import WAIT

from jobqueue.errors import (
    DuplicateJobError,
    InvalidArgumentError,
    PayloadError,
    PayloadTooLargeError,
    UnknownHandlerError,
)
from jobqueue.events.registry import QueueRegistry
from jobqueue.handlers import HandlerTable
from jobqueue.hooks import HookKind, Hooks, Lifecycle
from jobqueue.runtime.engine import Runtime
from jobqueue.settings import Settings
from jobqueue.status import TaskStatus
from jobqueue.store import jobs
from jobqueue.store.jobs import NewJob
from jobqueue.submission import MANY_DEFAULTS, Submitter

S = TaskStatus
ROW_DEFAULTS: dict[str, Any] = {
    "job_id": None,
    "priority": 0,
    "timeout": None,
    "max_retries": 0,
    "delay": 0.0,
    "idempotency_key": None,
    "session_id": None,
    "description": None,
}


class Parts:
    def __init__(self, path: Path) -> None:
        self.handlers = HandlerTable(str(path))
        self.hooks = Hooks()
        self.records: list[Lifecycle] = []
        self.hooks.subscribe(self.records.append)
        settings = Settings.make(path, poll_interval=0.05, max_payload_bytes=200)
        self.runtime = Runtime(
            settings,
            handlers=self.handlers,
            registry=QueueRegistry(queue_size=10, retention=1.0),
            hooks=self.hooks,
        )
        self.submitter = Submitter(self.runtime, self.handlers)

    def row(self, handler: str = "h", payload: Any = None, **opts: Any) -> NewJob:
        return self.submitter.row(handler, payload, now=time.time(), **{**ROW_DEFAULTS, **opts})


@pytest.fixture
async def p(db_path: Path) -> AsyncIterator[Parts]:
    parts = Parts(db_path)
    parts.handlers.declare("h")  # submitted here, run elsewhere: the rows stay pending
    yield parts
    async with asyncio.timeout(WAIT):
        await parts.runtime.close(drain_timeout=0)


def test_row(p: Parts) -> None:
    before = time.time()
    row = p.row("h", {"a": 1}, priority=3, max_retries=2, delay=10.0, description="d")
    assert (row.handler, row.payload, row.status) == ("h", '{"a":1}', S.PENDING)
    assert (row.priority, row.max_retries, row.description) == (3, 2, "d")
    assert row.run_at == pytest.approx(row.created_at + 10.0)
    assert row.created_at >= before
    assert row.id
    assert p.row().id != row.id
    assert p.row(job_id="mine").id == "mine"


def test_unknown_handler(p: Parts) -> None:
    with pytest.raises(UnknownHandlerError, match="'nope'"):
        p.row("nope")


@pytest.mark.parametrize(
    ("opts", "named"),
    [
        ({"priority": 1.5}, "priority"),
        ({"priority": True}, "priority"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"delay": -1}, "delay"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"session_id": "x\x00"}, "session_id"),
        ({"description": "\udc80"}, "description"),
        ({"job_id": ""}, "job_id"),
        ({"concurrency_limit": 2}, "concurrency_key"),
        ({"concurrency_key": "k", "concurrency_limit": 0}, "concurrency_limit"),
    ],
)
def test_bad_option_is_named(p: Parts, opts: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidArgumentError, match=named):
        p.row(**opts)


def test_payload_checks(p: Parts) -> None:
    with pytest.raises(PayloadTooLargeError):
        p.row(payload="x" * 500)  # max_payload_bytes=200 in these settings
    with pytest.raises(PayloadError):
        p.row(payload={1, 2})


def test_concurrency_key_takes_the_handlers_default(p: Parts) -> None:
    async def keyed(ctx: Any, payload: Any) -> None: ...

    p.handlers.register("keyed", keyed, key_concurrency=3)
    assert p.row("keyed", concurrency_key="k").concurrency_limit == 3
    assert p.row("h", concurrency_key="k").concurrency_limit == 1  # declared: 1
    assert p.row("h", concurrency_key="k", concurrency_limit=5).concurrency_limit == 5


def test_rows_for_submit_many(p: Parts) -> None:
    rows = p.submitter.rows("h", [1, 2, 3], {"priority": 2}, time.time())
    assert [r.payload for r in rows] == ["1", "2", "3"]
    assert {r.priority for r in rows} == {2}
    assert len({r.id for r in rows}) == 3
    assert p.submitter.rows("h", [], {}, time.time()) == []
    assert set(MANY_DEFAULTS) >= {"priority", "delay"}


@pytest.mark.parametrize(
    ("payloads", "options", "match"),
    [
        ([1], {"job_id": "x"}, "job_id"),
        ([1], {"idempotency_key": "x"}, "idempotency_key"),
        ("abc", {}, "payloads"),
        ({"a": 1}, {}, "payloads"),
        ([1], {"colour": 1}, "colour"),
        ([1], {"priority": "high"}, "priority"),
    ],
)
def test_rows_refused(p: Parts, payloads: Any, options: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        p.submitter.rows("h", payloads, options, time.time())


def test_rows_check_every_payload(p: Parts) -> None:
    with pytest.raises(PayloadTooLargeError):
        p.submitter.rows("h", [1, "x" * 500], {}, time.time())


async def test_insert_stores_counts_and_reports(p: Parts) -> None:
    rows = [p.row(payload=i) for i in range(3)]
    stored = await p.submitter.insert(rows, [0, 1, 2])  # opens the runtime on first use
    assert p.runtime.state == "open"
    assert [j.payload for j in stored] == [0, 1, 2]
    assert all(j.status is S.PENDING for j in stored)
    for job in stored:
        assert (await p.runtime.read(jobs.fetch, job.id)).status is S.PENDING
    assert p.runtime.counts["pending"] == 3
    assert p.runtime.queue_lengths() == {"h": 3}
    assert [r.kind for r in p.records] == [HookKind.SUBMITTED] * 3


async def test_idempotency_key_returns_the_first_job(p: Parts) -> None:
    (first,) = await p.submitter.insert([p.row(payload=1, idempotency_key="once")], [1])
    (again,) = await p.submitter.insert([p.row(payload=2, idempotency_key="once")], [2])
    assert again.id == first.id
    assert again.payload == 1
    assert p.runtime.counts["pending"] == 1


async def test_duplicate_job_id(p: Parts) -> None:
    await p.submitter.insert([p.row(job_id="same")], [None])
    with pytest.raises(DuplicateJobError, match="same"):
        await p.submitter.insert([p.row(job_id="same")], [None])
    assert p.runtime.counts["pending"] == 1
