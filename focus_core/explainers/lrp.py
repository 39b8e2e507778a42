"""Layer-wise Relevance Propagation with the paper's rules, through zennit 0.5.1.

Rules (Arias-Duart et al., after Nam et al.): z^B (:class:`zennit.rules.ZBox`) on the first layer, epsilon on
fully connected layers, alpha=1/beta=0 (:class:`zennit.rules.ZPlus`) on convolutions; activations pass relevance
through, sum/average pooling use zennit's ``Norm`` and BatchNorm is merged into the layer before it by a
canonizer (ResNet's residual sums become ``Sum`` modules with :class:`zennit.torchvision.ResNetCanonizer`).
Relevance starts from the target logit: ``logits * one_hot(targets)``, so a map keeps its sign when the logit is
negative and its total approximates the logit (conservation). The composite and canonizers are removed after
every call, which restores the model's parameters.

This path is the reference for any faster LRP implementation.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torchvision.models import ResNet
from zennit.canonizers import Canonizer, SequentialMergeBatchNorm
from zennit.composites import SpecialFirstLayerMapComposite, layer_map_base
from zennit.rules import Epsilon, ZBox, ZPlus
from zennit.torchvision import ResNetCanonizer
from zennit.types import BatchNorm, Convolution
from zennit.types import Linear as AnyLinear

from focus_core.disconnected import DisconnectedModel
from focus_core.errors import FocusError
from focus_core.explainers.base import ExplainerBase, Explanation, checked_forward
from focus_core.tokens import patch_geometry

__all__ = ["LRP", "CANONIZERS", "SAMPLE_BOUNDS", "dataset_bounds", "lrp_canonizers", "lrp_composite", "zbox_bounds"]

#: The value of ``low`` and ``high`` that asks for each sample's own minimum and maximum (stored as ``None``).
SAMPLE_BOUNDS = "sample"

CANONIZERS = ("auto", "sequential_merge_batchnorm", "resnet", "none")
"""Canonizer choices: ``auto`` picks ``resnet`` for torchvision ResNets, else ``sequential_merge_batchnorm``."""


def lrp_canonizers(model: nn.Module, canonizer: str) -> list[Canonizer]:
    """Return fresh zennit canonizers for ``model`` by name (one of :data:`CANONIZERS`)."""
    if canonizer == "auto":
        canonizer = "resnet" if isinstance(model, ResNet) else "sequential_merge_batchnorm"
    if canonizer == "resnet":
        return [ResNetCanonizer()]
    if canonizer == "sequential_merge_batchnorm":
        return [SequentialMergeBatchNorm()]
    return []


def lrp_composite(
    low: torch.Tensor | float, high: torch.Tensor | float, epsilon: float, canonizers: list[Canonizer]
) -> SpecialFirstLayerMapComposite:
    """Return the paper's composite: ZBox(low, high) first, ZPlus on convolutions, Epsilon on linear layers.

    ``low`` and ``high`` broadcast against the first layer's input (a scalar, ``(1, C, 1, 1)`` or ``(B, 1, 1, 1)``).
    """
    layer_map = layer_map_base() + [
        (Convolution, ZPlus()),
        (nn.Linear, Epsilon(epsilon=epsilon)),
    ]
    first_map = [(AnyLinear, ZBox(low=low, high=high))]
    return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=first_map, canonizers=canonizers)


def dataset_bounds(mean: list[float] | tuple[float, ...], std: list[float] | tuple[float, ...]
                   ) -> tuple[list[float], list[float]]:
    """The z^B bounds of a dataset's input domain after normalisation: ``(0 - mean) / std`` and ``(1 - mean) / std``.

    ``mean`` and ``std`` are per channel on the ``[0, 1]`` pixel scale (what the tiles are normalised with), so the
    bounds are the smallest and largest value any normalised pixel can take, one per channel.

    Examples
    --------
    >>> dataset_bounds([0.5], [0.25])
    ([-2.0], [2.0])
    """
    if len(mean) != len(std) or not mean:
        raise FocusError(f"Expected one mean and one std per channel but got {len(mean)} and {len(std)}.")
    return [(0.0 - m) / s for m, s in zip(mean, std)], [(1.0 - m) / s for m, s in zip(mean, std)]


def zbox_bounds(
    inputs: torch.Tensor, low: float | list[float] | None, high: float | list[float] | None, explainer: str = "lrp"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The z^B bounds of ``inputs`` ``(B, C, H, W)``, broadcastable against them.

    ``None`` (both): each sample's own minimum and maximum over all channels and pixels (``(B, 1, 1, 1)``);
    otherwise one number or one per channel (``(1, C, 1, 1)``).

    Raises
    ------
    FocusError
        When the number of per-channel bounds does not match the channels.
    """
    if low is None:
        return inputs.detach().amin(dim=(1, 2, 3), keepdim=True), inputs.detach().amax(dim=(1, 2, 3), keepdim=True)
    bounds = []
    for value in (low, high):
        tensor = torch.as_tensor(value, dtype=inputs.dtype, device=inputs.device)
        if tensor.ndim == 1:
            if tensor.numel() not in (1, inputs.shape[1]):
                raise FocusError(
                    f"Explainer '{explainer}' got {tensor.numel()} z^B bounds for {inputs.shape[1]} input channels: "
                    "pass one number or one per channel."
                )
            tensor = tensor.reshape(1, -1, 1, 1)
        bounds.append(tensor)
    return bounds[0], bounds[1]


