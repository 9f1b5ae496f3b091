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


BENCH_SCRIPTS = ("throughput", "recovery")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks (JSON lines on stdout).

    ``nox -s bench -- [--quick]`` runs throughput.py then recovery.py;
    ``nox -s bench -- recovery --repeat 3`` runs one script with its own options.
    """
    session.install("-e", ".")
    args = list(session.posargs)
    if args and args[0] in BENCH_SCRIPTS:
        session.run("python", f"bench/{args[0]}.py", *args[1:])
        return
    session.run("python", "bench/throughput.py", *args)
    if not any(a.startswith("--only") for a in args):  # a throughput.py selection: that only
        session.run("python", "bench/recovery.py", *[a for a in args if a == "--quick"])
