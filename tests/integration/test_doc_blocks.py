"""Every ```python block of README.md and docs/*.md runs as written, or says why it does not.

Each block runs in a fresh interpreter, in a temporary working directory, with a
timeout; it must exit 0 without a traceback. What a block is, is read from the
Markdown, so a page and its code cannot drift apart unnoticed:

- ``<!-- fragment -->`` on the line just before the fence: a fragment (it uses
  names defined elsewhere, or shows a signature). Not run, but counted: most
  blocks must run (``test_most_blocks_run``).
- ``<!-- needs: redis -->`` (or ``needs: celery, redis``): run only when each need
  is there (redis: a server answering PING at 127.0.0.1:6379; any other name: an
  importable module); skipped with the reason otherwise.
- A block whose first line is ``# some/path.py`` (or ``.toml``...) is a file of the
  reader's project: it is written at that path in the working directory of every
  later block of the same page (so ``from myapp.jobs import register`` works, and
  a ``# pyproject.toml`` block configures pytest), and a Python one is run too.
- A block that defines ``test_...`` functions runs under pytest, which must
  report it passed without a warning.
- A block that only includes an example (``--8<-- "examples/x.py"``) is run by
  tests/integration/test_examples.py, not here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Slow (an interpreter per documentation block): in the whole suite (3.11), not the quick one.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 30.0

_FENCE = re.compile(r"^(\s*)```(\w*)")
_MARKER = re.compile(r"^\s*<!--\s*(.*?)\s*-->\s*$")
_SNIPPET = re.compile(r'^--8<-- "[^"]+"\s*$')
_FILE_HEADER = re.compile(r"^#\s*([\w./-]+\.(?:py|toml|cfg|ini|txt|json))\s*$")
_PYTEST = re.compile(r"^(?:async\s+)?def\s+test_\w*\s*\(", re.MULTILINE)


@dataclass
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None  # the HTML comment just before the fence
    files: dict[str, str] = field(default_factory=dict)  # the page's file blocks before it

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def path(self) -> str | None:
        """The file this block is (``# myapp/jobs.py`` as its first line), if any."""
        first = self.code.split("\n", 1)[0]
        match = _FILE_HEADER.match(first)
        return match.group(1) if match else None

    @property
    def included(self) -> bool:
        lines = [line for line in self.code.splitlines() if line.strip()]
        return bool(lines) and all(_SNIPPET.match(line) for line in lines)

    @property
    def fragment(self) -> bool:
        return self.marker == "fragment"

    @property
    def needs(self) -> list[str]:
        if self.marker and self.marker.startswith("needs:"):
            return [n.strip() for n in self.marker[len("needs:") :].split(",") if n.strip()]
        return []


def _blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, each with the marker before it and the files before it."""
    lines = page.read_text().splitlines()
    rel = page.relative_to(ROOT).as_posix()
    blocks: list[Block] = []
    files: dict[str, str] = {}
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = opening.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        body = "\n".join(line[len(indent) :] for line in lines[i + 1 : end]) + "\n"
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marked = _MARKER.match(lines[before]) if before >= 0 else None
        block = Block(rel, i + 1, lang, body, marked.group(1) if marked else None, dict(files))
        blocks.append(block)
        if block.path:
            files[block.path] = body
        i = end + 1
    return blocks


ALL = [b for page in PAGES for b in _blocks(page)]
PYTHON = [b for b in ALL if b.lang == "python"]
RUN = [b for b in PYTHON if not b.fragment and not b.included]


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _missing(need: str) -> str | None:
    if need == "redis":
        return None if _redis_answers() else "redis-server is not answering at 127.0.0.1:6379"
    if importlib.util.find_spec(need) is None:
        return f"{need} is not installed"
    return None


def test_markers_are_known() -> None:
    """A misspelt marker would silently run (or skip) a block: only known ones are allowed."""
    for block in ALL:
        # Only ```python blocks are run: another spelling of Python would escape the check.
        assert block.lang not in {"py", "py3", "python3", "pycon"}, f"{block.id}: use ```python"
        if block.marker is None:
            continue
        assert block.lang == "python", f"{block.id}: a marker before a {block.lang!r} block"
        ok = block.marker == "fragment" or (block.needs and block.marker.startswith("needs:"))
        assert ok, f"{block.id}: unknown marker <!-- {block.marker} -->"
        assert not block.included, f"{block.id}: an included example needs no marker"


def test_most_blocks_run() -> None:
    """Marking every block a fragment would make this file pass without checking anything."""
    fragments = [b.id for b in PYTHON if b.fragment]
    assert len(PYTHON) >= 20, f"found only {len(PYTHON)} python blocks: is the parser broken?"
    assert len(RUN) >= 8, f"only {len(RUN)} blocks run"
    assert len(fragments) * 2 <= len(PYTHON), (
        f"{len(fragments)} of {len(PYTHON)} python blocks are marked fragments: "
        f"make some of them run as written ({fragments})"
    )


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_block_runs(block: Block, tmp_path: Path) -> None:
    for need in block.needs:
        reason = _missing(need)
        if reason:
            pytest.skip(f"{block.id} needs {need}: {reason}")
    for path, text in block.files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    is_test = bool(_PYTEST.search(block.code))
    name = block.path or ("test_block.py" if is_test else "block.py")
    script = tmp_path / name
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(block.code)
    if is_test:
        args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", ".", name]
    else:
        args = [name]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{block.id} exited {proc.returncode}:\n{out}"
    assert "Traceback" not in out, f"{block.id} printed a traceback:\n{out}"
    if is_test:
        assert re.search(r"\d+ passed", out), f"{block.id}: no test passed:\n{out}"
        assert "warning" not in out.lower(), f"{block.id}: pytest warned:\n{out}"
