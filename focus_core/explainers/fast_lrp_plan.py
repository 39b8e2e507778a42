"""The plan of :mod:`.fast_lrp`: a model traced once into steps, each with the rule zennit would give its layer.

:func:`plan_for` traces a model with :func:`torch.fx.symbolic_trace` and turns every node into a :class:`Step`
holding one rule of :mod:`.fast_lrp_rules` (z^B on the first layer, z+ on convolutions, epsilon on linear layers,
BatchNorm merged into the layer before it, ``Norm`` on ResNet's residual sums with the ``resnet`` canonizer). A
:class:`Plan` runs the forward pass, keeping what each rule needs, and the sweep from the logits back to the input.
Plans are cached per model (weakly) and traced again when its modules change; a layer or an operation without a
rule raises :class:`~focus_core.errors.FocusError`.

Examples
--------
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten(), nn.Linear(32, 3))
>>> [step.op.rule for step in plan_for(model, "auto").steps if hasattr(step.op, "rule")]
['zbox', 'zplus', 'epsilon']
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
from focus_core.explainers.fast_lrp_rules import Affine, Gradient, Norm, Pass, Reshape, fold

__all__ = ["Plan", "Step", "plan_for"]

_PLANS: weakref.WeakKeyDictionary[nn.Module, Plan] = weakref.WeakKeyDictionary()


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
class Step:
    """One traced operation: its rule, its arguments (``_Ref`` for traced values) and who receives relevance."""

    name: str
    op: Any
    args: tuple
    kwargs: dict
    inputs: tuple[str, ...]


@dataclass
class Plan:
    """A traced model as steps, with its folded parameters cached until a parameter changes."""

    signature: tuple
    input_name: str
    output_name: str
    steps: list[Step]
    affine: dict[str, Affine]
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
                self._cache = {name: fold(a) for name, a in self.affine.items()}
            self._cache_key = key
        return self._cache

    def forward(self, x: torch.Tensor, params: dict, saved: dict) -> torch.Tensor:
        """Run the model's forward pass, storing in ``saved`` what each rule needs and freeing the rest."""
        env: dict[str, Any] = {self.input_name: x}
        for index, step in enumerate(self.steps):
            if isinstance(step.op, Affine):
                out, saved[step.name] = step.op.forward(env[step.inputs[0]], params[step.name])
            elif isinstance(step.op, Pass) and step.op.inplace:
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
            sole_reader = readers[0].name if isinstance(op, Affine) and op.rule == "zbox" else None
        relevance: dict[str, torch.Tensor] = {self.output_name: start}
        for step in reversed(self.steps):
            r = relevance.pop(step.name, None)
            kept = saved.pop(step.name)
            if r is None or not step.inputs:
                continue
            if isinstance(step.op, Affine):
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


def plan_for(model: nn.Module, canonizer: str) -> Plan:
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
        self.steps: dict[str, Step] = {}
        self.affine: dict[str, Affine] = {}
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
        self.steps[node.name] = Step(node.name, op, args, kwargs, receivers)

    def _rule(self, node: fx.Node, tensors: tuple[str, ...]) -> tuple[Any, tuple[str, ...], bool]:
        first_in = tensors[:1]
        keeps_sign = bool(tensors) and tensors[0] in self.nonnegative
        if node.op == "call_module":
            return self._module_rule(node, tensors)
        if node.target in (operator.add, torch.add) and len(tensors) == 2 and len(node.args) == 2 and not node.kwargs:
            stack = node.meta.get("nn_module_stack") or {"": ("", None)}
            block = next(reversed(stack.values()))[1]
            canonized = self.canonizer == "resnet" and block in (BasicBlock, Bottleneck)
            op = Norm(operator.add) if canonized else Gradient(operator.add)
            return op, tensors, all(name in self.nonnegative for name in tensors)
        if node.target in (torch.flatten, torch.reshape):
            return Reshape(node.target), first_in, keeps_sign
        if node.op == "call_method" and node.target in ("flatten", "view", "reshape"):
            return Reshape(_method(node.target)), first_in, keeps_sign
        if node.target in (F.relu, torch.relu, "relu"):
            return Gradient(_relu), first_in, True
        if node.op == "call_method" and node.target == "size":
            return Pass(_method("size")), (), False
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
            inplace = (len(node.args[0].users) == 1 and producer is not None and isinstance(producer.op, Affine)
                       and producer.op.rule.startswith("zplus"))  # its output is not kept for the backward
            return Pass(F.relu, inplace), tensors, True
        if isinstance(module, BatchNorm):  # not merged: zennit passes relevance through; always eval statistics
            return Pass(partial(_batch_norm, module)), tensors, False
        if isinstance(module, Activation):  # an in-place one must not overwrite a value a rule keeps
            return Pass(partial(_cloned, module) if getattr(module, "inplace", False) else module), tensors, False
        if isinstance(module, (nn.Dropout, nn.Identity)):  # eval mode: the identity
            return Pass(_identity), tensors, keeps_sign
        if isinstance(module, AvgPool):
            return Norm(module), tensors, keeps_sign
        if isinstance(module, MaxPool):
            return Gradient(module), tensors, keeps_sign
        if isinstance(module, nn.Flatten):
            return Reshape(module), tensors, keeps_sign
        raise _unsupported(f"the layer {node.target!r} of type {type(module).__name__}")

    def _affine_rule(self, node: fx.Node, module: nn.Module, source: str) -> Affine:
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
        affine = self.affine[node.name] = Affine(module, rule)
        return affine


def _compile(model: nn.Module, canonizer: str, signature: tuple) -> Plan:
    """Trace ``model`` and turn its graph into a :class:`Plan`."""
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
    return Plan(signature, inputs[0].name, output, list(compiler.steps.values()), compiler.affine)
