"""Developer sessions: ``nox -s tests``, ``quick``, ``lint``, ``typecheck``, ``docs``,
``bench``, ``compat``.

``nox -s tests`` runs the whole suite on Python 3.11 and the quick suite (the tests
not marked slow) on 3.12 and 3.13, on each of them that is installed: sessions
``tests-3.11``, ``tests-3.12``, ``tests-3.13``. ``nox -s quick`` runs the quick suite
on each, ``nox -s quick-3.11`` on one (under 90 s on a 2-core machine). Arguments
after ``--`` go to pytest: ``nox -s tests-3.13 -- -m ""`` runs everything on 3.13.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

#: The Pythons that pyproject.toml's classifiers list; the first runs the whole suite.
PYTHONS = ["3.11", "3.12", "3.13"]
FULL_PYTHON = PYTHONS[0]
QUICK = ("-m", "not slow")


def _install_for_tests(session: nox.Session) -> None:
    session.install("-e", ".[test,cli,docs,celery,redis,web]")  # docs: test_docs.py builds the site


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite against real SQLite files: whole on 3.11, quick on the others."""
    _install_for_tests(session)
    marks = () if session.python == FULL_PYTHON else QUICK
    session.run("pytest", "-q", "-ra", *marks, *session.posargs)


@nox.session(python=PYTHONS)
def quick(session: nox.Session) -> None:
    """The tests not marked slow (``pytest -m "not slow"``)."""
    _install_for_tests(session)
    session.run("pytest", "-q", "-ra", *QUICK, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "jobqueue", "tests", "examples", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "jobqueue", "tests", "examples", "bench")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the library."""
    # rich's, redis's, kombu's and starlette's types; pytest's for jobqueue.testing's plugin
    session.install("-e", ".[cli,celery,redis,web]", "mypy>=1.10", "pytest>=8")
    session.run("mypy", "--strict", "jobqueue")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with warnings as errors (mkdocs --strict).

    ``nox -s docs -- --site-dir /tmp/site`` builds elsewhere; ``mkdocs serve`` previews.
    """
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


#: Langflow's event module, the oracle of tests/compat. Installed without its dependencies
#: (an application's: langchain, mcp, uvicorn, ...); these are what its import needs.
LFX = "lfx==1.13.0"
LFX_IMPORT_DEPS = (
    "fastapi>=0.135,<1",
    "pydantic>=2,<2.14",
    "typing-extensions>=4.14",
    "structlog>=25.4,<26",
    "loguru>=0.7.3,<1",
    "orjson>=3.11.6,<4",
    "platformdirs>=4.3.8,<5",
    "pandas>=2,<3",
    "langchain-core>=1.2.28,<2",
)


@nox.session
def compat(session: nox.Session) -> None:
    """Differential test: the same calls on lfx 1.13's EventManager and on jobqueue's.

    lfx goes into this session's virtualenv only; it is never a dependency of jobqueue.
    """
    session.install("-e", ".[test]", *LFX_IMPORT_DEPS)
    session.install("--no-deps", LFX)
    session.run("pytest", "-q", "-ra", "tests/compat", *session.posargs)


BENCH_SCRIPTS = ("throughput", "paths", "recovery", "events_stream", "metrics_overhead", "run")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks against the peers and write docs/benchmarks.md (bench/run.py).

    ``nox -s bench`` runs everything three times (about 10 minutes);
    ``nox -s bench -- --quick`` is a smoke run (its output goes to a temp dir);
    ``nox -s bench -- recovery --repeat 3`` runs one script with its own options.
    """
    # Langflow's EventManager for the events step's langflow_burst column, as compat does.
    session.install("-e", ".[bench]", *LFX_IMPORT_DEPS)
    session.install("--no-deps", LFX)
    args = list(session.posargs)
    if args and args[0] in BENCH_SCRIPTS:
        session.run("python", f"bench/{args[0]}.py", *args[1:])
        return
    session.run("python", "bench/run.py", *args)


@nox.session
def screenshot(session: nox.Session) -> None:
    """Redraw docs/img/web.png and web-job.png from headless Chromium (needs chromium and
    chromedriver on PATH, e.g. Debian's chromium and chromium-driver)."""
    session.install("-e", ".[web,test]")
    session.run("python", "docs/img/web_screenshot.py")
