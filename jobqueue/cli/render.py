"""Output for the command line: tables and fields with ``rich`` when it helps, plain text otherwise.

``rich`` is the optional extra ``jobqueue[cli]``. It is used only when it is
installed, the output goes to a terminal and ``--plain`` was not given; piped
output is always plain text, one row per line, so scripts (and ``grep``) see
the same columns whether or not ``rich`` is installed. Data goes to stdout;
notes, progress and errors go to stderr.

Everything printed here may hold text from the database (ids, handler names,
errors, payloads, event data), which whoever submitted or ran a job chose.
It is shown as text, never obeyed: control characters, bidi overrides and
lone surrogates are written as visible escapes (``\\x1b``, ``\\u202e``) by
:func:`safe_text`, and ``rich`` never reads markup or emoji codes from it, so a
stored ``[/bold]`` or ``[link=...]`` prints as it is.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

__all__ = [
    "Column",
    "Output",
    "SafeFormatter",
    "fmt_age",
    "fmt_attempt",
    "fmt_duration",
    "fmt_time",
    "is_terminal",
    "log_to_stderr",
    "rich_available",
    "rich_console",
    "rich_text",
    "safe_text",
]

# What a terminal would act on instead of showing: C0 controls but tab and newline
# (ESC starts colour, cursor, title and hyperlink sequences; CR and BS overwrite what
# is shown), DEL, C1 (0x9b is a one-byte CSI on some terminals), the bidi controls
# (U+202E makes a line read backwards), the line and paragraph separators (a line
# break to some terminals and to str.splitlines), and lone surrogates (UTF-8 cannot
# encode them: printing one raises UnicodeEncodeError).
_UNSAFE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
    r"\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]  # \x1b, \r, \x9b, \u202e, \ud800


def safe_text(value: object) -> str:
    """``value`` as text that shows on a terminal as it is, and does nothing else.

    Control characters (except tab and newline, which layout uses), DEL, C1,
    bidi controls, U+2028/U+2029 and lone surrogates become Python-style escapes
    (``ESC`` shows as ``\\x1b``); a CR LF pair becomes a newline. Everything
    else, including non-ASCII letters and markup-like ``[bold]``, is kept.
    """
    text = value if isinstance(value, str) else str(value)
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    return _UNSAFE.sub(_escape, text)


def rich_console(stream: TextIO) -> Console:
    """A ``rich`` console on ``stream`` that takes strings literally.

    No markup (``[link=...]`` in a job's error stays text), no ``:emoji:`` codes,
    no highlighting of numbers and quotes inside data.
    """
    from rich.console import Console

    return Console(file=stream, markup=False, emoji=False, highlight=False)


def rich_text(value: object, style: str = "") -> Text:
    """``value`` as a ``rich`` ``Text``: escaped by :func:`safe_text`, markup never parsed."""
    from rich.text import Text

    return Text(safe_text(value), style=style)


class SafeFormatter(logging.Formatter):
    """A log formatter whose lines (tracebacks included) pass through :func:`safe_text`.

    Log records quote job ids and errors that a handler or a submitter chose;
    on a terminal they must not be able to move the cursor or retitle the window.
    """

    def format(self, record: logging.LogRecord) -> str:
        return safe_text(super().format(record))


def log_to_stderr(level: int | str, fmt: str) -> None:
    """Log to stderr like ``logging.basicConfig``, through :class:`SafeFormatter`.

    Log lines carry job ids and handlers' error messages: escaped, they cannot
    drive the terminal the command runs in.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])


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


def fmt_attempt(attempt: int, max_retries: int, *, ran: bool = True, pending: bool = False) -> str:
    """Attempts as people count them: ``2 of 3``.

    ``attempt`` is the stored field (earlier attempts that counted, from 0) and
    ``max_retries`` the retries allowed, so a job has ``max_retries + 1``
    attempts: this is attempt ``attempt + 1`` of them. For a ``pending`` job
    it is the attempt it makes next; a job that never ran (``ran=False``) and
    is not pending shows ``not run``. A job run more times than that (a bare
    coroutine restarted under its id) shows its count alone.
    """
    if not ran and not pending and attempt == 0:
        return "not run"
    n, m = attempt + 1, max_retries + 1
    return f"{n} of {m}" if n <= m else str(n)


def _cell(value: str) -> str:
    """One table cell on one line: escaped first, so the split sees only tab and newline."""
    return " ".join(safe_text(value).split()) if value else "-"


@dataclass(frozen=True, slots=True)
class Column:
    """How a table column fits a terminal (plain text always shows every column whole).

    Attributes:
        name: the header.
        cut_to: on a terminal too narrow for the table, cells longer than this
            are cut with ``…`` (first of all; narrower still if nothing else helps).
        drop: then columns are left out, highest ``drop`` first; ``0``: never.
        flex: takes the width the other columns leave, its cells cut with
            ``…``; at most one column.
    """

    name: str
    cut_to: int | None = None
    drop: int = 0
    flex: bool = False


#: The narrowest a flexible column is squeezed to before columns are left out.
MIN_FLEX = 24
#: The narrowest a column with ``cut_to`` is cut to when nothing else helps.
MIN_CUT = 10
#: Spaces between two columns of a table (rich and plain alike).
_GAP = 2


