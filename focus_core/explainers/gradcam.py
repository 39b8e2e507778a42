"""Class activation maps: GradCAM and GradCAM++ (batched, here; captum's GradCAM is the reference).

Both weight the feature maps of one layer (by default the output of the last convolutional block after its
ReLU, :func:`focus_core.models.default_gradcam_layer`, as the paper's official code does), sum them over
channels, apply a ReLU and upsample the map bilinearly to the input size. Maps are not normalised: Focus is a
ratio and does not need it.

On a vision transformer the layer returns ``(B, N, C)`` tokens: its output and its gradient both lose their
prefix tokens (class and register tokens) and are reshaped to the ``(B, C, gh, gw)`` patch grid of the input
(:func:`focus_core.tokens.tokens_to_grid`), and the same weighting runs on that grid.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from focus_core.errors import FocusError
from focus_core.explainers.base import ExplainerBase, Explanation, checked_forward
from focus_core.metric import upsampled_quadrant_sums
from focus_core.tokens import patch_geometry, tokens_to_grid

__all__ = [
    "GradCAM",
    "GradCAMPlusPlus",
    "captum_gradcam",
    "gradcam_plus_plus_weights",
    "layer_activations_and_gradients",
    "resolve_layer",
]


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


def _explanation(cam: torch.Tensor, size: tuple[int, int], logits: torch.Tensor) -> Explanation:
    """The logits, the map's quadrant sums taken from ``cam`` (non-negative) directly, and the upsampled map,
    computed only if read: the hot path needs the sums alone (see benchmarks/README.md, section "GradCAM's
    upsampled map")."""
    return Explanation(functools.partial(_upsample, cam, size), logits, upsampled_quadrant_sums(cam[:, 0], size))


def layer_activations_and_gradients(
    model: nn.Module, layer: nn.Module, layer_name: str | None, inputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass and one backward pass to ``layer``: its output, the target logits' gradient there, the logits.

    The forward pass runs under ``torch.no_grad`` up to the layer: its output, caught by a forward hook (removed
    before returning), becomes a leaf that requires grad, the hook switches gradient recording on, and a clone of
    the leaf goes on through the rest of the forward pass, so an in-place operation after the layer cannot change
    what is explained. Nothing below the layer is recorded (no autograd nodes, no activations kept for a backward
    pass that never goes there), and the backward pass stops at the layer, with no parameter gradient.

    A vision transformer's layer (one :func:`focus_core.tokens.patch_geometry` knows) may return ``(B, N, C)``
    tokens instead: both tensors are then cut to the patch tokens and reshaped to the input's patch grid
    (:func:`focus_core.tokens.tokens_to_grid`), so ``h, w`` is ``gh, gw`` and the prefix tokens play no part.

    Returns
    -------
    tuple of torch.Tensor
        ``activations`` ``(B, K, h, w)`` (detached), ``gradients`` ``(B, K, h, w)`` and ``logits`` ``(B, classes)``.
    """
    caught: list[torch.Tensor] = []
    geometry = patch_geometry(model)
    expected = ("a (B, C, h, w) tensor: pass a convolutional layer" if geometry is None else
                "(B, C, h, w) or (B, tokens, C) tensors: pass a convolutional layer or a transformer block's layer")

    def catch(module: nn.Module, args: Any, output: Any) -> Any:
        shaped = isinstance(output, torch.Tensor) and (output.ndim == 4 or output.ndim == 3 and geometry is not None)
        if not shaped:
            raise FocusError(
                f"The layer {layer_name or 'default_gradcam_layer'!r} does not return {expected}."
            )
        leaf = output.detach().requires_grad_(True)
        caught.append(leaf)
        torch.set_grad_enabled(True)  # record from here on; the no_grad block below restores the mode on exit
        return leaf.clone()  # an in-place op after the layer must not change what we hold

    handle = layer.register_forward_hook(catch)
    try:
        with torch.no_grad():
            logits = checked_forward(model, targets)(inputs.detach())
    finally:
        handle.remove()
    if not caught:
        raise FocusError(
            f"The layer {layer_name or 'default_gradcam_layer'!r} was not called in the model's forward pass: "
            "pass a layer the forward pass uses."
        )
    activations = caught[-1]
    score = logits.gather(1, targets[:, None]).sum()
    (gradients,) = torch.autograd.grad(score, activations)
    activations = activations.detach()
    if activations.ndim == 3:
        size = (inputs.shape[-2], inputs.shape[-1])
        activations, gradients = (tokens_to_grid(t, geometry, size) for t in (activations, gradients))
    return activations, gradients, logits


class GradCAM(ExplainerBase):
    """GradCAM (Selvaraju et al.), batched: one forward pass and one backward pass to the layer per batch.

    Channel weights are the spatial mean of the target logit's gradient; the weighted sum over channels goes
    through a ReLU and is upsampled bilinearly to the input size: the maps of captum's
    :class:`~captum.attr.LayerGradCam` (``relu_attributions=True``, :func:`captum_gradcam`), which the tests hold
    this to. Written here to keep a batch to one forward pass, one backward pass to the layer and a few small
    kernels, without captum's per-call bookkeeping (one gradient output per sample); ``benchmarks/throughput.py``
    times captum's path beside it.

    Parameters
    ----------
    layer : str or None, optional
        Dotted name of the layer to explain; ``None`` (default) uses ``models.default_gradcam_layer``.
    """

    name = "gradcam"
    spec: ClassVar[dict[str, tuple[str, Any]]] = {"layer": ("optional_str", None)}

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Explanation:
        layer = resolve_layer(model, self.params["layer"])
        activations, gradients, logits = layer_activations_and_gradients(
            model, layer, self.params["layer"], inputs, targets
        )
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        cam = (weights * activations).sum(1, keepdim=True).clamp_(min=0)
        return _explanation(cam, tuple(inputs.shape[-2:]), logits)


def captum_gradcam(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, layer: str | None = None
                   ) -> torch.Tensor:
    """GradCAM maps ``(B, H, W)`` computed by captum's :class:`~captum.attr.LayerGradCam`: the library reference.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                             torch.nn.Linear(2 * 6 * 6, 3)).eval()
    >>> captum_gradcam(model, torch.randn(2, 1, 8, 8), torch.tensor([0, 2]), layer="1").shape
    torch.Size([2, 8, 8])
    """
    from captum.attr import LayerGradCam  # imported here: only the reference needs captum

    module = resolve_layer(model, layer)
    with torch.enable_grad():
        cam = LayerGradCam(model, module).attribute(
            inputs.detach().requires_grad_(True), target=targets, relu_attributions=True, attr_dim_summation=True
        )
    return _upsample(cam, tuple(inputs.shape[-2:])).detach()


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
        activations, gradients, logits = layer_activations_and_gradients(
            model, layer, self.params["layer"], inputs, targets
        )
        weights = gradcam_plus_plus_weights(activations, gradients)
        cam = (weights[:, :, None, None] * activations).sum(1, keepdim=True).clamp(min=0)
        return _explanation(cam, tuple(inputs.shape[-2:]), logits)
