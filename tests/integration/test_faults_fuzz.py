"""Fuzzing (hypothesis): ids, handler names, lock keys, payloads, options, stored statuses.

The property everywhere: a call either works (and what it stored reads back
exactly) or raises a typed :class:`~jobqueue.errors.JobQueueError`; never
another exception, never a half-written or altered row, and the service keeps
working. Lock-key file names are fuzzed in tests/integration/test_locks_properties.py.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from _fault_util import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue import JobQueueService, TaskStatus, codec
from jobqueue.errors import (
    InvalidArgumentError,
    InvalidLockKey,
    InvalidStatusError,
    JobQueueError,
    PayloadError,
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ANY_CHAR = st.characters(exclude_categories=())  # surrogates and controls included
TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.text(ANY_CHAR, min_size=250, max_size=260),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "'; DROP TABLE jobs; --", "\n\r\t"]),
)
NOT_TEXT = st.one_of(
    st.none(), st.integers(), st.floats(), st.binary(max_size=8), st.lists(st.text(), max_size=2)
)

# JSON values that must round-trip exactly (string keys only: other keys are refused).
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(ANY_CHAR, max_size=30),
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(ANY_CHAR), inner, max_size=4)
    ),
    max_leaves=30,
)
BAD_LEAF = st.one_of(
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.sets(st.integers(), min_size=1, max_size=2),
    st.binary(min_size=1, max_size=4),
    st.builds(object),
    st.complex_numbers(allow_nan=False, allow_infinity=False),
)


def _bad(value: Any) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(st.just(value), min_size=1, max_size=1), st.just({"k": value}), st.just(value)
    )


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON: -0.0 == 0.0 and tuples are lists, nothing else differs."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# -- ids and handler names --------------------------------------------------------------------


@pytest.mark.slow
@FUZZ
@given(job_id=st.one_of(TEXT, NOT_TEXT.filter(lambda v: v is not None)))  # None: generated
async def test_fuzz_job_ids(make_service, db_path: Path, job_id: Any) -> None:
    svc = await _service(make_service)
    job, exc = await _attempt(svc.submit("h", {}, job_id=job_id, delay=3600))
    if exc is not None:
        assert isinstance(exc, InvalidArgumentError) or "already exists" in str(exc), exc
        return
    assert job.id == job_id
    assert (await svc.get(job_id)).id == job_id
    assert _raw_ids(db_path).count(job_id) == 1  # stored under exactly that id


@FUZZ
@given(name=st.one_of(TEXT, NOT_TEXT))
async def test_fuzz_handler_names(make_service, db_path: Path, name: Any) -> None:
    svc = await _service(make_service)

    async def fn(ctx, payload):
        return payload

    _, exc = await _attempt(_call(svc.register, name, fn))
    if exc is not None:
        if isinstance(name, list):
            return  # unhashable: see test_submit_with_an_unhashable_handler_name
        with pytest.raises(JobQueueError):
            await svc.submit(name, {})
        return
    job = await svc.submit(name, {"n": 1}, delay=3600)
    assert (await svc.get(job.id)).handler == name


async def test_submit_with_an_unhashable_handler_name(make_service) -> None:
    svc = await _service(make_service)
    with pytest.raises(InvalidArgumentError):
        await svc.submit([], {})


@FUZZ
@given(key=st.one_of(TEXT, NOT_TEXT))
async def test_fuzz_lock_keys(make_service, key: Any) -> None:
    svc = await _service(make_service)

    async def fn(ctx, payload):
        return payload

    _, exc = await _attempt(_call(svc.register, f"locked{_counter()}", fn, lock_key=key))
    assert exc is None or isinstance(exc, InvalidLockKey | InvalidArgumentError), exc


@FUZZ
@given(key=st.one_of(TEXT, NOT_TEXT))
async def test_fuzz_lock_keys_chosen_at_run_time(make_service, key: Any) -> None:
    """A key computed from the payload that cannot be used fails that job alone, typed."""
    svc = await _service(make_service)
    name = f"dyn{_counter()}"
    svc.register(name, _echo, lock_key=lambda payload: key)
    job = await svc.submit(name, {"k": 1})
    result, exc = await _attempt(svc.wait(job.id, timeout=20))
    stored = await svc.get(job.id)
    if exc is None:
        assert result == {"k": 1}
    else:
        assert stored.status is TaskStatus.FAILED, exc
        assert stored.error_type in {"InvalidLockKey", "InvalidArgumentError"}, stored.error


# -- payloads ---------------------------------------------------------------------------------


@FUZZ
@given(payload=JSON)
async def test_fuzz_json_payloads_round_trip(make_service, payload: Any) -> None:
    svc = await _service(make_service)
    try:
        job = await svc.submit("h", payload, delay=3600)
    except PayloadError:
        assert len(json.dumps(payload)) > 64 * 1024  # only the size cap may refuse JSON
        return
    assert _same((await svc.get(job.id)).payload, payload)


@FUZZ
@given(payload=st.one_of(BAD_LEAF.flatmap(_bad), st.integers(1, 4).map(lambda k: "x" * k * 70_000)))
async def test_fuzz_non_json_payloads_refused(make_service, db_path: Path, payload: Any) -> None:
    svc = await _service(make_service)
    before = _raw_ids(db_path)
    with pytest.raises(PayloadError):
        await svc.submit("h", payload)
    with pytest.raises(PayloadError):
        await svc.submit_many("h", [{"ok": 1}, payload])
    assert _raw_ids(db_path) == before  # nothing half-kept


@pytest.mark.parametrize("depth", [10, 500, 990, 1_000, 5_000, 100_000])
async def test_deeply_nested_payloads(make_service, depth: int) -> None:
    svc = await _service(make_service)
    job, exc = await _attempt(svc.submit("h", _nested(depth), delay=3600))
    if exc is not None:
        assert isinstance(exc, PayloadError), exc
        assert "nested" in str(exc)
        return
    assert _same((await svc.get(job.id)).payload, _nested(depth))


async def test_huge_integer_payload_is_refused_typed(make_service) -> None:
    svc = await _service(make_service)
    with pytest.raises(PayloadError):
        await svc.submit("h", {"n": 10**5000})  # over Python's int-to-text digit limit


@pytest.mark.parametrize(
    "payload",
    [
        {1: "a"},
        {1: "a", "1": "b"},
        {None: 0},
        {True: 1},
        {1.5: 2},
        {"a": {2: 3}},
        [{"b": [{None: 1}]}],
        ({"ok": 1}, {7: 0}),
    ],
    ids=str,
)
async def test_non_string_keys_are_refused_not_rewritten(make_service, payload: Any) -> None:
    svc = await _service(make_service)
    with pytest.raises(PayloadError):
        await svc.submit("h", payload, delay=3600)


def _cycle() -> dict[str, Any]:
    loop: dict[str, Any] = {"a": []}
    loop["a"].append(loop)
    return loop


async def test_a_payload_that_contains_itself_is_refused_typed(make_service) -> None:
    svc = await _service(make_service)
    with pytest.raises(PayloadError, match="refers to itself"):
        await svc.submit("h", _cycle())


@FUZZ
@given(value=JSON)
def test_fuzz_codec_agrees_with_the_json_module(value: Any) -> None:
    """The prebuilt C encoder and the scanner fast path give json's own answers."""
    text = codec.encode(value, limit=1 << 30)
    assert text == json.dumps(value, separators=(",", ":"), allow_nan=False)
    assert _same(codec.decode(text), value)
    assert _same(codec.decode(text.encode() + b"\n\n"), value)  # an event item's bytes
    for junk in (" x", "\n\nx", "\n\n{}\n\n", ","):
        with pytest.raises(json.JSONDecodeError):
            codec.decode(text + junk)


