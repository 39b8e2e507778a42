"""The pre-flight: what a request must pass before anything is written to the store. One implementation, two callers.

The ``focus`` command runs it in its own process before Prefect starts (:func:`flows.cli.run.run_flow`), so a
user's mistake ends in seconds with one line; the worker runs it again where the flow runs
(:func:`check_request`, from the evaluating flows), since a deployment's run reaches it unchecked and some things
only the worker can see (its device, its files). Every check raises a one-sentence ``FocusError`` (a
``ValueError``: not retried), so a bad request leaves no dataset, mosaic set, checkpoint or evaluation behind.

The steps, in order: the device (:func:`check_request`; the command checks it on its own, for every flow), the
architecture's name, the store's record of the weights, the model built from them, the randomization, the
disconnected setting where asked for (the model must be one that can be disconnected), every method
(``attnlrp`` only ViTs, ``lrp`` no ViT; GradCAM's layer), a vision transformer's patches against the tiles, the
request's size, and (on the worker) that the mosaic set can be drawn.
"""

from __future__ import annotations

from typing import Any

import torch

from flows.specs import effective_dataset
from flows.worker import caches, devices, record, store
from focus_core import randomize
from focus_core.arch_string import parse_architecture
from focus_core.errors import FocusError
from focus_core.explainers.gradcam import resolve_layer
from focus_core.explainers.specs import close_match
from focus_core.models import ARCHITECTURES
from focus_core.tokens import check_patch_alignment, patch_geometry

__all__ = ["check_model", "check_request", "check_request_size"]


def check_model(params: Any, randomization: Any = None) -> None:
    """Check the weights against the store's record, build the model, check the randomization, ask every method
    whether it explains the model, find GradCAM's layer and, for a vision transformer, that the tiles are whole
    patches (:func:`focus_core.tokens.check_patch_alignment`).

    ``params`` is any flow's parameters: those without a model and a dataset pass; a training run's model is
    checked as built, for its per-epoch methods (``focus_methods``), and not at all when it neither starts from
    weights nor explains anything. The dataset is the one the flow loads (:func:`flows.specs.effective_dataset`).
    ``randomization`` overrides ``params.randomization``. With ``params.disconnected`` the methods are checked on
    the disconnected model (:func:`flows.worker.caches.disconnect`). The model and data stay cached in this process.

    Raises
    ------
    FocusError
        A weights file for another architecture (or recorded as another one), a broken ``module:factory`` path,
        a stage or layer the model does not have, a model that cannot be disconnected (a vision transformer, an
        unknown network), a method that cannot explain the model, or a GradCAM layer that cannot be inferred (the
        sentence names the candidates).
    """
    model_spec, dataset_spec = getattr(params, "model", None), getattr(params, "dataset", None)
    if model_spec is None or dataset_spec is None:
        return
    _check_architecture_name(model_spec.architecture)  # before the store's record of the weights speaks of it
    dataset_spec = effective_dataset(dataset_spec, model_spec)  # what the flow loads: the model's size and stats
    focus_methods = list(getattr(params, "focus_methods", None) or [])
    methods = list(getattr(params, "methods", None) or []) + focus_methods
    if not model_spec.weights and not methods:
        return  # nothing to load, nothing explained: a training run without per-epoch Focus
    if hasattr(params, "run") and model_spec.weights:  # evaluating flows register the checkpoint: it must agree
        record.check_recorded_checkpoint(store.engine_for(store.database_param(params)), model_spec, dataset_spec)
    model = caches.checked_model(model_spec, dataset_spec)
    rnd = randomization or getattr(params, "randomization", None)
    if rnd is not None:
        randomize.check_randomization(model, rnd.kind, rnd.stage, rnd.layer)
    mosaics = getattr(params, "mosaics", None) or getattr(params, "focus_mosaics", None)
    grid = mosaics.grid if mosaics is not None else 2
    disconnected = bool(getattr(params, "disconnected", False))
    if disconnected:
        model = caches.disconnect(model, grid, model_spec.architecture)  # a wrapper: the shared model is unchanged
    for method in methods:
        explainer = caches.make_explainer(method, model_spec, grid=grid, disconnected=disconnected)
        check = getattr(explainer, "check_model", None)
        if check is not None:
            check(model)  # 'attnlrp' on a CNN, 'lrp' on a ViT
        if method.name.startswith("gradcam"):
            _check_gradcam_layer(model, explainer.params.get("layer"), model_spec.architecture)
    if patch_geometry(model) is not None:  # a CNN has no patches: its dataset is not loaded here
        check_patch_alignment(model, caches.load_dataset(dataset_spec).tile_size)


