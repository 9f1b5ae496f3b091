"""In-process keyed locks for threads and coroutines.

:class:`KeyedMemoryLockManager` keeps one lock per key in a registry. An entry
exists only while someone holds or waits for its key, so the registry does not
grow with every key ever seen.

Each entry is a small FIFO lock built on one registry-wide ``threading.Lock``
(held only for a few dictionary and deque operations, never while waiting):

* a thread waits on its own ``threading.Event``;
* a coroutine waits on its own ``asyncio.Future``, so the event loop keeps
  running; the releaser wakes it with ``loop.call_soon_threadsafe``.

Release hands the lock directly to the first waiter. A waiter that gives up
(timeout or cancellation) either removes itself from the queue or, if the lock
was handed to it in the meantime, passes it on at once: nothing is leaked.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import inspect
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from typing import Any, ParamSpec, TypeVar, overload

from jobqueue.errors import LockError, LockTimeout
from jobqueue.locks.keys import validate_lock_key

__all__ = ["KeyedMemoryLockManager", "LockedDecorator"]

P = ParamSpec("P")
R = TypeVar("R")


def check_timeout(timeout: float | None) -> float | None:
    """Return ``timeout`` if it is ``None`` or a number of seconds >= 0, else raise ValueError."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            f"timeout must be None or a number of seconds, got {type(timeout).__name__}; "
            "pass for example timeout=5.0, or timeout=None to wait until the lock is free"
        )
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(
            f"timeout must be None (wait forever) or >= 0 seconds, got {timeout!r}; "
            "use timeout=0 to try once without waiting"
        )
    return float(timeout)


def refuse_blocking_on_loop(manager: str, timeout: float | None) -> None:
    """Raise LockError if a blocking ``lock()`` is attempted on an event loop thread."""
    if timeout == 0:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise LockError(
        f"{manager}.lock() was called on a thread that runs an event loop and would block it; "
        "use `async with manager.alock(key)` in coroutines (or timeout=0 to only try once)"
    )


