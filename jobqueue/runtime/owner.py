"""Who runs a job: this process's identity (pid plus process start time)."""

from __future__ import annotations

import os
import time
from functools import cache
from pathlib import Path

__all__ = ["owner_identity"]


@cache
def _start_marker(pid: int) -> str:
    # Field 22 of /proc/<pid>/stat is the start time in clock ticks since boot: with the
    # pid it names one process even after the pid is reused.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return str(int(time.time() * 1000))  # no procfs: the time we first asked


def owner_identity() -> str:
    """``"pid:start"`` for the current process."""
    pid = os.getpid()
    return f"{pid}:{_start_marker(pid)}"
