"""The Prometheus endpoint against clients that connect and never finish their request.

A connection costs the endpoint a thread only once its request head has
arrived; half-sent requests are closed ``timeout`` seconds after they were
accepted, and a normal scrape is answered meanwhile. Only ``/metrics`` is
served. Real sockets throughout, in this process and against the
``jobqueue metrics`` command in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from jobqueue import JobContext, JobQueueService
from jobqueue.errors import InvalidArgumentError
from jobqueue.telemetry import MetricsServer, serve_metrics

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = shutil.which("jobqueue", path=str(Path(sys.executable).parent))
CLI = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "jobqueue"]
SLOW = 200
HALF_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: "  # no blank line


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("probe_events", "a series to find in the scrape", registry=reg).inc()
    return reg


@contextlib.contextmanager
def slow_clients(port: int, count: int = SLOW) -> Iterator[list[socket.socket]]:
    """``count`` connections that each send half a request head, then idle."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(HALF_REQUEST)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def wait_all_closed(socks: list[socket.socket], deadline: float) -> list[bytes]:
    """What each connection got before the server closed it; fails past ``deadline``."""
    got = {s: b"" for s in socks}
    open_ = set(socks)
    for s in socks:
        s.setblocking(False)
    while open_:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(open_)} of {len(socks)} slow connections still open"
        ready, _, _ = select.select(list(open_), [], [], min(left, 0.5))
        for s in ready:
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            if data:
                got[s] += data
            else:
                open_.discard(s)
    return [got[s] for s in socks]


@pytest.mark.slow
def test_slow_clients_hold_no_threads_and_are_closed_after_the_timeout(
    registry: CollectorRegistry,
) -> None:
    timeout = 2.0
    with serve_metrics(0, registry=registry, max_threads=4, timeout=timeout) as srv:
        scrape(srv.url)  # warm: the first request thread exists
        baseline = threading.active_count()
        started = time.monotonic()
        with slow_clients(srv.port) as socks:
            time.sleep(0.5)
            assert threading.active_count() <= baseline + 1
            assert "probe_events_total 1.0" in scrape(srv.url)  # scrapes still answered
            assert threading.active_count() <= baseline + 4
            replies = wait_all_closed(socks, started + timeout + 5.0)
        elapsed = time.monotonic() - started
        assert elapsed >= timeout * 0.9  # closed for their timeout, not at once
        assert all(r in (b"", *(_status(408),)) for r in replies), set(replies)
        assert "probe_events_total 1.0" in scrape(srv.url)
        assert threading.active_count() <= baseline + 4


def _status(code: int) -> bytes:
    reason = {408: b"Request Timeout"}[code]
    return b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (code, reason)


def test_request_threads_are_bounded_under_concurrent_scrapes(
    registry: CollectorRegistry,
) -> None:
    with serve_metrics(0, registry=registry, max_threads=3, timeout=5.0) as srv:
        errors: list[BaseException] = []

        def one() -> None:
            try:
                for _ in range(5):
                    scrape(srv.url)
            except BaseException as exc:
                errors.append(exc)

        clients = [threading.Thread(target=one) for _ in range(16)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(60)
        assert not errors
        names = [t.name for t in threading.enumerate()]
        assert len([n for n in names if n.startswith("jobqueue-metrics-request")]) <= 3


@pytest.mark.parametrize("path", ["/", "/index.html", "/metricsx", "/metrics/", "/favicon.ico"])
def test_only_the_metrics_path_is_served(path: str, registry: CollectorRegistry) -> None:
    with serve_metrics(0, registry=registry) as srv:
        url = srv.url.removesuffix("/metrics")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + path, timeout=5)
        assert info.value.code == 404
        info.value.close()
        assert "probe_events_total" in scrape(url + "/metrics")
        assert "probe_events_total" in scrape(url + "/metrics?name[]=probe_events_total")


def test_bad_limits_are_typed_errors(registry: CollectorRegistry) -> None:
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(InvalidArgumentError, match="max_threads must be a whole number"):
            serve_metrics(0, registry=registry, max_threads=bad)  # type: ignore[arg-type]
    for bad_t in (0, -1.0, float("inf"), float("nan"), "5", None):
        with pytest.raises(InvalidArgumentError, match="timeout must be a positive number"):
            serve_metrics(0, registry=registry, timeout=bad_t)  # type: ignore[arg-type]
    srv: MetricsServer = serve_metrics(0, registry=registry, max_threads=1, timeout=0.5)
    srv.close()


def _threads_of(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^Threads:\s+(\d+)$", text, re.M)
    assert match is not None
    return int(match.group(1))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status")
def test_metrics_command_under_slow_clients(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"

    async def fill() -> None:
        async with JobQueueService(db) as svc:

            @svc.handler("echo")
            async def echo(ctx: JobContext, payload: object) -> object:
                return payload

            await svc.submit("echo", {}, delay=3600)

    asyncio.run(fill())
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [*CLI, "metrics", "--db", str(db), "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving metrics at http://127.0.0.1:"), line
        url = line.split()[-1]
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert 'jobqueue_queue_length{handler="echo"}' in scrape(url)
        baseline = _threads_of(proc.pid)
        started = time.monotonic()
        with slow_clients(port) as socks:
            time.sleep(0.5)
            assert _threads_of(proc.pid) <= baseline + 4
            assert 'jobqueue_queue_length{handler="echo"}' in scrape(url)
            assert _threads_of(proc.pid) <= baseline + 4
            wait_all_closed(socks, started + 5.0 + 5.0)  # the default timeout, and a margin
        assert 'jobqueue_queue_length{handler="echo"}' in scrape(url)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
