"""The registry: a method's name and parameters -> a batched explainer.

The explainer classes (and with them torch, captum, zennit, torchvision) are imported on first use of
:data:`EXPLAINERS` or :func:`get_explainer`; the names (:func:`available_explainers`) and the parameters' check
come from :mod:`.specs` and import none of them, so a mistyped name or parameter is refused in milliseconds.

Examples
--------
>>> from focus_core.explainers import get_explainer
>>> explainer = get_explainer("smoothgrad", n_samples=8)
>>> explainer.params
{'n_samples': 8, 'sigma': 0.2, 'seed': 0}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from focus_core.errors import FocusError
from focus_core.explainers.specs import METHODS, check_method, unknown_method

if TYPE_CHECKING:
    from focus_core.explainers.base import Explainer, ExplainerBase

__all__ = ["EXPLAINERS", "get_explainer", "available_explainers", "register_explainer"]

EXPLAINERS: dict[str, type[ExplainerBase]]
"""Registry name -> explainer class: the built-in methods (:data:`.specs.METHODS`, in its order) and the registered
ones. Made (importing every class) on first access."""


def _built_in() -> dict[str, type[ExplainerBase]]:
    from focus_core.explainers.control import RandomControl
    from focus_core.explainers.fast_lrp import FastLRP
    from focus_core.explainers.gradcam import GradCAM, GradCAMPlusPlus
    from focus_core.explainers.gradients import Gradient, InputXGradient, IntegratedGradients, SmoothGrad
    from focus_core.explainers.lime import Lime
    from focus_core.explainers.lrp import LRP
    from focus_core.explainers.lxt_lrp import AttnLRP

    classes = (GradCAM, GradCAMPlusPlus, LRP, FastLRP, SmoothGrad, IntegratedGradients, Gradient, InputXGradient,
               Lime, RandomControl, AttnLRP)
    return {cls.name: cls for cls in classes}


def _explainers() -> dict[str, type[ExplainerBase]]:
    """:data:`EXPLAINERS`, made once (and then a plain module attribute)."""
    table = globals().get("EXPLAINERS")
    if table is None:
        table = globals()["EXPLAINERS"] = _built_in()
    return table


def __getattr__(name: str) -> Any:
    if name == "EXPLAINERS":
        return _explainers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_explainer(cls: type[ExplainerBase]) -> type[ExplainerBase]:
    """Add an explainer class (a subclass of :class:`ExplainerBase` with a new ``name``) to the registry.

    Raises
    ------
    FocusError
        When the name is taken.
    """
    table = _explainers()
    if cls.name in table:
        raise FocusError(f"An explainer named {cls.name!r} is already registered: give yours another name.")
    table[cls.name] = cls
    return cls


def available_explainers() -> list[str]:
    """Return the registered method names, in registry order (without importing an explainer)."""
    return list(globals().get("EXPLAINERS") or METHODS)


def get_explainer(name: str, **params: Any) -> Explainer:
    """Return the explainer ``name`` with ``params`` (defaults fill the rest).

    An unknown name or parameter, and a value of the wrong kind, are refused before any explainer is imported
    (:func:`.specs.check_method`).

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
    if name in METHODS:
        check_method(name, params)
    elif name not in (globals().get("EXPLAINERS") or {}):
        raise unknown_method(name, available_explainers())
    return _explainers()[name](**params)
