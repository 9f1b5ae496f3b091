"""Developer sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``bench``,
``compat``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against a real SQLite file per test."""
    session.install("-e", ".[test,cli,docs,celery]")  # docs: test_docs.py builds the site
    session.run("pytest", "-q", "-ra", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "jobqueue", "tests", "examples", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "jobqueue", "tests", "examples", "bench")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the library."""
    session.install("-e", ".[cli,celery]", "mypy>=1.10")  # rich's, redis's and kombu's types
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


BENCH_SCRIPTS = ("throughput", "recovery", "events_stream", "metrics_overhead", "run")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks against the peers and write docs/benchmarks.md (bench/run.py).

    ``nox -s bench`` runs everything three times (about 10 minutes);
    ``nox -s bench -- --quick`` is a smoke run (its output goes to a temp dir);
    ``nox -s bench -- recovery --repeat 3`` runs one script with its own options.
    """
    session.install("-e", ".[bench]")
    args = list(session.posargs)
    if args and args[0] in BENCH_SCRIPTS:
        session.run("python", f"bench/{args[0]}.py", *args[1:])
        return
    session.run("python", "bench/run.py", *args)
