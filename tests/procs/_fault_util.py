"""Shared helpers of the fault suite (integration/test_faults_*.py): independent looks at a file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests" / "procs"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def reader(path: Path, *, timeout: float = 5.0) -> Iterator[sqlite3.Connection]:
    """A read-only connection of our own (SQLite keeps other connections' locks on close)."""
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def integrity(path: Path) -> list[str]:
    with reader(path) as conn:
        return [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]


def rows(path: Path) -> dict[str, tuple[str, Any]]:
    """``{id: (status, payload text)}`` as stored."""
    with reader(path) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, status, payload FROM jobs")}


def write_lock_free(path: Path) -> bool:
    """True if another connection can take the write lock at once."""
    conn = sqlite3.connect(str(path), timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return False
        raise
    finally:
        conn.close()


def python(script: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run tests/<script> in a fresh interpreter with jobqueue importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(TESTS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "1m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``where`` (root only); always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root (run the suite as root, as CI does)")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        for args in (["umount", str(where)], ["umount", "-l", str(where)]):
            if subprocess.run(args, capture_output=True, check=False).returncode == 0:
                break


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


def report(name: str, **figures: object) -> None:
    """Print a test's figures; also append them to $JOBQUEUE_FIGURES (JSON lines) if set.

    docs/reliability.md quotes the figures of the last run made with that variable.
    """
    import json

    line = json.dumps({"test": name, **figures}, sort_keys=True)
    print(f"FIGURES {line}")
    out = os.environ.get("JOBQUEUE_FIGURES")
    if out:
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
