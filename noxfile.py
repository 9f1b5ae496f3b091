"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``, ``nox -s bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against a real SQLite file per test."""
    session.install("-e", ".[test,cli]")
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
    session.install("-e", ".", "mypy>=1.10")
    session.run("mypy", "--strict", "jobqueue")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks (JSON lines on stdout)."""
    session.install("-e", ".")
    session.run("python", "bench/throughput.py", *session.posargs)
