"""Settings alone: every option checked once, replace() checks again, in_memory."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from jobqueue.errors import InvalidArgumentError
from jobqueue.settings import Settings
from jobqueue.store.connection import MEMORY

_POSITIVE = ("poll_interval", "cleanup_interval", "queue_size", "max_payload_bytes")
_NON_NEGATIVE = (
    "retention",
    "drain_timeout",
    "cancel_grace",
    "stop_timeout",
    "busy_timeout",
    "retry_backoff",
    "retry_backoff_max",
)

BAD: list[tuple[str, Any]] = [
    *[("concurrency", v) for v in (0, -1, 1.5, True, "8", None)],
    *[(name, v) for name in _POSITIVE for v in (0, -1, math.nan, "1", True)],
    *[(name, v) for name in _NON_NEGATIVE for v in (-0.5, math.nan, "1", False)],
    # counts must be whole: 0.5 would become 0 (an unbounded queue, a zero payload cap)
    *[(name, v) for name in ("queue_size", "max_payload_bytes") for v in (0.5, 2.5, math.inf)],
    ("synchronous", "OFF"),
    ("synchronous", "normal"),
]


@pytest.mark.parametrize(("option", "value"), BAD)
def test_bad_value_is_refused_naming_the_option(option: str, value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=option):
        Settings.make("jobs.db", **{option: value})


def test_unknown_option_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match="colour"):
        Settings.make("jobs.db", colour="blue")


def test_defaults_and_good_values(tmp_path: Path) -> None:
    s = Settings.make(tmp_path / "jobs.db")
    assert s == Settings(path=str(tmp_path / "jobs.db"))
    s = Settings.make(
        "jobs.db",
        concurrency=3,
        poll_interval=0.01,
        retention=0,
        queue_size=10.0,
        max_payload_bytes=2**20,
        synchronous="FULL",
        persist_events=1,
    )
    assert (s.concurrency, s.poll_interval, s.retention) == (3, 0.01, 0)
    assert s.queue_size == 10
    assert isinstance(s.queue_size, int)
    assert s.synchronous == "FULL"
    assert s.persist_events is True


def test_settings_are_frozen() -> None:
    s = Settings.make("jobs.db")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.concurrency = 2  # type: ignore[misc]


def test_replace_changes_and_checks_again(tmp_path: Path) -> None:
    s = Settings.make(tmp_path / "a.db", concurrency=2, poll_interval=0.2)
    t = s.replace(concurrency=5)
    assert (t.concurrency, t.poll_interval, t.path) == (5, 0.2, s.path)
    assert s.concurrency == 2  # a copy
    assert s.replace(path=str(tmp_path / "b.db")).path == str(tmp_path / "b.db")
    with pytest.raises(InvalidArgumentError, match="concurrency"):
        s.replace(concurrency=0)
    with pytest.raises(InvalidArgumentError, match="retention"):
        s.replace(retention=-1)
    with pytest.raises(InvalidArgumentError, match="nope"):
        s.replace(nope=1)


def test_in_memory(tmp_path: Path) -> None:
    mem = Settings.make(None)
    assert mem.in_memory
    assert mem.path == MEMORY
    assert Settings().in_memory
    disk = Settings.make(tmp_path / "jobs.db")
    assert not disk.in_memory
    assert disk.replace(path=MEMORY).in_memory


@pytest.mark.parametrize("name", ["check_on_open", "strict_events"])
def test_switches_must_be_bools(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"{name} must be True or False"):
        Settings.make("x.db", **{name: "no"})
