"""Values a test session computes once, however many pytest-xdist workers ask for them: trained models.

A session fixture runs once per xdist worker, so a model that three workers need would be trained three times.
:func:`once_per_session` keeps the value in a file of the session's temporary root (the folder every worker's own
temporary folder sits in), behind a file lock: the first worker to ask computes and writes it, the others wait for
the lock and read the file. The folder belongs to one test run, so nothing outlives it: a change to the training
code is always trained afresh.

Store tensors, state dicts and plain data (dicts, lists, numbers, strings), never modules or other objects: the
file is read with ``weights_only=True``, and the caller rebuilds its model and loads the weights, which gives the
same tensors bit for bit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch
from filelock import FileLock

__all__ = ["once_per_session", "session_folder"]

T = TypeVar("T")


def session_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of cached values shared by every worker of this test run (created on first use)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's base folder sits in the run's own
        root = root.parent
    folder = root / "once-per-session"
    folder.mkdir(exist_ok=True)
    return folder


def once_per_session(tmp_path_factory: pytest.TempPathFactory, name: str, compute: Callable[[], T]) -> T:
    """``compute()`` the first time any worker of this run asks for ``name``; a copy read from its file after that.

    ``name`` is the file's name (letters, digits, ``.``, ``_`` and ``-``); ``compute`` returns tensors and plain
    data that :func:`torch.load` reads back with ``weights_only=True``. A worker that asks while another computes
    waits for it.
    """
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"Expected a file name of letters, digits, '.', '_' or '-' but got {name!r}")
    path = session_folder(tmp_path_factory) / f"{name}.pt"
    with FileLock(f"{path}.lock"):
        if path.is_file():
            return torch.load(path, weights_only=True)
        value = compute()
        partial = path.with_suffix(".partial")
        torch.save(value, partial)
        os.replace(partial, path)  # a worker that dies mid-write leaves no half file behind
        return value
