"""Handler registration, including handlers guarded by a keyed lock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from jobqueue.context import JobContext
from jobqueue.errors import InvalidArgumentError, InvalidHandlerError
from jobqueue.langflow import LangflowLayer
from jobqueue.limits import Limits, parse_rate
from jobqueue.runtime.runner import Handler
from jobqueue.store.connection import MEMORY
from jobqueue.validation import check_id

if TYPE_CHECKING:
    from jobqueue.locks import KeyedMemoryLockManager, KeyedWorkerLockManager
    from jobqueue.telemetry import JobMetrics

__all__ = ["HandlerLayer"]

H = TypeVar("H", bound=Handler)


class HandlerLayer(LangflowLayer):
    """``@service.handler(name)`` and friends."""

    _locks: KeyedMemoryLockManager | KeyedWorkerLockManager | None = None
    _metrics: JobMetrics | None = None
    _owns_metrics: bool = False

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
        """Decorator registering an ``async def handler(ctx, payload)`` under ``name``.

        ``lock_key`` (a string, or a function of the payload returning one) makes
        runs that share a key take turns, across processes by default (see
        ``locks``); waiting for the lock never blocks the event loop, and
        ``lock_timeout`` fails the run with ``LockTimeout`` (retried if allowed).

        Limits (none by default; jobs held back stay pending in the database):

        - ``concurrency``: at most this many of its jobs run at once in this process.
        - ``rate_limit=(n, seconds)``: at most ``n`` starts per ``seconds`` in this process.
        - ``key_concurrency``: at most this many of its jobs sharing one
          ``concurrency_key`` (given at submit) run at once, across all processes
          on the database file (default 1: one per user, browser profile, ...).
        - ``key_rate_limit=(n, seconds)``: at most ``n`` starts per ``seconds`` per
          ``concurrency_key``, in this process.
        """
        if callable(name):  # used bare: @service.handler
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
        """Register ``fn`` as the handler called ``name`` (see :meth:`handler`).

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
        if name in self._handlers and self._handlers[name] is not fn:
            raise InvalidHandlerError(f"a different handler is already registered as {name!r}")
        for label, value in (("concurrency", concurrency), ("key_concurrency", key_concurrency)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise InvalidArgumentError(f"{label} must be an int >= 1, got {value!r}")
        self._limits[name] = Limits(
            concurrency,
            parse_rate(rate_limit, "rate_limit"),
            key_concurrency,
            parse_rate(key_rate_limit, "key_rate_limit"),
        )
        self._handlers[name] = fn if lock_key is None else self._locked(fn, lock_key, lock_timeout)
        if self._scheduler is not None:
            self._scheduler.want()

    @property
    def handlers(self) -> Mapping[str, Handler]:
        """The registered handlers by name (read-only; lock wrappers included)."""
        return MappingProxyType(self._handlers)

    def declare(self, *names: str) -> None:
        """Allow submitting jobs for handlers that another process runs.

        A producer (a web app, the CLI) declares the names it submits; a
        worker process registers the functions. Declared names are never
        claimed here, and an undeclared, unregistered name still raises
        :class:`~jobqueue.errors.UnknownHandlerError` at submit, so typos are caught.
        """
        for name in names:
            check_id(name, "handler name")
            self._declared.add(name)

    def _close_extras(self) -> None:
        if self._metrics is not None and self._owns_metrics:
            self._metrics.shutdown()  # unregisters its Prometheus collector

    @property
    def metrics(self) -> JobMetrics | None:
        """The attached :class:`~jobqueue.telemetry.JobMetrics` (``None`` when off)."""
        return self._metrics

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
