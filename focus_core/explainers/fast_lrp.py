"""LRP with the paper's rules in plain, batched torch: the maps of :mod:`.lrp` (zennit), about twice as fast.

zennit computes LRP with a hook on every module, and each hook reruns its layer under autograd during the
backward pass. Here the model is traced once (:func:`torch.fx.symbolic_trace`) into a list of steps; one
forward pass records what each rule needs, and one sweep from the logits back to the input applies the rules
with direct tensor operations (no hooks; autograd only locally, for pooling). The model is never modified.

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

import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torchvision.models import ResNet
from torchvision.models.resnet import BasicBlock, Bottleneck
from zennit.core import collect_leaves
from zennit.types import Activation, AvgPool, BatchNorm, MaxPool
from zennit.types import Linear as AnyLinear

from focus_core.errors import FocusError
from focus_core.explainers.base import Explanation, checked_forward
from focus_core.explainers.lrp import LRP

__all__ = ["FastLRP", "fast_lrp"]

STABILIZER = 1e-6
"""zennit's stabiliser of the ZBox, ZPlus and Norm rules."""

_PLANS: weakref.WeakKeyDictionary[nn.Module, _Plan] = weakref.WeakKeyDictionary()


class FastLRP(LRP):
    """LRP with z^B / epsilon / z+ rules in plain batched torch; the maps of :class:`~.lrp.LRP`, faster.

    Same parameters, checks and z^B bounds as :class:`~.lrp.LRP` (``epsilon``, ``low``, ``high``, ``canonizer``).
    Supports models that :func:`torch.fx.symbolic_trace` can trace and that are built from ``Conv2d``, ``Linear``,
    BatchNorm, activations, max and average pooling, dropout, flattening and ResNet residual sums (AlexNet, VGG,
    torchvision ResNets, :class:`focus_core.models.DigitsCNN`); any other model raises :class:`FocusError`.
    """

    name = "lrp_fast"

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Explanation:
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
    plan = _plan_for(model, canonizer)
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


# ---------------------------------------------------------------------------------------------------------- rules
def _stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """zennit's stabiliser: ``z + eps * sign(z)``, with sign +1 at zero."""
    return torch.where(z >= 0, z + eps, z - eps)


@dataclass
class _Affine:
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
            z = _stabilize(self._apply(signed, p["weight_pos_neg"], p["bias_pos"]), STABILIZER)
            return self._transpose(r / z, p["weight_pos_neg"], signed.shape).mul_(signed).unflatten(1, (2, -1)).sum(1)
        if self.rule == "epsilon":
            return self._transpose(r / _stabilize(saved[1], epsilon), p["weight"], x.shape).mul_(x)
        # zbox: z = W x - W+ low - W- high (the biases cancel), as zennit's ZBox
        low, high = (bound.reshape(bound.shape if bound.ndim == x.ndim else (1,) * x.ndim) for bound in bounds)
        batch = max(low.shape[0], high.shape[0])  # 1 for dataset bounds, B for per-sample bounds
        full = [bound.expand(batch, *x.shape[1:]) for bound in (low, high)]
        z = _stabilize(saved[1] - self._apply(torch.cat(full, 1), p["weight_pos_neg"], p["bias"]), STABILIZER)
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
class _Pass:
    """Elementwise layers (activations, dropout, unmerged BatchNorm): relevance passes through unchanged."""

    function: Callable[..., Any]
    inplace: bool = False  # a ReLU whose input nothing else needs

    def forward(self, args, kwargs):
        return self.function(*args, **kwargs), ()

    def relevance(self, r, saved):
        return (r,)


@dataclass
class _Reshape:
    """Flatten, view, reshape: relevance takes the input's shape back."""

    function: Callable[..., Any]

    def forward(self, args, kwargs):
        return self.function(*args, **kwargs), (args[0].shape,)

    def relevance(self, r, saved):
        return (r.reshape(saved[0]),)


@dataclass
class _Norm:
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
            s = r / _stabilize(saved[2], STABILIZER)
            return saved[0] * s, saved[1] * s
        leaf, out = saved
        (g,) = torch.autograd.grad(out, leaf, r / _stabilize(out.detach(), STABILIZER))
        return (g.mul_(leaf.detach()),)


