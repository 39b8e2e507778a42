"""What a worker checks of an evaluating request before it writes anything to the store.

The command line checks what it can before Prefect starts (:mod:`flows.cli.checks`); a deployment's
run reaches the worker unchecked, and some things only the worker can see (its device, its files).
Every check here raises a one-sentence ``FocusError`` (a ``ValueError``: not retried), so a bad request
leaves no dataset, mosaic set, checkpoint or evaluation behind.
"""

from __future__ import annotations

from typing import Any

import torch

from flows.worker import caches, devices, record, store
from flows.params import RandomizationSpec
from focus_core import randomize
from focus_core.explainers.gradcam import resolve_layer
from focus_core.tokens import check_patch_alignment, patch_geometry

__all__ = ["check_request"]


def check_request(params: Any, randomization: RandomizationSpec | None = None) -> torch.device:
    """Check the device, the weights (they fit the architecture and the store's record), the randomization, the
    mosaic set (at most ``run.max_mosaics`` mosaics; it can be drawn: enough, and with ``confident`` enough confidently classified, images), the layers,
    that every method can explain the model (``check_model``: ``attnlrp`` only ViTs, ``lrp`` no ViT) and, for a
    vision transformer, that the tiles are whole patches (:func:`focus_core.tokens.check_patch_alignment`).

    ``params`` is an ``EvaluateParams`` or a ``RandomizationParams``; ``randomization`` overrides
    ``params.randomization`` (the randomization flow checks its stages itself). Returns the device.
    """
    device = devices.require_device(params.run.device)
    model = caches.checked_model(params.model, params.dataset)
    record.check_recorded_checkpoint(store.engine_for(params.run.database_url), params.model, params.dataset)
    rnd = randomization or getattr(params, "randomization", None) or RandomizationSpec()
    randomize.check_randomization(model, rnd.kind, rnd.stage, rnd.layer)
    record.check_request_size(params.dataset, params.mosaics, params.run.max_mosaics)  # before drawing the set
    caches.load_manifest(params.dataset, params.mosaics, params.model)  # a set that cannot be drawn: before any row
    for method in params.methods:
        explainer = caches.make_explainer(method, params.model, grid=params.mosaics.grid)
        check_model = getattr(explainer, "check_model", None)
        if check_model is not None:
            check_model(model)
        if method.name.startswith("gradcam"):
            resolve_layer(model, explainer.params.get("layer"))
    if patch_geometry(model) is not None:  # a CNN has no patches: its dataset is not loaded here
        check_patch_alignment(model, caches.load_dataset(params.dataset).tile_size)
    return device
