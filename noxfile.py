"""Developer sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``bench``."""

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
