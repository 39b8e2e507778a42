"""The command's own checks of a flow's parameters: this machine's device, paths and an ImageFolder's classes.

They run in this process before Prefect starts, so a user's mistake ends in seconds with one
line (a :class:`~flows.cli.errors.UsageError`) instead of a failed flow run. The model, its weights,
the methods and the request's size are checked next by the worker's own pre-flight
(:mod:`flows.worker.preflight`), run here too before Prefect starts.

Examples
--------
>>> from types import SimpleNamespace
>>> check_inputs(SimpleNamespace(model=SimpleNamespace(weights="/no/such/weights.pt")))
Traceback (most recent call last):
...
flows.cli.errors.UsageError: The weights file '/no/such/weights.pt' does not exist: pass --weights with an existing \
weights file (a state_dict saved with torch.save, yours or one that `focus train` wrote).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.cli.errors import UsageError

__all__ = ["check_device", "check_inputs"]


def _require_file(path: str | None, what: str, hint: str) -> None:
    from flows.weights.weight_store import is_url

    if is_url(path):  # read (and checked) through the worker's cache by check_model and the flow
        return
    if path and Path(path).is_dir():
        raise UsageError(f"The {what} {path!r} is a directory, not a file: {hint}.")
    if path and not Path(path).is_file():
        raise UsageError(f"The {what} {path!r} does not exist: {hint}.")


def _require_dir(path: str | None, what: str) -> None:
    if path and Path(path).is_file():
        raise UsageError(f"The {what} {path!r} is a file, not a directory: pass an existing directory.")
    if path and not Path(path).is_dir():
        raise UsageError(f"The {what} {path!r} does not exist: pass an existing directory.")


def check_device(params: Any) -> None:
    """Fail here, before Prefect starts, when this machine lacks the flow's device (``--device``).

    The flow checks again where it runs; a sweep with a deployment runs its cells on the work pool's
    workers, so its device is theirs to check.
    """
    if getattr(params, "deployment", None):
        return
    run = getattr(params, "run", None)
    device = getattr(run, "device", None) if run is not None else getattr(params, "device", None)
    if device:
        from flows.worker.devices import require_device

        require_device(device)


def check_inputs(params: Any) -> None:
    """Fail before Prefect starts (seconds) for paths this machine does not have, and for a disconnected request
    of a ``timm:`` architecture (none can be disconnected; the pre-flight checks every other model once built)."""
    model = getattr(params, "model", None)
    if model is not None and getattr(params, "disconnected", False):
        _check_disconnectable(model.architecture)
    if model is not None:
        _require_file(model.weights, "weights file", "pass --weights with an existing weights file (a state_dict "
                      "saved with torch.save, yours or one that `focus train` wrote)")
    for checkpoint in getattr(params, "checkpoints", None) or []:
        weights = getattr(checkpoint, "weights", None)
        _require_file(weights, "weights file", "pass --checkpoint with an existing weights file")
    dataset = getattr(params, "dataset", None)
    if dataset is not None and dataset.kind == "image_folder":
        _require_dir(dataset.root, "ImageFolder directory")
        _check_class_counts(params, dataset.root)


def _check_disconnectable(architecture: str) -> None:
    from focus_core.arch_string import parse_architecture

    if parse_architecture(architecture).kind == "timm":
        raise UsageError(
            f"--disconnected cannot be used with {architecture}: the disconnected setting knows the feature extractor "
            "and head of the digits CNN, torchvision ResNets and VGGs only (a vision transformer's attention joins "
            "every patch to every other); leave --disconnected out or pick one of those architectures."
        )


def _check_class_counts(params: Any, root: str) -> None:
    """Target classes (``--classes``) and a model's class count (``--num-classes``) against the folder's classes,
    counted from its listing (:func:`focus_core.folder_classes.class_names`: no image is opened)."""
    from focus_core.folder_classes import class_names

    count = len(class_names(root))
    if count < 2:
        return  # the flow's loader says what the folder lacks
    mosaics = getattr(params, "mosaics", None) or getattr(params, "focus_mosaics", None)
    outside = [c for c in (getattr(mosaics, "classes", None) or []) if not 0 <= c < count]
    if outside:
        raise UsageError(
            f"--classes {outside[0]} is not a class of the ImageFolder {root!r}, which has {count} classes: pass "
            f"indices from 0 to {count - 1}."
        )
    models = [getattr(params, "model", None), *(getattr(params, "checkpoints", None) or [])]
    for model in models:
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and num_classes < count:
            raise UsageError(
                f"--num-classes {num_classes} is fewer than the {count} classes of the ImageFolder {root!r}: pass "
                f"--num-classes {count} or leave it out."
            )
