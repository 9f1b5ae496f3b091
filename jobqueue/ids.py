"""Generated ids: job ids, and the UUID4 text of Langflow-shaped event ids.

Job ids are 32 hex characters, time-ordered, as unique as a UUID4: the
first 12 characters are the milliseconds since the epoch, so new rows land
at the end of the primary-key B-tree (cheaper inserts, less WAL written); the
other 20 are random (80 bits). Cheaper to make than ``uuid.uuid4().hex``.

People see a job by its **short id** (:func:`short_id`): all ids made in the
same minute or so share their first characters, the timestamp, so the short
form is the random tail, the last 8 characters. The command line lengthens it
where another job of the file shares it (``jobqueue.store.lookup.short_ids``)
and finds a job by any unique prefix or suffix of its id.

Event ids carry a real version-4 UUID (122 random bits from ``os.urandom``,
as ``uuid.uuid4()``), made 256 at a time with a few C-level operations
instead of one ``os.urandom`` call and one ``UUID`` object each: about a tenth
of ``str(uuid.uuid4())``'s cost, which matters at hundreds of thousands of
events per second.
"""

from __future__ import annotations

import os
import re
import time
from typing import Final

__all__ = ["SHORT_ID_LEN", "UUID4_MADE", "has_random_tail", "new_job_id", "short_id", "uuid4_text"]

#: Characters of a short id: 32 random bits, unique among tens of thousands of jobs.
SHORT_ID_LEN: Final = 8
#: Ids whose tail is random: these ids (32 hex digits) and UUID text.
_RANDOM_TAIL: Final = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")


def new_job_id() -> str:
    """A new job id such as ``'0193f0c2a1b4e9d1c0f7a3b25e6d4c81'``."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def has_random_tail(job_id: str) -> bool:
    """True for a generated id (or a UUID's text): its last characters tell jobs apart."""
    return _RANDOM_TAIL.fullmatch(job_id) is not None


def short_id(job_id: str, length: int = SHORT_ID_LEN) -> str:
    """What people see of an id: the random tail of a generated one, else the whole id.

    ``'0193f0c2a1b4e9d1c0f7a3b25e6d4c81'`` is shown ``'5e6d4c81'``; an id chosen
    by the submitter (``'report-2024-05'``) is shown as it is.
    """
    if has_random_tail(job_id) and length < len(job_id):
        return job_id[-length:]
    return job_id


_BATCH: Final = 256
#: Where the 32 hex digits of a UUID go in its 36-character text.
_DIGIT_AT: Final = tuple(i for i in range(36) if i not in (8, 13, 18, 23))
#: The variant digit is 8, 9, a or b (bits 10xx); its two low bits stay random.
_VARIANT: Final = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
_TEMPLATE: Final = b"00000000-0000-4000-8000-000000000000" * _BATCH
#: UUIDs made and not handed out yet (``pop()`` one, or call :func:`uuid4_text`).
UUID4_MADE: Final[list[str]] = []
_made = UUID4_MADE


def _make() -> None:
    digits = os.urandom(16 * _BATCH).hex().encode("ascii")
    text = bytearray(_TEMPLATE)
    for k, at in enumerate(_DIGIT_AT):
        if k == 12:
            continue  # the version digit stays "4"
        column = digits[k::32]  # digit k of every UUID of the batch
        text[at::36] = column.translate(_VARIANT) if k == 16 else column
    out = text.decode("ascii")
    _made.extend([out[i : i + 36] for i in range(0, len(out), 36)])


def uuid4_text() -> str:
    """``str(uuid.uuid4())``, cheaply: a random version-4 UUID such as ``'1b4e28ba-2fa1-41d2-...'``.

    Safe from any thread (``list.pop`` is atomic; two threads finding the batch
    empty both refill it). A forked child drops the parent's unused batch.
    """
    try:
        return _made.pop()
    except IndexError:
        _make()
        return _made.pop()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_made.clear)
