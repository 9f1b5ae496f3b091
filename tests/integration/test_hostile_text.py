"""Job text shown by the command line is shown, never obeyed.

Ids, handler names, descriptions, session ids, payloads, results, errors,
tracebacks and event data are chosen by whoever submits or runs a job. The
commands that print them (``list``, ``show``, ``stats``, ``check``, ``demo``,
the control commands) run here as real processes on a file written by a real
service, three ways: piped, on a pseudo-terminal where ``rich`` draws without
colour (``TERM=dumb``) and on one where it draws in colour. The output must
hold no escape sequence of the job's, no BEL, no live markup (``[link=...]``,
``[blink]``), no traceback, and must show the escaped form (``\\x1b``,
``\\u202e``) instead.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import select
import shutil
import sqlite3
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobContext, JobQueueService

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = shutil.which("jobqueue", path=str(Path(sys.executable).parent))
CLI = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "jobqueue"]

TITLE = "\x1b]0;PWNED\x07"  # sets the terminal window's title
CLEAR = "\x1b[2J"  # clears the screen
OSC8 = "\x1b]8;;http://evil.example\x1b\\here\x1b]8;;\x1b\\"  # a terminal hyperlink
MARKUP = "[link=http://evil.example]click[/link] [blink]b[/blink] [/bold]"
OTHER = "\u202e\x9b\x7f\rend"  # bidi override, C1 CSI, DEL, CR
HOSTILE = f"{TITLE}{CLEAR}{OSC8} {MARKUP} {OTHER}"

FAILED_ID = "fail" + TITLE
DONE_ID = "done" + CLEAR + "[/bold]"
LATER_ID = "later\u202e[blink]x[/blink]"
HANDLER = "h" + TITLE + "[/bold]"
SESSION = "s" + CLEAR + "[link=http://evil.example]x[/link]"


def shown(text: str) -> str:
    """How the command line writes ``text``: each unsafe character as its Python escape."""
    return "".join(repr(c)[1:-1] if not c.isprintable() and c not in "\n\t" else c for c in text)


MODES = {
    "piped": None,
    "dumb-terminal": {"TERM": "dumb"},
    "colour-terminal": {"TERM": "xterm-256color", "FORCE_COLOR": "1", "COLORTERM": "truecolor"},
}


def _env(mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "TERM")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update({"COLUMNS": "250", "LINES": "60"})  # wide enough that nothing folds
    env.update(MODES[mode] or {})
    return env


def cli(mode: str, *argv: str | Path, timeout: float = 60) -> tuple[int, bytes]:
    """Run the installed command line; returns its exit code and stdout+stderr bytes."""
    cmd = [*CLI, *map(str, argv)]
    if MODES[mode] is None:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, env=_env(mode), timeout=timeout
        )
        return proc.returncode, proc.stdout + proc.stderr
    master, slave = os.openpty()
    tty.setraw(slave)  # no newline translation: the bytes are what the program wrote
    try:
        child = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=_env(mode)
        )
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            child.kill()
            pytest.fail(f"{cmd} did not finish in {timeout}s")
    finally:
        os.close(master)
    return child.wait(timeout=10), b"".join(chunks)


# Escape sequences rich itself writes on a colour terminal: styles (SGR), and for its
# live displays carriage return, cursor up, erase line, hide and show the cursor. The
# job's are none of these (OSC title and hyperlink, erase screen), and its CR is
# followed by "end".
_RICH_OWN = re.compile(rb"\x1b\[[0-9;]*m|\x1b\[[0-9]*[AK]|\x1b\[\?25[hl]|\r(?!end)")


def assert_inert(mode: str, out: bytes) -> str:
    """No escape sequence or control of the job's reached the output; returns it as text."""
    if mode == "colour-terminal":
        assert _RICH_OWN.search(out), "expected rich to style the output"
        out = _RICH_OWN.sub(b"", out)
    assert b"\x1b" not in out
    assert b"\x07" not in out
    assert b"\x7f" not in out
    assert b"\r" not in out
    text = out.decode("utf-8")  # strict: a lone surrogate could not have been written
    for raw in ("\x9b", "\u202e"):
        assert raw not in text
    assert "MarkupError" not in text
    assert "jobqueue/cli/" not in text  # no traceback of the command itself
    return text


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``main``: a failed, a completed and a delayed pending job, all hostile, events kept.

    ``terminal``: the same without the pending job (for ``demo --db``).
    """
    tmp = tmp_path_factory.mktemp("hostile")
    path = tmp / "jobs.db"

    async def fill() -> None:
        async with JobQueueService(path, persist_events=True) as svc:

            async def handler(ctx: JobContext, payload: Any) -> Any:
                await ctx.emit("token", {"chunk": HOSTILE})
                if payload.get("fail"):
                    raise ValueError(HOSTILE)
                return {"echo": HOSTILE, "surrogate": "\ud800"}

            svc.register(HANDLER, handler)
            opts: dict[str, Any] = {"description": HOSTILE, "session_id": SESSION}
            payload = {"text": HOSTILE, "surrogate": "\udc80"}
            await svc.submit(HANDLER, {**payload, "fail": True}, job_id=FAILED_ID, **opts)
            await svc.submit(HANDLER, payload, job_id=DONE_ID, **opts)
            await svc.run_until_idle()
            await svc.submit(HANDLER, payload, job_id=LATER_ID, delay=3600, **opts)

    asyncio.run(fill())
    terminal = tmp / "terminal.db"
    shutil.copy(path, terminal)
    with sqlite3.connect(terminal) as conn:
        conn.execute("DELETE FROM jobs WHERE id = ?", (LATER_ID,))
    conn.close()
    with sqlite3.connect(path) as conn:
        statuses = dict(conn.execute("SELECT id, status FROM jobs").fetchall())
    conn.close()
    assert statuses == {FAILED_ID: "failed", DONE_ID: "completed", LATER_ID: "pending"}
    return {"main": path, "terminal": terminal}


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_list_shows_hostile_ids_handlers_and_errors_as_text(
    mode: str, files: dict[str, Path]
) -> None:
    code, out = cli(mode, "list", "--db", files["main"])
    text = assert_inert(mode, out)
    assert code == 0, text
    for value in (FAILED_ID, DONE_ID, LATER_ID, HANDLER):
        assert shown(value) in text
    assert "ValueError: " + shown(TITLE + CLEAR) in text


def test_show_failed_job_error_traceback_events_as_text(mode: str, files: dict[str, Path]) -> None:
    code, out = cli(mode, "show", FAILED_ID, "--db", files["main"])
    text = assert_inert(mode, out)
    assert code == 0, text
    for value in (FAILED_ID, HANDLER, SESSION, HOSTILE):
        assert shown(value) in text
    assert text.count("ValueError: " + shown(HOSTILE)) == 2  # the error and the traceback's end
    assert '"text": "\\u001b]0;PWNED\\u0007' in text  # the payload, as JSON
    assert '"surrogate": "\\udc80"' in text
    assert '{"chunk": "\\u001b]0;PWNED\\u0007' in text  # the event data, as JSON


def test_show_completed_job_result_as_text(mode: str, files: dict[str, Path]) -> None:
    code, out = cli(mode, "show", DONE_ID, "--db", files["main"])
    text = assert_inert(mode, out)
    assert code == 0, text
    assert shown(DONE_ID) in text
    assert '"echo": "\\u001b]0;PWNED\\u0007' in text
    assert "\\ud800" in text


@pytest.mark.parametrize("watch", [False, True], ids=["once", "watch"])
def test_stats_shows_hostile_queue_names_as_text(
    mode: str, watch: bool, files: dict[str, Path]
) -> None:
    extra = ["--watch", "--count", "2", "--interval", "0.05"] if watch else []
    code, out = cli(mode, "stats", "--db", files["main"], *extra)
    text = assert_inert(mode, out)
    assert code == 0, text
    if mode == "piped" and watch:
        assert "pending=1" in text  # one line per report
    else:
        assert shown(HANDLER) + "=1" in text


def test_check_shows_a_hostile_stored_status_as_text(
    mode: str, files: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "status.db"
    shutil.copy(files["main"], copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE jobs SET status = ? WHERE id = ?", ("[/bold]" + TITLE, DONE_ID))
    conn.close()
    code, out = cli(mode, "check", "--db", copy)
    text = assert_inert(mode, out)
    assert code == 1, text
    assert "invalid status '[/bold]\\x1b]0;PWNED\\x07'" in text


@pytest.mark.slow
def test_demo_lists_earlier_hostile_jobs_as_text(
    mode: str, files: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "demo.db"
    shutil.copy(files["terminal"], copy)
    code, out = cli(mode, "demo", "--db", copy)
    text = assert_inert(mode, out)
    assert code == 0, text
    assert shown(HANDLER) in text
    assert "final statuses read back from the database file" in text


def test_control_command_echoes_a_hostile_id_as_text(
    files: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "control.db"
    shutil.copy(files["main"], copy)
    code, out = cli("piped", "cancel", LATER_ID, "--db", copy)
    text = assert_inert("piped", out)
    assert code == 0, text
    assert text == shown(LATER_ID) + " cancelled\n"


def test_log_lines_are_escaped() -> None:
    from jobqueue.cli.render import SafeFormatter

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(SafeFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("jobqueue.test_hostile_text")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            log.exception("job %s failed", FAILED_ID)
    finally:
        log.removeHandler(handler)
    text = buf.getvalue()
    assert "\x1b" not in text
    assert "\x07" not in text
    assert f"ERROR job {shown(FAILED_ID)} failed\nTraceback" in text
    assert "ValueError: " + shown(HOSTILE) in text
