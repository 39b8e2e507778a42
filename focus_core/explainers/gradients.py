"""Gradient-based attributions: gradient, input x gradient, integrated gradients (captum) and SmoothGrad.

Every map is reduced from ``(B, C, H, W)`` to ``(B, H, W)`` by a signed sum over channels (not the absolute
value): Focus keeps only the positive part, so the sign is information, and a signed sum is what an LRP-like
"evidence for the class" reading needs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import Saliency
from torch import nn

from focus_core.errors import FocusError
from focus_core.explainers.base import ExplainerBase, Explanation, checked_forward
from focus_core.explainers.noise import per_sample_normal

__all__ = ["Gradient", "InputXGradient", "IntegratedGradients", "SmoothGrad"]


def _check_positive_int(explainer: str, key: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise FocusError(f"Parameter '{key}' of explainer '{explainer}' got {value}: pass an integer >= 1.")


class Gradient(ExplainerBase):
    """The target logit's gradient with respect to the input (captum ``Saliency(abs=False)``), summed over channels."""

    name = "gradient"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Explanation:
        forward = checked_forward(model, targets)
        gradient = Saliency(forward).attribute(inputs, target=targets, abs=False)
        return Explanation(gradient.sum(1), forward.logits)  # captum's one forward pass, on the clean inputs


class InputXGradient(ExplainerBase):
    """Input times the target logit's gradient (captum ``InputXGradient``), summed over channels."""

    name = "input_x_gradient"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Explanation:
        forward = checked_forward(model, targets)
        attribution = CaptumInputXGradient(forward).attribute(inputs, target=targets)
        return Explanation(attribution.sum(1), forward.logits)  # captum's one forward pass, on the clean inputs


class IntegratedGradients(ExplainerBase):
    """Integrated gradients from a zero baseline (captum, Gauss-Legendre steps), summed over channels.

    Parameters
    ----------
    n_steps : int, optional
        Integration steps (default 32).
    internal_batch_size : int or None, optional
        Samples per forward/backward pass (default ``None``: all ``B * n_steps`` at once). It bounds memory,
        does not change the maps, and is therefore not part of ``params`` or its hash.
    """

    name = "integrated_gradients"
    spec: ClassVar[dict[str, tuple[str, Any]]] = {"n_steps": ("int", 32)}
    runtime_spec: ClassVar[dict[str, tuple[str, Any]]] = {"internal_batch_size": ("optional_int", None)}

    def _check(self, values: dict[str, Any]) -> None:
        _check_positive_int(self.name, "n_steps", values["n_steps"])
        _check_positive_int(self.name, "internal_batch_size", values["internal_batch_size"])

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return CaptumIntegratedGradients(checked_forward(model, targets)).attribute(
            inputs,
            baselines=torch.zeros_like(inputs),
            target=targets,
            n_steps=self.params["n_steps"],
            internal_batch_size=self.runtime["internal_batch_size"],
        ).sum(1)


class SmoothGrad(ExplainerBase):
    """SmoothGrad (Smilkov et al.): the target logit's gradient averaged over noisy copies of the input.

    As in the official code, the noise is Gaussian with standard deviation ``sigma * (max - min)`` of each
    sample. The noise of a sample is drawn from a generator seeded by ``seed`` and the sample's content
    (:mod:`focus_core.explainers.noise`), so a batch gives the same maps as its samples one by one. All
    ``B * n_samples`` noisy copies go through one forward/backward pass unless ``internal_batch_size`` splits it.
    The averaged signed gradient is summed over channels.

    Parameters
    ----------
    n_samples : int, optional
        Noisy copies per sample (default 10).
    sigma : float, optional
        Noise level as a fraction of each sample's value range (default 0.2).
    seed : int, optional
        Seed of the noise (default 0).
    internal_batch_size : int or None, optional
        Noisy copies per pass (default ``None``: all at once); not part of ``params`` or its hash.
    """

    name = "smoothgrad"
    spec: ClassVar[dict[str, tuple[str, Any]]] = {
        "n_samples": ("int", 10),
        "sigma": ("float", 0.2),
        "seed": ("int", 0),
    }
    runtime_spec: ClassVar[dict[str, tuple[str, Any]]] = {"internal_batch_size": ("optional_int", None)}

    def _check(self, values: dict[str, Any]) -> None:
        _check_positive_int(self.name, "n_samples", values["n_samples"])
        _check_positive_int(self.name, "internal_batch_size", values["internal_batch_size"])
        if values["sigma"] < 0:
            raise FocusError(f"Parameter 'sigma' of explainer 'smoothgrad' got {values['sigma']}: pass a number >= 0.")

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n, (b, *sample_shape) = self.params["n_samples"], inputs.shape
        x = inputs.detach()
        stdevs = self.params["sigma"] * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
        noisy = (x[None] + per_sample_normal(x, self.params["seed"], n) * stdevs[None, :, None, None, None])
        noisy = noisy.reshape(n * b, *sample_shape)  # copy-major: row k * b + i is copy k of sample i
        repeated = targets.repeat(n)
        forward = checked_forward(model, targets)
        chunk = self.runtime["internal_batch_size"] or n * b
        gradients = []
        for start in range(0, n * b, chunk):
            part = noisy[start:start + chunk].requires_grad_(True)
            score = forward(part).gather(1, repeated[start:start + chunk, None]).sum()
            gradients.append(torch.autograd.grad(score, part)[0])
        return torch.cat(gradients).reshape(n, b, *sample_shape).mean(0).sum(1)
