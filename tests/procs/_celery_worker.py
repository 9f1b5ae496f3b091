"""A real Celery worker subprocess for the TaskService tests, and the Redis probe.

The worker consumes only this test run's queue (see ``_celery_app.PREFIX``),
logs to a file, and is always stopped (SIGTERM, then SIGKILL) at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _celery_app import REDIS_URL

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REDIS_HOST = urlsplit(REDIS_URL).hostname or "127.0.0.1"
REDIS_PORT = urlsplit(REDIS_URL).port or 6379
START_REDIS = "start it with `redis-server --daemonize yes` or `docker run -p 6379:6379 redis`"


def redis_answers(host: str = REDIS_HOST, port: int = REDIS_PORT, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class CeleryWorker:
    """``celery -A _celery_app:celery_app worker`` as a subprocess (threads pool)."""

    def __init__(
        self,
        log_path: Path,
        concurrency: int = 4,
        *,
        app: str = "_celery_app:celery_app",
        env: dict[str, str] | None = None,
        name: str = "jqtest",
    ) -> None:
        self.log_path = log_path
        self.hostname = f"{name}-{uuid.uuid4().hex[:8]}@%h"
        env = {
            **os.environ,
            **(env if env is not None else {"JOBQUEUE_TEST_CELERY_WORKER": "1"}),
            "PYTHONPATH": os.pathsep.join(
                [str(HERE), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
            f"--hostname={self.hostname}",
        ]
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the worker's log (for failure messages)."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, backend: Any, timeout: float = 60.0) -> float:
        """Round-trip one task through the worker; returns the seconds it took.

        Raises:
            RuntimeError: the worker exited, or no result came back in time.
        """
        start = time.monotonic()
        task_id = uuid.uuid4().hex
        backend._launch("add", {"a": 1, "b": 1}, task_id, None)
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"celery worker exited ({self.proc.returncode}):\n{self.log_tail()}"
                )
            if backend._get(task_id).done:
                return time.monotonic() - start
            time.sleep(0.05)
        raise RuntimeError(f"celery worker not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Warm shutdown (SIGTERM); SIGKILL if it takes more than 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def delete_keys(prefix: str) -> int:
    """Delete this run's Redis keys (every key starting with ``prefix``)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()
