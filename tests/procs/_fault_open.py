"""Helper: open a database as a user that obeys file permissions; print the outcome as JSON.

Usage: python tests/procs/_fault_open.py DB_PATH

Run as root, it first drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER
from its effective set (before any thread exists), so root obeys permission
bits like any user: a 0444 file cannot be written, a 0555 directory gets no
new file.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import sys

_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3
_V3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_dac() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    hdr = _Header(_V3, 0)
    data = (_Data * 2)()
    if libc.capget(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    mask = (1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH) | (1 << _CAP_FOWNER)
    data[0].effective &= ~mask
    if libc.capset(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


async def main(path: str) -> dict[str, object]:
    from jobqueue import JobQueueService

    try:
        async with JobQueueService(path, poll_interval=60) as svc:
            svc.declare("h")
            await svc.submit("h", {})
    except Exception as exc:  # report whatever came out, typed or not
        return {
            "type": type(exc).__name__,
            "mro": [c.__name__ for c in type(exc).__mro__],
            "message": str(exc),
            "path": getattr(exc, "path", None),
        }
    return {"type": None}


if __name__ == "__main__":
    if os.geteuid() == 0:
        drop_dac()
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
