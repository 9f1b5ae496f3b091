"""Argument checks shared by the public calls: each failure is an InvalidArgumentError."""

from __future__ import annotations

import math

from jobqueue.errors import InvalidArgumentError
from jobqueue.status import TaskStatus

__all__ = ["check_id", "check_number", "check_text", "parse_status_arg"]

_MAX_ID = 255


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID or "\x00" in value:
        raise InvalidArgumentError(
            f"{what} must be a non-empty string of at most {_MAX_ID} characters without NUL; "
            f"got {value!r:.80}"
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: SQLite cannot store it
            raise InvalidArgumentError(
                f"{what} must be valid Unicode text (no lone surrogates such as '\\udc80'); "
                f"got {value!r:.80}"
            ) from None
    return value


def check_text(value: str, what: str) -> str:
    """Any string SQLite can store as text (no lone surrogates); may be empty."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, got {type(value).__name__}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentError(
                f"{what} must be valid Unicode text (no lone surrogates); got {value!r:.80}"
            ) from None
    return value


def check_number(value: float | None, what: str, *, positive: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidArgumentError(f"{what} must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise InvalidArgumentError(f"{what} must be {'> 0' if positive else '>= 0'}, got {value}")


def check_seconds(value: object, what: str) -> float:
    """``value`` as a float if it is a finite number of seconds >= 0, else a typed error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidArgumentError(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def parse_status_arg(value: TaskStatus | str) -> TaskStatus:
    """A status given by a caller (``"running"`` or ``TaskStatus.RUNNING``)."""
    try:
        return TaskStatus(value)
    except ValueError:
        raise InvalidArgumentError(
            f"unknown status {value!r}; use one of {', '.join(TaskStatus)}"
        ) from None
