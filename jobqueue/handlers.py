"""The handler table: registered handlers, declared names, limits and lock wrapping."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from jobqueue.context import JobContext
from jobqueue.errors import InvalidArgumentError, InvalidHandlerError, UnknownHandlerError
from jobqueue.limits import Limits, parse_rate
from jobqueue.store.connection import MEMORY
from jobqueue.validation import check_id

if TYPE_CHECKING:
    from jobqueue.locks import KeyedMemoryLockManager, KeyedWorkerLockManager

__all__ = ["Handler", "HandlerTable"]

Handler = Callable[[JobContext, Any], Awaitable[Any]]
H = TypeVar("H", bound=Handler)


class HandlerTable:
    """Which handlers this process runs, which names it may submit, and their limits.

    Args:
        path: the database file; lock-keyed handlers lock in ``<path>.locks/``.
        locks: a lock manager to use instead of the default one.
    """

    def __init__(
        self, path: str, locks: KeyedMemoryLockManager | KeyedWorkerLockManager | None = None
    ) -> None:
        self.path = path
        #: name -> handler, lock wrappers included (the runner reads it live).
        self.functions: dict[str, Handler] = {}
        #: name -> limits of registered handlers (the scheduler's limiter reads it live).
        self.limits: dict[str, Limits] = {}
        self._declared: set[str] = set()  # submitted here, run by another process
        self._originals: dict[str, Handler] = {}  # name -> fn as given (before lock wrapping)
        self._locks = locks
        #: Called after a handler is registered (the runtime claims for it).
        self.on_change: Callable[[], None] = _nothing

    def names(self) -> list[str]:
        """Names of the registered handlers (what this process claims)."""
        return list(self.functions)

    @property
    def locks_made(self) -> bool:
        """A lock manager exists (given, or made for a lock-keyed handler)."""
        return self._locks is not None

    def handler(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        lock_key: str | Callable[[Any], str] | None = None,
        lock_timeout: float | None = None,
        concurrency: int | None = None,
        rate_limit: tuple[int, float] | None = None,
        key_concurrency: int = 1,
        key_rate_limit: tuple[int, float] | None = None,
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`register` (also usable bare: ``@table.handler``)."""
        if callable(name):
            fn = name
            self.register(fn.__name__, fn)
            return fn

        def deco(fn: H) -> H:
            self.register(
                name if isinstance(name, str) else fn.__name__,
                fn,
                lock_key=lock_key,
                lock_timeout=lock_timeout,
                concurrency=concurrency,
                rate_limit=rate_limit,
                key_concurrency=key_concurrency,
                key_rate_limit=key_rate_limit,
            )
            return fn

        return deco

    def register(
        self,
        name: str,
        fn: Handler,
        *,
        lock_key: str | Callable[[Any], str] | None = None,
        lock_timeout: float | None = None,
        concurrency: int | None = None,
        rate_limit: tuple[int, float] | None = None,
        key_concurrency: int = 1,
        key_rate_limit: tuple[int, float] | None = None,
    ) -> None:
        """Register ``fn`` as the handler called ``name``.

        Raises:
            InvalidHandlerError: ``fn`` is not an ``async def`` function, or the name is taken.
            InvalidLockKey: a fixed ``lock_key`` that cannot be used.
            InvalidArgumentError: a limit is out of range.
        """
        check_id(name, "handler name")
        if not asyncio.iscoroutinefunction(fn):
            raise InvalidHandlerError(
                f"handler {name!r} must be an `async def` function taking (ctx, payload); "
                f"got {fn!r}"
            )
        if name in self._originals and self._originals[name] is not fn:
            raise InvalidHandlerError(f"a different handler is already registered as {name!r}")
        if key_concurrency is None:
            raise InvalidArgumentError(
                "key_concurrency must be an int >= 1 (jobs sharing a concurrency_key that "
                "may run at once), got None"
            )
        for label, value in (("concurrency", concurrency), ("key_concurrency", key_concurrency)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise InvalidArgumentError(f"{label} must be an int >= 1, got {value!r}")
        limits = Limits(
            concurrency,
            parse_rate(rate_limit, "rate_limit"),
            key_concurrency,
            parse_rate(key_rate_limit, "key_rate_limit"),
        )
        # Every check (the lock key's too) before anything is kept: a refused call changes nothing.
        wrapped = fn if lock_key is None else self._locked(fn, lock_key, lock_timeout)
        self.limits[name] = limits
        self.functions[name] = wrapped
        self._originals[name] = fn
        self.on_change()

    @property
    def registered(self) -> Mapping[str, Handler]:
        """The registered handlers by name (read-only; lock wrappers included)."""
        return MappingProxyType(self.functions)

    def declare(self, *names: str) -> None:
        """Allow submitting jobs for handlers that another process runs."""
        for name in names:
            check_id(name, "handler name")
            self._declared.add(name)

    def known(self, name: str) -> bool:
        """``name`` is registered or declared (and so was checked as a name)."""
        return name in self.functions or name in self._declared

    def check_known(self, name: str) -> None:
        """Raise :class:`UnknownHandlerError` unless ``name`` is registered or declared."""
        if name not in self.functions and name not in self._declared:
            raise UnknownHandlerError(name, [*self.functions, *self._declared])

    def key_concurrency(self, name: str) -> int:
        """The default ``concurrency_limit`` of a ``concurrency_key`` (1 for declared names)."""
        limits = self.limits.get(name)
        return 1 if limits is None else limits.key_concurrency

    @property
    def locks(self) -> KeyedMemoryLockManager | KeyedWorkerLockManager:
        """The lock manager used by ``lock_key`` handlers (created on first use)."""
        if self._locks is None:
            from jobqueue.locks import KeyedMemoryLockManager, KeyedWorkerLockManager

            self._locks = (
                KeyedMemoryLockManager()
                if self.path == MEMORY
                else KeyedWorkerLockManager(self.path + ".locks")
            )
        return self._locks

    def _locked(
        self, fn: Handler, lock_key: str | Callable[[Any], str], timeout: float | None
    ) -> Handler:
        if isinstance(lock_key, str):
            from jobqueue.locks import validate_lock_key

            validate_lock_key(lock_key)
        locks = self.locks

        async def locked(ctx: JobContext, payload: Any) -> Any:
            key = lock_key if isinstance(lock_key, str) else lock_key(payload)
            async with locks.alock(key, timeout=timeout):
                return await fn(ctx, payload)

        locked.__qualname__ = getattr(fn, "__qualname__", "handler")
        return locked


def _nothing() -> None:
    return None
