"""Keyed locks: memory locks for threads and coroutines, file locks across processes."""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _ticker import Ticker
from filelock import FileLock, Timeout

import jobqueue.locks.files as files_module
from jobqueue.errors import InvalidLockKey, JobQueueError, LockError, LockTimeout
from jobqueue.locks import (
    LOCK_FILE_PATTERN,
    MAX_KEY_LENGTH,
    KeyedMemoryLockManager,
    KeyedWorkerLockManager,
    lock_file_name,
)

WORKER = Path(__file__).resolve().parents[1] / "procs" / "_lock_worker.py"
REPO = Path(__file__).resolve().parents[2]

Spawn = Callable[..., "subprocess.Popen[str]"]


# --- helpers ------------------------------------------------------------------


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start tests/procs/_lock_worker.py in a new Python process; kill leftovers at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": path},
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def read_line(proc: subprocess.Popen[str]) -> str:
    """Next stdout line of a worker; fails with its stderr if it died."""
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        assert proc.stderr is not None
        proc.wait(timeout=10)
        pytest.fail(f"worker exited ({proc.returncode}) without output: {proc.stderr.read()}")
    return line


def tell(proc: subprocess.Popen[str], text: str = "go") -> None:
    assert proc.stdin is not None
    proc.stdin.write(text + "\n")
    proc.stdin.flush()


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """Wait for a worker to exit 0 and return its remaining stdout."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}): {err}"
    return out


class Overlap:
    """Counts how many holders are inside a critical section at once."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self.inside = 0
        self.overlaps = 0
        self.entries = 0

    def enter(self) -> None:
        with self._guard:
            self.inside += 1
            self.entries += 1
            if self.inside != 1:
                self.overlaps += 1

    def leave(self) -> None:
        with self._guard:
            self.inside -= 1


class Counted:
    """A read-modify-write of ``n`` under a lock, yielding in between: a lost update
    (``n`` short) or an ``overlap`` shows that the lock did not exclude."""

    def __init__(self) -> None:
        self.n = 0
        self.overlap = Overlap()

    def bump(self, locks: KeyedMemoryLockManager, key: str, times: int) -> None:
        """``times`` increments, each under ``locks.lock(key)`` (from a thread)."""
        for _ in range(times):
            with locks.lock(key):
                self.overlap.enter()
                value = self.n
                time.sleep(0)
                self.n = value + 1
                self.overlap.leave()

    async def abump(self, locks: KeyedMemoryLockManager, key: str, times: int) -> None:
        """``times`` increments, each under ``locks.alock(key)`` (from a coroutine)."""
        for _ in range(times):
            async with locks.alock(key):
                self.overlap.enter()
                value = self.n
                await asyncio.sleep(0)
                self.n = value + 1
                self.overlap.leave()


def hold_in_thread(
    locks: KeyedMemoryLockManager, key: str
) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """Start a thread that takes ``key`` and sets ``held``, then keeps it until ``release``."""
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with locks.lock(key):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    return thread, held, release


# --- keys -----------------------------------------------------------------------

BAD_KEYS: list[Any] = ["", "x" * (MAX_KEY_LENGTH + 1), "bad\ud800key", None, 42, b"bytes"]


@pytest.mark.parametrize(
    "key", BAD_KEYS, ids=["empty", "long", "surrogate", "none", "int", "bytes"]
)
def test_bad_keys_raise_invalid_lock_key_in_both_managers(key: Any, tmp_path: Path) -> None:
    memory = KeyedMemoryLockManager()
    files = KeyedWorkerLockManager(tmp_path / "locks")
    for manager in (memory, files):
        with pytest.raises(InvalidLockKey) as info, manager.lock(key, timeout=0):
            pass
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, LockError)
        assert isinstance(info.value, JobQueueError)
        with pytest.raises(InvalidLockKey):
            manager.locked(key)
    with pytest.raises(InvalidLockKey):
        files.path_for(key)
    assert len(memory) == 0
    assert len(files) == 0
    assert os.listdir(files.locks_dir) == []


