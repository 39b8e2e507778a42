"""A full, read-only or forbidden disk: not retried, one line naming the path, nothing half-written, runs 'failed'.

The full disks are real: a tiny tmpfs (``small_tmpfs``, root only) filled with a dummy file. The commands
run through the installed ``focus`` script, so stderr is what a shell shows.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.states import Failed

import db
from flows.worker import faults, processes
from flows.cli.errors import is_user_error, one_line, user_cause
from flows.tasks import can_succeed_on_retry
from focus_core import models
from tests import disk

FOCUS = shutil.which("focus", path=str(Path(sys.executable).parent)) or "focus"
#: Mosaics of the evaluations below: 10 per class, the first chunk written while the disk has room.
PER_CLASS, FIRST_CHUNK = 10, 10


def _focus(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "FOCUS_DEBUG", "FOCUS_DATABASE_URL")}
    return subprocess.run([FOCUS, *argv], capture_output=True, text=True, timeout=timeout, env=env)


def _error_lines(stderr: str, command: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"focus {command}: ")]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM])
def test_a_storage_fault_is_not_retried_and_is_the_users_to_fix(code: int):
    error = OSError(code, os.strerror(code), "/data/checkpoints/epoch-0001.pt")
    assert not can_succeed_on_retry(None, None, Failed(data=error))
    wrapped = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")  # how torch.save says it
    wrapped.__context__ = error
    assert not can_succeed_on_retry(None, None, Failed(data=wrapped))
    assert is_user_error(error) and user_cause(wrapped) is error
    line = one_line(error)
    assert "/data/checkpoints/epoch-0001.pt" in line and "choose another folder" in line


def test_transient_errors_are_still_retried():
    for error in [OSError(errno.ECONNRESET, "Connection reset by peer"), ConnectionError("lost"), RuntimeError("CUDA")]:
        assert can_succeed_on_retry(None, None, Failed(data=error)), error
        assert not faults.is_storage_fault(error)


def test_a_checkpoint_that_does_not_fit_leaves_nothing_behind(small_tmpfs):
    folder = small_tmpfs("64k")
    model = models.build_model("digits_cnn", num_classes=10, in_channels=1)  # about 250 kB of weights
    with pytest.raises(OSError) as caught:
        models.save_weights(model, folder / "w.pt")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(folder / "w.pt")
    assert list(folder.iterdir()) == []
    line = one_line(caught.value)
    assert str(folder / "w.pt") in line and f"free space on {folder}" in line


def test_a_read_only_folder_is_named_and_not_retried(small_tmpfs):
    folder = small_tmpfs("64k")
    if disk.remount_read_only(folder) is not None:
        pytest.skip("cannot remount the tmpfs read-only")
    with pytest.raises(OSError) as caught:
        models.save_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), folder / "w.pt")
    assert caught.value.errno == errno.EROFS and caught.value.filename == str(folder / "w.pt")
    assert not can_succeed_on_retry(None, None, Failed(data=caught.value))
    assert one_line(caught.value) == (
        f"Cannot write '{folder / 'w.pt'}' (Read-only file system): choose another folder, or mount {folder} read-write."
    )


@pytest.mark.slow  # a real `focus` process in local mode
def test_train_on_a_full_disk_fails_at_once_with_one_line(small_tmpfs, tmp_path: Path):
    """The weights fit, the checkpoint (weights and AMSGrad state) does not: one try, one line, run 'failed'."""
    checkpoints = small_tmpfs("512k")
    url = f"sqlite:///{tmp_path / 'focus.db'}"
    db.upgrade(url)
    done = _focus("train", "--epochs", "1", "--focus-per-class", "2", "--retries", "2", "--tile-size", "16",
                  "--checkpoint-dir", str(checkpoints), "--database-url", url)
    assert done.returncode == 2, done.stderr
    (line,) = _error_lines(done.stderr, "train")
    assert "No space left on device" in line and str(checkpoints) in line and "epoch-0001.pt" in line, line
    assert f"free space on {checkpoints}" in line
    assert "Traceback" not in done.stderr and "Retry 1/2" not in done.stderr
    left = [p.name for p in checkpoints.rglob("*") if p.is_file()]
    # complete files only (epoch 0, the untrained model, is written before epoch 1): no .partial
    assert sorted(left) == ["epoch-0000.weights.pt", "epoch-0001.weights.pt"], left
    with sqlite3.connect(tmp_path / "focus.db") as connection:
        assert connection.execute("SELECT status FROM training_run").fetchall() == [("failed",)]


@pytest.mark.slow  # a real `focus` process in local mode
def test_evaluate_on_a_full_sqlite_disk_fails_at_once_with_one_line(small_tmpfs, digits_weights: str):
    """The store's disk fills up after the first chunk: no retries, one line, the evaluation closed as 'failed'.

    Or, where not even that fits, left running under a lease whose holder is recorded as this (gone) process, so the
    next run takes it over at once (tests/flows/test_fault_recovery.py).
    """
    folder = small_tmpfs("2m")
    path = folder / "focus.db"
    url = f"sqlite:///{path}"
    db.upgrade(url)
    common = ["evaluate", "--weights", digits_weights, "--per-class", str(PER_CLASS), "--database-url", url]
    first = _focus(*common, "--chunk-size", str(FIRST_CHUNK), "--max-chunks", "1")
    assert first.returncode == 0, first.stderr
    # Room for SQLite's shared-memory index (32 KiB) and a few pages of its write-ahead log: the run's holder and
    # evaluation rows can still be written, a chunk of results (table and index pages) not for long.
    filler = disk.fill_up(folder, leave_bytes=48 * 1024)
    done = _focus(*common, "--chunk-size", str(FIRST_CHUNK), "--retries", "2")
    assert done.returncode == 2, done.stderr
    (line,) = _error_lines(done.stderr, "evaluate")
    assert str(path) in line and "database or disk is full" in line and "free space" in line, line
    assert "Traceback" not in done.stderr and "Retry 1/2" not in done.stderr
    filler.unlink()
    with sqlite3.connect(path) as connection:
        statuses = connection.execute("SELECT status FROM evaluation").fetchall()
        rows = connection.execute("SELECT COUNT(*) FROM mosaic_result").fetchone()[0]
        holders = connection.execute("SELECT host, pid, process_started FROM lease_holder").fetchall()
    if statuses != [("failed",)]:
        assert statuses == [("running",)] and len(holders) == 1
        assert processes.is_gone(*holders[0])  # taken over at once by the next run
    assert rows >= FIRST_CHUNK and rows % FIRST_CHUNK == 0  # the first chunk's rows are kept, no chunk in part
