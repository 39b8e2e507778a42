"""Full disks for the tests: a tiny tmpfs (needs root or CAP_SYS_ADMIN) and a dummy file that fills it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

__all__ = ["fill_up", "mount_tmpfs", "remount_read_only", "unmount"]


def mount_tmpfs(point: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` (e.g. ``"512k"``) on the folder ``point``; ``None``, or why it cannot."""
    if shutil.which("mount") is None:
        return "no mount command"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                          capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited with {done.returncode}")


def remount_read_only(point: Path) -> str | None:
    """Make the tmpfs at ``point`` read-only; ``None``, or why it cannot."""
    done = subprocess.run(["mount", "-o", "remount,ro", str(point)], capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited with {done.returncode}")


def unmount(point: Path) -> None:
    subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def fill_up(folder: Path, leave_bytes: int = 0) -> Path:
    """Fill the filesystem of ``folder`` with a dummy file until at most ``leave_bytes`` are free; return the file."""
    filler = folder / "filler"
    block = b"\0" * 4096
    with filler.open("ab") as file:
        while shutil.disk_usage(folder).free - leave_bytes >= len(block):
            try:
                file.write(block)
                file.flush()
            except OSError:  # full: done
                break
    return filler
