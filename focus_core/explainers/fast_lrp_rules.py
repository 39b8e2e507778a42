"""The per-layer rules of :mod:`.fast_lrp`: each layer's forward pass, what it keeps, and its relevance kernel.

Each rule is a small class with ``forward`` (the layer's output and what its rule needs later) and ``relevance``
(the relevance of its inputs from that of its output), in direct batched tensor operations: :class:`Affine` holds
z^B, z+ and epsilon for ``Conv2d`` and ``Linear``; :class:`Norm` is zennit's ``Norm`` (average pooling, canonized
residual sums); :class:`Pass`, :class:`Reshape` and :class:`Gradient` pass relevance through elementwise layers,
reshapes and operations without an LRP rule. :func:`fold` folds a BatchNorm into the layer before it and
precomputes the weights each rule needs. :mod:`.fast_lrp_plan` decides which rule each layer of a model gets.

Examples
--------
>>> import torch
>>> stabilize(torch.tensor([0.0, 2.0, -2.0]), 0.5)
tensor([ 0.5000,  2.5000, -2.5000])
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["STABILIZER", "Affine", "Gradient", "Norm", "Pass", "Reshape", "fold", "stabilize"]

STABILIZER = 1e-6
"""zennit's stabiliser of the ZBox, ZPlus and Norm rules."""


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """zennit's stabiliser: ``z + eps * sign(z)``, with sign +1 at zero."""
    return torch.where(z >= 0, z + eps, z - eps)


@dataclass
class Affine:
    """A ``Conv2d`` or ``Linear`` with its rule (``zbox``, ``zplus``, ``zplus_signed`` or ``epsilon``)."""

    module: nn.Module
    rule: str
    batch_norm: nn.Module | None = None

    def forward(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple]:
        z = self._apply(x, p["weight"], p["bias"])
        return z, ((x,) if self.rule.startswith("zplus") else (x, z))

    def relevance(self, r: torch.Tensor, saved: tuple, p: dict[str, torch.Tensor], bounds, epsilon: float,
                  summed: bool = False):
        """The relevance of this layer's input; ``summed`` (z^B only) sums it over the input channels."""
        x = saved[0]
        if self.rule == "zplus":  # inputs known to be >= 0 (after a ReLU): only the positive weights count
            z = self._apply(x, p["weight_pos"], p["bias_pos"]).add_(STABILIZER)
            return self._transpose(torch.div(r, z, out=z), p["weight_pos"], x.shape).mul_(x)
        if self.rule == "zplus_signed":  # x+ with W+ (and b+), x- with W-
            signed = torch.cat([x.clamp(min=0), x.clamp(max=0)], 1)
            z = stabilize(self._apply(signed, p["weight_pos_neg"], p["bias_pos"]), STABILIZER)
            return self._transpose(r / z, p["weight_pos_neg"], signed.shape).mul_(signed).unflatten(1, (2, -1)).sum(1)
        if self.rule == "epsilon":
            return self._transpose(r / stabilize(saved[1], epsilon), p["weight"], x.shape).mul_(x)
        # zbox: z = W x - W+ low - W- high (the biases cancel), as zennit's ZBox
        low, high = (bound.reshape(bound.shape if bound.ndim == x.ndim else (1,) * x.ndim) for bound in bounds)
        batch = max(low.shape[0], high.shape[0])  # 1 for dataset bounds, B for per-sample bounds
        full = [bound.expand(batch, *x.shape[1:]) for bound in (low, high)]
        z = stabilize(saved[1] - self._apply(torch.cat(full, 1), p["weight_pos_neg"], p["bias"]), STABILIZER)
        if summed and (batch == 1 or max(low.shape[1], high.shape[1]) == 1):
            return self._zbox_summed(r / z, x, p, low, high)
        g = self._transpose(r / z, p["weight_all"], (x.shape[0], 3 * x.shape[1]) + x.shape[2:])
        g_x, g_low, g_high = g.chunk(3, 1)
        relevance = g_x.mul_(x).sub_(g_low.mul_(full[0])).sub_(g_high.mul_(full[1]))
        return relevance.sum(1) if summed else relevance

    def _zbox_summed(self, s: torch.Tensor, x: torch.Tensor, p: dict[str, torch.Tensor], low: torch.Tensor,
                     high: torch.Tensor) -> torch.Tensor:
        """z^B relevance summed over input channels, with the bounds' terms summed inside the weights.

        ``sum_c (x g_x - low g_low - high g_high)_c``: where the bounds are the same for every sample (or for every
        channel), ``sum_c low_c (W+ s)_c`` is one transposed convolution with ``sum_c low_c W+_c`` (or ``low`` times
        one with ``sum_c W+_c``), so the transposed convolution makes ``C + 1`` (or ``C + 2``) maps instead of ``3 C``.
        """
        channels = x.shape[1]
        positive, negative = p["weight_pos_neg"].chunk(2, 1)
        if low.shape[0] == 1 and high.shape[0] == 1:  # dataset bounds: fold them into one weight
            bound_weight = (positive * low.reshape(1, -1, 1, 1) + negative * high.reshape(1, -1, 1, 1)).sum(1, True)
            g = self._transpose(s, torch.cat([p["weight"], bound_weight], 1), (x.shape[0], channels + 1) + x.shape[2:])
            return (g[:, :channels] * x).sum(1).sub_(g[:, channels])
        weights = torch.cat([p["weight"], positive.sum(1, True), negative.sum(1, True)], 1)  # per-sample scalars
        g = self._transpose(s, weights, (x.shape[0], channels + 2) + x.shape[2:])
        relevance = (g[:, :channels] * x).sum(1)
        relevance.addcmul_(low.reshape(-1, 1, 1), g[:, channels], value=-1)
        return relevance.addcmul_(high.reshape(-1, 1, 1), g[:, channels + 1], value=-1)

    def _apply(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if isinstance(self.module, nn.Linear):
            return F.linear(x, weight, bias)
        m = self.module
        return F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, m.groups)

    def _transpose(self, s: torch.Tensor, weight: torch.Tensor, shape: torch.Size | tuple) -> torch.Tensor:
        if isinstance(self.module, nn.Linear):
            return s @ weight
        # the transposed convolution: faster than convolution_backward on the CPU, the same kernel on CUDA
        m = self.module
        natural = [(n - 1) * st - 2 * pad + dil * (k - 1) + 1
                   for n, st, pad, dil, k in zip(s.shape[2:], m.stride, m.padding, m.dilation, m.kernel_size)]
        output_padding = tuple(size - n for size, n in zip(shape[2:], natural))
        return F.conv_transpose2d(s, weight, None, m.stride, m.padding, output_padding, m.groups, m.dilation)


