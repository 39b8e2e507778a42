"""Model parameter randomization (Adebayo et al., "Sanity checks for saliency maps").

Three tests, each returning a re-initialised deep copy and leaving the original untouched:
full randomization, cascading randomization from the top (output) layer down, and
independent randomization of one layer.

A *layer* is a module with parameters of its own (convolution, linear, BatchNorm...), named by
its dotted name, listed input to output in registration order (the order in which
``named_modules`` visits them, which follows the forward pass for torchvision's CNNs and
``DigitsCNN``). The model's own parameters are one more layer, listed first: a vision
transformer's class token, register tokens and position embedding (timm: ``cls_token``,
``reg_token``, ``pos_embed``; torchvision: ``class_token``), which enter at the input. That layer
is named by its parameters' names joined with ``+`` (``"cls_token+reg_token+pos_embed"``), so a
ViT has one cascading stage more than its modules give, the last one (with the patch
embedding's stage before it); a CNN's model owns no parameters and has no such layer.
(torchvision's ``encoder.pos_embedding`` belongs to the layer ``encoder``.)

A *stage* is one weight layer (convolution or linear) together with the normalisation layers
that directly follow it: a BatchNorm after a convolution belongs to the convolution's stage,
because it only rescales that convolution's output. A BatchNorm without a preceding weight
layer, or any other parametrised layer, is a stage of its own.

Layers are re-initialised with their own ``reset_parameters()`` (BatchNorm: weight 1, bias 0
and fresh running statistics), on the CPU, under a generator seeded from ``seed`` and the
layer's name, inside ``torch.random.fork_rng``: the same seed gives the same weights, a layer
gets the same random weights in every test, and the caller's random state is untouched. A
layer without ``reset_parameters`` gets ``N(0, 0.02)`` weights, and so do the own parameters of
a module with children (the model's own layer, torchvision's ``encoder.pos_embedding``): its
``reset_parameters`` would re-initialise its children too, which are layers of their own.

Examples
--------
>>> from focus_core.models import DigitsCNN
>>> model = DigitsCNN()
>>> cascading_stages(model)[:2]
['classifier', 'features.12']
>>> cascading_stage_layers(model)[1]
('features.12', 'features.13')
>>> top_random = randomize_cascading(model, stage=0, seed=1)
>>> bool((top_random.classifier.weight == model.classifier.weight).all())
False
"""

from __future__ import annotations

import copy
import hashlib

import torch
from torch import nn

from focus_core.errors import FocusError

__all__ = [
    "check_randomization",
    "cascading_stage_layers",
    "cascading_stages",
    "parametrised_layers",
    "randomize_cascading",
    "randomize_full",
    "randomize_independent",
]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def parametrised_layers(model: nn.Module) -> list[str]:
    """Dotted names of the modules that own parameters or buffers, input to output.

    The model's own parameters, if it has any, come first, named by :func:`_own_layer_name`.

    Examples
    --------
    >>> from focus_core.models import DigitsCNN
    >>> parametrised_layers(DigitsCNN())[:3]
    ['features.0', 'features.1', 'features.4']
    >>> from torchvision.models import VisionTransformer
    >>> vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=8)
    >>> parametrised_layers(vit)[:3]
    ['class_token', 'conv_proj', 'encoder']
    """
    own = _own_layer_name(model)
    return [own] * bool(own) + [name for name, module in model.named_modules() if name and _owns_tensors(module)]


def cascading_stage_layers(model: nn.Module) -> list[tuple[str, ...]]:
    """The layers of each cascading stage, top (output) stage first.

    Each tuple starts with the stage's name (as in :func:`cascading_stages`), followed by the
    normalisation layers that belong to it.

    Examples
    --------
    >>> from focus_core.models import DigitsCNN
    >>> cascading_stage_layers(DigitsCNN())[-1]
    ('features.0', 'features.1')
    """
    stages: list[list[str]] = []
    for name in parametrised_layers(model):
        module = _layer(model, name)
        if stages and isinstance(module, _NORMS) and _is_weight_layer(model, stages[-1][-1]):
            stages[-1].append(name)
        else:
            stages.append([name])
    return [tuple(stage) for stage in reversed(stages)]


def cascading_stages(model: nn.Module) -> list[str]:
    """Names of the cascading stages, top (output) layer first: one per weight layer.

    Examples
    --------
    >>> from focus_core.models import DigitsCNN
    >>> len(cascading_stages(DigitsCNN()))
    5
    """
    return [stage[0] for stage in cascading_stage_layers(model)]


def randomize_full(model: nn.Module, seed: int = 0) -> nn.Module:
    """Return a copy of ``model`` with every parametrised layer re-initialised.

    The new weights depend on the seed and the layers (names, shapes, types) only, never on the trained weights:
    fully random copies of two checkpoints of one architecture with the same seed are the same network. This is
    deliberate (a "fully random model" of an architecture is one thing per seed, whatever checkpoint it was
    reached from; deriving the seed from the checkpoint would only relabel more seeds as "per checkpoint" and
    would change the numbers behind every stored key). Whoever summarises random models over checkpoints must
    count each seed once per architecture (the report does), and the flows measure such a network once: a second
    checkpoint's evaluation of it takes the first one's rows (``db.shared_networks``). Cascading and independent
    randomization keep the checkpoint's other layers and so do differ per checkpoint.

    Examples
    --------
    >>> from focus_core.models import DigitsCNN
    >>> a, b = randomize_full(DigitsCNN(), seed=3), randomize_full(DigitsCNN(), seed=3)
    >>> bool((a.features[0].weight == b.features[0].weight).all())
    True
    """
    return _reinitialised_copy(model, parametrised_layers(model), seed)


