"""What a weights download may cost and how large the weights cache may grow, read from the worker's environment.

A download through :mod:`flows.weights.weight_store` is bounded in time and size, and the cache folder in bytes:

=====================================  ==========  =============================================================
Environment variable                   Default     Bound
=====================================  ==========  =============================================================
``FOCUS_WEIGHTS_CONNECT_TIMEOUT``      10          seconds to open a connection to the server
``FOCUS_WEIGHTS_READ_TIMEOUT``         60          seconds the server may send nothing (a hanging server)
``FOCUS_WEIGHTS_DOWNLOAD_TIMEOUT``     1800        seconds one download may take in all (a trickling server)
``FOCUS_WEIGHTS_MAX_BYTES``            8 GiB       bytes one weights object may have: a larger one is refused
                                                   before (its announced size) or while (its bytes) downloading
``FOCUS_WEIGHTS_CACHE_MAX_BYTES``      50 GiB      bytes the cache folder may hold: the least recently used
                                                   files are removed after a download that passes it
=====================================  ==========  =============================================================

Timeouts reach the filesystem that reads a URL (:meth:`DownloadLimits.storage_options`: aiohttp's for
``http(s)://``, botocore's for ``s3://``); the total deadline and the size are also checked between the chunks
a download reads, whatever the filesystem. :func:`evict_least_recent` keeps a folder under its size, most
recently used files last to go (a file's access time is its last use: :func:`mark_used` sets it).

Examples
--------
>>> DownloadLimits.from_environment({"FOCUS_WEIGHTS_READ_TIMEOUT": "5"}).read_seconds
5.0
>>> DownloadLimits().storage_options("s3")
{'config_kwargs': {'connect_timeout': 10.0, 'read_timeout': 60.0}}
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focus_core.errors import FocusError

__all__ = ["DownloadLimits", "ENV_VARS", "evict_least_recent", "mark_used"]

_GIB = 1 << 30
#: Each limit's environment variable (the field of :class:`DownloadLimits` it sets).
ENV_VARS: dict[str, str] = {
    "connect_seconds": "FOCUS_WEIGHTS_CONNECT_TIMEOUT",
    "read_seconds": "FOCUS_WEIGHTS_READ_TIMEOUT",
    "total_seconds": "FOCUS_WEIGHTS_DOWNLOAD_TIMEOUT",
    "max_bytes": "FOCUS_WEIGHTS_MAX_BYTES",
    "cache_max_bytes": "FOCUS_WEIGHTS_CACHE_MAX_BYTES",
}


@dataclass(frozen=True)
class DownloadLimits:
    """The bounds of one download and of the cache (see the module's table)."""

    connect_seconds: float = 10.0
    read_seconds: float = 60.0
    total_seconds: float = 1800.0
    max_bytes: int = 8 * _GIB
    cache_max_bytes: int = 50 * _GIB

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> DownloadLimits:
        """The limits the environment sets (the defaults where it sets none).

        Raises
        ------
        FocusError
            When a variable is not a positive number: one sentence naming it.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, name in ENV_VARS.items():
            text = environ.get(name, "").strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if not value > 0 or value == float("inf"):
                raise FocusError(f"{name}={text!r} is not a positive number: set it to a number of "
                                 f"{'bytes' if field.endswith('bytes') else 'seconds'} or unset it.")
            values[field] = int(value) if field.endswith("bytes") else value
        return cls(**values)

    def storage_options(self, protocol: str) -> dict[str, Any]:
        """fsspec storage options that put the connect and read timeouts (and, for HTTP, the total deadline of
        one request) on the filesystem of ``protocol``; ``{}`` for a filesystem without such settings."""
        if protocol in ("http", "https"):
            import aiohttp

            timeout = aiohttp.ClientTimeout(total=self.total_seconds, sock_connect=self.connect_seconds,
                                            sock_read=self.read_seconds)
            return {"client_kwargs": {"timeout": timeout}}
        if protocol in ("s3", "s3a"):
            return {"config_kwargs": {"connect_timeout": self.connect_seconds, "read_timeout": self.read_seconds}}
        return {}


def mark_used(path: Path) -> None:
    """Record ``path``'s use now in its access time (its modification time, which identifies its bytes, stays)."""
    try:
        status = path.stat()
        os.utime(path, ns=(time.time_ns(), status.st_mtime_ns))
    except OSError:  # gone or read-only: its eviction order does not matter then
        pass


def evict_least_recent(folder: Path, max_bytes: int, *, keep: Path | None = None,
                       stale_after_seconds: float | None = None) -> list[Path]:
    """Remove the least recently used ``*.pt`` files of ``folder`` until it holds at most ``max_bytes``.

    ``keep`` (the file just written) is never removed. Partial downloads (``*.partial``) count towards the size;
    one older than ``stale_after_seconds`` (longer than any download may last: its writer is gone) is removed.
    A file removed while another process reads it stays readable to that process (POSIX unlink).

    Returns
    -------
    list of Path
        The files removed.
    """
    removed: list[Path] = []
    entries: list[tuple[int, Path, int]] = []
    total, now = 0, time.time()
    try:
        listing = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in listing:
        try:
            status = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        path = Path(entry.path)
        if entry.name.endswith(".partial"):
            if stale_after_seconds is not None and now - status.st_mtime > stale_after_seconds:
                path.unlink(missing_ok=True)
                removed.append(path)
                continue
            total += status.st_size
        elif entry.name.endswith(".pt") and entry.is_file(follow_symlinks=False):
            total += status.st_size
            entries.append((status.st_atime_ns, path, status.st_size))
    for _, path, size in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if keep is not None and path == keep:
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
        total -= size
    return removed