def test_bad_key_message_says_what_to_do() -> None:
    with pytest.raises(InvalidLockKey, match="pass a non-empty string"):
        lock_file_name("")
    with pytest.raises(InvalidLockKey, match="use a shorter key"):
        lock_file_name("k" * (MAX_KEY_LENGTH + 1))
    with pytest.raises(InvalidLockKey, match="must be a str"):
        lock_file_name(7)


@pytest.mark.parametrize(
    ("key", "prefix"),
    [
        ("user:42", "user_42."),
        ("../../etc/passwd", "______etc_passwd."),
        ("..", "__."),
        (".hidden", "_hidden."),
        ("a/b\\c", "a_b_c."),
        ("CON", "_CON."),
        ("com1", "_com1."),
        ("Lpt9", "_Lpt9."),
        ("con.txt", "con_txt."),
        ("-rf", "_rf."),
        ("nul\x00byte", "nul_byte."),
        ("日本語", "___."),
        ("x" * 500, "x" * 40 + "."),
    ],
)
def test_file_names_are_safe_and_readable(key: str, prefix: str, tmp_path: Path) -> None:
    name = lock_file_name(key)
    assert name.startswith(prefix)
    assert LOCK_FILE_PATTERN.fullmatch(name)
    assert len(name) <= 70
    locks = KeyedWorkerLockManager(tmp_path)
    assert locks.path_for(key).parent == tmp_path.resolve()
    with locks.lock(key, timeout=1):
        assert os.listdir(tmp_path) == [name]


def test_keys_differing_only_in_case_or_unsafe_characters_get_different_files() -> None:
    names = {lock_file_name(k) for k in ("a/b", "a:b", "a_b", "A_B", "a\\b", "a b", "a\x00b")}
    assert len(names) == 7
    assert len({n.lower() for n in names}) == 7


# --- memory manager: threads ---------------------------------------------------------


def test_threads_exclude_each_other_per_key() -> None:
    locks = KeyedMemoryLockManager()
    keys = ["alpha", "beta", "gamma"]
    counters = dict.fromkeys(keys, 0)
    overlap = {k: Overlap() for k in keys}
    per_thread = 150

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(per_thread):
            key = rng.choice(keys)
            with locks.lock(key):
                overlap[key].enter()
                value = counters[key]
                time.sleep(0)  # let other threads run in the middle of the update
                counters[key] = value + 1
                overlap[key].leave()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(counters.values()) == 12 * per_thread
    assert {k: o.overlaps for k, o in overlap.items()} == dict.fromkeys(keys, 0)
    assert len(locks) == 0
    assert locks.keys() == []


def test_thread_timeout_raises_lock_timeout_and_leaves_no_entry() -> None:
    locks = KeyedMemoryLockManager()
    thread, held, release = hold_in_thread(locks, "busy")
    assert held.wait(10)
    started = time.monotonic()
    with pytest.raises(LockTimeout, match="pass a larger timeout") as info, locks.lock("busy", 0.1):
        pass
    assert 0.09 <= time.monotonic() - started < 5
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(LockTimeout), locks.lock("busy", timeout=0):
        pass
    assert locks.keys() == ["busy"]
    assert locks.is_locked("busy")
    release.set()
    thread.join(10)
    assert len(locks) == 0
    assert not locks.is_locked("busy")
    with locks.lock("busy", timeout=0):
        assert locks.is_locked("busy")


def test_registry_holds_only_keys_in_use() -> None:
    locks = KeyedMemoryLockManager()
    for i in range(2000):
        with locks.lock(f"job:{i}"):
            assert len(locks) == 1
    assert len(locks) == 0
    with locks.lock("b"), locks.lock("a"), locks.lock("c"):
        assert locks.keys() == ["a", "b", "c"]
    assert len(locks) == 0


def test_invalid_timeouts_are_rejected() -> None:
    locks = KeyedMemoryLockManager()
    with pytest.raises(ValueError, match="timeout=0"), locks.lock("k", timeout=-1):
        pass
    with pytest.raises(ValueError, match="timeout"), locks.lock("k", timeout=float("nan")):
        pass
    with pytest.raises(TypeError, match="timeout"), locks.lock("k", timeout=True):
        pass
    assert len(locks) == 0


