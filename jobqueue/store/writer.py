"""The one writer path: group commit, one transaction per batch, one thread hop.

Callers queue a unit of work (a function of the raw connection) and await
its future. The writer task takes everything queued since its last flush,
runs it inside one ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the database
thread, and resolves each future only after the commit. While a batch is in
flight the next one fills up, so batches grow with load and the number of
thread hops per job falls.

Small batches run on the event loop's thread instead (no hop, ~10 µs a
commit), when the database allows it (:meth:`Database.run_now`: WAL,
``synchronous=NORMAL``, busy_timeout 0 there) and every op in the batch was
queued as small (``weight``: the rows it writes, 0 for anything else); if
another process holds the write lock, the batch goes to the thread, which
waits for it. A lone caller with nothing queued ahead of it gets its
transaction at once (:meth:`Writer.now`); callers that come in the same loop
pass are group-committed as before.

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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, Final, Generic, ParamSpec, Protocol, TypeVar

from jobqueue.errors import JobQueueError, ServiceClosedError, StoreError
from jobqueue.store.connection import Database, WouldBlock, map_sqlite_error

__all__ = ["Batchable", "ClaimPlanner", "Writer"]

log = logging.getLogger("jobqueue.store")
T = TypeVar("T")
P = ParamSpec("P")
DbFn = Callable[..., Any]

#: Rows a batch may write on the loop's thread, at most (more go to the thread).
INLINE_WEIGHT: Final = 16
#: Jobs a claim may take on the loop's thread, at most.
INLINE_CLAIM: Final = 32
#: Seconds of writes one caller may do at once on the loop's thread before the loop
#: runs everything else (a caller that never waits would starve it otherwise).
INLINE_TURN: Final = 0.0005
#: The claim of a batch did not run: its only op failed first (the claim is kept).
SKIPPED: Final = object()


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

    def plan_claim(self, most: int | None = None) -> Callable[[sqlite3.Connection], Any] | None:
        """A claim (of ``most`` jobs at most) to run at the end of the next batch, or None."""

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
    #: Rows it writes, if small and quick enough for the loop's thread; 0 otherwise.
    weight: int = 0


def _run_batch(
    conn: sqlite3.Connection,
    ops: Sequence[tuple[DbFn, tuple[Any, ...]]],
    claim: Callable[[sqlite3.Connection], Any] | None,
    inline: bool = False,
) -> tuple[list[tuple[bool, Any]], Any]:
    """The whole batch in one transaction (on the database thread, or ``inline`` on the loop's).

    Each op (or run of one bulk pair) runs under its own savepoint: an op that
    fails is undone alone and its error goes to its own caller, so it never
    fails its neighbours. Only an error that ends the transaction itself (a
    full disk, an I/O error) fails the whole batch. An op alone in its batch
    needs no savepoint: if it fails, the transaction is rolled back and the
    claim, which would have run after it, is :data:`SKIPPED`. ``inline``: a
    lock held by another connection fails the whole batch (with nothing kept),
    to be run again on the thread.
    """
    conn.execute("BEGIN IMMEDIATE")
    if len(ops) == 1:
        fn, args = ops[0]
        try:
            value = (fn.one if isinstance(fn, Batchable) else fn)(conn, *args)
        except Exception as exc:
            if not conn.in_transaction or (inline and _busy(exc)):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise  # the batch is lost (disk full, I/O), or another process has the lock
            conn.execute("ROLLBACK")
            return [(False, _typed(exc))], SKIPPED
        try:
            claimed = claim(conn) if claim is not None else None
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return [(True, value)], claimed
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
                ok, values = _isolated(conn, fn.many, (group,), inline)
                if ok:
                    out.extend((True, r) for r in values)
                else:  # one of them is bad: run them one by one to find it
                    out.extend(_isolated(conn, fn.one, a, inline) for a in group)
                i = j
                continue
            out.append(_isolated(conn, fn, args, inline))
            i += 1
        claimed = claim(conn) if claim is not None else None
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return out, claimed


def _busy(exc: BaseException) -> bool:
    """Another connection holds the lock (SQLITE_BUSY or SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.OperationalError)
        and isinstance(code, int)
        and code & 0xFF in (5, 6)
    )


