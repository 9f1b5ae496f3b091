"""A worker process on the Redis bus, for tests/integration/test_redis_procs.py.

``python _redis_worker.py URL JOB MODE ...``:

* ``ticks N INTERVAL LEASE``: runs job JOB, which sends log events ``{"i": 0..N-1}``,
  one every INTERVAL seconds; prints ``READY`` once it runs and ``DONE <outcome>``.
* ``burst N LEASE``: runs job JOB; prints ``READY``, waits for a line on stdin, sends N
  token events ``{"chunk": "<i>,"}`` at once and prints what it held (JSON: the
  local queue's largest size, RSS before and after), then waits for a second line,
  sends ``end`` and prints ``DONE <outcome>``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from jobqueue.redis import RedisJobQueueService


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def main(url: str, job: str, mode: str, args: list[str]) -> None:
    lease = float(args[-1])
    svc = RedisJobQueueService(url=url, lease_s=lease, socket_timeout=2.0)
    svc.start()
    queue, manager = svc.create_queue(job)

    async def ticks(n: int, interval: float) -> None:
        for i in range(n):
            await manager.asend("log", {"i": i})
            await asyncio.sleep(interval)

    async def burst(n: int) -> None:
        await line()
        before, most, started = rss_kib(), 0, time.monotonic()
        for i in range(n):
            manager.on_token(data={"chunk": f"{i},"})
            if i % 500 == 0:
                most = max(most, queue.qsize())
                await asyncio.sleep(0)
        most = max(most, queue.qsize())
        report = {"max_qsize": most, "rss_before_kib": before, "rss_after_kib": rss_kib()}
        report["coalesced"] = queue.coalesced
        report["seconds"] = round(time.monotonic() - started, 2)
        print(json.dumps(report), flush=True)
        await line()
        manager.on_end(data={"sent": n})

    body = ticks(int(args[0]), float(args[1])) if mode == "ticks" else burst(int(args[0]))
    svc.start_job(job, body)
    print("READY", flush=True)
    outcome = await svc.wait_end(job)
    print(f"DONE {outcome}", flush=True)
    await svc.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