@dataclass
class Pass:
    """Elementwise layers (activations, dropout, unmerged BatchNorm): relevance passes through unchanged."""

    function: Callable[..., Any]
    inplace: bool = False  # a ReLU whose input nothing else needs

    def forward(self, args, kwargs):
        return self.function(*args, **kwargs), ()

    def relevance(self, r, saved):
        return (r,)


@dataclass
class Reshape:
    """Flatten, view, reshape: relevance takes the input's shape back."""

    function: Callable[..., Any]

    def forward(self, args, kwargs):
        return self.function(*args, **kwargs), (args[0].shape,)

    def relevance(self, r, saved):
        return (r.reshape(saved[0]),)


@dataclass
class Norm:
    """zennit's ``Norm``: average pooling and canonized residual sums split relevance in proportion to inputs."""

    function: Callable[..., Any]

    def forward(self, args, kwargs):
        if len(args) == 2:  # residual sum
            out = args[0] + args[1]
            return out, (args[0], args[1], out)
        with torch.enable_grad():
            leaf = args[0].detach().requires_grad_()
            out = self.function(leaf)
        return out.detach(), (leaf, out)

    def relevance(self, r, saved):
        if len(saved) == 3:
            s = r / stabilize(saved[2], STABILIZER)
            return saved[0] * s, saved[1] * s
        leaf, out = saved
        (g,) = torch.autograd.grad(out, leaf, r / stabilize(out.detach(), STABILIZER))
        return (g.mul_(leaf.detach()),)


@dataclass
class Gradient:
    """Operations without an LRP rule in zennit (max pooling, functional ReLU, plain sums): the gradient."""

    function: Callable[..., Any]

    def forward(self, args, kwargs):
        if self.function is operator.add:
            return args[0] + args[1], (args[0].shape, args[1].shape)
        with torch.enable_grad():
            leaf = args[0].detach().requires_grad_()
            out = self.function(leaf, *args[1:], **kwargs)
        return out.detach(), (leaf, out)

    def relevance(self, r, saved):
        if self.function is operator.add:
            return r.sum_to_size(saved[0]), r.sum_to_size(saved[1])
        leaf, out = saved
        return torch.autograd.grad(out, leaf, r)


def fold(affine: Affine) -> dict[str, torch.Tensor]:
    """Fold the BatchNorm after ``affine`` into its weights and precompute what its rule needs."""
    weight = affine.module.weight.detach()
    bias = None if affine.module.bias is None else affine.module.bias.detach()
    bn = affine.batch_norm
    if bn is not None:
        scale = bn.running_var.detach().add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.detach()
        bias = (-bn.running_mean.detach() if bias is None else bias - bn.running_mean.detach()) * scale
        if bn.bias is not None:
            bias = bias + bn.bias.detach()
        weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    p = {"weight": weight, "bias": bias}
    if affine.rule == "epsilon":
        return p
    positive = weight.clamp(min=0)
    p["bias_pos"] = None if bias is None else bias.clamp(min=0)
    if affine.rule == "zplus":
        p["weight_pos"] = positive
        return p
    p["weight_pos_neg"] = torch.cat([positive, weight.clamp(max=0)], 1)
    if affine.rule == "zbox":
        p["weight_all"] = torch.cat([weight, p["weight_pos_neg"]], 1)
    return p