def _isolated(
    conn: sqlite3.Connection, fn: Callable[..., Any], args: Sequence[Any], inline: bool = False
) -> Any:
    """``(True, fn(conn, *args))``, or ``(False, error)`` with its writes undone."""
    conn.execute("SAVEPOINT op")
    try:
        value = fn(conn, *args)
    except Exception as exc:
        if not conn.in_transaction or (inline and _busy(exc)):
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
        #: Batches committed on the loop's thread (part of ``batches``).
        self.inline_batches = 0
        #: Batches meant for the loop's thread that found the write lock held by another
        #: process, and went to the database thread to wait for it.
        self.lock_waits = 0
        # The caller whose writes run at once in this loop pass, and until when.
        self._turn: object = None
        self._turn_ends = 0.0
        # A claim planned for a batch that could not run it: the next batch runs it.
        self._carry: Callable[[sqlite3.Connection], Any] | None = None
        self._in_batch = False

    def start(self) -> None:
        """Start the writer task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="jobqueue-writer"
            )

    @property
    def quiet(self) -> bool:
        """Nothing queued and no batch running (a test clock waits for this)."""
        return (
            not self._ops
            and self._carry is None
            and not self._in_batch
            and not (self._wake.is_set())
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

    def then(
        self,
        fn: DbFn,
        args: tuple[Any, ...],
        callback: Callback,
        *,
        weight: int = 0,
        closing_ok: bool = True,
    ) -> None:
        """Queue ``fn(conn, *args)``; after the batch, call ``callback(ok, result_or_error)``.

        Unlike :meth:`write` nothing awaits it, so it cannot be cancelled: it is
        written even if its submitter goes away (used for job outcomes).
        ``weight``: the rows it writes, when it is small and quick enough to run
        on the loop's thread (0: never there). ``closing_ok=False`` refuses it
        once :meth:`close` began, as :meth:`enqueue` does.
        """
        if self._task is None or self._task.done() or (self._closing and not closing_ok):
            raise ServiceClosedError("the store writer is closed")
        self._ops.append(_Op(fn, args, None, callback, weight))
        self._wake.set()

    def now(self, fn: DbFn, args: tuple[Any, ...], weight: int = 1) -> tuple[bool, Any] | None:
        """Write ``fn(conn, *args)`` at once on the loop's thread, if nothing is in its way.

        Runs it in a transaction of its own, with the planner's claim, and
        returns ``(ok, result_or_error)`` once committed (or rolled back). Returns
        ``None``, having done nothing, when the op must be queued instead
        (:meth:`then`): the database cannot commit on the loop's thread, other
        writes are queued or in flight, another caller already wrote at once in
        this loop pass (the callers of one pass share a batch), this caller's
        turn is over (it wrote for :data:`INLINE_TURN` seconds without letting the
        loop run), or another process holds the write lock.
        """
        db = self._db
        if (
            self._ops
            or self._closing
            or weight > INLINE_WEIGHT
            or self._task is None
            or self._task.done()
            or not self._my_turn()
        ):
            return None
        claim, self._carry = self._carry, None
        planner = self.planner
        if claim is not None and _big(planner):
            self._carry, claim = claim, None  # a big claim: the thread's batch runs it
            self._wake.set()
        elif claim is None and planner is not None:
            claim = planner.plan_claim(INLINE_CLAIM)  # more, if due, in the next batch
        try:
            outcomes, claimed = db.run_now(_run_batch, [(fn, args)], claim, True)
        except WouldBlock:
            self.lock_waits += 1
            self._hold(claim)
            return None
        except Exception as exc:  # the transaction failed (disk full, I/O): this op with it
            log.warning("store write rolled back: %s", exc)
            if claim is not None and planner is not None:
                planner.claim_failed(exc)
            return False, exc
        self.batches += 1
        self.inline_batches += 1
        self.ops_written += 1
        self._claimed(claim, claimed)
        ok, value = outcomes[0]
        return ok, value

    def read_now(self, fn: DbFn, *args: Any) -> tuple[bool, Any] | None:
        """Read ``fn(conn, *args)`` (committed state) at once on the loop's thread.

        Returns ``(ok, result_or_error)``, or ``None`` when it is not this
        caller's turn (see :meth:`now`) or another connection is in the way:
        then read through the database thread instead. For small reads only.
        """
        if self._closing or not self._my_turn():
            return None
        try:
            return True, self._db.run_now(fn, *args)
        except WouldBlock:
            return None
        except JobQueueError as exc:
            return False, exc

    def _my_turn(self) -> bool:
        """The calling task may run a small unit of work on the loop's thread now.

        The first caller of a loop pass takes the turn; it keeps it for
        :data:`INLINE_TURN` seconds (a caller that never waits would starve the
        loop otherwise); the other callers of the pass queue their work, to be
        group-committed. The database must be :attr:`~Database.quiet` too.
        """
        caller = asyncio.current_task()
        if caller is None:
            return False
        turn = self._turn
        if turn is not None and (turn is not caller or time.perf_counter() > self._turn_ends):
            return False
        if not self._db.quiet:
            return False
        if turn is None:
            self._turn, self._turn_ends = caller, time.perf_counter() + INLINE_TURN
            asyncio.get_running_loop().call_soon(self._end_turn)
        return True

    def _end_turn(self) -> None:
        self._turn = None

    def _hold(self, claim: Callable[[sqlite3.Connection], Any] | None) -> None:
        """Keep a planned claim that did not run for the next batch."""
        if claim is not None:
            self._carry = claim
            self._wake.set()

    def _claimed(self, claim: Callable[[sqlite3.Connection], Any] | None, claimed: Any) -> None:
        if claim is None:
            return
        if claimed is SKIPPED:
            self._hold(claim)
        elif self.planner is not None:
            self.planner.claimed(claimed)

    def _inline(self, ops: Sequence[_Op]) -> bool:
        """Whether this batch's ops may run on the loop's thread (its claim: at most
        :data:`INLINE_CLAIM` jobs)."""
        weight = 0
        for op in ops:
            if op.weight <= 0:
                return False
            weight += op.weight
        if weight > INLINE_WEIGHT:
            return False
        return self._db.quiet

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
            claim, self._carry = self._carry, None
            if claim is not None and self.planner is not None:
                self.planner.claim_failed(ServiceClosedError("the store writer stopped"))

    async def _batches(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            ops = [op for op in self._ops if op.fut is None or not op.fut.done()]
            self._ops = []
            planner = self.planner
            claim, self._carry = self._carry, None
            if self._closing and claim is not None and planner is not None:
                planner.claim_failed(ServiceClosedError("the store writer stopped"))
                claim = None
            inline = self._inline(ops)
            if claim is None and planner is not None and not self._closing:
                claim = planner.plan_claim(INLINE_CLAIM if inline else None)
            elif claim is not None and _big(planner):
                inline = False  # a claim planned for the thread
            if not ops and claim is None:
                if self._closing:
                    return
                continue
            self._wake.set()  # look again after this batch: more may have queued
            pairs = [(op.fn, op.args) for op in ops]
            if inline:
                try:
                    outcomes, claimed = self._db.run_now(_run_batch, pairs, claim, True)
                except WouldBlock:  # another process has the lock: the thread waits, not the loop
                    self.lock_waits += 1
                except Exception as exc:
                    self._failed(ops, claim, exc)
                    continue
                else:
                    self.inline_batches += 1
                    self._committed(ops, outcomes, claim, claimed)
                    continue
            batch = asyncio.ensure_future(self._db.run(_run_batch, pairs, claim))
            self._in_batch = True
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
                self._failed(ops, claim, exc)
                continue
            finally:
                self._in_batch = False
            self._committed(ops, outcomes, claim, claimed)

    def _failed(
        self, ops: Sequence[_Op], claim: Callable[[sqlite3.Connection], Any] | None, exc: Exception
    ) -> None:
        log.warning("store batch of %d ops rolled back: %s", len(ops), exc)
        for op in ops:
            _resolve(op, False, exc)
        if claim is not None and self.planner is not None:
            self.planner.claim_failed(exc)

    def _committed(
        self,
        ops: Sequence[_Op],
        outcomes: Sequence[tuple[bool, Any]],
        claim: Callable[[sqlite3.Connection], Any] | None,
        claimed: Any,
    ) -> None:
        self.batches += 1
        self.ops_written += len(ops)
        for op, (ok, value) in zip(ops, outcomes, strict=True):
            _resolve(op, ok, value)
        self._claimed(claim, claimed)


def _big(planner: ClaimPlanner | None) -> bool:
    """The claim the planner holds slots for is too big for the loop's thread."""
    return getattr(planner, "reserved", INLINE_CLAIM + 1) > INLINE_CLAIM


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
