"""Memory snapshot summaries, as RagFlow's task executor takes them on SIGUSR1.

:func:`memory_summary` reports the process's resident memory and, while
:mod:`tracemalloc` is tracing, the source lines holding the most memory and
what grew since the previous summary. It is synchronous and may take a few
hundred milliseconds on a large heap: the worker calls it in a thread.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import tracemalloc
from pathlib import Path
from typing import Any

__all__ = ["MemoryTracer", "memory_summary", "rss_bytes", "write_json"]

_IGNORED = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


def rss_bytes() -> int | None:
    """Current resident set size, or ``None`` where ``/proc`` is unavailable."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


class MemoryTracer:
    """Starts :mod:`tracemalloc` on demand and remembers the previous snapshot.

    Args:
        top: how many source lines to list in each summary.
    """

    def __init__(self, top: int = 15) -> None:
        self.top = top
        self._previous: tracemalloc.Snapshot | None = None
        self._lock = threading.Lock()

    def stop(self) -> bool:
        """Stop tracing (RagFlow's SIGUSR2); returns whether it was tracing."""
        with self._lock:
            self._previous = None
            if not tracemalloc.is_tracing():
                return False
            tracemalloc.stop()
            return True

    def summary(self) -> dict[str, Any]:
        """:func:`memory_summary`, starting tracing first if it was off."""
        with self._lock:
            started = not tracemalloc.is_tracing()
            if started:
                tracemalloc.start()
            out = memory_summary(self.top, previous=self._previous)
            self._previous = out.pop("_snapshot", None)
            out["tracemalloc"]["started_now"] = started
            return out


def memory_summary(
    top: int = 15, *, previous: tracemalloc.Snapshot | None = None
) -> dict[str, Any]:
    """Resident memory, GC counts and (when tracing) the top allocation sites.

    Args:
        top: how many source lines to list.
        previous: an earlier snapshot; when given, ``tracemalloc.growth`` lists
            the lines whose allocations grew the most since then.

    Returns:
        A JSON-ready dict. While tracing, the key ``_snapshot`` holds the
        :class:`tracemalloc.Snapshot` taken (to pass as ``previous`` next time).
    """
    out: dict[str, Any] = {
        "rss_bytes": rss_bytes(),
        "max_rss_bytes": _max_rss_bytes(),
        "gc_counts": list(gc.get_count()),
        "threads": threading.active_count(),
    }
    if not tracemalloc.is_tracing():
        out["tracemalloc"] = {"tracing": False}
        return out
    current, peak = tracemalloc.get_traced_memory()
    snap = tracemalloc.take_snapshot().filter_traces(_IGNORED)
    lines = [
        {
            "where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
            "size_bytes": s.size,
            "count": s.count,
        }
        for s in snap.statistics("lineno")[:top]
    ]
    traced: dict[str, Any] = {
        "tracing": True,
        "traced_bytes": current,
        "peak_bytes": peak,
        "top": lines,
    }
    if previous is not None:
        traced["growth"] = [
            {
                "where": f"{d.traceback[0].filename}:{d.traceback[0].lineno}",
                "size_diff_bytes": d.size_diff,
                "count_diff": d.count_diff,
            }
            for d in snap.compare_to(previous, "lineno")[:top]
            if d.size_diff > 0
        ]
    out["tracemalloc"] = traced
    out["_snapshot"] = snap
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
