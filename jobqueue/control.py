"""Exceptions a handler raises on purpose to steer its own job.

They are control flow, not errors, so they do not subclass
:class:`jobqueue.errors.JobQueueError`.
"""

from __future__ import annotations

__all__ = ["Cancel", "Interrupt", "Retry"]


class Retry(Exception):
    """Ask for another attempt of this job after ``delay`` seconds.

    The attempt counts against ``max_retries``; once they are used up the job
    fails with the reason ``retries_exhausted``.
    """

    def __init__(self, delay: float | None = None, message: str = "") -> None:
        self.delay = delay
        super().__init__(message or f"retry requested (delay={delay})")


class Cancel(Exception):
    """End this job now with status ``cancelled`` (no retry)."""


class Interrupt(BaseException):
    """Raised inside a handler at ``await ctx.checkpoint()`` after ``stop()`` or ``pause()``.

    A ``BaseException`` (like ``CancelledError``) so that a handler's
    ``except Exception`` does not swallow it. Handlers should let it propagate.

    Attributes:
        kind: ``"stop"`` or ``"pause"``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"job {kind} requested")
