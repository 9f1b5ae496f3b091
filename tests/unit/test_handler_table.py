"""HandlerTable alone: registration forms, refusals, declared names, limits, lock wrapping."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jobqueue.context import JobContext
from jobqueue.errors import (
    InvalidArgumentError,
    InvalidHandlerError,
    InvalidLockKey,
    UnknownHandlerError,
)
from jobqueue.events.registry import QueueRegistry
from jobqueue.handlers import HandlerTable
from jobqueue.limits import Limits
from jobqueue.locks import KeyedMemoryLockManager, KeyedWorkerLockManager
from jobqueue.store.connection import MEMORY


async def work(ctx: Any, payload: Any) -> Any:
    return payload


async def other(ctx: Any, payload: Any) -> Any:
    return None


@pytest.fixture
def table(db_path: Path) -> HandlerTable:
    return HandlerTable(str(db_path))


def test_register_and_read(table: HandlerTable) -> None:
    assert table.names() == []
    table.register("work", work)
    assert table.names() == ["work"]
    assert table.registered["work"] is work
    assert table.functions["work"] is work
    assert table.limits["work"] == Limits()
    with pytest.raises(TypeError):
        table.registered["x"] = work  # type: ignore[index]  # read-only view


def test_decorator_forms(table: HandlerTable) -> None:
    @table.handler
    async def bare(ctx: Any, payload: Any) -> None: ...

    @table.handler()
    async def empty_call(ctx: Any, payload: Any) -> None: ...

    @table.handler("named")
    async def anything(ctx: Any, payload: Any) -> None: ...

    @table.handler(concurrency=2, rate_limit=(5, 1.0))
    async def limited(ctx: Any, payload: Any) -> None: ...

    assert table.names() == ["bare", "empty_call", "named", "limited"]
    assert table.registered["named"] is anything  # the decorator returns the function
    assert table.limits["limited"] == Limits(2, (5, 1.0), 1, None)


def test_sync_function_is_refused(table: HandlerTable) -> None:
    def sync(ctx: Any, payload: Any) -> None: ...

    with pytest.raises(InvalidHandlerError, match="async def"):
        table.register("sync", sync)  # type: ignore[arg-type]
    with pytest.raises(InvalidHandlerError, match="async def"):
        table.handler(sync)  # type: ignore[type-var]
    assert table.names() == []


def test_name_taken_by_another_function(table: HandlerTable) -> None:
    table.register("work", work)
    table.register("work", work)  # the same function again: fine
    with pytest.raises(InvalidHandlerError, match="already registered as 'work'"):
        table.register("work", other)
    assert table.registered["work"] is work


def test_same_lock_keyed_function_may_be_registered_again(db_path: Path) -> None:
    table = HandlerTable(str(db_path), KeyedMemoryLockManager())
    table.register("work", work, lock_key="k")
    table.register("work", work, lock_key="k")
    with pytest.raises(InvalidHandlerError, match="already registered"):
        table.register("work", other, lock_key="k")


@pytest.mark.parametrize("name", ["", "x" * 256, "a\x00b", 5])
def test_bad_name_is_refused(table: HandlerTable, name: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="handler name"):
        table.register(name, work)
    with pytest.raises(InvalidArgumentError, match="handler name"):
        table.declare(name)


def test_declare_and_check_known(table: HandlerTable) -> None:
    table.register("work", work)
    table.declare("remote_a", "remote_b")
    table.check_known("work")
    table.check_known("remote_a")
    assert table.names() == ["work"]  # declared names are not claimed here
    with pytest.raises(UnknownHandlerError) as err:
        table.check_known("nope")
    assert err.value.name == "nope"
    text = str(err.value)
    assert "'nope'" in text
    assert "remote_a, remote_b, work" in text  # the known names, sorted


def test_unknown_handler_with_nothing_known(table: HandlerTable) -> None:
    with pytest.raises(UnknownHandlerError, match=r"registered: none"):
        table.check_known("x")


@pytest.mark.parametrize(
    ("opts", "named"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1.5}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"key_concurrency": 0}, "key_concurrency"),
        ({"rate_limit": (0, 1.0)}, "rate_limit"),
        ({"rate_limit": (1, 0)}, "rate_limit"),
        ({"rate_limit": [1, 1.0]}, "rate_limit"),
        ({"key_rate_limit": (1,)}, "key_rate_limit"),
    ],
)
def test_bad_limits_are_refused(table: HandlerTable, opts: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidArgumentError, match=named):
        table.register("work", work, **opts)
    assert "work" not in table.limits
    assert table.names() == []


def test_refused_lock_key_keeps_nothing(db_path: Path) -> None:
    table = HandlerTable(str(db_path), KeyedMemoryLockManager())
    with pytest.raises(InvalidLockKey):
        table.register("work", work, lock_key="", key_concurrency=3)
    assert table.names() == []
    assert "work" not in table.limits
    assert table.key_concurrency("work") == 1


def test_limits_and_key_concurrency_default(table: HandlerTable) -> None:
    table.register("plain", work)
    table.register("keyed", other, key_concurrency=3, key_rate_limit=(2, 0.5))
    table.declare("remote")
    assert table.key_concurrency("plain") == 1
    assert table.key_concurrency("keyed") == 3
    assert table.key_concurrency("remote") == 1
    assert table.key_concurrency("never_heard_of") == 1
    assert table.limits["keyed"] == Limits(None, None, 3, (2, 0.5))
    assert not table.limits["plain"].local
    assert table.limits["keyed"].local


def test_on_change_is_called_per_registration(table: HandlerTable) -> None:
    calls: list[list[str]] = []
    table.on_change = lambda: calls.append(table.names())
    table.register("a", work)
    table.register("b", other)
    table.declare("c")  # declaring claims nothing here
    with pytest.raises(InvalidHandlerError):
        table.register("a", other)
    assert calls == [["a"], ["a", "b"]]


def test_default_lock_manager(tmp_path: Path) -> None:
    on_disk = HandlerTable(str(tmp_path / "jobs.db"))
    assert not on_disk.locks_made
    on_disk.register("w", work)
    assert not on_disk.locks_made  # only a lock-keyed handler needs one
    on_disk.register("locked", other, lock_key="k")
    assert on_disk.locks_made
    assert isinstance(on_disk.locks, KeyedWorkerLockManager)
    assert isinstance(HandlerTable(MEMORY).locks, KeyedMemoryLockManager)
    given = KeyedMemoryLockManager()
    assert HandlerTable(str(tmp_path / "x.db"), given).locks is given


def _ctx(job_id: str) -> JobContext:
    registry = QueueRegistry(queue_size=10, retention=1.0)
    return JobContext(job_id, "locked", 0, lambda j: registry.ensure(j).manager)


async def test_lock_wrapped_handler_takes_turns(db_path: Path) -> None:
    table = HandlerTable(str(db_path), KeyedMemoryLockManager())
    inside: list[str] = []
    log: list[tuple[str, str]] = []

    async def body(ctx: JobContext, payload: Any) -> str:
        inside.append(ctx.job_id)
        log.append(("in", ctx.job_id))
        assert len(inside) == 1, inside  # nobody else holds the lock
        await asyncio.sleep(0.02)
        inside.remove(ctx.job_id)
        log.append(("out", ctx.job_id))
        return f"done {payload}"

    table.register("locked", body, lock_key="one-at-a-time")
    wrapped = table.functions["locked"]
    assert wrapped is not body
    assert wrapped.__qualname__ == body.__qualname__
    async with asyncio.timeout(5):
        results = await asyncio.gather(*(wrapped(_ctx(f"j{i}"), i) for i in range(3)))
    assert results == ["done 0", "done 1", "done 2"]
    assert [kind for kind, _ in log] == ["in", "out"] * 3


async def test_lock_key_from_payload_separates_keys(db_path: Path) -> None:
    table = HandlerTable(str(db_path), KeyedMemoryLockManager())
    running = 0
    peak = 0

    async def body(ctx: JobContext, payload: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    table.register("locked", body, lock_key=lambda p: f"user:{p['user']}")
    wrapped = table.functions["locked"]
    async with asyncio.timeout(5):
        await asyncio.gather(*(wrapped(_ctx(f"j{u}"), {"user": u}) for u in (1, 2)))
    assert peak == 2  # two keys: no turns to take
    peak = 0
    async with asyncio.timeout(5):
        await asyncio.gather(*(wrapped(_ctx(f"k{i}"), {"user": 7}) for i in range(2)))
    assert peak == 1


def test_key_concurrency_none_is_refused() -> None:
    table = HandlerTable("x.db")

    async def h(ctx: object, payload: object) -> None:
        return None

    with pytest.raises(InvalidArgumentError, match="key_concurrency must be an int >= 1"):
        table.register("h", h, key_concurrency=None)  # type: ignore[arg-type]
    assert "h" not in table.functions
