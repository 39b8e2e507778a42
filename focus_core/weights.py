"""Weight files: atomic saving, their sha256, and safe loading (``weights_only=True``) checked against the model.

A file is written through a hidden ``.partial`` file beside it and renamed, so a reader never sees half a file; it
is loaded only with ``torch.load(..., weights_only=True)``, and only when every key and shape matches the model
(the message names the mismatch). Import these names from :mod:`focus_core.models`, which gathers them with the
architectures and GradCAM's default layer.

Examples
--------
>>> import tempfile, pathlib
>>> from focus_core.architectures import DigitsCNN
>>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
>>> sha = save_weights(DigitsCNN(), path)
>>> load_weights(DigitsCNN(), path).classifier.out_features, sha == weights_sha256(path)
(10, True)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from focus_core.architectures import last_linear
from focus_core.errors import FocusError

__all__ = ["load_weights", "save_atomically", "save_weights", "weights_sha256"]


def save_weights(model: nn.Module, path: str | os.PathLike) -> str:
    """Write the model's ``state_dict`` (on the CPU) to ``path`` atomically; return its sha256.

    Raises
    ------
    OSError
        As :func:`save_atomically`: nothing is left at ``path`` or beside it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from focus_core.architectures import DigitsCNN
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
    >>> save_weights(DigitsCNN(), path) == weights_sha256(path)
    True
    """
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    save_atomically(state, path)
    return weights_sha256(path)


def save_atomically(payload: object, path: str | os.PathLike) -> Path:
    """``torch.save`` ``payload`` to ``path`` through a hidden ``.partial`` file beside it, then rename it.

    A reader never sees half a file, and a failed write (a full disk, a crash of ``torch.save``) leaves
    neither ``path`` nor the ``.partial`` file behind. ``path``'s folder is created if needed.

    Raises
    ------
    OSError
        When the file cannot be written, with the ``errno`` of the failure (``ENOSPC`` on a full disk,
        ``EACCES``, ``EROFS``, ...) and ``filename`` set to ``path`` (``torch.save`` itself reports a
        write error as a ``RuntimeError``; its ``OSError`` is raised instead, from it).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> save_atomically({"epoch": 1}, folder / "c.pt").name, [p.name for p in folder.iterdir()]
    ('c.pt', ['c.pt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as error:  # a read-only or forbidden folder: name the file that was to be written
        raise OSError(error.errno, error.strerror, str(path)) from error
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        os.replace(partial, path)
    except BaseException as error:
        Path(partial).unlink(missing_ok=True)
        cause = _os_error(error)
        if cause is not None and (cause is not error or cause.filename is None):
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from error
        raise
    return path


def _os_error(error: BaseException) -> OSError | None:
    """The ``OSError`` that ``error`` is or that it was raised from or while handling (a few links deep)."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _require_weights_file(path: Path, name: str | None = None) -> None:
    """A missing path and a directory are told apart: both are mistakes, with different fixes."""
    name = str(path) if name is None else name
    if path.is_dir():
        raise FocusError(
            f"The weights file {name!r} is a directory, not a file: pass the path of a saved state_dict in it."
        )
    if not path.is_file():
        raise FocusError(f"The weights file {name!r} does not exist: pass the path of a saved state_dict.")


def weights_sha256(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a weights file.

    Raises
    ------
    FocusError
        When the file does not exist or is a directory.
    """
    path = Path(path)
    _require_weights_file(path)
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(model: nn.Module, path: str | os.PathLike, name: str | None = None) -> nn.Module:
    """Load a ``state_dict`` file into ``model`` safely (``weights_only=True``) and return it.

    A file holding ``{"state_dict": ...}`` or ``{"model_state_dict": ...}`` is accepted too.
    Nothing is loaded unless every key and shape matches. ``name`` is how messages call the file
    (default: ``path``; e.g. the URL a cached copy came from).

    Raises
    ------
    FocusError
        When the file is missing, is a directory, is not a state_dict (any file that
        ``torch.load(..., weights_only=True)`` refuses, a text file too), or was saved for another
        architecture, class count or channel count (the message names the mismatch).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from focus_core.architectures import DigitsCNN
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
    >>> _ = save_weights(DigitsCNN(num_classes=2), path)
    >>> load_weights(DigitsCNN(num_classes=10), path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The weights file ... has 2 classes in 'classifier.weight' but the model has 10: pass the matching --num-classes or architecture.
    """
    path = Path(path)
    name = str(path) if name is None else name
    _require_weights_file(path, name)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load raises a different error for each kind of wrong file: UnpicklingError, RuntimeError,
    # EOFError, KeyError (a text file: "KeyError: 101"), ...; each means the same to the user.
    except Exception as error:  # noqa: BLE001
        raise FocusError(
            f"The weights file {name!r} cannot be read safely ({type(error).__name__}): "
            "save it with torch.save(model.state_dict(), path)."
        ) from None
    state = _as_state_dict(loaded, name)
    _check_state_dict(model, state, name)
    model.load_state_dict(state)
    return model


def _as_state_dict(loaded: object, name: str) -> Mapping[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if (
        not isinstance(loaded, Mapping)
        or not loaded
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items())
    ):
        raise FocusError(
            f"The weights file {name!r} does not hold a state_dict: save it with "
            "torch.save(model.state_dict(), path)."
        )
    return loaded


def _check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        detail = f"lacks {missing[0]!r}" if missing else f"has {unexpected[0]!r}, which the model lacks"
        raise FocusError(
            f"The weights file {name!r} {detail} ({len(missing)} keys missing, {len(unexpected)} "
            f"unexpected), so it was saved for another architecture: pass the matching architecture."
        )
    head = last_linear(model)
    head_keys = {f"{head[0]}.weight", f"{head[0]}.bias"} if head else set()
    for key, tensor in expected.items():
        got = state[key].shape
        if got == tensor.shape:
            continue
        if key in head_keys and len(got) >= 1:
            raise FocusError(
                f"The weights file {name!r} has {got[0]} classes in {key!r} but the model has "
                f"{tensor.shape[0]}: pass the matching --num-classes or architecture."
            )
        raise FocusError(
            f"The weights file {name!r} has shape {tuple(got)} for {key!r} but the model has "
            f"{tuple(tensor.shape)}: pass the matching architecture, --num-classes or --in-channels."
        )
