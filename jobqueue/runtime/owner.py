"""Who runs a job: an owner identity per service, naming its process across namespaces.

An identity is ``"pid:start:pidns:boot:n"``:

* ``pid`` and ``start`` (field 22 of ``/proc/<pid>/stat``, clock ticks since
  boot) name one process even after its pid is reused;
* ``pidns`` (the inode of ``/proc/self/ns/pid``) and ``boot``
  (``/proc/sys/kernel/random/boot_id``) say where that pid means something:
  a pid is only meaningful in its own PID namespace on its own boot of its
  own host. Two containers sharing a volume each have their own pid 1;
* ``n`` counts the identities this process handed out, so two services in
  one process are two owners (each can control the other's jobs through the
  file) while their liveness is still that of the one process.

``-`` stands for a part that could not be read (no procfs): such an owner is
judged by its heartbeat only. See :mod:`jobqueue.store.recovery` for how
identities are judged, and for the older ``"pid:start"`` form.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["OwnerId", "here", "owner_identity", "parse_owner"]

UNKNOWN = "-"

_counter = itertools.count(1)
_counter_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class OwnerId:
    """An owner identity taken apart. ``pidns``/``boot`` are None for the older form."""

    pid: int
    start: str
    pidns: str | None = None
    boot: str | None = None

    @property
    def legacy(self) -> bool:
        """Written by a version that recorded only ``pid:start`` (taken as this namespace)."""
        return self.pidns is None


def parse_owner(owner: str) -> OwnerId | None:
    """The parts of an identity this library wrote; None for anything else."""
    parts = owner.split(":")
    if len(parts) != 2 and len(parts) < 5:
        return None
    try:
        pid = int(parts[0])
    except ValueError:
        return None
    if len(parts) == 2:
        return OwnerId(pid, parts[1])
    return OwnerId(pid, parts[1], parts[2], parts[3])  # later parts name a service


@cache
def _process(pid: int) -> OwnerId:
    # Cached per pid: a forked child computes its own.
    return OwnerId(pid, _start_marker(pid), _pid_namespace(pid), _boot_id())


def here() -> OwnerId:
    """This process: its pid, start time, PID namespace and boot."""
    return _process(os.getpid())


def _procfs_is_ours(pid: int) -> bool:
    # A /proc mounted for another PID namespace (a container that did not remount it)
    # lists other pids: /proc/self then names a pid that is not ours.
    try:
        return os.readlink("/proc/self") == str(pid)
    except OSError:
        return False


def _start_marker(pid: int) -> str:
    try:
        stat = Path("/proc/self/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return str(int(time.time() * 1000))  # no procfs: the time we first asked


def _pid_namespace(pid: int) -> str:
    if not _procfs_is_ours(pid):
        return UNKNOWN  # our pids cannot be looked up in this /proc
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return UNKNOWN


def _boot_id() -> str:
    try:
        text = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return UNKNOWN
    return text if text and ":" not in text else UNKNOWN


def owner_identity() -> str:
    """A new identity for one service of this process (each call gives another)."""
    me = here()
    with _counter_lock:
        n = next(_counter)
    return f"{me.pid}:{me.start}:{me.pidns}:{me.boot}:{n}"
