"""Scale out: the same registered handlers, run on Celery workers through TaskService.

Needs ``pip install 'jobqueue[celery]'`` and Redis on 127.0.0.1:6379
(``redis-server --daemonize yes`` or ``docker run -p 6379:6379 redis``);
without them it says so and exits 0.

This file is both the application and the worker module. For the demo it
starts its own worker; in production you run as many as you like, anywhere
that can import this module and reach Redis::

    cd examples && celery -A celery_scale_out:celery_app worker --pool=threads

Run: python examples/celery_scale_out.py
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from jobqueue import JobContext, JobQueueService
from jobqueue.errors import TaskFailedError
from jobqueue.tasks import TaskService

HERE = Path(__file__).resolve().parent
REDIS = "redis://127.0.0.1:6379/0"
# One key prefix (and queue) per demo run, inherited by the worker it starts.
PREFIX = os.environ.setdefault("JOBQUEUE_EXAMPLE_PREFIX", f"jq-example-{uuid.uuid4().hex[:8]}:")
WORKER = (  # the worker command this demo runs (after the Python executable)
    "-m celery -A celery_scale_out:celery_app worker --pool=threads --concurrency=4 "
    "--without-gossip --without-mingle --without-heartbeat --loglevel=WARNING"
)

# The registry of handlers. Workers never open it: they only look handlers up by name.
service = JobQueueService()


@service.handler("thumbnail")
async def thumbnail(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.1)  # pretend to resize an image
    return {"image": payload["image"], "size": [128, 128], "pid": os.getpid()}


@service.handler("explode")
async def explode(ctx: JobContext, payload: Any) -> None:
    raise ValueError(f"cannot decode {payload!r}")


@service.handler("slow")
async def slow(ctx: JobContext, payload: Any) -> str:
    await asyncio.sleep(60)
    return "too late"


try:
    from jobqueue.tasks import CeleryBackend
except ModuleNotFoundError:  # no celery: main() says so
    backend = celery_app = None
else:
    backend = CeleryBackend(
        service, broker=REDIS, queue=f"{PREFIX}tasks", key_prefix=PREFIX, result_expires=600
    )
    celery_app = backend.app  # what `celery -A celery_scale_out:celery_app worker` runs


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_worker(log: Any) -> subprocess.Popen[bytes]:
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, *WORKER.split()],
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": path},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def demo(tasks: TaskService) -> None:
    ids = [await tasks.launch_task("thumbnail", {"image": f"img{i}.png"}) for i in range(4)]
    print("launched 4 tasks; first one is", (await tasks.get_task(ids[0])).status)
    for task_id in ids:
        result = await tasks.wait_task(task_id, timeout=30)
        here = "this process" if result["pid"] == os.getpid() else "a worker process"
        print(f"celery: thumbnail {result['image']} -> {result['size']} in {here}")

    try:
        await tasks.launch_and_await_task("explode", "blob", timeout=30)
    except TaskFailedError as exc:
        print(f"failed as expected: {exc.error}")
        print("  last traceback line:", (exc.traceback or "").strip().splitlines()[-1])

    task_id = await tasks.launch_task("slow", None)
    info = await tasks.revoke_task(task_id)
    print(f"revoked: {info.status}")


async def main() -> None:
    if backend is None:
        print("SKIPPED: celery is not installed; pip install 'jobqueue[celery]'")
        return
    if not redis_answers():
        print(
            "SKIPPED: Redis is not reachable at 127.0.0.1:6379; start it with "
            "`redis-server --daemonize yes` or `docker run -p 6379:6379 redis`"
        )
        return
    with tempfile.TemporaryFile() as log:
        worker = start_worker(log)
        try:
            async with TaskService(backend) as tasks:
                await demo(tasks)
        except BaseException:
            log.seek(0)
            print(log.read().decode(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            worker.terminate()  # warm shutdown: running tasks finish first
            worker.wait(15)
            client = backend.results.client
            for key in client.scan_iter(match=f"{PREFIX}*"):
                client.delete(key)

    # The same handlers, in this process: only the backend changed.
    async with JobQueueService() as local:
        for name in ("thumbnail",):
            local.register(name, thumbnail)
        async with TaskService(local) as tasks:
            result = await tasks.launch_and_await_task("thumbnail", {"image": "local.png"})
            print(f"in process: thumbnail {result['image']} -> {result['size']}")


if __name__ == "__main__":
    asyncio.run(main())
