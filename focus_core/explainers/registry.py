"""The registry: a method's name and parameters -> a batched explainer.

Examples
--------
>>> from focus_core.explainers import get_explainer
>>> explainer = get_explainer("smoothgrad", n_samples=8)
>>> explainer.params
{'n_samples': 8, 'sigma': 0.2, 'seed': 0}
"""

from __future__ import annotations

from typing import Any

from focus_core.errors import FocusError
from focus_core.explainers.base import Explainer, ExplainerBase
from focus_core.explainers.control import RandomControl
from focus_core.explainers.fast_lrp import FastLRP
from focus_core.explainers.gradcam import GradCAM, GradCAMPlusPlus
from focus_core.explainers.gradients import Gradient, InputXGradient, IntegratedGradients, SmoothGrad
from focus_core.explainers.lime import Lime
from focus_core.explainers.lrp import LRP
from focus_core.explainers.lxt_lrp import AttnLRP

__all__ = ["EXPLAINERS", "get_explainer", "available_explainers", "register_explainer"]

EXPLAINERS: dict[str, type[ExplainerBase]] = {
    cls.name: cls
    for cls in (
        GradCAM, GradCAMPlusPlus, LRP, FastLRP, SmoothGrad, IntegratedGradients, Gradient, InputXGradient, Lime,
        RandomControl, AttnLRP,
    )
}
"""Registry name -> explainer class."""


def register_explainer(cls: type[ExplainerBase]) -> type[ExplainerBase]:
    """Add an explainer class (a subclass of :class:`ExplainerBase` with a new ``name``) to the registry.

    Raises
    ------
    FocusError
        When the name is taken.
    """
    if cls.name in EXPLAINERS:
        raise FocusError(f"An explainer named {cls.name!r} is already registered: give yours another name.")
    EXPLAINERS[cls.name] = cls
    return cls


def available_explainers() -> list[str]:
    """Return the registered method names, in registry order."""
    return list(EXPLAINERS)


def get_explainer(name: str, **params: Any) -> Explainer:
    """Return the explainer ``name`` with ``params`` (defaults fill the rest).

    Parameters
    ----------
    name : str
        One of :func:`available_explainers`.
    **params
        The method's parameters (see each class).

    Returns
    -------
    Explainer
        An object with ``name``, ``params``, ``params_hash`` and ``__call__(model, inputs, targets)``.

    Raises
    ------
    FocusError
        For an unknown name, an unknown parameter or a bad value.
    """
    if name not in EXPLAINERS:
        raise FocusError(f"Unknown explainer {name!r}: choose one of {', '.join(EXPLAINERS)}.")
    return EXPLAINERS[name](**params)
