"""Helper for test_faults_storage: submit under a file size limit (RLIMIT_FSIZE).

Usage: python tests/procs/_fault_fsize.py DB_PATH HEADROOM_BYTES

Submits 5 jobs, then caps the size of any file this process writes at the
current size of the database and its WAL plus HEADROOM_BYTES, and submits
4 KiB jobs until one fails. Then it lifts the cap and submits once more.
Prints one JSON object: the committed ids, the error, and whether the
submit after lifting the cap worked.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys

from jobqueue import JobQueueService


def _sizes(path: str) -> list[int]:
    return [os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)]


async def main(path: str, headroom: int) -> dict[str, object]:
    committed: list[str] = []
    error: dict[str, object] | None = None
    async with JobQueueService(path, poll_interval=60) as svc:
        svc.declare("h")  # stored, never run here: only the submit path writes
        for i in range(5):
            committed.append((await svc.submit("h", {"i": i}, job_id=f"base{i}")).id)
        sizes = _sizes(path)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + headroom, hard))
        try:
            for i in range(10_000):
                job_id = f"big{i}"
                try:
                    await svc.submit("h", {"i": i, "pad": "x" * 4096}, job_id=job_id)
                except Exception as exc:
                    error = {
                        "type": type(exc).__name__,
                        "mro": [c.__name__ for c in type(exc).__mro__],
                        "message": str(exc),
                        "path": getattr(exc, "path", None),
                        "job_id": job_id,
                    }
                    break
                committed.append(job_id)
            try:
                await svc.submit("h", {}, job_id="still-capped")
                still_capped: str | None = None
            except Exception as exc:
                still_capped = type(exc).__name__
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        after = (await svc.submit("h", {"after": True}, job_id="after-cap")).id
    return {"committed": committed, "error": error, "still_capped": still_capped, "after": after}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2])))))