@dataclass
class _Gradient:
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


# ------------------------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class _Ref:
    """A reference to the value of an earlier step (a traced node, after merged BatchNorms are folded away)."""

    name: str


def _refs(*structure: Any) -> list[str]:
    found: list[str] = []
    fx.node.map_aggregate(structure, lambda a: found.append(a.name) if isinstance(a, _Ref) else a)
    return found


def _resolve(structure: Any, env: dict[str, Any]) -> Any:
    return fx.node.map_aggregate(structure, lambda a: env[a.name] if isinstance(a, _Ref) else a)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _relu(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return torch.relu(x)  # never in place: the input is an autograd leaf


def _cloned(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x.clone())


def _batch_norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0, module.eps)


def _method(name: str) -> Callable[..., Any]:
    def call(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, name)(*args, **kwargs)
    return call


def _unsupported(what: str) -> FocusError:
    return FocusError(
        f"The fast LRP implementation does not support {what}: use the zennit implementation (explainer 'lrp')."
    )


@dataclass
class _Step:
    """One traced operation: its rule, its arguments (``_Ref`` for traced values) and who receives relevance."""

    name: str
    op: Any
    args: tuple
    kwargs: dict
    inputs: tuple[str, ...]


@dataclass
class _Plan:
    """A traced model as steps, with its folded parameters cached until a parameter changes."""

    signature: tuple
    input_name: str
    output_name: str
    steps: list[_Step]
    affine: dict[str, _Affine]
    last_use: dict[str, int] = field(default_factory=dict)
    _cache_key: tuple | None = None
    _cache: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for index, step in enumerate(self.steps):
            for name in _refs(step.args, step.kwargs):
                self.last_use[name] = index
        self.last_use.pop(self.output_name, None)

    def parameters(self) -> dict[str, dict[str, torch.Tensor]]:
        """Return (and cache) each layer's weights: BatchNorm folded in, positive/negative parts for the rules."""
        tensors = [t for a in self.affine.values() for m in (a.module, a.batch_norm) if m is not None
                   for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))]
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        if key != self._cache_key:
            with torch.no_grad():
                self._cache = {name: _fold(a) for name, a in self.affine.items()}
            self._cache_key = key
        return self._cache

    def forward(self, x: torch.Tensor, params: dict, saved: dict) -> torch.Tensor:
        """Run the model's forward pass, storing in ``saved`` what each rule needs and freeing the rest."""
        env: dict[str, Any] = {self.input_name: x}
        for index, step in enumerate(self.steps):
            if isinstance(step.op, _Affine):
                out, saved[step.name] = step.op.forward(env[step.inputs[0]], params[step.name])
            elif isinstance(step.op, _Pass) and step.op.inplace:
                out, saved[step.name] = env[step.inputs[0]].relu_(), ()
            else:
                out, saved[step.name] = step.op.forward(_resolve(step.args, env), _resolve(step.kwargs, env))
            env[step.name] = out
            for name in _refs(step.args, step.kwargs):
                if self.last_use.get(name) == index:
                    env.pop(name, None)
        return env[self.output_name]

    def relevance(self, start, params, saved, bounds, epsilon, x, channel_sum: bool = False) -> torch.Tensor:
        """Propagate ``start`` from the logits back to the input, each step with its rule.

        With ``channel_sum`` the input's relevance comes back summed over channels: by the one step that reads
        the input, when there is only one (it sums inside its rule), or at the end.
        """
        readers = [step for step in self.steps if self.input_name in step.inputs]
        sole_reader = None
        if channel_sum and len(readers) == 1 and readers[0].inputs == (self.input_name,):
            op = readers[0].op
            sole_reader = readers[0].name if isinstance(op, _Affine) and op.rule == "zbox" else None
        relevance: dict[str, torch.Tensor] = {self.output_name: start}
        for step in reversed(self.steps):
            r = relevance.pop(step.name, None)
            kept = saved.pop(step.name)
            if r is None or not step.inputs:
                continue
            if isinstance(step.op, _Affine):
                summed = step.name == sole_reader
                lower = (step.op.relevance(r, kept, params[step.name], bounds, epsilon, summed),)
            else:
                lower = step.op.relevance(r, kept)
            for name, r_in in zip(step.inputs, lower):
                relevance[name] = r_in if name not in relevance else relevance[name] + r_in
        out = relevance.get(self.input_name, torch.zeros_like(x))
        if channel_sum and sole_reader is None:
            out = out.sum(1)
        return out


