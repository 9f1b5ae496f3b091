"""Output for the command line: tables and fields with ``rich`` when it helps, plain text otherwise.

``rich`` is the optional extra ``jobqueue[cli]``. It is used only when it is
installed, the output goes to a terminal and ``--plain`` was not given; piped
output is always plain text, one row per line, so scripts (and ``grep``) see
the same columns whether or not ``rich`` is installed. Data goes to stdout;
notes, progress and errors go to stderr.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

__all__ = ["Output", "fmt_age", "fmt_duration", "fmt_time", "is_terminal", "rich_available"]


def rich_available() -> bool:
    """True when the optional ``rich`` package can be imported."""
    try:
        return importlib.util.find_spec("rich") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["rich"] is None
        return False


def is_terminal(stream: TextIO) -> bool:
    """True when ``stream`` is an interactive terminal."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def fmt_time(ts: float | None) -> str:
    """Local wall-clock time, to the second (``-`` for none)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: float) -> str:
    """``0.4s``, ``12s``, ``5m03s``, ``2h10m``, ``3d04h``."""
    s = abs(seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def fmt_age(ts: float | None, now: float | None = None) -> str:
    """How long ago ``ts`` was (``in 5m00s`` for a time in the future)."""
    if ts is None:
        return "-"
    delta = (time.time() if now is None else now) - ts
    return f"{fmt_duration(delta)} ago" if delta >= 0 else f"in {fmt_duration(delta)}"


def _cell(value: str) -> str:
    return " ".join(value.split()) if value else "-"


class Output:
    """Writes a command's output: data to ``stdout``, everything else to ``stderr``.

    Args:
        plain: never use ``rich``, even on a terminal.
        stdout, stderr: the streams (default: ``sys.stdout`` / ``sys.stderr`` at call time).
    """

    def __init__(
        self, *, plain: bool = False, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.stdout = sys.stdout if stdout is None else stdout
        self.stderr = sys.stderr if stderr is None else stderr
        self.plain = plain

    def fancy(self, stream: TextIO) -> bool:
        """Whether to draw with ``rich`` on ``stream``."""
        return not self.plain and is_terminal(stream) and rich_available()

    # -- data (stdout) ---------------------------------------------------------------

    def line(self, text: str) -> None:
        """One line of data."""
        print(text, file=self.stdout, flush=True)

    def table(
        self, columns: Sequence[str], rows: Sequence[Sequence[str]], *, title: str | None = None
    ) -> None:
        """A table: ``rich`` on a terminal, else a header line and aligned columns."""
        if self.fancy(self.stdout):
            from rich import box
            from rich.console import Console
            from rich.table import Table

            table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
            for i, col in enumerate(columns):
                table.add_column(col, no_wrap=i == 0, overflow="fold")
            for row in rows:
                table.add_row(*(_cell(c) for c in row))
            Console(file=self.stdout).print(table)
            return
        if title:
            self.line(f"{title}:")
        cells = [list(columns), *[[_cell(c) for c in row] for row in rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        indent = "  " if title else ""
        for r in cells:
            padded = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)]
            self.line(indent + "  ".join([*padded, r[-1]]).rstrip())

    def fields(self, pairs: Sequence[tuple[str, str]], *, title: str | None = None) -> None:
        """``name: value`` lines (a two-column grid with ``rich``)."""
        if self.fancy(self.stdout):
            from rich.console import Console
            from rich.table import Table

            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", no_wrap=True)
            grid.add_column(overflow="fold")
            for name, value in pairs:
                grid.add_row(name, value)
            console = Console(file=self.stdout)
            if title:
                console.print(f"[bold]{title}[/bold]")
            console.print(grid)
            return
        if title:
            self.line(title)
        width = max((len(name) for name, _ in pairs), default=0)
        for name, value in pairs:
            first, *rest = value.splitlines() or [""]
            self.line(f"{name + ':':<{width + 1}} {first}".rstrip())
            for more in rest:
                self.line(f"{'':<{width + 1}} {more}".rstrip())

    # -- diagnostics (stderr) --------------------------------------------------------

    def note(self, text: str) -> None:
        """A remark for a human (stderr), e.g. ``no jobs``."""
        print(text, file=self.stderr, flush=True)

    def error(self, text: str) -> None:
        """``jobqueue: <text>`` on stderr."""
        print(f"jobqueue: {text}", file=self.stderr, flush=True)