def check_request_size(params: Any) -> None:
    """Refuse a mosaic set of more than ``run.max_mosaics`` mosaics, before the set is drawn.

    Parameters without mosaics, a dataset or a limit pass.
    """
    mosaics, dataset_spec = getattr(params, "mosaics", None), getattr(params, "dataset", None)
    limit = getattr(getattr(params, "run", None), "max_mosaics", None)
    if mosaics is None or dataset_spec is None or limit is None:
        return
    model_spec = getattr(params, "model", None)
    if model_spec is not None:
        dataset_spec = effective_dataset(dataset_spec, model_spec)  # the dataset the flow loads (cached here)
    record.check_request_size(dataset_spec, mosaics, limit)


def check_request(params: Any, randomization: Any = None) -> torch.device:
    """The worker's pre-flight of an evaluating request: the device, :func:`check_model`,
    :func:`check_request_size`, and that the mosaic set can be drawn (enough images, and with ``confident``
    enough confidently classified ones). Returns the device.

    ``params`` is an ``EvaluateParams`` or a ``RandomizationParams``; ``randomization`` overrides
    ``params.randomization`` (the randomization flow checks its stages itself).
    """
    device = devices.require_device(params.run.device)
    check_model(params, randomization)
    check_request_size(params)
    caches.load_manifest(params.dataset, params.mosaics, params.model)  # a set that cannot be drawn: before any row
    return device


def _check_gradcam_layer(model: torch.nn.Module, layer: str | None, architecture: str) -> None:
    """GradCAM's layer: the one named, else the one inferred; a model with neither names its candidates."""
    try:
        resolve_layer(model, layer)
    except FocusError:
        if layer is not None:
            closest = close_match(layer, [name for name, _ in model.named_modules() if name])
            raise FocusError(
                f"The layer {layer!r} is not a submodule of {type(model).__name__} ({architecture}){closest}: "
                f"pass --gradcam-layer with the dotted name of one of its modules, such as its last convolutional "
                f"blocks ({_conv_block_hint(model)})."
            ) from None
        raise FocusError(
            f"Cannot infer GradCAM's layer for {type(model).__name__} ({architecture}): pass "
            "--gradcam-layer with the dotted name of its last convolutional block's output "
            f"(one of: {_conv_block_hint(model)})."
        ) from None


def _check_architecture_name(architecture: str) -> None:
    """Refuse a plain architecture name that neither :data:`focus_core.models.ARCHITECTURES` nor torchvision has
    (``resnet181``), naming the closest one; ``timm:`` names and factories are checked where they are built."""
    parsed = parse_architecture(architecture)
    if parsed.kind != "name" or parsed.name in ARCHITECTURES:
        return
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if parsed.name not in known:
        raise FocusError(
            f"Unknown architecture {architecture!r}{close_match(parsed.name, [*ARCHITECTURES, *known])}: pass --arch "
            f"with one of {', '.join(ARCHITECTURES)}, a torchvision model name, 'timm:<name>' or a "
            "'package.module:factory' import path."
        )


def _conv_block_hint(model: torch.nn.Module) -> str:
    """The model's last few module names that can serve as GradCAM's layer, for the error message."""
    kinds = (torch.nn.Conv2d, torch.nn.ReLU, torch.nn.BatchNorm2d, torch.nn.Sequential)
    names = [name for name, module in model.named_modules() if name and isinstance(module, kinds)]
    return ", ".join(names[-4:]) or "see model.named_modules()"