def fit_columns(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int
) -> tuple[list[int], list[int]]:
    """Which columns to show on a ``width``-wide terminal, and the width of each.

    Returns the indexes kept and their widths. Every column is as wide as its
    widest cell and the flexible one gets what is left. While that leaves
    the flexible column under :data:`MIN_FLEX`: the columns with a ``cut_to``
    are cut to it, then droppable columns are left out (highest ``drop``
    first), then the cut columns are narrowed further, down to their header
    (at least :data:`MIN_CUT` characters).
    """
    natural = [max([len(c.name), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    kept = list(range(len(columns)))
    flex = next((i for i, c in enumerate(columns) if c.flex), None)
    floor = 0 if flex is None else min(MIN_FLEX, natural[flex])

    def short_of() -> int:
        fixed = sum(natural[i] for i in kept if i != flex)
        return floor - (width - fixed - _GAP * (len(kept) - 1))

    cuttable = [i for i, c in enumerate(columns) if c.cut_to is not None and i != flex]
    if short_of() > 0:
        for i in cuttable:
            natural[i] = min(natural[i], max(columns[i].cut_to or 0, MIN_CUT))
    while short_of() > 0:
        droppable = [i for i in kept if columns[i].drop > 0]
        if not droppable:
            break
        kept.remove(max(droppable, key=lambda i: (columns[i].drop, i)))
    for i in cuttable:
        lack = short_of()
        if lack <= 0:
            break
        natural[i] = max(len(columns[i].name), MIN_CUT, natural[i] - lack)
    widths = [natural[i] for i in kept]
    if flex is not None and flex in kept:
        left = width - sum(w for i, w in zip(kept, widths, strict=True) if i != flex)
        widths[kept.index(flex)] = max(1, min(natural[flex], left - _GAP * (len(kept) - 1)))
    return kept, widths


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
        """One line of data (escaped by :func:`safe_text`)."""
        print(safe_text(text), file=self.stdout, flush=True)

    def json(self, value: Any, *, indent: int | None = None) -> None:
        """``value`` as JSON on one line (several with ``indent``).

        ASCII only: every control and non-ASCII character is a JSON escape, and
        DEL, the one control ``json.dumps`` leaves raw, is written ``\\u007f``.
        """
        text = json.dumps(value, indent=indent, default=str, ensure_ascii=True)
        print(text.replace("\x7f", "\\u007f"), file=self.stdout, flush=True)

    def table(
        self,
        columns: Sequence[str | Column],
        rows: Sequence[Sequence[str]],
        *,
        title: str | None = None,
    ) -> None:
        """A table: ``rich`` on a terminal, else a header line and aligned columns.

        On a terminal the table fits its width (:func:`fit_columns`): columns
        given as :class:`Column` are cut or left out as they say; a plain
        string column never wraps inside a word, the last one folds. Plain
        text shows every column whole, one row per line.
        """
        specs = [c if isinstance(c, Column) else Column(c) for c in columns]
        names = [c.name for c in specs]
        cells = [[_cell(c) for c in row] for row in rows]
        if self.fancy(self.stdout):
            self._rich_table(specs, cells, title)
            return
        if title:
            self.line(f"{title}:")
        cells = [names, *cells]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        indent = "  " if title else ""
        for r in cells:
            padded = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)]
            self.line(indent + "  ".join([*padded, r[-1]]).rstrip())

    def _rich_table(
        self, specs: Sequence[Column], cells: Sequence[Sequence[str]], title: str | None
    ) -> None:
        from rich import box
        from rich.table import Table

        console = rich_console(self.stdout)
        fitted = any(c.flex or c.drop or c.cut_to for c in specs)
        kept, widths = (
            fit_columns(specs, cells, console.width)
            if fitted
            else (list(range(len(specs))), [None] * len(specs))
        )
        table = Table(
            title=None if title is None else rich_text(title),
            box=box.SIMPLE_HEAD,
            title_justify="left",
            padding=(0, 1),
            collapse_padding=True,  # two spaces between columns, as in plain text
            pad_edge=False,
            show_edge=False,
        )
        for n, i in enumerate(kept):
            if fitted:  # one line per row: cells cut with an ellipsis, never folded
                w = widths[n]
                table.add_column(
                    rich_text(specs[i].name),
                    no_wrap=True,
                    overflow="ellipsis",
                    min_width=w,
                    max_width=w,
                )
            else:  # only the last column folds; the others keep their words whole
                last = n == len(kept) - 1
                table.add_column(
                    rich_text(specs[i].name),
                    no_wrap=not last,
                    overflow="fold" if last else "ellipsis",
                )
        for row in cells:
            table.add_row(*(rich_text(row[i]) for i in kept))
        console.print(table)

    def fields(self, pairs: Sequence[tuple[str, str]], *, title: str | None = None) -> None:
        """``name: value`` lines (a two-column grid with ``rich``)."""
        if self.fancy(self.stdout):
            from rich.table import Table

            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", no_wrap=True)
            grid.add_column(overflow="fold")
            for name, value in pairs:
                grid.add_row(rich_text(name), rich_text(value))
            console = rich_console(self.stdout)
            if title:
                console.print(rich_text(title, style="bold"))
            console.print(grid)
            return
        if title:
            self.line(title)
        pairs = [(safe_text(name), safe_text(value)) for name, value in pairs]
        width = max((len(name) for name, _ in pairs), default=0)
        for name, value in pairs:
            first, *rest = value.split("\n")
            self.line(f"{name + ':':<{width + 1}} {first}".rstrip())
            for more in rest:
                self.line(f"{'':<{width + 1}} {more}".rstrip())

    # -- diagnostics (stderr) --------------------------------------------------------

    def note(self, text: str) -> None:
        """A remark for a human (stderr), e.g. ``no jobs``."""
        print(safe_text(text), file=self.stderr, flush=True)

    def error(self, text: str) -> None:
        """``jobqueue: <text>`` on stderr."""
        print(f"jobqueue: {safe_text(text)}", file=self.stderr, flush=True)
