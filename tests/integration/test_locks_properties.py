"""Property tests: any key maps to a safe file directly inside the lock directory, or is refused."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jobqueue.errors import InvalidLockKey, LockTimeout
from jobqueue.locks import (
    LOCK_FILE_PATTERN,
    MAX_KEY_LENGTH,
    KeyedMemoryLockManager,
    KeyedWorkerLockManager,
    lock_file_name,
)

WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{d}{i}" for d in ("COM", "LPT") for i in range(10)
}

# Every code point, surrogates included (st.characters() leaves them out by default).
ANY_CHAR = st.characters(exclude_categories=())
NASTY = st.sampled_from(
    [
        *["/", "\\", ".", "..", ":", "\x00", "\n", "\t", " ", "~", "*", "?", "<", ">", "|"],
        *["\ud800", "\udfff", "\udc80", "\ufeff", "\u202e", "\x7f", "\u0130", "\u212a", "ß"],
        *sorted(WINDOWS_DEVICES),
        *["con.txt", "Com1.", "lpt9 ", "-", "-rf", ".lock", ".git", '"'],
    ]
)
KEYS = st.one_of(
    st.text(ANY_CHAR),
    st.lists(st.one_of(NASTY, st.text(ANY_CHAR, max_size=3)), max_size=12).map("".join),
    st.lists(st.sampled_from(["..", ".", "", "a", "CON", "~"]), max_size=8).map("/".join),
    st.binary().map(lambda b: b.decode("latin-1")),
    st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.text(ANY_CHAR, min_size=MAX_KEY_LENGTH - 2, max_size=MAX_KEY_LENGTH + 2),
)
NOT_STRINGS = st.one_of(st.binary(), st.integers(), st.none(), st.floats(), st.tuples(st.text()))

PROPERTY_SETTINGS = settings(
    deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)


def acceptable(key: object) -> bool:
    """The documented rule: non-empty text of at most MAX_KEY_LENGTH characters, valid UTF-8."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.fixture(scope="module")
def locks(tmp_path_factory: pytest.TempPathFactory) -> KeyedWorkerLockManager:
    return KeyedWorkerLockManager(tmp_path_factory.mktemp("prop") / "locks")


@PROPERTY_SETTINGS
@given(key=KEYS)
def test_every_key_maps_inside_the_directory_or_is_rejected(
    locks: KeyedWorkerLockManager, key: str
) -> None:
    try:
        path = locks.path_for(key)
    except InvalidLockKey:
        event("rejected")
        assert not acceptable(key)
        return
    event("accepted")
    assert acceptable(key)
    assert path.parent == locks.locks_dir
    assert path.resolve().parent == locks.locks_dir
    name = path.name
    assert LOCK_FILE_PATTERN.fullmatch(name)
    assert name.isascii()
    assert name.isprintable()
    assert len(name) <= 70
    assert not name.startswith((".", "-"))
    assert "/" not in name
    assert "\\" not in name
    assert name.split(".")[0].upper() not in WINDOWS_DEVICES
    assert lock_file_name(key) == name


@settings(deadline=None, max_examples=100)
@given(key=KEYS)
def test_locking_an_accepted_key_uses_exactly_its_file(
    locks: KeyedWorkerLockManager, key: str
) -> None:
    if not acceptable(key):
        with pytest.raises(InvalidLockKey), locks.lock(key, timeout=0):
            pass
        return
    with locks.lock(key, timeout=0):
        assert os.listdir(locks.locks_dir) == [lock_file_name(key)]
        assert locks.keys() == [key]
    assert os.listdir(locks.locks_dir) == []
    assert len(locks) == 0


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(keys=st.lists(KEYS, unique=True, max_size=40))
def test_distinct_keys_use_distinct_files(keys: list[str]) -> None:
    accepted = [k for k in keys if acceptable(k)]
    names = [lock_file_name(k) for k in accepted]
    assert len(set(names)) == len(accepted)
    # also on case-insensitive file systems (macOS, Windows)
    assert len({n.casefold() for n in names}) == len(accepted)


@PROPERTY_SETTINGS
@given(key=st.text(ANY_CHAR, min_size=1))
def test_case_variants_use_different_files(key: str) -> None:
    variants = {v for v in (key, key.upper(), key.lower(), key.swapcase()) if acceptable(v)}
    assert len({lock_file_name(v).casefold() for v in variants}) == len(variants)


@given(key=NOT_STRINGS)
def test_non_string_keys_are_rejected(key: Any) -> None:
    with pytest.raises(InvalidLockKey, match="must be a str"):
        lock_file_name(key)
    with pytest.raises(InvalidLockKey), KeyedMemoryLockManager().lock(key, timeout=0):
        pass


@pytest.mark.slow
@settings(deadline=None, max_examples=200)
@given(keys=st.lists(KEYS.filter(acceptable), unique=True, max_size=8))
def test_memory_registry_tracks_exactly_the_held_keys(keys: list[str]) -> None:
    memory = KeyedMemoryLockManager()
    with contextlib.ExitStack() as stack:
        for key in keys:
            stack.enter_context(memory.lock(key, timeout=0))
        assert memory.keys() == sorted(keys)
        for key in keys:
            assert memory.is_locked(key)
            with pytest.raises(LockTimeout), memory.lock(key, timeout=0):
                pass
        assert len(memory) == len(keys)
    assert len(memory) == 0


def _walk(path: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            yield Path(root, name)


def test_properties_left_no_files_or_directories(locks: KeyedWorkerLockManager) -> None:
    with locks.lock("../../escape/attempt", timeout=0):
        assert [p.parent for p in _walk(locks.locks_dir.parent)] == [
            locks.locks_dir.parent,
            locks.locks_dir,
        ]
    assert list(_walk(locks.locks_dir)) == []
