"""The documentation site builds with warnings as errors, and every page and example is in it.

The build needs the docs extra (``pip install -e ".[docs]"``; ``nox -s tests``
installs it). Without it the build test is skipped, with the reason; the
other checks here only read files.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SNIPPET = re.compile(r'^--8<-- "([^"]+)"\s*$', re.MULTILINE)


def _nav_pages() -> list[str]:
    """The ``.md`` files the ``nav`` of mkdocs.yml lists (read as text: no YAML needed)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, re.MULTILINE)


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    nav = _nav_pages()
    missing = [p for p in pages if p not in nav]
    assert not missing, f"add these pages to the nav of mkdocs.yml: {missing}"
    assert sorted(nav) == pages, f"nav entries without a file: {set(nav) - set(pages)}"


def test_every_example_is_included_in_the_docs() -> None:
    included = {m for page in DOCS.rglob("*.md") for m in SNIPPET.findall(page.read_text())}
    for path in included:
        assert (ROOT / path).is_file(), f"a page includes {path}, which does not exist"
    examples = {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.py")}
    missing = sorted(examples - included)
    assert not missing, f'include these in a page with --8<-- "examples/...": {missing}'


def test_readme_commands_and_links() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines() == [
        "pip install -e . && python -m jobqueue demo",
        "pip install nox && nox -s tests",
    ]
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"


def _have_docs_tools() -> str | None:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f'{module} is not installed (pip install -e ".[docs]", or run nox -s tests)'
    return None


@pytest.mark.slow
@pytest.mark.skipif(_have_docs_tools() is not None, reason=str(_have_docs_tools()))
def test_site_builds_strict(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NO_MKDOCS_2_WARNING": "1",  # Material's banner about MkDocs 2.0, not about our docs
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    site = tmp_path / "site"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    # The pages are there, with the examples included from their files.
    cli = (site / "cli" / "index.html").read_text()
    assert "serve_metrics" in cli
    assert "text_string_to_metric_families" in cli  # examples/prometheus_scrape.py, included
    testing = (site / "testing" / "index.html").read_text()
    assert "run_until_idle" in testing
    api = (site / "api" / "index.html").read_text()
    assert "Runs jobs in this process and keeps them in a SQLite file." in api  # a docstring
    assert ":class:" not in api  # Sphinx roles are rewritten by mkdocs_hooks.py
    assert took < 120, f"the docs build took {took:.0f}s"
