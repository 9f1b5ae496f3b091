"""A real ``redis-server`` for the bus tests: on 127.0.0.1, a free port, no persistence.

``redis_server`` (a pytest fixture, import it into a test module) starts one per
test module and stops it by its pid; tests skip, saying why, when there is no
``redis-server`` binary or redis-py is not installed. :class:`RedisServer` can
also be used by hand (the examples and the benchmark start their own).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "free_port", "redis_server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; ``url`` is its address (db 0)."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("no redis-server on PATH (apt-get install redis-server)")
        self.binary = binary
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="jq-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within 10 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections and answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same port (an empty server: no persistence)."""
        self.stop()
        self.dir = tempfile.mkdtemp(prefix="jq-redis-")
        self.start()


def _skip_reason() -> str | None:
    if shutil.which("redis-server") is None:
        return "no redis-server binary on PATH (apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install 'jobqueue[redis]')"
    return None


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A fresh ``redis-server`` for the module's tests, stopped at the end."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def project_root() -> Path:
    return Path(__file__).resolve().parents[1]
