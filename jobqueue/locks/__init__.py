"""Keyed locks for threads, coroutines and processes.

* :class:`KeyedMemoryLockManager`: one lock per key inside a process, for
  threads (``with m.lock(key)``) and coroutines (``async with m.alock(key)``).
* :class:`KeyedWorkerLockManager`: one lock file per key, shared by every
  process using the same directory.

Both offer ``lock``, ``alock`` and the ``locked(key)`` decorator, accept the
same keys (:mod:`jobqueue.locks.keys`) and raise the lock errors of
:mod:`jobqueue.errors`.
"""

from __future__ import annotations

from jobqueue.locks.files import KeyedWorkerLockManager
from jobqueue.locks.keys import (
    LOCK_FILE_PATTERN,
    MAX_KEY_LENGTH,
    lock_file_name,
    validate_lock_key,
)
from jobqueue.locks.memory import KeyedLockManagerBase, KeyedMemoryLockManager, LockedDecorator

__all__ = [
    "LOCK_FILE_PATTERN",
    "MAX_KEY_LENGTH",
    "KeyedLockManagerBase",
    "KeyedMemoryLockManager",
    "KeyedWorkerLockManager",
    "LockedDecorator",
    "lock_file_name",
    "validate_lock_key",
]
