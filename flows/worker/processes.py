"""This process's identity, and whether a process recorded with such an identity is gone.

A lease holder (:mod:`flows.worker.leases`) is recorded as ``(host, pid, started)``. ``host`` is the host name and, on
Linux, its boot and its pid namespace, so two containers with one host name, or the same machine after a reboot,
never compare equal; ``started`` is the process's start time in clock ticks since boot (``/proc/<pid>/stat``), so
a pid reused by a new process is told apart. Only a process of this host and namespace can be judged, and only
"gone" is ever certain: :func:`is_gone` answers ``None`` (unknown) elsewhere.

Examples
--------
>>> import os
>>> me = this_process()
>>> me.pid == os.getpid(), is_gone(me.host, me.pid, me.started)
(True, False)
>>> is_gone("another-host", me.pid, me.started) is None
True
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path
from typing import NamedTuple

__all__ = ["ProcessIdentity", "this_process", "is_gone"]

_PROC = Path("/proc")


class ProcessIdentity(NamedTuple):
    """Where a process runs (``host``), its ``pid`` and its start time (``started``; ``None`` where unknown)."""

    host: str
    pid: int
    started: str | None


@cache
def _host() -> str:
    """The host name, and on Linux the boot id and the pid namespace: pids compare only within all three."""
    parts = [socket.gethostname()]
    try:
        parts.append((_PROC / "sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink(_PROC / "self/ns/pid"))
    except OSError:  # not Linux: the host name alone
        pass
    return "|".join(parts)[:255]


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), ``""`` for a zombie, ``None`` if there is none.

    Raises ``OSError`` where ``/proc`` is not there to ask.
    """
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        if not (_PROC / "self/stat").is_file():
            raise
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3, starttime field 22
    return "" if fields[0] in ("Z", "X") else fields[19]


def this_process() -> ProcessIdentity:
    """The identity of the calling process."""
    try:
        started = _started(os.getpid())
    except OSError:
        started = None
    return ProcessIdentity(_host(), os.getpid(), started)


def is_gone(host: str, pid: int, started: str | None) -> bool | None:
    """Whether the recorded process has ended: ``True`` for certain, ``False`` if it runs, ``None`` if unknowable.

    Unknowable for a process of another host or namespace. A process that has exited but is not yet reaped
    (a zombie) is gone; so is one whose pid now belongs to a process started at another time.
    """
    if host != _host():
        return None
    try:
        now = _started(pid)
    except OSError:  # no /proc: whether the pid exists at all (a reused pid looks alive: never wrongly gone)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    if now is None or now == "":
        return True
    return started is not None and now != started
