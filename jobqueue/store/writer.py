"""The one writer path: group commit, one transaction per batch, one thread hop.

Callers queue a unit of work (a function of the raw connection) and await
its future. The writer task takes everything queued since its last flush,
runs it inside one ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the database
thread, and resolves each future only after the commit. While a batch is in
flight the next one fills up, so batches grow with load and the number of
thread hops per job falls.

An op queued as a :class:`Batchable` (a ``one``/``many`` pair, such as the
job outcomes' ``outcomes.FINISH``) is bulk-capable: consecutive ops of the
same pair in a batch are handed over together (``many(conn, [args, ...])``)
and run as one statement. An op that raises a :class:`~jobqueue.errors.JobQueueError`
or an integrity error fails alone (its statements are atomic or use a savepoint);
any other database error rolls the whole batch back and fails every op in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar

from jobqueue.errors import JobQueueError, ServiceClosedError, StoreError
from jobqueue.store.connection import Database, map_sqlite_error

__all__ = ["Batchable", "ClaimPlanner", "Writer"]

log = logging.getLogger("jobqueue.store")
T = TypeVar("T")
P = ParamSpec("P")
DbFn = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Batchable(Generic[P, T]):
    """A write that the ops of several callers in one batch share: a ``(one, many)`` pair.

    ``one(conn, *args)`` writes one op; ``many(conn, [args, ...])`` writes
    several ops in one statement and returns one result per op, in order. Queue
    the pair itself (``writer.then(FINISH, args, cb)``): the writer hands the
    consecutive ops of one pair in a batch to ``many``. Calling the pair runs ``one``.
    """

    one: Callable[Concatenate[sqlite3.Connection, P], T]
    many: Callable[[sqlite3.Connection, Sequence[tuple[Any, ...]]], list[T]]

    def __call__(self, conn: sqlite3.Connection, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.one(conn, *args, **kwargs)


class ClaimPlanner(Protocol):
    """The scheduler side of the writer: it may add a claim to each batch."""

    def plan_claim(self) -> Callable[[sqlite3.Connection], Any] | None:
        """Return a claim to run at the end of the next batch, or None."""

    def claimed(self, result: Any) -> None:
        """Receive the claim's result after its batch committed."""

    def claim_failed(self, exc: BaseException) -> None:
        """The batch holding the claim was rolled back."""


Callback = Callable[[bool, Any], None]


@dataclass(slots=True)
class _Op:
    fn: DbFn
    args: tuple[Any, ...]
    fut: asyncio.Future[Any] | None
    cb: Callback | None = None


