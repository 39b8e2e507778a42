"""Class activation maps: GradCAM (captum) and GradCAM++ (batched, here).

Both weight the feature maps of one layer (by default the output of the last convolutional block after its
ReLU, :func:`focus_core.models.default_gradcam_layer`, as the paper's official code does), sum them over
channels, apply a ReLU and upsample the map bilinearly to the input size. Maps are not normalised: Focus is a
ratio and does not need it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import nn

from focus_core.errors import FocusError
from focus_core.explainers.base import ExplainerBase, Explanation, checked_forward

__all__ = ["GradCAM", "GradCAMPlusPlus", "resolve_layer", "gradcam_plus_plus_weights"]


def resolve_layer(model: nn.Module, layer: str | None) -> nn.Module:
    """Return the submodule of ``model`` named ``layer`` (a dotted name such as ``"features.30"``).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier.
    layer : str or None
        Dotted module name; ``None`` asks :func:`focus_core.models.default_gradcam_layer`.

    Returns
    -------
    torch.nn.Module
        The layer whose output is explained.

    Raises
    ------
    FocusError
        When the name is not a submodule of ``model`` or no default can be inferred.
    """
    if layer is None:
        try:
            from focus_core.models import default_gradcam_layer
        except ImportError as error:  # models.py not there yet
            raise FocusError("No default GradCAM layer is known for this model: pass layer='<dotted module name>'.") \
                from error
        layer = default_gradcam_layer(model)
    try:
        module = model.get_submodule(layer) if layer else None
    except AttributeError:
        module = None
    if module is None or module is model:
        raise FocusError(
            f"The layer {layer!r} is not a submodule of {type(model).__name__}: "
            "pass a dotted name from model.named_modules(), such as 'features.30' or 'layer4.1'."
        )
    return module


def _upsample(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, 1, h, w)`` -> ``(B, H, W)`` by bilinear interpolation."""
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]


class GradCAM(ExplainerBase):
    """GradCAM (Selvaraju et al.) with captum's :class:`~captum.attr.LayerGradCam`.

    Channel weights are the spatial mean of the target logit's gradient; the weighted sum over channels goes
    through a ReLU (``relu_attributions=True``) and is upsampled bilinearly to the input size.

    Parameters
    ----------
    layer : str or None, optional
        Dotted name of the layer to explain; ``None`` (default) uses ``models.default_gradcam_layer``.
    """

    name = "gradcam"
    spec: ClassVar[dict[str, tuple[str, Any]]] = {"layer": ("optional_str", None)}

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Explanation:
        layer = resolve_layer(model, self.params["layer"])
        forward = checked_forward(model, targets)
        cam = LayerGradCam(forward, layer).attribute(
            inputs, target=targets, relu_attributions=True, attr_dim_summation=True
        )
        return Explanation(_upsample(cam, tuple(inputs.shape[-2:])), forward.logits)  # captum's one forward pass


def gradcam_plus_plus_weights(activations: torch.Tensor, gradients: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Channel weights of GradCAM++ (Chattopadhay et al., eq. 19, as in pytorch-grad-cam).

    ``alpha = g^2 / (2 g^2 + sum_ab(A) g^3)`` (0 where ``g == 0``), ``w_k = sum_ij alpha_ij relu(g_ij)``.

    Parameters
    ----------
    activations, gradients : torch.Tensor
        ``(B, K, h, w)`` layer output ``A`` and the gradient ``g`` of the target logit with respect to it.
    eps : float, optional
        Added to the denominator.

    Returns
    -------
    torch.Tensor
        ``(B, K)`` weights.
    """
    g2 = gradients.pow(2)
    g3 = gradients.pow(3)
    sum_activations = activations.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_activations * g3 + eps)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    return (alpha * gradients.clamp(min=0)).sum(dim=(2, 3))


class GradCAMPlusPlus(ExplainerBase):
    """GradCAM++ (Chattopadhay et al.), batched: one forward and one backward to the layer per batch.

    The layer output is caught with a forward hook (removed before returning), the target logits' gradient
    with respect to it gives the weights of :func:`gradcam_plus_plus_weights`; the map is
    ``relu(sum_k w_k A_k)`` upsampled bilinearly to the input size.

    Parameters
    ----------
    layer : str or None, optional
        Dotted name of the layer to explain; ``None`` (default) uses ``models.default_gradcam_layer``.
    """

    name = "gradcam++"
    spec: ClassVar[dict[str, tuple[str, Any]]] = {"layer": ("optional_str", None)}

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Explanation:
        layer = resolve_layer(model, self.params["layer"])
        caught: list[torch.Tensor] = []

        def catch(module: nn.Module, args: Any, output: Any) -> Any:
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                raise FocusError(
                    f"The layer {self.params['layer'] or 'default_gradcam_layer'!r} does not return a (B, C, h, w) tensor: "
                    "pass a convolutional layer."
                )
            caught.append(output)
            return output.clone()  # an in-place op after the layer must not change what we hold

        handle = layer.register_forward_hook(catch)
        try:
            logits = checked_forward(model, targets)(inputs)
        finally:
            handle.remove()
        activations = caught[-1]
        score = logits.gather(1, targets[:, None]).sum()
        (gradients,) = torch.autograd.grad(score, activations)
        weights = gradcam_plus_plus_weights(activations.detach(), gradients)
        cam = (weights[:, :, None, None] * activations.detach()).sum(1, keepdim=True).clamp(min=0)
        return Explanation(_upsample(cam, tuple(inputs.shape[-2:])), logits)
