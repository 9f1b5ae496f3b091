"""The package's layout, checked on its source: no import cycles, and SQL only in jobqueue/store/.

Both read the files with ``ast`` and import nothing, so they say what is wrong
even when the package cannot be imported.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "jobqueue"
STORE = PACKAGE / "store"


# -- the modules and their imports -----------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    """``{module name: file}`` of every module of the package (``__init__`` is the package)."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _packages(modules: dict[str, Path]) -> set[str]:
    """Every package, those without an ``__init__.py`` (namespace packages) too."""
    found = {PACKAGE.name}
    for path in PACKAGE.rglob("*"):
        if path.is_dir() and any(path.glob("*.py")):
            found.add(_module_name(path / "__init__.py"))
    return found | {name for name, p in modules.items() if p.name == "__init__.py"}


@dataclass(frozen=True)
class Edge:
    target: str
    line: int


def _imports(name: str, path: Path, modules: set[str], packages: set[str]) -> Iterator[Edge]:
    """The package's modules that ``name`` imports: at the top, in functions, under
    ``if TYPE_CHECKING:``, anywhere in the file.

    ``from p import x`` is an import of the module ``p.x`` when there is one, else of ``p``.
    ``import a.b.c`` is an import of ``a.b.c`` (the packages it runs on the way are left
    out: every module would import ``jobqueue`` and each package's ``__init__``).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in modules and target not in packages:
                    target = target.rpartition(".")[0]
                if target in modules:
                    yield Edge(target, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base != PACKAGE.name and not base.startswith(PACKAGE.name + "."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    yield Edge(sub, node.lineno)
                elif base in modules:
                    yield Edge(base, node.lineno)


def import_graph() -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    """``{module: {imported module: line of the first such import}}`` and the files."""
    sources = _sources()
    modules, packages = set(sources), _packages(sources)
    graph: dict[str, dict[str, int]] = {}
    for name, path in sources.items():
        edges: dict[str, int] = {}
        for edge in _imports(name, path, modules, packages):
            if edge.target not in edges or edge.line < edges[edge.target]:
                edges[edge.target] = edge.line
        graph[name] = edges
    return graph, sources


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components (iterative), each sorted; only those that hold a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    members = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.append(member)
                        if member == node:
                            break
                    if len(members) > 1 or node in graph[node]:
                        found.append(sorted(members))
    return sorted(found)


def _shortest_cycle(graph: dict[str, dict[str, int]], start: str, within: set[str]) -> list[str]:
    """The shortest cycle through ``start`` inside one component: [start, ..., start]."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child not in within:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a component but on no cycle")  # pragma: no cover


def _describe_cycle(
    cycle: list[str], graph: dict[str, dict[str, int]], sources: dict[str, Path]
) -> str:
    steps = [
        f"      {a}  imports  {b}   ({sources[a].relative_to(ROOT)}:{graph[a][b]})"
        for a, b in itertools.pairwise(cycle)
    ]
    return "    " + " -> ".join(cycle) + "\n" + "\n".join(steps)


