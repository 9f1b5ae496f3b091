"""Injection: ids and names with quotes, newlines and control characters.

They are stored and read back byte for byte (parameterised SQL only), log
lines never carry them raw (a newline in an id cannot forge a log line), and
Prometheus label values are escaped so a scrape still parses.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest
from _fault_util import ROOT, report
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobqueue import TaskStatus
from jobqueue.errors import DuplicateJobError, JobFailedError, JobQueueError
from jobqueue.telemetry import JobMetrics

NASTY = [
    "x'); DROP TABLE jobs; --",
    'say "hi"',
    "quote'n\"both",
    "two\nlines",
    "cr\rlf\r\n",
    "tab\tsep",
    "\x1b[31mred\x1b[0m",
    "bell\x07",
    "\u202eevil",
    "%s%s%n %(x)s {0}{}",
    "back\\slash\\",
    " lead and trail ",
    "-- comment",
    "1 OR 1=1",
    "ünïcödé ☃ 𝄞",
    "job\nINFO jobqueue.runtime.runner: forged line",
]
CONTROL = {chr(c) for c in range(32)} | {"\x7f", "\u202e"}


def _tables(path: Path) -> list[str]:
    conn = sqlite3.connect(str(path))
    try:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
    finally:
        conn.close()


async def test_nasty_ids_and_names_round_trip_exactly(make_service, db_path: Path) -> None:
    svc = await make_service(poll_interval=0.05)
    tables = _tables(db_path)

    async def echo(ctx, payload):
        return {"id": ctx.job_id, "payload": payload}

    for i, name in enumerate(NASTY):
        svc.register(name, echo)
        job_id = f"{name}#{i}"
        job = await svc.submit(
            name, {"s": name}, job_id=job_id, session_id=name, idempotency_key=job_id
        )
        assert job.id == job_id
        result = await svc.wait(job_id, timeout=20)
        assert result == {"id": job_id, "payload": {"s": name}}
        stored = await svc.get(job_id)
        assert (stored.id, stored.handler, stored.session_id) == (job_id, name, name)
        listed = await svc.list(handler=name, session_id=name)
        assert [j.id for j in listed] == [job_id]
        again = await svc.submit(name, {}, job_id=job_id, idempotency_key=job_id)
        assert again.id == job_id  # the key finds it: compared as data, not as SQL
        with pytest.raises(DuplicateJobError) as ei:
            await svc.submit(name, {}, job_id=job_id)
        assert repr(job_id) in str(ei.value)
        later = await svc.submit(name, {}, job_id=f"{job_id}-later", delay=3600)
        assert (await svc.cancel(later.id)).status is TaskStatus.CANCELLED
    assert _tables(db_path) == tables
    conn = sqlite3.connect(str(db_path))
    try:
        ids = {r[0] for r in conn.execute("SELECT id FROM jobs")}
    finally:
        conn.close()
    assert ids == {f"{n}#{i}" for i, n in enumerate(NASTY)} | {
        f"{n}#{i}-later" for i, n in enumerate(NASTY)
    }
    report("injection_round_trip", names=len(NASTY), jobs=len(ids))


@pytest.mark.slow
async def test_log_lines_never_carry_raw_control_characters(
    make_service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobqueue")
    svc = await make_service(poll_interval=0.05, cancel_grace=0.3, stop_timeout=0.3)
    gate = asyncio.Event()

    async def fail(ctx, payload):
        raise ValueError("handler failed")

    async def stuck(ctx, payload):
        try:
            await gate.wait()
        except asyncio.CancelledError:
            await asyncio.sleep(1.0)  # ignores cancellation past cancel_grace
            raise

    for i, name in enumerate(NASTY):
        svc.register(name, fail)
        with pytest.raises(JobFailedError):
            await svc.wait((await svc.submit(name, {}, job_id=f"{name}#f{i}")).id, timeout=20)
        svc.register(f"{name}~stuck", stuck)
        job = await svc.submit(f"{name}~stuck", {}, job_id=f"{name}#s{i}", timeout=0.2)
        with pytest.raises(JobQueueError):
            await svc.wait(job.id, timeout=20)
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("jobqueue")]
    assert logged, "nothing was logged: the test exercises no log line"
    raw = [m for m in logged if CONTROL & set(m)]
    report("injection_logs", log_lines=len(logged), with_raw_control_chars=len(raw))
    assert not raw, raw[:3]


async def test_metric_labels_are_escaped(make_service) -> None:
    registry = CollectorRegistry()
    metrics = JobMetrics(prometheus_registry=registry)
    try:
        svc = await make_service(poll_interval=0.05, metrics=metrics)

        async def ok(ctx, payload):
            return None

        names = [n for n in NASTY if n.strip()]
        for name in names:
            svc.register(name, ok)
            await svc.wait((await svc.submit(name, {})).id, timeout=20)
        text = generate_latest(registry).decode()
    finally:
        metrics.shutdown()
    seen: set[str] = set()
    for family in text_string_to_metric_families(text):  # raises on a broken line
        for sample in family.samples:
            if "handler" in sample.labels:
                seen.add(sample.labels["handler"])
    assert set(names) <= seen, set(names) - seen
    samples = sum(len(f.samples) for f in text_string_to_metric_families(text))
    lines = [ln for ln in text.split("\n") if ln and not ln.startswith("#")]
    assert len(lines) == samples  # one sample per line: no label value broke a line


# -- parameterised SQL only -------------------------------------------------------------------

# f-string interpolations of a function's own parameter into SQL that are known safe.
_SAFE = {("connection.py", "synchronous")}  # checked to be "NORMAL" or "FULL" by the service


def _param_names(expr: ast.expr) -> list[str]:
    """Names an interpolated expression reads, skipping ones only used to pick constants."""
    if (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Name)
        and expr.func.id
        in {
            "int",
            "len",
        }
    ):
        return []  # a number cannot inject
    if isinstance(expr, ast.IfExp):  # the test only chooses between the branches
        return _param_names(expr.body) + _param_names(expr.orelse)
    if isinstance(expr, ast.Name):
        return [expr.id]
    return [n for child in ast.iter_child_nodes(expr) for n in _param_names(child)]


def test_sql_text_never_interpolates_a_parameter() -> None:
    """No f-string SQL interpolates a function's parameter (values must be bound with ?).

    Interpolating module constants (column lists) and local fragments built from
    '?' placeholders is fine; a parameter could be user data.
    """
    flagged = []
    checked = 0
    for path in sorted((ROOT / "jobqueue").rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            a = fn.args
            params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
            for node in ast.walk(fn):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"execute", "executemany"}
                    and node.args
                    and isinstance(node.args[0], ast.JoinedStr)
                ):
                    continue
                checked += 1
                for part in node.args[0].values:
                    if not isinstance(part, ast.FormattedValue):
                        continue
                    for name in _param_names(part.value):
                        if name in params and (path.name, name) not in _SAFE:
                            flagged.append(f"{path.name}:{fn.name}: {ast.unparse(part.value)}")
    assert checked > 5, "the scan found no f-string SQL at all: is it still looking?"
    assert not flagged, flagged
