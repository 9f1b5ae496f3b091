"""Lock key rules, shared by the memory and the file lock managers.

A *key* names one lock. Both managers accept the same keys, so code can switch
from one to the other without changing its keys.

**Valid keys.** Any ``str`` of 1 to :data:`MAX_KEY_LENGTH` characters that can
be encoded as UTF-8 (so no unpaired surrogates such as ``"\\ud800"``). Anything
else raises :class:`~jobqueue.errors.InvalidLockKey`. Slashes, ``..``, control
characters, NUL, spaces, non-ASCII text and names such as ``CON`` are all
*valid* keys: they are never used as a path directly.

**File names.** :func:`lock_file_name` turns a valid key into
``<prefix>.<hash>.lock`` where

* ``<prefix>`` is the first :data:`_PREFIX_LENGTH` characters of the key with
  every character outside ``[A-Za-z0-9_-]`` replaced by ``_`` (and a leading
  ``-`` turned into ``_``, and ``_`` put in front of a Windows device name such as
  ``CON`` or ``com1``). It only makes the directory readable.
* ``<hash>`` is the first 24 hex digits (96 bits) of the SHA-256 of the UTF-8
  key. It is what makes distinct keys use distinct files, also on
  case-insensitive file systems (the hash is lower-case hex, so ``"A"`` and
  ``"a"`` differ in their hash, not only in their case).

The name is pure ASCII, at most 70 characters, has no separator, no leading dot
and is never ``.`` or ``..``, so it always names a file directly inside the lock
directory.
"""

from __future__ import annotations

import hashlib
import re

from jobqueue.errors import InvalidLockKey

__all__ = ["LOCK_FILE_PATTERN", "MAX_KEY_LENGTH", "lock_file_name", "validate_lock_key"]

#: Longest accepted key, in characters.
MAX_KEY_LENGTH = 1024

_PREFIX_LENGTH = 40
_HASH_DIGITS = 24
_SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in range(10)}
    | {f"LPT{i}" for i in range(10)}
)

#: Every name :func:`lock_file_name` can return matches this pattern (and
#: :meth:`KeyedWorkerLockManager.cleanup` touches no other file).
LOCK_FILE_PATTERN = re.compile(
    rf"[A-Za-z0-9_][A-Za-z0-9_-]{{0,{_PREFIX_LENGTH}}}\.[0-9a-f]{{{_HASH_DIGITS}}}\.lock"
)


def validate_lock_key(key: object) -> str:
    """Check that ``key`` can name a lock and return it unchanged.

    Args:
        key: The candidate key.

    Returns:
        The key, typed as ``str``.

    Raises:
        InvalidLockKey: ``key`` is not a string, is empty, is longer than
            :data:`MAX_KEY_LENGTH` characters, or holds an unpaired surrogate.
    """
    if not isinstance(key, str):
        raise InvalidLockKey(
            f"lock key must be a str, got {type(key).__name__} {key!r:.80}; "
            "build a string key, for example f'user:{user_id}'"
        )
    if not key:
        raise InvalidLockKey("lock key is empty; pass a non-empty string such as 'user:42'")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidLockKey(
            f"lock key is {len(key)} characters long, over the {MAX_KEY_LENGTH}-character limit; "
            "use a shorter key, for example a hash of the long value"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidLockKey(
            f"lock key {key!r:.80} holds an unpaired surrogate at position {exc.start} and is "
            "not valid text; decode the bytes it came from properly (or use their hex) first"
        ) from None
    return key


def lock_file_name(key: object) -> str:
    """Return the name of the lock file used for ``key``.

    The name has no directory part; see the module documentation for the rule.

    Args:
        key: The lock key.

    Returns:
        A file name matching :data:`LOCK_FILE_PATTERN`.

    Raises:
        InvalidLockKey: The key is not valid (see :func:`validate_lock_key`).
    """
    text = validate_lock_key(key)
    prefix = "".join(c if c in _SAFE_CHARS else "_" for c in text[:_PREFIX_LENGTH])
    if prefix.startswith("-"):
        prefix = "_" + prefix[1:]
    if prefix.upper() in _WINDOWS_DEVICES:
        prefix = "_" + prefix
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_DIGITS]
    return f"{prefix}.{digest}.lock"
