"""Pre-flight checks of a flow's parameters: paths, the model, its weights and GradCAM's layer.

They run in this process before Prefect starts, so a user's mistake ends in seconds with one
line (a :class:`~flows.cli.errors.UsageError`) instead of a failed flow run.

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
from focus_core.errors import FocusError

__all__ = ["check_device", "check_inputs", "check_model", "check_request_size"]


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
    """Fail before Prefect starts (seconds) for paths this machine does not have."""
    model = getattr(params, "model", None)
    if model is not None:
        _require_file(model.weights, "weights file", "pass --weights with an existing weights file (a state_dict "
                      "saved with torch.save, yours or one that `focus train` wrote)")
    for checkpoint in getattr(params, "checkpoints", None) or []:
        weights = getattr(checkpoint, "weights", None)
        _require_file(weights, "weights file", "pass --checkpoint with an existing weights file")
    dataset = getattr(params, "dataset", None)
    if dataset is not None and dataset.kind == "image_folder":
        _require_dir(dataset.root, "ImageFolder directory")


def _database_param(params: Any) -> str | None:
    run = getattr(params, "run", None)
    return getattr(run, "database_url", None) if run is not None else getattr(params, "database_url", None)


def check_model(params: Any) -> None:
    """Build the checkpoint's model, find GradCAM's layer, ask every method whether it explains the model and check
    that a ViT's patches fit the tiles, here, before Prefect starts (the worker checks again: flows/worker/preflight.py).
    A training run's model is checked as built, for its per-epoch methods.

    A weights file for another architecture (or recorded as another one), a broken
    ``module:factory`` path or a model whose GradCAM layer cannot be inferred then ends with one
    line, in seconds, instead of a failed flow run. The model and data stay cached in this process
    for the flow.
    """
    model_spec = getattr(params, "model", None)
    dataset_spec = getattr(params, "dataset", None)
    if model_spec is None or dataset_spec is None:
        return
    from flows.specs import effective_dataset

    dataset_spec = effective_dataset(dataset_spec, model_spec)  # what the flow loads: the model's size and stats
    if not model_spec.weights and not getattr(params, "focus_methods", None):
        return  # nothing to load, nothing explained: a training run without per-epoch Focus
    from flows.worker import caches, record, store
    from focus_core import randomize
    from focus_core.explainers.gradcam import resolve_layer

    if hasattr(params, "run") and model_spec.weights:  # evaluating flows register the checkpoint: it must agree
        record.check_recorded_checkpoint(store.engine_for(_database_param(params)), model_spec, dataset_spec)
    model = caches.checked_model(model_spec, dataset_spec)
    rnd = getattr(params, "randomization", None)
    if rnd is not None:
        randomize.check_randomization(model, rnd.kind, rnd.stage, rnd.layer)  # FocusError: one line, rc 2
    methods = list(getattr(params, "methods", None) or []) + list(getattr(params, "focus_methods", None) or [])
    for method in methods:
        explainer = caches.make_explainer(method, model_spec)
        check = getattr(explainer, "check_model", None)
        if check is not None:
            check(model)  # FocusError: 'attnlrp' on a CNN, 'lrp' on a ViT
        if method.name.startswith("gradcam"):
            try:
                resolve_layer(model, explainer.params.get("layer"))
            except FocusError:
                if explainer.params.get("layer") is None:
                    raise UsageError(
                        f"Cannot infer GradCAM's layer for {type(model).__name__} ({model_spec.architecture}): pass "
                        "--gradcam-layer with the dotted name of its last convolutional block's output "
                        f"(one of: {_conv_block_hint(model)})."
                    ) from None
                raise
    from focus_core.tokens import check_patch_alignment, patch_geometry

    if patch_geometry(model) is not None:  # a ViT: the tiles must be whole patches
        check_patch_alignment(model, caches.load_dataset(dataset_spec).tile_size)


def check_request_size(params: Any) -> None:
    """Refuse a mosaic set of more than ``run.max_mosaics`` mosaics here, before Prefect starts (the worker checks
    again: :func:`flows.worker.preflight.check_request`)."""
    mosaics, dataset_spec = getattr(params, "mosaics", None), getattr(params, "dataset", None)
    limit = getattr(getattr(params, "run", None), "max_mosaics", None)
    if mosaics is None or dataset_spec is None or limit is None:
        return
    from flows.worker import record
    from flows.specs import effective_dataset

    model_spec = getattr(params, "model", None)
    if model_spec is not None:
        dataset_spec = effective_dataset(dataset_spec, model_spec)  # the dataset the flow loads (cached here)
    record.check_request_size(dataset_spec, mosaics, limit)


def _conv_block_hint(model: Any) -> str:
    """The model's last few module names that can serve as GradCAM's layer, for the error message."""
    from torch import nn

    names = [name for name, module in model.named_modules()
             if name and isinstance(module, (nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Sequential))]
    return ", ".join(names[-4:]) or "see model.named_modules()"