def test_sync_decorator_serialises_calls_from_threads() -> None:
    locks = KeyedMemoryLockManager()
    state = {"n": 0}

    @locks.locked("counter", timeout=10)
    def bump(step: int) -> int:
        """Add step."""
        assert locks.is_locked("counter")
        value = state["n"]
        time.sleep(0)
        state["n"] = value + step
        return state["n"]

    assert bump.__name__ == "bump"
    assert bump.__doc__ == "Add step."
    threads = [threading.Thread(target=lambda: [bump(1) for _ in range(100)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert state["n"] == 800
    assert bump(0) == 800
    assert len(locks) == 0


# --- memory manager: coroutines ------------------------------------------------------


async def test_coroutines_exclude_each_other_and_registry_empties() -> None:
    locks = KeyedMemoryLockManager()
    counted = Counted()
    await asyncio.gather(*(counted.abump(locks, "shared", 20) for _ in range(100)))
    assert counted.n == 2000
    assert counted.overlap.overlaps == 0
    assert len(locks) == 0


async def test_threads_and_coroutines_exclude_each_other() -> None:
    locks = KeyedMemoryLockManager()
    counted = Counted()
    await asyncio.gather(
        *(asyncio.to_thread(counted.bump, locks, "mixed", 100) for _ in range(4)),
        *(counted.abump(locks, "mixed", 20) for _ in range(30)),
    )
    assert counted.n == 4 * 100 + 30 * 20
    assert counted.overlap.overlaps == 0
    assert len(locks) == 0


def test_coroutines_on_several_event_loops_share_one_manager() -> None:
    locks = KeyedMemoryLockManager()
    counted = Counted()

    async def many() -> None:
        await asyncio.gather(*(counted.abump(locks, "loops", 25) for _ in range(10)))

    threads = [threading.Thread(target=asyncio.run, args=(many(),)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert counted.n == 3 * 10 * 25
    assert counted.overlap.overlaps == 0
    assert len(locks) == 0


async def _record_under(locks: KeyedMemoryLockManager, key: str, got: list[Any], item: Any) -> None:
    """Take ``key``, then append ``item`` to ``got`` (so ``got`` is the order of the grants)."""
    async with locks.alock(key):
        got.append(item)


async def test_cancelling_waiters_leaks_neither_lock_nor_entry() -> None:
    locks = KeyedMemoryLockManager()
    got: list[int] = []
    async with locks.alock("k"):
        tasks = [asyncio.create_task(_record_under(locks, "k", got, i)) for i in range(20)]
        await asyncio.sleep(0.01)
        assert all(not t.done() for t in tasks)
        for t in tasks[::2]:
            t.cancel()
        await asyncio.sleep(0.01)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results[::2])
    assert all(r is None for r in results[1::2])
    assert got == list(range(1, 20, 2))  # the others, in arrival order
    assert len(locks) == 0
    async with locks.alock("k", timeout=0):
        pass


async def test_waiter_cancelled_right_after_being_granted_passes_the_lock_on() -> None:
    locks = KeyedMemoryLockManager()
    got: list[str] = []
    async with locks.alock("k"):
        first = asyncio.create_task(_record_under(locks, "k", got, "first"))
        second = asyncio.create_task(_record_under(locks, "k", got, "second"))
        await asyncio.sleep(0.01)
    assert locks.is_locked("k")  # handed to `first`, which has not run yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)
    assert got == ["second"]
    assert len(locks) == 0


async def test_async_timeout_raises_lock_timeout_while_a_thread_holds_the_key() -> None:
    locks = KeyedMemoryLockManager()
    thread, held, release = hold_in_thread(locks, "busy")
    assert await asyncio.to_thread(held.wait, 10)
    ticker = Ticker()
    ticker.start()
    started = time.monotonic()
    with pytest.raises(LockTimeout, match="'busy'"):
        async with locks.alock("busy", timeout=0.3):
            pass
    assert 0.29 <= time.monotonic() - started < 5
    assert await ticker.stop() < 0.05
    with pytest.raises(LockTimeout):
        async with locks.alock("busy", timeout=0):
            pass
    waiter = asyncio.create_task(asyncio.wait_for(_take(locks, "busy"), 10))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    release.set()
    await waiter
    await asyncio.to_thread(thread.join, 10)
    assert len(locks) == 0


async def _take(locks: KeyedMemoryLockManager | KeyedWorkerLockManager, key: str) -> float:
    """Acquire and release ``key``; return how long it took."""
    started = time.monotonic()
    async with locks.alock(key):
        return time.monotonic() - started


async def test_random_timeouts_and_cancellations_keep_exclusion() -> None:
    locks = KeyedMemoryLockManager()
    rng = random.Random(1234)
    keys = ["a", "b", "c"]
    overlap = {k: Overlap() for k in keys}
    timeouts = 0

    async def work(seed: int) -> None:
        nonlocal timeouts
        wrng = random.Random(seed)
        for _ in range(30):
            key = wrng.choice(keys)
            try:
                async with locks.alock(key, timeout=wrng.choice([None, 0, 0.001, 0.01])):
                    overlap[key].enter()
                    try:  # a cancellation may land here, while holding the lock
                        await asyncio.sleep(wrng.choice([0, 0.0005]))
                    finally:
                        overlap[key].leave()
            except LockTimeout:
                timeouts += 1

    def in_thread(seed: int) -> None:
        trng = random.Random(seed)
        for _ in range(30):
            key = trng.choice(keys)
            try:
                with locks.lock(key, timeout=trng.choice([None, 0, 0.001])):
                    overlap[key].enter()
                    time.sleep(trng.choice([0, 0.0005]))
                    overlap[key].leave()
            except LockTimeout:
                pass

    tasks = [asyncio.create_task(work(i)) for i in range(40)]
    threads = [asyncio.create_task(asyncio.to_thread(in_thread, 100 + i)) for i in range(3)]
    for _ in range(15):
        await asyncio.sleep(0.003)
        rng.choice(tasks).cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*threads)
    errors = [r for r in results if r is not None and not isinstance(r, asyncio.CancelledError)]
    assert errors == []
    assert any(isinstance(r, asyncio.CancelledError) for r in results)
    assert timeouts > 0
    assert {k: o.overlaps for k, o in overlap.items()} == dict.fromkeys(keys, 0)
    assert sum(o.entries for o in overlap.values()) > 100
    assert len(locks) == 0
    for key in keys:
        async with locks.alock(key, timeout=0):
            pass


async def test_blocking_lock_on_the_event_loop_thread_is_refused() -> None:
    locks = KeyedMemoryLockManager()
    with pytest.raises(LockError, match="alock"), locks.lock("k"):
        pass
    with locks.lock("k", timeout=0):  # a single try cannot block
        assert locks.is_locked("k")
    assert len(locks) == 0


async def test_async_decorator() -> None:
    locks = KeyedMemoryLockManager()
    order: list[str] = []

    @locks.locked("deco")
    async def step(name: str) -> str:
        assert locks.is_locked("deco")
        order.append(f"{name}-in")
        await asyncio.sleep(0.001)
        order.append(f"{name}-out")
        return name.upper()

    assert inspect.iscoroutinefunction(step)
    assert step.__name__ == "step"
    assert list(await asyncio.gather(step("a"), step("b"), step("c"))) == ["A", "B", "C"]
    assert order == ["a-in", "a-out", "b-in", "b-out", "c-in", "c-out"]
    assert len(locks) == 0


# --- worker (file) manager ------------------------------------------------------------


@pytest.mark.slow
def test_processes_increment_a_shared_counter_without_lost_updates(
    tmp_path: Path, spawn: Spawn
) -> None:
    locks_dir = tmp_path / "locks"
    counter = tmp_path / "data" / "counter"
    counter.parent.mkdir()
    counter.write_text("0")
    stopfile = tmp_path / "stop"
    per_worker = 500
    janitor = spawn("cleanup", str(locks_dir), str(stopfile))  # races the lock holders
    modes = ["sync", "async", "sync", "async"]
    workers = [
        spawn("increment", str(locks_dir), "shared counter", str(counter), str(per_worker), m)
        for m in modes
    ]
    for w in workers:
        assert read_line(w) == "ready"
    for w in workers:
        tell(w)
    for w in workers:
        assert finish(w).strip() == "done"
    stopfile.touch()
    assert finish(janitor).startswith("removed")
    assert int(counter.read_text()) == len(workers) * per_worker
    assert os.listdir(locks_dir) == []  # every release removed its lock file


def test_file_lock_timeout_names_key_and_file(tmp_path: Path, spawn: Spawn) -> None:
    locks = KeyedWorkerLockManager(tmp_path / "locks")
    holder = spawn("hold", str(locks.locks_dir), "busy")
    assert read_line(holder) == "locked"
    started = time.monotonic()
    with pytest.raises(LockTimeout) as info, locks.lock("busy", timeout=0.2):
        pass
    assert 0.19 <= time.monotonic() - started < 5
    message = str(info.value)
    assert "'busy'" in message
    assert str(locks.path_for("busy")) in message
    assert "timeout=None" in message
    with pytest.raises(LockTimeout), locks.lock("busy", timeout=0):
        pass
    assert len(locks) == 0
    tell(holder)
    assert read_line(holder) == "released"
    with locks.lock("busy", timeout=5):
        assert locks.keys() == ["busy"]


async def test_event_loop_keeps_ticking_while_waiting_for_another_process(
    tmp_path: Path, spawn: Spawn
) -> None:
    locks = KeyedWorkerLockManager(tmp_path / "locks")
    holder = spawn("hold", str(locks.locks_dir), "slow resource")
    assert await asyncio.to_thread(read_line, holder) == "locked"
    ticker = Ticker()
    ticker.start()
    waiter = asyncio.create_task(_take(locks, "slow resource"))
    await asyncio.sleep(0.6)
    assert not waiter.done()
    assert locks.keys() == ["slow resource"]
    tell(holder)
    waited = await asyncio.wait_for(waiter, 10)
    max_lag = await ticker.stop()
    assert waited >= 0.55
    assert len(ticker.lags) >= 30
    # Blocking on the file lock would stall the loop for the whole 0.6 s wait.
    assert max_lag < 0.25, f"event loop was blocked for {max_lag:.3f} s"
    assert await asyncio.to_thread(read_line, holder) == "released"
    assert len(locks) == 0


async def test_cancelled_file_lock_waiter_leaves_nothing_behind(
    tmp_path: Path, spawn: Spawn
) -> None:
    locks = KeyedWorkerLockManager(tmp_path / "locks")
    holder = spawn("hold", str(locks.locks_dir), "k")
    assert await asyncio.to_thread(read_line, holder) == "locked"
    waiters = [asyncio.create_task(_take(locks, "k")) for _ in range(5)]
    await asyncio.sleep(0.1)
    for w in waiters:
        w.cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert len(locks) == 0
    with pytest.raises(LockTimeout, match="another process"):
        async with locks.alock("k", timeout=0.05):
            pass
    tell(holder)
    assert await asyncio.to_thread(read_line, holder) == "released"
    async with locks.alock("k", timeout=5):
        assert locks.keys() == ["k"]
    assert os.listdir(locks.locks_dir) == []


def test_threads_and_file_decorators_in_one_process(tmp_path: Path) -> None:
    locks = KeyedWorkerLockManager(tmp_path / "locks")
    counter = tmp_path / "counter"
    counter.write_text("0")

    @locks.locked("counter")
    def bump() -> None:
        assert locks.path_for("counter").exists()
        value = int(counter.read_text())
        time.sleep(0)
        counter.write_text(str(value + 1))

    threads = [threading.Thread(target=lambda: [bump() for _ in range(50)]) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert counter.read_text() == "300"
    assert len(locks) == 0


async def test_async_file_decorator(tmp_path: Path) -> None:
    locks = KeyedWorkerLockManager(tmp_path / "locks")
    state = {"n": 0}

    @locks.locked("n", timeout=10)
    async def bump() -> int:
        value = state["n"]
        await asyncio.sleep(0)
        state["n"] = value + 1
        return state["n"]

    results = await asyncio.gather(*(bump() for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert len(locks) == 0


def test_cleanup_removes_files_left_by_a_killed_process(tmp_path: Path, spawn: Spawn) -> None:
    locks = KeyedWorkerLockManager(tmp_path / "locks")
    holder = spawn("hold", str(locks.locks_dir), "crashy")
    assert read_line(holder) == "locked"
    holder.kill()
    holder.wait(10)
    leftover = locks.path_for("crashy")
    (locks.locks_dir / "notes.txt").write_text("not a lock file")
    (locks.locks_dir / "x.lock").write_text("not one of ours either")
    assert leftover.exists()
    assert locks.cleanup() == 1
    assert not leftover.exists()
    assert sorted(os.listdir(locks.locks_dir)) == ["notes.txt", "x.lock"]
    with locks.lock("crashy", timeout=0):  # the dead holder's lock died with it
        pass


def test_cleanup_keeps_held_files_and_constructor_cleans_up(tmp_path: Path) -> None:
    keep = KeyedWorkerLockManager(tmp_path, remove_on_release=False)
    with keep.lock("held"):
        with keep.lock("done"):
            pass
        assert keep.path_for("done").exists()  # kept: remove_on_release=False
        assert keep.cleanup() == 1  # "done" goes, "held" is locked and stays
        assert keep.path_for("held").exists()
        assert not keep.path_for("done").exists()
    assert keep.path_for("held").exists()
    KeyedWorkerLockManager(tmp_path)  # a new manager cleans up on start
    assert os.listdir(tmp_path) == []


def test_a_lock_file_removed_under_a_waiter_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that locks a file just after it was unlinked must not believe it holds the lock."""
    locks = KeyedWorkerLockManager(tmp_path)
    attempts: list[str] = []

    class RacingFileLock(FileLock):
        def acquire(self, *args: Any, **kwargs: Any) -> Any:
            proxy = super().acquire(*args, **kwargs)
            attempts.append("acquired")
            if len(attempts) == 1:  # as if another process removed the file meanwhile
                os.unlink(self.lock_file)
            return proxy

    monkeypatch.setattr(files_module, "FileLock", RacingFileLock)
    with locks.lock("raced", timeout=5):
        assert attempts == ["acquired", "acquired"]
        other = FileLock(locks.path_for("raced"))
        with pytest.raises(Timeout):  # we hold the file that is really at the path
            other.acquire(blocking=False)


def test_lock_directory_is_created_and_recreated(tmp_path: Path) -> None:
    locks_dir = tmp_path / "a" / "b" / "locks"
    locks = KeyedWorkerLockManager(locks_dir)
    assert locks_dir.is_dir()
    assert locks.locks_dir == locks_dir.resolve()
    shutil.rmtree(tmp_path / "a")
    with locks.lock("k", timeout=1):
        assert locks.path_for("k").exists()


def test_unusable_lock_directories_raise_lock_error(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(LockError, match=r"not a directory.*pass another locks_dir") as info:
        KeyedWorkerLockManager(a_file)
    assert str(a_file) in str(info.value)
    with pytest.raises(LockError, match=r"cannot create the lock directory.*pass a locks_dir"):
        KeyedWorkerLockManager(a_file / "locks")
    assert Path("/proc").is_dir()  # Linux: not writable even by root
    with pytest.raises(LockError, match=r"/proc is not writable.*pass another locks_dir"):
        KeyedWorkerLockManager("/proc")


def test_lock_directory_replaced_by_a_file_raises_lock_error(tmp_path: Path) -> None:
    locks = KeyedWorkerLockManager(tmp_path / "locks")
    shutil.rmtree(locks.locks_dir)
    locks.locks_dir.write_text("oops")
    with pytest.raises(LockError, match="still exists") as info, locks.lock("k", timeout=1):
        pass
    assert str(locks.locks_dir) in str(info.value)
    assert len(locks) == 0


def test_invalid_poll_interval_is_rejected(tmp_path: Path) -> None:
    for bad in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="poll_interval"):
            KeyedWorkerLockManager(tmp_path, poll_interval=bad)