def _run_batch(
    conn: sqlite3.Connection,
    ops: Sequence[tuple[DbFn, tuple[Any, ...]]],
    claim: Callable[[sqlite3.Connection], Any] | None,
) -> tuple[list[tuple[bool, Any]], Any]:
    """Runs on the database thread: the whole batch in one transaction.

    Each op (or run of one bulk pair) runs under its own savepoint: an op that
    fails is undone alone and its error goes to its own caller, so it never
    fails its neighbours. Only an error that ends the transaction itself (a
    full disk, an I/O error) fails the whole batch.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        out: list[tuple[bool, Any]] = []
        i, n = 0, len(ops)
        while i < n:
            fn, args = ops[i]
            if isinstance(fn, Batchable):  # consecutive ops of one pair: one statement
                j = i + 1
                while j < n and ops[j][0] is fn:
                    j += 1
                group = [a for _, a in ops[i:j]]
                ok, values = _isolated(conn, fn.many, (group,))
                if ok:
                    out.extend((True, r) for r in values)
                else:  # one of them is bad: run them one by one to find it
                    out.extend(_isolated(conn, fn.one, a) for a in group)
                i = j
                continue
            out.append(_isolated(conn, fn, args))
            i += 1
        claimed = claim(conn) if claim is not None else None
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return out, claimed


def _isolated(conn: sqlite3.Connection, fn: Callable[..., Any], args: Sequence[Any]) -> Any:
    """``(True, fn(conn, *args))``, or ``(False, error)`` with its writes undone."""
    conn.execute("SAVEPOINT op")
    try:
        value = fn(conn, *args)
    except Exception as exc:
        if not conn.in_transaction:
            raise  # SQLite ended the transaction (disk full, I/O): the batch is lost
        try:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
        except sqlite3.Error:
            raise exc from None
        return False, _typed(exc)
    conn.execute("RELEASE op")
    return True, value


def _typed(exc: Exception) -> Exception:
    """The error as its caller should see it: a JobQueueError, never a raw one."""
    if isinstance(exc, JobQueueError):
        return exc
    if isinstance(exc, sqlite3.Error):
        mapped = map_sqlite_error(exc, "the database")
        if mapped is not None:
            return mapped
    error = StoreError(
        f"a write failed and was undone alone ({type(exc).__name__}: {exc}); other writes "
        "of the same transaction were kept. This is a bug if the input was valid: please "
        "report it with this message"
    )
    error.__cause__ = exc
    return error


class Writer:
    """Group-commit writer over one :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._ops: list[_Op] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.planner: ClaimPlanner | None = None
        #: Counters for benchmarks and ``stats()``.
        self.batches = 0
        self.ops_written = 0

    def start(self) -> None:
        """Start the writer task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="jobqueue-writer"
            )

    def kick(self) -> None:
        """Wake the writer (for example because the planner now wants to claim)."""
        self._wake.set()

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the next batch; return once it is committed.

        If the caller is cancelled before the batch starts, the op is dropped
        and nothing is written; once the batch started it commits regardless.
        """
        return await self.enqueue(fn, *args)

    def enqueue(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(conn, *args)`` for the next batch; the future resolves after commit."""
        if self._closing or self._task is None or self._task.done():
            raise ServiceClosedError("the store writer is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(fn, args, fut))
        self._wake.set()
        return fut

    def then(self, fn: DbFn, args: tuple[Any, ...], callback: Callback) -> None:
        """Queue ``fn(conn, *args)``; after the batch, call ``callback(ok, result_or_error)``.

        Unlike :meth:`write` nothing awaits it, so it cannot be cancelled: it is
        written even if its submitter goes away (used for job outcomes).
        """
        if self._task is None or self._task.done():
            raise ServiceClosedError("the store writer is closed")
        self._ops.append(_Op(fn, args, None, callback))
        self._wake.set()

    async def close(self) -> None:
        """Flush what is queued, then stop. Safe to call twice."""
        self._closing = True
        task = self._task
        if task is None:
            return
        self._wake.set()
        # Not shield(): that re-raises the CancelledError of a writer task someone cancelled.
        # wait() also leaves the task running if our own caller is cancelled.
        await asyncio.wait([task])

    async def _loop(self) -> None:
        try:
            await self._batches()
        finally:
            # Stopped (closed, or its task was cancelled): nothing queued may wait forever.
            self._closing = True
            ops, self._ops = self._ops, []
            for op in ops:
                _resolve(op, False, ServiceClosedError("the store writer stopped"))

    async def _batches(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            ops = [op for op in self._ops if op.fut is None or not op.fut.done()]
            self._ops = []
            planner = self.planner
            claim = None if planner is None or self._closing else planner.plan_claim()
            if not ops and claim is None:
                if self._closing:
                    return
                continue
            self._wake.set()  # look again after this batch: more may have queued
            batch = asyncio.ensure_future(
                self._db.run(_run_batch, [(op.fn, op.args) for op in ops], claim)
            )
            try:
                # Shielded: the transaction always ends (commit or rollback) on its thread.
                outcomes, claimed = await asyncio.shield(batch)
            except asyncio.CancelledError:
                # Our task was cancelled mid-batch: the batch still ends on its thread. Wait
                # for it so that each caller learns whether its change was committed.
                while not batch.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait([batch])
                error = batch.exception() if not batch.cancelled() else None
                if error is None and not batch.cancelled():
                    outcomes, claimed = batch.result()
                    for op, (ok, value) in zip(ops, outcomes, strict=True):
                        _resolve(op, ok, value)
                else:
                    for op in ops:
                        _resolve(op, False, error or ServiceClosedError("the writer stopped"))
                if claim is not None and planner is not None:
                    # Do not start jobs on a stopping writer: their outcomes could not be
                    # stored. Committed claims are recovered once this process has exited.
                    planner.claim_failed(ServiceClosedError("the store writer stopped"))
                raise
            except Exception as exc:
                log.warning("store batch of %d ops rolled back: %s", len(ops), exc)
                for op in ops:
                    _resolve(op, False, exc)
                if claim is not None and planner is not None:
                    planner.claim_failed(exc)
                continue
            self.batches += 1
            self.ops_written += len(ops)
            for op, (ok, value) in zip(ops, outcomes, strict=True):
                _resolve(op, ok, value)
            if claim is not None and planner is not None:
                planner.claimed(claimed)


def _resolve(op: _Op, ok: bool, value: Any) -> None:
    if op.cb is not None:
        try:
            op.cb(ok, value)
        except Exception:
            log.exception("store callback %r failed", op.cb)
    elif op.fut is not None and not op.fut.done():
        if ok:
            op.fut.set_result(value)
        else:
            op.fut.set_exception(value)
