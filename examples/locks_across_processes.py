"""Keyed locks across processes: four processes update one balance file safely.

Two processes use the blocking API (``@locks.locked`` on a plain function), two
use ``async with locks.alock(...)``. Every update is a non-atomic
read-modify-write of ``balance.txt``; the file lock makes sure none is lost.
Then the main process holds the lock while another process tries to take it
with a short timeout and gets ``LockTimeout``.

Run it with ``python examples/locks_across_processes.py``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

try:
    from jobqueue.errors import LockTimeout
    from jobqueue.locks import KeyedWorkerLockManager
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jobqueue.errors import LockTimeout
    from jobqueue.locks import KeyedWorkerLockManager

KEY = "account:alice"
DEPOSITS = 250


def deposit_with_decorator(locks_dir: Path, balance_file: Path) -> None:
    """Worker process: blocking API."""
    locks = KeyedWorkerLockManager(locks_dir)

    @locks.locked(KEY, timeout=30)
    def deposit() -> None:
        balance = int(balance_file.read_text())
        balance_file.write_text(str(balance + 1))

    for _ in range(DEPOSITS):
        deposit()


def deposit_with_asyncio(locks_dir: Path, balance_file: Path) -> None:
    """Worker process: asyncio API; waiting never blocks this process's event loop."""

    async def run() -> None:
        locks = KeyedWorkerLockManager(locks_dir)
        for _ in range(DEPOSITS):
            async with locks.alock(KEY, timeout=30):
                balance = int(await asyncio.to_thread(balance_file.read_text))
                await asyncio.to_thread(balance_file.write_text, str(balance + 1))

    asyncio.run(run())


def try_for_a_moment(locks_dir: Path) -> None:
    """Worker process: gives up after 0.2 s because the main process holds the lock."""
    locks = KeyedWorkerLockManager(locks_dir)
    try:
        with locks.lock(KEY, timeout=0.2):
            print(f"  [pid {os.getpid()}] unexpectedly got the lock")
            sys.exit(1)
    except LockTimeout as exc:
        print(f"  [pid {os.getpid()}] LockTimeout: {exc}")


def main() -> int:
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        locks_dir = Path(tmp) / "locks"
        balance_file = Path(tmp) / "balance.txt"
        balance_file.write_text("0")
        locks = KeyedWorkerLockManager(locks_dir)  # creates the directory
        print(f"lock file for {KEY!r}: {locks.path_for(KEY).name}")

        started = time.monotonic()
        targets = [deposit_with_decorator, deposit_with_asyncio] * 2
        workers = [spawn.Process(target=t, args=(locks_dir, balance_file)) for t in targets]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        balance = int(balance_file.read_text())
        expected = len(workers) * DEPOSITS
        print(
            f"{len(workers)} processes x {DEPOSITS} deposits -> balance {balance} "
            f"(expected {expected}) in {time.monotonic() - started:.1f} s"
        )

        with locks.lock(KEY):
            print(f"main process holds {KEY!r}; another process tries with timeout=0.2:")
            impatient = spawn.Process(target=try_for_a_moment, args=(locks_dir,))
            impatient.start()
            impatient.join()

        print(f"lock files left behind: {os.listdir(locks_dir)}")
        ok = balance == expected and all(w.exitcode == 0 for w in [*workers, impatient])
        print("OK" if ok else "FAILED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