def _per_first_layer_sample(model: nn.Module, bound: torch.Tensor) -> torch.Tensor:
    """``bound`` as the first layer's input batch needs it: a :class:`~focus_core.disconnected.DisconnectedModel`'s
    first layer sees ``B N²`` tiles, mosaic by mosaic, so a per-mosaic bound ``(B, 1, 1, 1)`` is repeated for each of
    its mosaic's tiles (every tile keeps its mosaic's minimum and maximum)."""
    if isinstance(model, DisconnectedModel) and bound.ndim == 4 and bound.shape[0] > 1:
        return bound.repeat_interleave(model.grid * model.grid, dim=0)
    return bound


class LRP(ExplainerBase):
    """LRP with z^B / epsilon / z+ rules (zennit), relevance from the target logit, summed over channels.

    Parameters
    ----------
    epsilon : float, optional
        Stabiliser of the epsilon rule on linear layers (default ``1e-6``, zennit's default: the near-pure
        LRP-0 rule of the official code, which conserves relevance).
    low, high : float, list of float, "sample" or None, optional
        z^B bounds of the first layer's input in the normalised space: one number, or one per channel, such as
        the dataset's input domain ``(0 - mean) / std`` and ``(1 - mean) / std`` (:func:`dataset_bounds`: the
        paper's rule, and what the flows pass unless the method's parameters name bounds). ``"sample"``
        (:data:`SAMPLE_BOUNDS`) or ``None`` (default, both) uses each sample's own minimum and maximum over all
        channels and pixels; both are stored as ``None``, the identity (and hash) of every evaluation recorded
        with per-sample bounds, so those keep their keys, while dataset bounds are numbers in the parameters and
        so a different key.
    canonizer : str, optional
        One of ``"auto"`` (default), ``"sequential_merge_batchnorm"``, ``"resnet"``, ``"none"``.
    """

    name = "lrp"
    spec: ClassVar[dict[str, tuple[str, Any]]] = {
        "epsilon": ("float", 1e-6),
        "low": ("optional_bounds", None),
        "high": ("optional_bounds", None),
        "canonizer": ("str", "auto"),
    }

    def _check(self, values: dict[str, Any]) -> None:
        if values["epsilon"] < 0:
            raise FocusError(f"Parameter 'epsilon' of explainer 'lrp' got {values['epsilon']}: pass a number >= 0.")
        if values["canonizer"] not in CANONIZERS:
            raise FocusError(
                f"Unknown canonizer {values['canonizer']!r} for explainer 'lrp': choose one of {', '.join(CANONIZERS)}."
            )
        if (values["low"] is None) != (values["high"] is None):
            raise FocusError("Explainer 'lrp' got only one of 'low' and 'high': pass both z^B bounds or neither.")

    def check_model(self, model: nn.Module) -> None:
        """Refuse a vision transformer: these are CNN rules, LXT's ``attnlrp`` has a transformer's."""
        if patch_geometry(model) is not None:
            raise FocusError(
                f"Explainer '{self.name}' has LRP rules for convolutional networks, not for vision transformers "
                f"such as {type(model).__name__}: use 'attnlrp'."
            )

    def _bounds(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return zbox_bounds(inputs, self.params["low"], self.params["high"], self.name)

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Explanation:
        self.check_model(model)
        low, high = (_per_first_layer_sample(model, bound) for bound in self._bounds(inputs))
        canonizers = lrp_canonizers(model, self.params["canonizer"])
        composite = lrp_composite(low, high, self.params["epsilon"], canonizers)
        with composite.context(model) as modified:
            logits = checked_forward(modified, targets)(inputs)
            start = torch.zeros_like(logits).scatter_(1, targets[:, None], logits.gather(1, targets[:, None]))
            (relevance,) = torch.autograd.grad(logits, inputs, grad_outputs=start.detach())
        # zennit's rules leave the forward values alone, but its BatchNorm merge does not (each merged BatchNorm
        # then divides by sqrt(1 + eps)): those logits are not the model's, so they are not handed out
        exact = not canonizers or not any(isinstance(m, BatchNorm) for m in model.modules())
        return Explanation(relevance.sum(1), logits.detach() if exact else None)