def _fold(affine: _Affine) -> dict[str, torch.Tensor]:
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


def _plan_for(model: nn.Module, canonizer: str) -> _Plan:
    """Return the cached plan of ``model`` for ``canonizer``, tracing it again when its modules changed."""
    if canonizer == "auto":
        canonizer = "resnet" if isinstance(model, ResNet) else "sequential_merge_batchnorm"
    signature = (canonizer, tuple((name, id(m)) for name, m in model.named_modules()))
    plan = _PLANS.get(model)
    if plan is None or plan.signature != signature:
        plan = _PLANS[model] = _compile(model, canonizer, signature)
    return plan


class _Compiler:
    """Maps each traced node to a step with the rule zennit's composite and canonizers would give it."""

    def __init__(self, model: nn.Module, canonizer: str) -> None:
        self.canonizer = canonizer
        self.modules = dict(model.named_modules())
        self.first = next((m for m in self.modules.values() if isinstance(m, AnyLinear)), None)
        self.merged: dict[nn.Module, nn.Module] = {}  # BatchNorm -> the layer before it (SequentialMergeBatchNorm)
        if canonizer != "none":
            leaves = list(collect_leaves(model))
            self.merged = {bn: prev for prev, bn in zip(leaves, leaves[1:])
                           if isinstance(prev, AnyLinear) and isinstance(bn, BatchNorm)}
        self.alias: dict[str, str] = {}  # merged BatchNorm node -> its layer's node
        self.nonnegative: set[str] = set()  # values known to be >= 0 (after a ReLU)
        self.steps: dict[str, _Step] = {}
        self.affine: dict[str, _Affine] = {}
        self.called: set[str] = set()

    def add(self, node: fx.Node) -> None:
        """Turn ``node`` into a step (or fold it into the previous one)."""
        ref = lambda n: _Ref(self.alias.get(n.name, n.name))  # noqa: E731
        args, kwargs = fx.node.map_arg(node.args, ref), fx.node.map_arg(node.kwargs, ref)
        tensors = tuple(_refs(args, kwargs))
        op, receivers, nonnegative = self._rule(node, tensors)
        if op is None:
            return
        if nonnegative:
            self.nonnegative.add(node.name)
        self.steps[node.name] = _Step(node.name, op, args, kwargs, receivers)

    def _rule(self, node: fx.Node, tensors: tuple[str, ...]) -> tuple[Any, tuple[str, ...], bool]:
        first_in = tensors[:1]
        keeps_sign = bool(tensors) and tensors[0] in self.nonnegative
        if node.op == "call_module":
            return self._module_rule(node, tensors)
        if node.target in (operator.add, torch.add) and len(tensors) == 2 and len(node.args) == 2 and not node.kwargs:
            stack = node.meta.get("nn_module_stack") or {"": ("", None)}
            block = next(reversed(stack.values()))[1]
            canonized = self.canonizer == "resnet" and block in (BasicBlock, Bottleneck)
            op = _Norm(operator.add) if canonized else _Gradient(operator.add)
            return op, tensors, all(name in self.nonnegative for name in tensors)
        if node.target in (torch.flatten, torch.reshape):
            return _Reshape(node.target), first_in, keeps_sign
        if node.op == "call_method" and node.target in ("flatten", "view", "reshape"):
            return _Reshape(_method(node.target)), first_in, keeps_sign
        if node.target in (F.relu, torch.relu, "relu"):
            return _Gradient(_relu), first_in, True
        if node.op == "call_method" and node.target == "size":
            return _Pass(_method("size")), (), False
        raise _unsupported(f"the operation {getattr(node.target, '__name__', node.target)!r} in the forward pass")

    def _module_rule(self, node: fx.Node, tensors: tuple[str, ...]) -> tuple[Any, tuple[str, ...], bool]:
        module = self.modules[node.target]
        keeps_sign = tensors[0] in self.nonnegative
        if isinstance(module, (AnyLinear, BatchNorm)):
            if node.target in self.called:
                raise _unsupported(f"the layer {node.target!r}, which the forward pass calls more than once")
            self.called.add(node.target)
        if isinstance(module, BatchNorm) and module in self.merged:
            producer = node.args[0]
            if not (isinstance(producer, fx.Node) and producer.name in self.affine and len(producer.users) == 1
                    and self.affine[producer.name].module is self.merged[module]):
                raise _unsupported(f"the BatchNorm {node.target!r}, which does not directly follow its layer")
            self.affine[producer.name].batch_norm = module
            self.alias[node.name] = producer.name
            return None, (), False
        if isinstance(module, AnyLinear):
            return self._affine_rule(node, module, tensors[0]), tensors, False
        if isinstance(module, nn.ReLU):
            producer = self.steps.get(tensors[0])
            inplace = (len(node.args[0].users) == 1 and producer is not None and isinstance(producer.op, _Affine)
                       and producer.op.rule.startswith("zplus"))  # its output is not kept for the backward
            return _Pass(F.relu, inplace), tensors, True
        if isinstance(module, BatchNorm):  # not merged: zennit passes relevance through; always eval statistics
            return _Pass(partial(_batch_norm, module)), tensors, False
        if isinstance(module, Activation):  # an in-place one must not overwrite a value a rule keeps
            return _Pass(partial(_cloned, module) if getattr(module, "inplace", False) else module), tensors, False
        if isinstance(module, (nn.Dropout, nn.Identity)):  # eval mode: the identity
            return _Pass(_identity), tensors, keeps_sign
        if isinstance(module, AvgPool):
            return _Norm(module), tensors, keeps_sign
        if isinstance(module, MaxPool):
            return _Gradient(module), tensors, keeps_sign
        if isinstance(module, nn.Flatten):
            return _Reshape(module), tensors, keeps_sign
        raise _unsupported(f"the layer {node.target!r} of type {type(module).__name__}")

    def _affine_rule(self, node: fx.Node, module: nn.Module, source: str) -> _Affine:
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            raise _unsupported(f"the layer {node.target!r} of type {type(module).__name__}")
        if isinstance(module, nn.Conv2d) and (module.padding_mode != "zeros" or isinstance(module.padding, str)):
            raise _unsupported(f"the padding of the convolution {node.target!r}")
        if module is self.first:
            if isinstance(module, nn.Linear):
                raise _unsupported(f"a linear first layer ({node.target!r})")
            rule = "zbox"
        elif isinstance(module, nn.Linear):
            rule = "epsilon"
        else:
            rule = "zplus" if source in self.nonnegative else "zplus_signed"
        if rule != "zplus" and getattr(module, "groups", 1) != 1:
            raise _unsupported(f"the grouped convolution {node.target!r} as a first layer or on signed inputs")
        affine = self.affine[node.name] = _Affine(module, rule)
        return affine


def _compile(model: nn.Module, canonizer: str, signature: tuple) -> _Plan:
    """Trace ``model`` and turn its graph into a :class:`_Plan`."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as error:  # whatever fails inside the tracer means the same to the user
        raise _unsupported(f"a model that torch.fx cannot trace ({type(error).__name__})") from error
    compiler = _Compiler(model, canonizer)
    inputs = [node for node in graph.nodes if node.op == "placeholder"]
    outputs = [node for node in graph.nodes if node.op == "output"]
    if len(inputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        raise _unsupported("a model with other than one input tensor and one output tensor")
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op == "get_attr":
            raise _unsupported(f"a model that reads {node.target!r} in its forward pass")
        compiler.add(node)
    if not any(affine.rule == "zbox" for affine in compiler.affine.values()):
        raise _unsupported("a model whose first registered layer is not a convolution of its forward pass")
    output = compiler.alias.get(outputs[0].args[0].name, outputs[0].args[0].name)
    return _Plan(signature, inputs[0].name, output, list(compiler.steps.values()), compiler.affine)