def test_imports_are_resolved_in_every_form(tmp_path: Path) -> None:
    """The walk itself, on a made-up module ``jobqueue.pkg.mod``."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from __future__ import annotations\n"
        "import os\n"
        "import jobqueue.store.jobs\n"  # 3
        "from jobqueue import errors, JobQueueService\n"  # 4: a module, and a name
        "from . import sibling\n"  # 5
        "from .sibling import thing\n"  # 6
        "from .. import codec\n"  # 7
        "from ..store import writer\n"  # 8
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from jobqueue.status import TaskStatus\n"  # 11
        "def later():\n"
        "    from jobqueue.runtime import runner\n"  # 13: a package without __init__
        "    import jobqueue.store.claim as claim\n",  # 14
        encoding="utf-8",
    )
    modules = {
        "jobqueue",
        "jobqueue.codec",
        "jobqueue.errors",
        "jobqueue.status",
        "jobqueue.pkg",
        "jobqueue.pkg.mod",
        "jobqueue.pkg.sibling",
        "jobqueue.store",
        "jobqueue.store.claim",
        "jobqueue.store.jobs",
        "jobqueue.store.writer",
        "jobqueue.runtime.runner",
    }
    packages = {"jobqueue", "jobqueue.pkg", "jobqueue.store", "jobqueue.runtime"}
    edges = sorted(
        (e.line, e.target) for e in _imports("jobqueue.pkg.mod", source, modules, packages)
    )
    assert edges == [
        (3, "jobqueue.store.jobs"),
        (4, "jobqueue"),
        (4, "jobqueue.errors"),
        (5, "jobqueue.pkg.sibling"),
        (6, "jobqueue.pkg.sibling"),
        (7, "jobqueue.codec"),
        (8, "jobqueue.store.writer"),
        (11, "jobqueue.status"),
        (13, "jobqueue.runtime.runner"),
        (14, "jobqueue.store.claim"),
    ]


def test_the_whole_package_is_read() -> None:
    graph, sources = import_graph()
    assert len(sources) > 40
    assert "jobqueue.service" in graph["jobqueue"]  # from jobqueue.service import ...
    assert all(target in graph for edges in graph.values() for target in edges)


def test_no_import_cycles() -> None:
    graph, sources = import_graph()
    components = _strongly_connected(graph)
    if not components:
        return
    lines = [f"{len(components)} group(s) of modules import each other in a cycle:"]
    for members in components:
        lines.append(f"\n  {len(members)} modules: {', '.join(members)}")
        shown: set[tuple[str, ...]] = set()
        for start in members:
            cycle = _shortest_cycle(graph, start, set(members))
            key = tuple(sorted(set(cycle)))
            if key in shown:
                continue
            shown.add(key)
            lines.append(_describe_cycle(cycle, graph, sources))
    pytest.fail("\n".join(lines), pytrace=False)


# -- SQL outside the store --------------------------------------------------------------------

# The start of a statement, in upper case as the package writes SQL. Each keyword must be
# followed by what makes it SQL, so that an HTTP method ("DELETE") or a word in a message
# is not taken for a statement.
SQL_START = re.compile(
    r"""^\s*(?:
        SELECT\s+\S
      | INSERT\s+(?:OR\s+[A-Z]+\s+)?INTO\b
      | REPLACE\s+INTO\b
      | UPDATE\s+(?:OR\s+[A-Z]+\s+)?\w+\s+SET\b
      | DELETE\s+FROM\b
      | (?:CREATE|DROP|ALTER)\s+(?:TEMP(?:ORARY)?\s+|UNIQUE\s+|VIRTUAL\s+)?
            (?:TABLE|INDEX|VIEW|TRIGGER)\b
      | PRAGMA\s+\w
      | WITH\s+(?:RECURSIVE\s+)?\w+(?:\s*\([^)]*\))?\s+AS\s*\(
      | (?:BEGIN|COMMIT|ROLLBACK|VACUUM|ANALYZE|REINDEX)
            (?:\s+(?:IMMEDIATE|EXCLUSIVE|DEFERRED|TRANSACTION|TO)\b.*)?\s*;?\s*$
      | (?:SAVEPOINT|RELEASE)\s+\w+\s*$
    )""",
    re.VERBOSE | re.DOTALL,
)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose, not SQL)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(
            node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        ) and (
            node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        ):
            found.add(id(node.body[0].value))
    return found


def sql_literals(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of each string literal of ``path`` that starts an SQL statement.

    An f-string counts by its leading text (``f"UPDATE jobs SET {column} = ?"``).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstrings = _docstrings(tree)
    in_fstring: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            in_fstring.update(id(v) for v in node.values)
            first = node.values[0] if node.values else None
            if (
                isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and SQL_START.match(first.value)
            ):
                yield node.lineno, ast.unparse(node)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and id(node) not in in_fstring
            and SQL_START.match(node.value)
        ):
            yield node.lineno, node.value


def test_sql_pattern_tells_statements_from_words() -> None:
    for sql in (
        "SELECT id FROM jobs",
        "\n    SELECT count(*)\n    FROM jobs",
        "INSERT INTO jobs VALUES (?)",
        "INSERT OR IGNORE INTO owners VALUES (?)",
        "UPDATE jobs SET status = ?",
        "DELETE FROM jobs WHERE id = ?",
        "CREATE TABLE t (x)",
        "CREATE UNIQUE INDEX i ON t (x)",
        "PRAGMA user_version",
        "BEGIN IMMEDIATE",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT finish_all",
        "WITH picked AS (SELECT 1) SELECT * FROM picked",
    ):
        assert SQL_START.match(sql), sql
    for word in ("DELETE", "UPDATE", "SELECT", "CREATE", "BEGIN:", "Select one", "select 1", "x"):
        assert not SQL_START.match(word), word


def test_no_sql_outside_the_store() -> None:
    found: list[tuple[str, int, str]] = []
    files = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(STORE):
            continue
        files += 1
        for line, text in sql_literals(path):
            snippet = " ".join(text.split())
            if len(snippet) > 90:
                snippet = snippet[:87] + "..."
            found.append((str(path.relative_to(ROOT)), line, snippet))
    assert files > 10  # the walk found the package
    if found:
        found.sort()
        per_file: dict[str, int] = {}
        for name, _, _ in found:
            per_file[name] = per_file.get(name, 0) + 1
        summary = ", ".join(f"{name} ({n})" for name, n in per_file.items())
        pytest.fail(
            f"{len(found)} SQL statement(s) outside jobqueue/store/, in {summary}:\n"
            + "\n".join(f"  {name}:{line}: {snippet}" for name, line, snippet in found),
            pytrace=False,
        )
