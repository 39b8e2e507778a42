"""LRP with the paper's rules in plain, batched torch: the maps of :mod:`.lrp` (zennit), faster (benchmarks/README.md).

zennit computes LRP with a hook on every module, and each hook reruns its layer under autograd during the
backward pass. Here the model is traced once (:func:`torch.fx.symbolic_trace`) into a list of steps; one
forward pass records what each rule needs, and one sweep from the logits back to the input applies the rules
with direct tensor operations (no hooks; autograd only locally, for pooling). The model is never modified.
The rules live in :mod:`.fast_lrp_rules`, the trace and the sweep in :mod:`.fast_lrp_plan`; this module is the
explainer and its function.

The rules are those of :func:`focus_core.explainers.lrp.lrp_composite` with zennit 0.5.1's semantics, step for
step: z^B (``ZBox``) on the first convolution or linear layer in ``named_modules()`` order, alpha=1/beta=0
(``ZPlus``, positive biases kept) on the other convolutions, epsilon on linear layers, ``Norm`` (relevance split
in proportion to the inputs) on average pooling and on ResNet's residual sums (zennit's ``ResNetCanonizer``),
relevance passed unchanged through activations, the plain gradient through max pooling, flattening and dropout.
BatchNorm is folded into the layer before it (``SequentialMergeBatchNorm``); the folded weights are computed once
per model and cached until a parameter changes. Stabilisers are zennit's: ``1e-6`` times the sign (+1 at zero)
of each denominator, ``epsilon`` on linear layers.

One difference, by design: zennit's merge leaves each BatchNorm computing ``x / sqrt(1 + eps)`` instead of the
identity, so its logits drift from the model's by about ``5e-6`` per BatchNorm; here the logits are the model's.

Examples
--------
>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
>>> FastLRP()(model.eval(), torch.randn(2, 1, 8, 8), torch.tensor([0, 2])).shape
torch.Size([2, 8, 8])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from focus_core.disconnected import DisconnectedModel
from focus_core.errors import FocusError
from focus_core.explainers.base import Explanation, checked_forward
from focus_core.explainers.fast_lrp_plan import plan_for
from focus_core.explainers.lrp import LRP

__all__ = ["FastLRP", "fast_lrp"]


class FastLRP(LRP):
    """LRP with z^B / epsilon / z+ rules in plain batched torch; the maps of :class:`~.lrp.LRP`, faster.

    Same parameters, checks and z^B bounds as :class:`~.lrp.LRP` (``epsilon``, ``low``, ``high``, ``canonizer``).
    Supports models that :func:`torch.fx.symbolic_trace` can trace and that are built from ``Conv2d``, ``Linear``,
    BatchNorm, activations, max and average pooling, dropout, flattening and ResNet residual sums (AlexNet, VGG,
    torchvision ResNets, :class:`focus_core.models.DigitsCNN`); any other model raises :class:`FocusError`.
    """

    name = "lrp_fast"

    def check_model(self, model: nn.Module) -> None:
        """Refuse what :class:`~.lrp.LRP` refuses, and the disconnected setting's wrapper, whose tile split
        :func:`torch.fx.symbolic_trace` cannot trace (before any forward pass)."""
        super().check_model(model)
        if isinstance(model, DisconnectedModel):
            raise FocusError(
                "Explainer 'lrp_fast' cannot trace the disconnected model's tile split: use the zennit "
                "implementation (explainer 'lrp'), which explains it with the same rules."
            )

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Explanation:
        self.check_model(model)
        low, high = self._bounds(inputs)
        logits: list[torch.Tensor] = []
        relevance = fast_lrp(model, inputs, targets, low, high, self.params["epsilon"], self.params["canonizer"],
                             logits_out=logits, channel_sum=True)
        return Explanation(relevance, logits[0])  # the model's own logits (BatchNorm folded, not altered)


def fast_lrp(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    low: torch.Tensor | float,
    high: torch.Tensor | float,
    epsilon: float = 1e-6,
    canonizer: str = "auto",
    logits_out: list[torch.Tensor] | None = None,
    channel_sum: bool = False,
) -> torch.Tensor:
    """Return the LRP relevance ``(B, C, H, W)`` of ``inputs`` for ``targets``, started from the target logits.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier in eval mode returning logits ``(B, K)``; it is not modified.
    inputs : torch.Tensor
        ``(B, C, H, W)`` normalised images.
    targets : torch.Tensor
        ``(B,)`` int64 classes to explain.
    low, high : torch.Tensor or float
        z^B bounds, broadcastable to the first layer's input: a scalar, ``(1, C, 1, 1)`` or ``(B, 1, 1, 1)``.
    epsilon : float, optional
        Stabiliser of the epsilon rule on linear layers.
    canonizer : str, optional
        ``"auto"``, ``"resnet"``, ``"sequential_merge_batchnorm"`` or ``"none"``, as in :mod:`.lrp`.
    logits_out : list of torch.Tensor, optional
        When given, the ``(B, K)`` logits of the forward pass are appended to it.
    channel_sum : bool, optional
        Return the relevance summed over the input channels, ``(B, H, W)``. Where the input feeds only the first
        layer, its z^B rule then sums inside its weights, which saves most of the last transposed convolution.

    Returns
    -------
    torch.Tensor
        Relevance of every input element (``(B, H, W)`` with ``channel_sum``); its sum per sample approximates
        the target logit.

    Raises
    ------
    FocusError
        When the model holds a layer or an operation this implementation does not support.
    """
    plan = plan_for(model, canonizer)
    params = plan.parameters()
    with torch.no_grad():
        saved: dict[str, Any] = {}
        logits = checked_forward(lambda x: plan.forward(x, params, saved), targets)(inputs)
        if logits_out is not None:
            logits_out.append(logits)
        picked = targets[:, None]
        start = torch.zeros_like(logits).scatter_(1, picked, logits.gather(1, picked))
        bounds = (torch.as_tensor(low, dtype=inputs.dtype, device=inputs.device),
                  torch.as_tensor(high, dtype=inputs.dtype, device=inputs.device))
        return plan.relevance(start, params, saved, bounds, epsilon, inputs, channel_sum)
