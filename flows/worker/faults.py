"""Storage faults: a full disk, a quota, a read-only or forbidden folder. Retrying cannot fix them; the user can.

A checkpoint, a figure or a tile cache that cannot be written fails with an ``OSError`` whose ``errno`` says why
(``torch.save`` wraps it in a ``RuntimeError``; :func:`storage_fault` finds it there too). Such a failure is not
retried (:func:`flows.tasks.can_succeed_on_retry`), and the ``focus`` command shows it as the one line of
:func:`describe` (:mod:`flows.cli.errors`). The store's own disk-full and read-only errors are
:class:`~db.errors.StoreError` already (``db.transactions``).

Examples
--------
>>> import errno
>>> error = OSError(errno.ENOSPC, "No space left on device", "/data/checkpoints/epoch-0001.pt")
>>> storage_fault(RuntimeError("torch.save failed")) is None
True
>>> is_storage_fault(error), is_storage_fault(OSError(errno.ECONNRESET, "Connection reset by peer"))
(True, False)
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["STORAGE_ERRNOS", "describe", "is_storage_fault", "storage_fault"]

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_READ_ONLY = frozenset({errno.EROFS})
_FORBIDDEN = frozenset({errno.EACCES, errno.EPERM})
#: The ``errno`` values of an ``OSError`` that fails the same way on every try.
STORAGE_ERRNOS = _FULL | _READ_ONLY | _FORBIDDEN


def storage_fault(error: BaseException | None) -> OSError | None:
    """The storage ``OSError`` that ``error`` is, or that it was raised from or while handling (10 links deep)."""
    for _ in range(10):
        if error is None:
            return None
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def is_storage_fault(error: BaseException | None) -> bool:
    """Whether ``error`` comes from a full, read-only or forbidden filesystem (see :func:`storage_fault`)."""
    return storage_fault(error) is not None


def describe(error: OSError) -> str:
    """One sentence that names the path and says what to do.

    Examples
    --------
    >>> describe(OSError(errno.ENOSPC, "No space left on device", "/"))
    "Cannot write '/' (No space left on device): free space on / or choose another folder."
    >>> describe(OSError(errno.EROFS, "Read-only file system", "/"))
    "Cannot write '/' (Read-only file system): choose another folder, or mount / read-write."
    """
    path = error.filename if error.filename is not None else error.filename2
    reason = error.strerror or os.strerror(error.errno or 0)
    if path is None:
        return f"A file cannot be written ({reason}): free space or choose another folder."
    where = repr(os.fsdecode(path))
    if error.errno in _READ_ONLY:
        return f"Cannot write {where} ({reason}): choose another folder, or mount {_mount_point(path)} read-write."
    if error.errno in _FORBIDDEN:
        return f"Cannot use {where} ({reason}): give this user access to {_folder(path)} or choose another folder."
    return f"Cannot write {where} ({reason}): free space on {_mount_point(path)} or choose another folder."


def _folder(path: str | bytes | os.PathLike) -> str:
    path = Path(os.fsdecode(path))
    return str(path if path.is_dir() else path.parent)


def _mount_point(path: str | bytes | os.PathLike) -> str:
    """The mount point of the filesystem that holds ``path`` (or would, for a file not written yet)."""
    current = Path(os.fsdecode(path)).absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return str(current)