class LockedDecorator:
    """Decorator returned by ``manager.locked(key)``; see :meth:`KeyedLockManagerBase.locked`."""

    def __init__(self, manager: KeyedLockManagerBase, key: str, timeout: float | None) -> None:
        self._manager = manager
        self._key = key
        self._timeout = timeout

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Wrap ``fn`` so that every call runs while holding the lock."""
        manager, key, timeout = self._manager, self._key, self._timeout
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_locked(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with manager.alock(key, timeout=timeout):
                    return await fn(*args, **kwargs)

            return async_locked

        @functools.wraps(fn)
        def sync_locked(*args: P.args, **kwargs: P.kwargs) -> Any:
            with manager.lock(key, timeout=timeout):
                return fn(*args, **kwargs)

        return sync_locked


class KeyedLockManagerBase(abc.ABC):
    """What both keyed lock managers offer: ``lock``, ``alock`` and ``locked``."""

    @abc.abstractmethod
    def lock(self, key: str, timeout: float | None = None) -> AbstractContextManager[None]:
        """Hold the lock for ``key`` in a ``with`` block (blocking; for threads)."""

    @abc.abstractmethod
    def alock(self, key: str, timeout: float | None = None) -> AbstractAsyncContextManager[None]:
        """Hold the lock for ``key`` in an ``async with`` block (never blocks the loop)."""

    def locked(self, key: str, *, timeout: float | None = None) -> LockedDecorator:
        """Decorate a function so that each call holds the lock for ``key``.

        Works on plain functions (which then use :meth:`lock`) and on ``async def``
        functions (which then use :meth:`alock`)::

            @manager.locked("report:daily", timeout=30)
            async def build_report() -> None: ...

        Args:
            key: The lock key, checked now so a bad key fails at decoration time.
            timeout: Seconds to wait for the lock on each call; ``None`` waits
                forever.

        Returns:
            A decorator.

        Raises:
            InvalidLockKey: ``key`` is not a valid key.
        """
        return LockedDecorator(self, validate_lock_key(key), check_timeout(timeout))


class _Waiter:
    """One thread or coroutine queued for a key."""

    __slots__ = ("event", "future", "granted", "loop")

    def __init__(
        self,
        event: threading.Event | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.granted = False
        self.event = event
        self.loop = loop
        self.future = future

    def wake(self) -> bool:
        """Give the lock to this waiter; False if it can no longer be woken."""
        self.granted = True
        if self.event is not None:
            self.event.set()
            return True
        assert self.loop is not None
        assert self.future is not None
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # its event loop is closed: the waiter is gone
            self.granted = False
            return False
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Entry:
    """Registry entry of one key: whether it is held, and who waits (FIFO)."""

    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.waiters: deque[_Waiter] = deque()


class KeyedMemoryLockManager(KeyedLockManagerBase):
    """Mutual exclusion per key between the threads and coroutines of one process.

    Locks are not reentrant: acquiring a key you already hold waits for
    yourself (use a timeout if that can happen). Waiters are served in arrival
    order, whether they are threads or coroutines, and coroutines on several
    event loops can share one manager.

    Example::

        locks = KeyedMemoryLockManager()

        with locks.lock("user:42"):            # in a thread
            ...

        async with locks.alock("user:42"):     # in a coroutine
            ...
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """Number of keys currently held or waited for."""
        with self._mutex:
            return len(self._entries)

    def keys(self) -> list[str]:
        """Return the keys currently held or waited for (a sorted snapshot)."""
        with self._mutex:
            return sorted(self._entries)

    def is_locked(self, key: str) -> bool:
        """Return whether some thread or coroutine holds ``key`` right now."""
        with self._mutex:
            entry = self._entries.get(validate_lock_key(key))
            return entry is not None and entry.held

    @contextmanager
    def lock(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock for ``key`` for the duration of a ``with`` block.

        For threads: this blocks the calling thread while waiting. In a coroutine
        use :meth:`alock` instead (calling this on an event loop thread raises
        :class:`~jobqueue.errors.LockError` unless ``timeout=0``).

        Args:
            key: The lock key (see :mod:`jobqueue.locks.keys`).
            timeout: Seconds to wait; ``None`` waits forever, ``0`` tries once.

        Raises:
            InvalidLockKey: ``key`` is not a valid key.
            LockTimeout: The lock was not free within ``timeout`` seconds.
            LockError: Called on a thread running an event loop.
        """
        key = validate_lock_key(key)
        timeout = check_timeout(timeout)
        refuse_blocking_on_loop(type(self).__name__, timeout)
        entry = self._acquire_sync(key, timeout)
        try:
            yield
        finally:
            self._release(key, entry)

    @asynccontextmanager
    async def alock(
        self,
        key: str,
        timeout: float | None = None,
    ) -> AsyncIterator[None]:
        """Hold the lock for ``key`` for the duration of an ``async with`` block.

        Waiting never blocks the event loop. If the waiting coroutine is
        cancelled or times out, it leaves the queue (or passes the lock on if it
        was granted at that moment) and the registry entry is dropped when unused.

        Args:
            key: The lock key (see :mod:`jobqueue.locks.keys`).
            timeout: Seconds to wait; ``None`` waits forever, ``0`` tries once.

        Raises:
            InvalidLockKey: ``key`` is not a valid key.
            LockTimeout: The lock was not free within ``timeout`` seconds.
        """
        key = validate_lock_key(key)
        timeout = check_timeout(timeout)
        entry = await self._acquire_async(key, timeout)
        try:
            yield
        finally:
            self._release(key, entry)

    # --- internals --------------------------------------------------------

    def _timeout_error(self, key: str, timeout: float) -> LockTimeout:
        return LockTimeout(
            f"lock {key!r} is still held by another thread or task after {timeout:g} s; "
            "retry later, pass a larger timeout, or timeout=None to wait until it is free"
        )

    def _enter(self, key: str, waiter: _Waiter | None) -> tuple[_Entry, bool]:
        """Take ``key`` if free; else queue ``waiter`` (when given). Returns (entry, taken)."""
        with self._mutex:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            if not entry.held:
                entry.held = True
                return entry, True
            if waiter is not None:
                entry.waiters.append(waiter)
            return entry, False

    def _acquire_sync(self, key: str, timeout: float | None) -> _Entry:
        waiter = None if timeout == 0 else _Waiter(event=threading.Event())
        entry, taken = self._enter(key, waiter)
        if taken:
            return entry
        if waiter is not None:
            assert waiter.event is not None
            try:
                if waiter.event.wait(timeout):
                    return entry
            except BaseException:  # e.g. KeyboardInterrupt: leave the queue, leak nothing
                self._give_up(key, entry, waiter)
                raise
            with self._mutex:
                if waiter.granted:  # handed over just as the wait timed out: keep it
                    return entry
                entry.waiters.remove(waiter)
        raise self._timeout_error(key, timeout or 0.0)

    async def _acquire_async(self, key: str, limit: float | None) -> _Entry:
        loop = asyncio.get_running_loop()
        waiter = None
        if limit != 0:
            waiter = _Waiter(loop=loop, future=loop.create_future())
        entry, taken = self._enter(key, waiter)
        if taken:
            return entry
        if waiter is None:
            raise self._timeout_error(key, 0.0)
        assert waiter.future is not None
        try:
            try:
                async with asyncio.timeout(limit):
                    await waiter.future
            except BaseException:
                self._give_up(key, entry, waiter)
                raise
        except TimeoutError:
            raise self._timeout_error(key, limit or 0.0) from None
        return entry

    def _give_up(self, key: str, entry: _Entry, waiter: _Waiter) -> None:
        """A waiter stops waiting: leave the queue, or pass the lock on if it was granted."""
        with self._mutex:
            if waiter.granted:
                self._hand_off(key, entry)
            else:
                entry.waiters.remove(waiter)

    def _release(self, key: str, entry: _Entry) -> None:
        with self._mutex:
            self._hand_off(key, entry)

    def _hand_off(self, key: str, entry: _Entry) -> None:
        """Pass a held lock to the next live waiter, or free it. Caller holds ``_mutex``."""
        while entry.waiters:
            if entry.waiters.popleft().wake():
                return
        entry.held = False
        if self._entries.get(key) is entry:
            del self._entries[key]


def monotonic_deadline(timeout: float | None) -> float | None:
    """Return the ``time.monotonic()`` value at which ``timeout`` expires (None: never)."""
    return None if timeout is None else time.monotonic() + timeout