# -- other submit options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        {"session_id": 123},
        {"session_id": "\udc80"},
        {"description": object()},
        {"description": b"x"},
    ],
    ids=["int-session", "surrogate-session", "object-description", "bytes-description"],
)
async def test_bad_session_or_description_is_refused_alone(make_service, option: dict) -> None:
    svc = await _service(make_service)
    good, bad = await asyncio.gather(
        svc.submit("h", {}, job_id="good", delay=3600),
        svc.submit("h", {}, job_id="bad", delay=3600, **option),
        return_exceptions=True,
    )
    assert not isinstance(good, BaseException), good  # a neighbour in the batch is unharmed
    assert isinstance(bad, InvalidArgumentError), bad


# -- statuses found in the database -----------------------------------------------------------


@FUZZ
@given(
    value=st.one_of(
        st.text(ANY_CHAR.filter(lambda c: not 0xD800 <= ord(c) <= 0xDFFF), max_size=12),
        st.sampled_from([s.value.upper() for s in TaskStatus] + [" running", "Pending", "done"]),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False),
        st.binary(max_size=8),
    )
)
async def test_fuzz_status_values_found_in_the_database(
    make_service, db_path: Path, value: Any
) -> None:
    svc = await _service(make_service)
    job_id = f"raw-{_counter()}"
    _insert_raw(db_path, job_id, value)
    value = _raw_status(db_path, job_id)  # as stored (TEXT affinity turns 0 into '0')
    job, exc = await _attempt(svc.get(job_id))
    if exc is not None:
        assert isinstance(exc, InvalidStatusError), exc
        assert repr(job_id) in str(exc)
        assert _invalid(value)
    else:
        assert job.status.value == value
    with pytest.raises(JobQueueError) if _invalid(value) else _nothing():
        await svc.list(limit=10_000)
    assert _raw_status(db_path, job_id) == value  # never rewritten behind our back
    svc.stats()
    await svc.submit("h", {}, delay=3600)  # the service keeps working
    _delete_raw(db_path, job_id)


