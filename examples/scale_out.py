"""Scale out over Redis: two workers run jobs, a consumer in a third process follows them.

Needs ``pip install 'jobqueue[redis]'`` and ``redis-server`` on PATH (this demo
starts its own on a free port, without persistence, and stops it); without
them it says so and exits 0.

* worker-a runs ``report-1``: ten tokens, then it completes;
* worker-b runs ``report-2``: a long job;
* the consumer, in its own process, streams ``report-1`` to its end and cancels
  ``report-2``, waiting until worker-b confirms.

Run: python examples/scale_out.py
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

# Job ids of this run (the worker processes inherit it), so runs never share a stream.
RUN = os.environ.setdefault("SCALE_OUT_RUN", uuid.uuid4().hex[:8])
#: What this demo prints when it works (it exits 1 without them; tests run it).
PROMISED = (
    "consumer: report-1 said 'part 0 part 1",
    "consumer: report-1 ended: completed",
    "consumer: report-2 cancel confirmed: cancelled",
    "worker-b: report-2 ended cancelled",
)
JOBS = {"worker-a": (f"report-1-{RUN}", 10), "worker-b": (f"report-2-{RUN}", 10_000)}


async def worker(url: str, name: str) -> None:
    """One worker process: runs its job, the events going to the job's Redis stream."""
    from jobqueue.redis import RedisJobQueueService

    service = RedisJobQueueService(url=url, lease_s=2.0)
    service.start()
    job, parts = JOBS[name]
    _queue, events = service.create_queue(job)

    async def build() -> None:
        for i in range(parts):
            events.on_token(data={"chunk": f"part {i} "})
            await asyncio.sleep(0.05)
        events.on_end(data={"by": name})

    service.start_job(job, build())
    print(f"{name} runs {job.rsplit('-', 1)[0]}", flush=True)
    outcome = await service.wait_end(job)
    print(f"{name}: {job.rsplit('-', 1)[0]} ended {outcome}", flush=True)
    await service.stop()


async def consumer(url: str) -> None:
    """Another process: reads report-1 from any worker, cancels report-2 on worker-b."""
    from jobqueue.redis import RedisJobQueueService

    service = RedisJobQueueService(url=url, lease_s=2.0)
    service.start()
    report_1, _ = JOBS["worker-a"]
    text = []
    async for event in service.events(report_1):
        if event.type == "token":
            text.append(event.decoded()["data"]["chunk"])
        elif event.kind == "end":
            print(f"consumer: report-1 said {''.join(text).strip()!r}")
            print(f"consumer: report-1 ended: {event.outcome}")
    report_2, _ = JOBS["worker-b"]
    outcome = await service.cancel_job(report_2, confirm=10)
    print(f"consumer: report-2 cancel confirmed: {outcome}")
    await service.stop()


def main() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        print("SKIPPED: redis-py is not installed (pip install 'jobqueue[redis]')")
        return
    if shutil.which("redis-server") is None:
        print("SKIPPED: no redis-server on PATH (apt-get install redis-server)")
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="scale-out-redis-")
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(["redis-server", *args, "--dir", folder], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_port(port)
        me = [sys.executable, os.path.abspath(__file__)]
        workers = [
            subprocess.Popen([*me, "worker", url, name], stdout=subprocess.PIPE, text=True)
            for name in JOBS
        ]
        reader = subprocess.run([*me, "consumer", url], capture_output=True, text=True, timeout=60)
        output = reader.stdout + "".join(proc.communicate(timeout=30)[0] for proc in workers)
        print(output, end="")
        missing = [line for line in PROMISED if line not in output]
        if reader.returncode or missing:
            raise SystemExit(f"missing {missing}: {reader.stderr}")
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit("redis-server did not start")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        asyncio.run(worker(sys.argv[2], sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "consumer":
        asyncio.run(consumer(sys.argv[2]))
    else:
        main()
