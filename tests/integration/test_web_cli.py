"""``python -m jobqueue web``: bind rules, the printed URL, the Host check, prompt shutdown."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from jobqueue import JobQueueService
from jobqueue.cli.main import main
from jobqueue.cli.web import is_loopback


@pytest.fixture
async def db(tmp_path: Path) -> str:
    path = str(tmp_path / "jobs.db")
    async with JobQueueService(path, persist_events=True) as service:
        service.declare("x")
        await service.submit("x", {"n": 1})
    return path


def test_loopback_names() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.com"))


def test_no_token_is_refused_off_loopback(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["web", "--db", db, "--host", "0.0.0.0", "--port", "0", "--no-token"]) == 2
    assert "--no-token" in capsys.readouterr().err


def test_a_damaged_file_is_refused_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not sqlite " * 300)
    assert main(["web", "--db", str(bad), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "is not a SQLite database" in err
    assert bad.read_bytes() == b"not sqlite " * 300


def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    assert main(["web", "--db", str(missing), "--port", "0"]) == 2
    assert not missing.exists()


async def test_serves_signs_in_checks_host_and_stops_promptly_with_a_stream_open(db: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "jobqueue", "web", "--db", db, "--port", "0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = (await proc.stdout.readline()).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        assert "?token=" in url
        base = url.split("?")[0]
        async with httpx.AsyncClient(timeout=5, follow_redirects=True) as c:
            assert (await c.get(base + "api/jobs")).status_code == 401
            page = await c.get(url)  # the token for the cookie, then the page without it
            assert page.status_code == 200
            assert str(page.url) == base
            rows = (await c.get(base + "api/jobs")).json()["rows"]
            assert len(rows) == 1
            rebound = await c.get(base + "api/jobs", headers={"host": "evil.example"})
            assert rebound.status_code == 403
            # A stream that stays open (the job never runs here): SIGTERM must not wait for it.
            async with c.stream("GET", base + f"api/jobs/{rows[0]['id']}/events") as r:
                assert r.status_code == 200
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                async for _ in r.aiter_bytes():
                    pass
            async with asyncio.timeout(10):
                code = await proc.wait()
            assert code == 0
            assert time.monotonic() - started < 3.0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
