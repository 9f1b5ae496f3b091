"""The service's options, checked once and kept in one frozen :class:`Settings`."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

from jobqueue import codec
from jobqueue.errors import InvalidArgumentError
from jobqueue.store.connection import MEMORY
from jobqueue.validation import check_number

__all__ = ["Settings"]

_POSITIVE = ("poll_interval", "cleanup_interval", "queue_size", "max_payload_bytes")
_WHOLE = ("queue_size", "max_payload_bytes")
_NON_NEGATIVE = (
    "retention",
    "drain_timeout",
    "cancel_grace",
    "stop_timeout",
    "busy_timeout",
    "retry_backoff",
    "retry_backoff_max",
)


@dataclass(frozen=True, slots=True)
class Settings:
    """What :class:`~jobqueue.JobQueueService` was built with (see its arguments).

    Build one with :meth:`make`, which checks every value; change one with
    :meth:`replace`, which checks again.
    """

    path: str = MEMORY
    concurrency: int = 8
    poll_interval: float = 0.5
    cleanup_interval: float = 60.0
    retention: float = 300.0
    queue_size: int = 10_000
    drain_timeout: float = 10.0
    cancel_grace: float = 5.0
    busy_timeout: float = 5.0
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    check_on_open: bool = True
    max_payload_bytes: int = codec.DEFAULT_MAX_BYTES
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0
    strict_events: bool = False
    persist_events: bool = False
    stop_timeout: float = 10.0

    @classmethod
    def make(cls, path: str | os.PathLike[str] | None = None, **options: Any) -> Settings:
        """Check ``options`` and build the settings.

        Raises:
            InvalidArgumentError: an option is unknown or out of range.
        """
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidArgumentError(f"unknown option(s): {sorted(unknown)}")
        options["path"] = MEMORY if path is None else os.fspath(path)
        _check(options)
        for name in ("queue_size", "max_payload_bytes"):
            if name in options:
                options[name] = int(options[name])
        if "persist_events" in options:
            options["persist_events"] = bool(options["persist_events"])
        return cls(**options)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied, checked like :meth:`make`."""
        merged = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        merged.update(changes)
        path = merged.pop("path")
        return Settings.make(path, **merged)

    @property
    def in_memory(self) -> bool:
        """Nothing is kept on disk (no path was given)."""
        return self.path == MEMORY


def _check(o: dict[str, Any]) -> None:
    concurrency = o.get("concurrency", 8)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidArgumentError(f"concurrency must be an int >= 1, got {concurrency!r}")
    for name in _POSITIVE:
        if name in o:
            check_number(o[name], name, positive=True)
    for name in _WHOLE:  # counts: 0.5 must not become 0, nor infinity an OverflowError
        if name in o and not (math.isfinite(o[name]) and float(o[name]).is_integer()):
            raise InvalidArgumentError(f"{name} must be a whole number > 0, got {o[name]!r}")
    for name in _NON_NEGATIVE:
        if name in o:
            check_number(o[name], name)
    for name in ("check_on_open", "strict_events"):
        if name in o and not isinstance(o[name], bool):
            raise InvalidArgumentError(f"{name} must be True or False, got {o[name]!r}")
    synchronous = o.get("synchronous", "NORMAL")
    if synchronous not in ("NORMAL", "FULL"):
        raise InvalidArgumentError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
