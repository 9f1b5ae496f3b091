"""Helper process for tests/integration/test_locks.py (run as a script, not collected by pytest).

Usage::

    python _lock_worker.py increment LOCKS_DIR KEY COUNTER N sync|async
        Print "ready", wait for a line on stdin, then add 1 to the number in
        COUNTER N times, each time under the file lock for KEY. A marker file
        created with O_EXCL inside the critical section detects any overlap
        (exit code 3).
    python _lock_worker.py hold LOCKS_DIR KEY
        Take the lock, print "locked", hold it until a line (or EOF) arrives on
        stdin, release it and print "released".
    python _lock_worker.py cleanup LOCKS_DIR STOPFILE
        Call cleanup() in a loop until STOPFILE exists; print how many files
        it removed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from jobqueue.locks import KeyedWorkerLockManager


def bump(counter: Path) -> None:
    """Non-atomic read-modify-write of COUNTER, with an overlap detector."""
    marker = counter.with_name(counter.name + ".inside")
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        print(f"overlap: {marker} exists, two processes are inside the lock", file=sys.stderr)
        sys.exit(3)
    os.close(fd)
    text = counter.read_text() if counter.exists() else ""
    value = int(text or "0")
    counter.write_text(str(value + 1))
    os.unlink(marker)


def increment(locks: KeyedWorkerLockManager, key: str, counter: Path, n: int, mode: str) -> None:
    print("ready", flush=True)
    sys.stdin.readline()
    if mode == "async":

        async def run() -> None:
            for _ in range(n):
                async with locks.alock(key, timeout=30):
                    bump(counter)

        asyncio.run(run())
    else:
        for _ in range(n):
            with locks.lock(key, timeout=30):
                bump(counter)
    print("done", flush=True)


def hold(locks: KeyedWorkerLockManager, key: str) -> None:
    with locks.lock(key, timeout=30):
        print("locked", flush=True)
        sys.stdin.readline()
    print("released", flush=True)


def cleanup(locks: KeyedWorkerLockManager, stopfile: Path) -> None:
    removed = 0
    while not stopfile.exists():
        removed += locks.cleanup()
        time.sleep(0.0005)
    print(f"removed {removed}", flush=True)


def main(argv: list[str]) -> None:
    command, locks_dir = argv[0], argv[1]
    locks = KeyedWorkerLockManager(locks_dir)
    if command == "increment":
        increment(locks, argv[2], Path(argv[3]), int(argv[4]), argv[5])
    elif command == "hold":
        hold(locks, argv[2])
    elif command == "cleanup":
        cleanup(locks, Path(argv[2]))
    else:
        raise SystemExit(f"unknown command {command!r}; use increment, hold or cleanup")


if __name__ == "__main__":
    main(sys.argv[1:])