# -- no pickle --------------------------------------------------------------------------------


def test_no_pickle_anywhere() -> None:
    """Nothing in the library can deserialize code: no pickle, marshal, shelve, dill."""
    banned = {
        "pickle",
        "cPickle",
        "_pickle",
        "marshal",
        "shelve",
        "dill",
        "cloudpickle",
        "jsonpickle",
    }
    found = []
    for path in sorted((ROOT / "jobqueue").rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in banned]
    assert not found, found


# -- helpers ----------------------------------------------------------------------------------


async def _echo(ctx, payload):
    return payload


async def _attempt(aw: Any) -> tuple[Any, JobQueueError | None]:
    """Await; a typed error is returned, any other exception fails the test."""
    try:
        return await aw, None
    except JobQueueError as exc:
        return None, exc


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


async def _service(make_service) -> JobQueueService:
    """One service per test, shared by its examples (the fixture closes it)."""
    svc = getattr(make_service, "_fuzz_service", None)
    if svc is None:
        svc = await make_service(poll_interval=0.05, max_payload_bytes=64 * 1024)
        svc.declare("h")
        make_service._fuzz_service = svc
    return svc


_count = [0]


def _counter() -> int:
    _count[0] += 1
    return _count[0]


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), timeout=10, isolation_level=None)


def _raw_ids(path: Path) -> list[str]:
    conn = _connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM jobs ORDER BY seq")]
    finally:
        conn.close()


def _insert_raw(path: Path, job_id: str, status: Any) -> None:
    conn = _connect(path)
    try:
        conn.execute(
            "INSERT INTO jobs (id, handler, payload, status, created_at, updated_at, run_at) "
            "VALUES (?, 'h', '{}', ?, 0, 0, 1e12)",
            (job_id, status),
        )
    finally:
        conn.close()


def _raw_status(path: Path, job_id: str) -> Any:
    conn = _connect(path)
    try:
        return conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    finally:
        conn.close()


def _delete_raw(path: Path, job_id: str) -> None:
    conn = _connect(path)
    try:
        conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
    finally:
        conn.close()


def _invalid(value: Any) -> bool:
    return not (isinstance(value, str) and value in set(TaskStatus))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
