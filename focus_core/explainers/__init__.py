"""Batched feature-attribution methods behind one registry.

Each method lives in the module of its family; :func:`get_explainer` maps a name and parameters to a callable
``explainer(model, inputs, targets) -> (B, H, W)`` relevance::

    from focus_core.explainers import get_explainer
    relevance = get_explainer("lrp")(model, mosaics, targets)

Modules: :mod:`.gradcam` (gradcam, gradcam++; CNN feature maps and ViT patch tokens), :mod:`.lrp` (lrp, zennit: the
reference, CNNs), :mod:`.lxt_lrp` (attnlrp: LRP for vision transformers through LXT), :mod:`.fast_lrp` (lrp_fast:
the same rules in plain torch, faster (benchmarks/README.md); its rules in :mod:`.fast_lrp_rules`, its trace in
:mod:`.fast_lrp_plan`), :mod:`.gradients` (gradient, input_x_gradient, integrated_gradients, smoothgrad),
:mod:`.lime` (lime: captum's Lime over features that stay inside one tile), :mod:`.control` (random),
:mod:`.noise` (batch-invariant seeded noise), :mod:`.base` (protocol, parameters and hash), :mod:`.specs` (the
methods' names and parameter specs, without torch), :mod:`.registry`.

Importing this package imports none of them: each name below is imported from its module on first use, so the
method names and the parameters' check (:func:`available_explainers`, :func:`get_explainer`'s first step) cost
no torch import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from focus_core.explainers.base import Explainer, ExplainerBase, params_hash
    from focus_core.explainers.gradcam import resolve_layer
    from focus_core.explainers.registry import EXPLAINERS, available_explainers, get_explainer, register_explainer

__all__ = [
    "EXPLAINERS",
    "Explainer",
    "ExplainerBase",
    "available_explainers",
    "get_explainer",
    "params_hash",
    "register_explainer",
    "resolve_layer",
]

#: Where each name of ``__all__`` lives (a module of this package).
_HOMES = {
    "Explainer": "base", "ExplainerBase": "base", "params_hash": "base", "resolve_layer": "gradcam",
    "EXPLAINERS": "registry", "available_explainers": "registry", "get_explainer": "registry",
    "register_explainer": "registry",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
