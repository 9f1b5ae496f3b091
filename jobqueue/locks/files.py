"""Keyed locks shared by processes: one lock file per key.

:class:`KeyedWorkerLockManager` locks ``<locks_dir>/<lock_file_name(key)>``
with :class:`filelock.FileLock` (``flock`` on POSIX, ``msvcrt.locking`` on
Windows). Inside one process, threads and coroutines first queue on an
in-process :class:`~jobqueue.locks.memory.KeyedMemoryLockManager`, so only one
of them at a time polls the file.

**Waiting.** Each attempt is a single non-blocking ``FileLock.acquire``
(open, try-lock, a couple of ``stat`` calls: microseconds). Between attempts a
thread sleeps with ``time.sleep`` and a coroutine with ``asyncio.sleep``, from
1 ms doubling up to ``poll_interval``. So :meth:`KeyedWorkerLockManager.alock`
never blocks the event loop and needs no worker thread, and cancelling a
waiting coroutine can never leak a lock: it is only ever cancelled at an
``await asyncio.sleep`` while holding nothing.

**Stale lock files.** ``flock`` locks die with their process, so a leftover
file never blocks anyone; it is only clutter. On POSIX the manager removes the
file on release (while still holding the lock) and :meth:`cleanup` removes
files left by crashed processes (it is also run by the constructor). Removing a
lock file that someone may be about to lock is only safe because every
acquirer, after locking, checks that the file it locked is still the one at the
path (same device and inode) and otherwise releases it and tries again. Other
programs that lock files in the same directory without this check must not be
used on it. On Windows ``filelock`` itself deletes the file on release.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from filelock import BaseFileLock, FileLock, Timeout

from jobqueue.errors import LockError, LockTimeout
from jobqueue.locks.keys import LOCK_FILE_PATTERN, lock_file_name, validate_lock_key
from jobqueue.locks.memory import (
    KeyedLockManagerBase,
    KeyedMemoryLockManager,
    check_timeout,
    monotonic_deadline,
    refuse_blocking_on_loop,
)

__all__ = ["KeyedWorkerLockManager"]

_FIRST_DELAY = 0.001
_CAN_REMOVE = os.name == "posix"


class KeyedWorkerLockManager(KeyedLockManagerBase):
    """Mutual exclusion per key between processes (and their threads and coroutines).

    Every process that uses the same ``locks_dir`` shares the locks. Keys follow
    :mod:`jobqueue.locks.keys`: any non-empty text key is accepted and maps to a
    safe file name directly inside ``locks_dir``.

    Example::

        locks = KeyedWorkerLockManager("/var/lib/myapp/locks")

        with locks.lock("invoice:7", timeout=10):      # in a thread
            ...

        async with locks.alock("invoice:7"):           # in a coroutine
            ...

    Args:
        locks_dir: Directory for the lock files; created (with parents) if missing.
        poll_interval: Longest pause, in seconds, between two attempts to lock a
            file that another process holds.
        remove_on_release: Remove the lock file when releasing it (POSIX only;
            on Windows filelock always removes it).

    Raises:
        LockError: ``locks_dir`` cannot be created or written to.
    """

    def __init__(
        self,
        locks_dir: str | os.PathLike[str],
        *,
        poll_interval: float = 0.02,
        remove_on_release: bool = True,
    ) -> None:
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, int | float)
            or not 0 < poll_interval < math.inf
        ):
            raise ValueError(
                f"poll_interval must be a finite number of seconds > 0, got {poll_interval!r}; "
                "the default 0.02 suits most uses"
            )
        self._dir = _prepare_directory(Path(locks_dir))
        self._poll = float(poll_interval)
        self._remove = remove_on_release and _CAN_REMOVE
        self._local = KeyedMemoryLockManager()
        self.cleanup()

    @property
    def locks_dir(self) -> Path:
        """The lock directory, as an absolute path with symlinks resolved."""
        return self._dir

    def __len__(self) -> int:
        """Number of keys held or waited for by this process through this manager."""
        return len(self._local)

    def keys(self) -> list[str]:
        """Return the keys held or waited for by this process (a sorted snapshot)."""
        return self._local.keys()

    def path_for(self, key: str) -> Path:
        """Return the lock file used for ``key`` (it may not exist yet).

        Raises:
            InvalidLockKey: ``key`` is not a valid key.
        """
        return self._dir / lock_file_name(key)

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock for ``key`` across processes for the duration of a ``with`` block.

        For threads: this blocks the calling thread while waiting. In a coroutine
        use :meth:`alock` (calling this on an event loop thread raises
        :class:`~jobqueue.errors.LockError` unless ``timeout=0``).

        Args:
            key: The lock key.
            timeout: Seconds to wait in total; ``None`` waits forever, ``0`` tries once.

        Raises:
            InvalidLockKey: ``key`` is not a valid key.
            LockTimeout: The lock was not free within ``timeout`` seconds.
            LockError: The lock file cannot be created, or called on an event loop thread.
        """
        key = validate_lock_key(key)
        timeout = check_timeout(timeout)
        refuse_blocking_on_loop(type(self).__name__, timeout)
        deadline = monotonic_deadline(timeout)
        path = self._dir / lock_file_name(key)
        with self._local.lock(key, timeout):
            handle = FileLock(path, thread_local=False)
            delay = _FIRST_DELAY
            while not self._try(handle, path):
                time.sleep(self._pause(key, path, timeout, deadline, delay))
                delay = min(delay * 2, self._poll)
            try:
                yield
            finally:
                self._release(handle, path)

    @contextlib.asynccontextmanager
    async def alock(
        self,
        key: str,
        timeout: float | None = None,
    ) -> AsyncIterator[None]:
        """Hold the lock for ``key`` across processes for an ``async with`` block.

        Never blocks the event loop (see the module documentation). Cancelling
        the waiting coroutine leaves no lock held and no registry entry behind.

        Args:
            key: The lock key.
            timeout: Seconds to wait in total; ``None`` waits forever, ``0`` tries once.

        Raises:
            InvalidLockKey: ``key`` is not a valid key.
            LockTimeout: The lock was not free within ``timeout`` seconds.
            LockError: The lock file cannot be created.
        """
        key = validate_lock_key(key)
        timeout = check_timeout(timeout)
        deadline = monotonic_deadline(timeout)
        path = self._dir / lock_file_name(key)
        async with self._local.alock(key, timeout):
            handle = FileLock(path, thread_local=False)
            delay = _FIRST_DELAY
            while not self._try(handle, path):
                await asyncio.sleep(self._pause(key, path, timeout, deadline, delay))
                delay = min(delay * 2, self._poll)
            try:
                yield
            finally:
                self._release(handle, path)

    def cleanup(self) -> int:
        """Remove lock files that no process holds (left by crashed processes).

        Safe while other processes use the directory: a file is removed only
        while this call holds its lock. Only names that :func:`lock_file_name`
        can produce are touched. Does nothing on Windows, where filelock removes
        lock files itself.

        Returns:
            The number of files removed.

        Raises:
            LockError: The lock directory cannot be listed.
        """
        if not _CAN_REMOVE:
            return 0
        try:
            names = os.listdir(self._dir)
        except OSError as exc:
            raise LockError(
                f"cannot list the lock directory {self._dir} ({exc.strerror or exc}); "
                "check that it exists and that this process may read it"
            ) from exc
        removed = 0
        for name in names:
            path = self._dir / name
            if not LOCK_FILE_PATTERN.fullmatch(name) or not _is_regular_file(path):
                continue
            handle = FileLock(path, thread_local=False)
            try:
                handle.acquire(blocking=False)
            except (Timeout, OSError):
                continue
            try:
                if _is_current(handle, path):
                    os.unlink(path)
                    removed += 1
            except OSError:
                pass
            finally:
                handle.release()
        return removed

    # --- internals --------------------------------------------------------

    def _try(self, handle: BaseFileLock, path: Path) -> bool:
        """Make one non-blocking attempt; True if ``handle`` now holds ``path``."""
        try:
            try:
                handle.acquire(blocking=False)
            except FileNotFoundError:  # the lock directory was removed: create it again
                self._dir.mkdir(parents=True, exist_ok=True)
                handle.acquire(blocking=False)
        except Timeout:
            return False
        except OSError as exc:
            raise LockError(
                f"cannot create or lock the lock file {path} ({exc.strerror or exc}); check that "
                f"the lock directory {self._dir} still exists and that this process may write it"
            ) from exc
        if _is_current(handle, path) is False:  # the file was removed after we opened it
            handle.release()
            return False
        return True

    def _release(self, handle: BaseFileLock, path: Path) -> None:
        try:
            if self._remove and _is_current(handle, path):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # while still locked: see the module documentation
        finally:
            handle.release()

    def _pause(
        self, key: str, path: Path, timeout: float | None, deadline: float | None, delay: float
    ) -> float:
        """Return how long to sleep before the next attempt, or raise LockTimeout."""
        if deadline is None:
            return delay
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LockTimeout(
                f"lock {key!r} is still held by another process (lock file {path}) after "
                f"{timeout:g} s; retry later, pass a larger timeout, or timeout=None to wait"
            )
        return min(delay, remaining)


def _prepare_directory(path: Path) -> Path:
    """Create ``path`` if needed, check it is a writable directory, return it resolved."""
    if path.exists() and not path.is_dir():
        raise LockError(
            f"the lock directory {path} exists but is not a directory; "
            "remove that file or pass another locks_dir"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LockError(
            f"cannot create the lock directory {path} ({exc.strerror or exc}); create it "
            "yourself or pass a locks_dir in a location this process can write"
        ) from exc
    resolved = path.resolve()
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=resolved)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LockError(
            f"the lock directory {resolved} is not writable ({exc.strerror or exc}); give this "
            "process write permission on it (for example chmod u+w) or pass another locks_dir"
        ) from exc
    return resolved


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_current(handle: BaseFileLock, path: Path) -> bool | None:
    """Whether the file ``handle`` has locked is still the one at ``path``.

    Returns None when filelock does not expose the descriptor (then the manager
    never removes lock files, so the question does not arise).
    """
    fd = getattr(getattr(handle, "_context", None), "lock_file_fd", None)
    if not isinstance(fd, int):
        return None
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)