def randomize_cascading(model: nn.Module, stage: int | str, seed: int = 0) -> nn.Module:
    """Return a copy with the stages ``cascading_stages(model)[: stage + 1]`` re-initialised.

    Parameters
    ----------
    model : torch.nn.Module
        The trained model (left untouched).
    stage : int or str
        Index into :func:`cascading_stages` (0: the top layer only) or a stage's name.
    seed : int
        Seed of the new weights.

    Raises
    ------
    FocusError
        For a stage the model does not have.

    Examples
    --------
    >>> from focus_core.models import DigitsCNN
    >>> model = DigitsCNN()
    >>> last = randomize_cascading(model, stage=len(cascading_stages(model)) - 1)
    >>> bool((last.features[0].weight == randomize_full(model).features[0].weight).all())
    True
    """
    stages = cascading_stage_layers(model)
    index = _stage_index(stages, stage)
    layers = [layer for members in stages[: index + 1] for layer in members]
    return _reinitialised_copy(model, layers, seed)


def randomize_independent(model: nn.Module, layer: str, seed: int = 0) -> nn.Module:
    """Return a copy with one layer re-initialised, all others as trained.

    ``layer`` names a stage (see :func:`cascading_stages`: the weight layer and its
    BatchNorm are re-initialised) or any single layer of :func:`parametrised_layers`.

    Raises
    ------
    FocusError
        For a layer the model does not have.

    Examples
    --------
    >>> from focus_core.models import DigitsCNN
    >>> model = DigitsCNN()
    >>> other = randomize_independent(model, "features.4")
    >>> bool((other.features[0].weight == model.features[0].weight).all())
    True
    """
    return _reinitialised_copy(model, _independent_layers(model, layer), seed)


def check_randomization(model: nn.Module, kind: str, stage: int | str | None = None, layer: str | None = None) -> None:
    """Check that ``model`` has what a randomization asks for, without copying or re-initialising anything.

    Raises
    ------
    FocusError
        For a cascading stage or an independent layer the model does not have (the same sentences as
        :func:`randomize_cascading` and :func:`randomize_independent`).

    Examples
    --------
    >>> from focus_core.models import DigitsCNN
    >>> check_randomization(DigitsCNN(), "cascading", stage=99)
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: Cascading stage 99 is out of range: pass an index from 0 (top layer) to 4.
    """
    if kind == "cascading":
        _stage_index(cascading_stage_layers(model), stage)
    elif kind == "independent":
        _independent_layers(model, layer)


def _independent_layers(model: nn.Module, layer: str | None) -> list[str]:
    """The layers that ``randomize_independent(model, layer)`` re-initialises."""
    for members in cascading_stage_layers(model):
        if members[0] == layer:
            return list(members)
    names = parametrised_layers(model)
    if layer in names:
        return [layer]
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    raise FocusError(f"The model has no parametrised layer {layer!r}: pass one of {shown}.")


def _own_layer_name(model: nn.Module) -> str:
    """The name of the model's own parameters as a layer: theirs joined with ``+``; ``""`` when it has none.

    No module can take that name: a child's name cannot repeat an attribute's, nor contain ``+`` in practice.
    """
    return "+".join(name for name, _ in model.named_parameters(recurse=False))


def _layer(model: nn.Module, name: str) -> nn.Module:
    """The module that owns a layer's tensors: the model itself for its own layer."""
    return model if name == _own_layer_name(model) else model.get_submodule(name)


def _owns_tensors(module: nn.Module) -> bool:
    own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return len(own) > 0


def _is_weight_layer(model: nn.Module, name: str) -> bool:
    return name != _own_layer_name(model) and isinstance(model.get_submodule(name), _WEIGHT_LAYERS)


def _stage_index(stages: list[tuple[str, ...]], stage: int | str) -> int:
    if isinstance(stage, str):
        names = [members[0] for members in stages]
        if stage in names:
            return names.index(stage)
        raise FocusError(
            f"The model has no cascading stage {stage!r}: pass one of {', '.join(names)}."
        )
    if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage < len(stages):
        raise FocusError(
            f"Cascading stage {stage!r} is out of range: pass an index from 0 (top layer) to "
            f"{len(stages) - 1}."
        )
    return stage


def _layer_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _reinitialised_copy(model: nn.Module, layers: list[str], seed: int) -> nn.Module:
    new = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        for name in layers:
            _reinitialise(_layer(new, name), _layer_seed(seed, name))
    return new


@torch.no_grad()
def _reinitialise(module: nn.Module, seed: int) -> None:
    """Re-initialise one module's own parameters on the CPU, then put them back in place."""
    torch.manual_seed(seed)
    if not hasattr(module, "reset_parameters") or next(module.children(), None) is not None:
        for parameter in module.parameters(recurse=False):
            parameter.copy_(nn.init.normal_(torch.empty(parameter.shape, dtype=parameter.dtype), std=0.02))
        return
    own = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
    placed = {key: (tensor.device, tensor.dtype) for key, tensor in own.items()}
    cpu = copy.deepcopy(module).cpu() if any(d.type != "cpu" for d, _ in placed.values()) else module
    cpu.reset_parameters()
    if cpu is not module:
        fresh = dict(cpu.named_parameters(recurse=False)) | dict(cpu.named_buffers(recurse=False))
        for key, tensor in own.items():
            tensor.copy_(fresh[key].to(*placed[key]))
