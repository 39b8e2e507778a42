"""LRP for vision transformers through LXT 2.1 (AttnLRP, Achtibat et al., ICML 2024): ``attnlrp``.

LXT's efficient mode computes LRP as gradient x input of a model whose backward pass is changed where LRP's rules
differ from the gradient:

- element-wise nonlinearities (GELU): the identity rule (:func:`lxt.efficient.patches.non_linear_forward`);
- LayerNorm: the identity rule, its standard deviation a constant (:func:`lxt.efficient.patches.layer_norm_forward`);
- attention: CP-LRP (``attention="cp"``, default: no relevance through the softmax, queries and keys are constants,
  :func:`lxt.efficient.rules.stop_gradient`; LXT's own choice for ViTs, ``lxt.efficient.models.vit_torch.cp_LRP``),
  or AttnLRP's uniform rule on its two matrix products (``"attnlrp"``: query and key gradients divided by 4, the
  value's by 2, :func:`lxt.efficient.rules.divide_gradient`, as LXT's ``wrap_attention_forward``);
- the patch embedding (the first layer): z^B, with the bounds of ``lrp`` (the paper's first-layer rule; each
  sample's range by default), and linear layers LRP-0 or zennit's Gamma rule (``linear_gamma``, as LXT's ViT
  example), both through zennit rules with LXT's hook methods (``lxt.efficient.zennit_patches``).

Relevance starts from the target logit (a one-hot gradient: relevance = logit x 1) and is ``inputs * grad`` summed
over channels. Conservation: with CP-LRP, LRP-0 on linear layers and no z^B, every operation is linear given the
constants, so the input relevance plus the relevance of the additive constants (biases, positional embedding,
class and register tokens) equals the target logit, to float rounding; z^B conserves what reaches the patch
embedding's output. ``tests/focus_core/test_vit_explainers.py`` holds both.

LXT's ``monkey_patch`` and ``monkey_patch_zennit`` replace methods of ``torch.nn`` and zennit classes for the whole
process; here the same LXT functions are bound to the model's own module instances (plus a forward hook on each
attention's ``qkv`` and zennit hooks) for one call and removed after it, so no other model, and not this one
afterwards, sees a changed layer. Supported: timm's ``VisionTransformer`` (its standard ``Attention``, ``Mlp`` with
GELU, LayerNorm) and torchvision's ``VisionTransformer`` (CP-LRP only, LXT's map for it); any other model is
refused in one sentence (:func:`check_lxt_support`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import pathlib
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from focus_core.errors import FocusError
from focus_core.explainers.base import ExplainerBase, Explanation, checked_forward
from focus_core.explainers.lrp import zbox_bounds
from focus_core.tokens import patch_geometry

__all__ = ["AttnLRP", "ATTENTION_RULES", "check_lxt_support", "lxt_rules"]

ATTENTION_RULES = ("cp", "attnlrp")
"""Rules inside attention: ``cp`` (CP-LRP, LXT's choice for ViTs) or ``attnlrp`` (AttnLRP's uniform rule)."""

_ACTIVATIONS: tuple[type, ...] = (nn.GELU,)  # element-wise: the identity rule (timm's own GELUs added below)
_PASS_THROUGH = (nn.Linear, nn.Conv2d, nn.Identity, nn.Dropout, nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _require_lxt() -> None:
    """Refuse in one sentence where LXT is not installed (it comes with the ``timm`` extra)."""
    try:
        import lxt  # noqa: F401
    except ImportError:
        raise FocusError(
            "Explainer 'attnlrp' needs the LXT package (lxt), which is not installed: pip install 'focus-audit[timm]'."
        ) from None


@functools.lru_cache(maxsize=1)
def lxt_efficient() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """LXT 2.1's ``lxt.efficient.rules``, ``lxt.efficient.patches`` and ``lxt.efficient.zennit_patches`` modules.

    ``lxt.efficient``'s ``__init__`` imports LXT's model maps for Hugging Face models, which need transformers 4.x
    (``transformers.modeling_attn_mask_utils``, gone in 5.x); the rules and patches need only torch. Where the
    package import fails for that reason, these three modules are imported from LXT's files under a bare package
    that is removed again, so ``import lxt.efficient`` elsewhere behaves as before.

    Raises
    ------
    FocusError
        Where LXT is not installed.
    """
    _require_lxt()
    try:
        from lxt.efficient import patches, rules, zennit_patches
    except ImportError:
        import lxt

        package = types.ModuleType("lxt.efficient")
        package.__path__ = [str(pathlib.Path(lxt.__file__).parent / "efficient")]
        saved = sys.modules.get("lxt.efficient")
        sys.modules["lxt.efficient"] = package
        try:
            rules = importlib.import_module("lxt.efficient.rules")
            patches = importlib.import_module("lxt.efficient.patches")
            zennit_patches = importlib.import_module("lxt.efficient.zennit_patches")
        finally:
            if saved is None:
                sys.modules.pop("lxt.efficient", None)
            else:  # pragma: no cover - a failed import leaves none
                sys.modules["lxt.efficient"] = saved
    return rules, patches, zennit_patches


@functools.lru_cache(maxsize=2)
def _lxt_zennit_rule(name: str) -> type:
    """zennit's rule ``name`` (``"ZBox"``, ``"Gamma"``) with LXT's hook methods, which turn its relevance into LXT's
    gradient x input form: what ``lxt.efficient.monkey_patch_zennit`` puts on zennit's ``BasicHook`` for the whole
    process, here on a subclass, so zennit's rules elsewhere (``lrp``) stay as they are."""
    import zennit.rules

    _, _, zennit_patches = lxt_efficient()
    base = getattr(zennit.rules, name)
    return type(f"LXT{name}", (base,), {"forward": zennit_patches.forward, "backward": zennit_patches.backward})


def _timm_classes() -> dict[str, tuple[type, ...]]:
    """timm's ViT classes by role (empty where timm is not installed)."""
    try:
        from timm.layers import DropPath, LayerScale, Mlp, PatchDropout, PatchEmbed
        from timm.layers.activations import GELU, GELUTanh, QuickGELU
        from timm.layers.attention import Attention
        from timm.models.vision_transformer import Block, VisionTransformer
    except ImportError:  # pragma: no cover - timm is optional
        return {"model": (), "attention": (), "activation": (), "pass": ()}
    return {"model": (VisionTransformer,), "attention": (Attention,), "activation": (GELU, GELUTanh, QuickGELU),
            "pass": (Block, Mlp, PatchEmbed, PatchDropout, DropPath, LayerScale)}


def _torchvision_classes() -> dict[str, tuple[type, ...]]:
    from torchvision.models import vision_transformer as tv

    return {"model": (tv.VisionTransformer,), "attention": (nn.MultiheadAttention,), "activation": (),
            "pass": (tv.Encoder, tv.EncoderBlock, tv.MLPBlock)}


def _library(model: nn.Module) -> tuple[str, dict[str, tuple[type, ...]]] | None:
    timm_classes = _timm_classes()
    if timm_classes["model"] and isinstance(model, timm_classes["model"]):
        return "timm", timm_classes
    torchvision_classes = _torchvision_classes()
    if isinstance(model, torchvision_classes["model"]):
        return "torchvision", torchvision_classes
    return None


def _unsupported_module(module: nn.Module, library: str, classes: dict[str, tuple[type, ...]]) -> str | None:
    """Why ``module`` has no LXT rule here (``None`` when it has one or needs none)."""
    if type(module) in classes["attention"]:
        if library == "timm" and (getattr(module, "gate", None) is not None or not isinstance(module.qkv, nn.Linear)):
            return "a gated or split-projection Attention"
        return None
    if isinstance(module, nn.LayerNorm):
        return None if len(module.normalized_shape) == 1 else "a LayerNorm over more than the last dimension"
    if type(module) in _ACTIVATIONS + classes["activation"] or type(module) in classes["pass"] + classes["model"]:
        return None
    if isinstance(module, _PASS_THROUGH):
        return None
    return type(module).__name__


def check_lxt_support(model: nn.Module, attention: str = "cp") -> None:
    """Refuse, in one sentence, a model this LXT path cannot explain.

    Raises
    ------
    FocusError
        Where LXT is not installed; for a model that is not a timm or torchvision ``VisionTransformer``, one with
        a layer LXT has no rule for here (a gated attention, SwiGLU, RoPE attention...), or ``attention="attnlrp"``
        on torchvision's ViT.

    Examples
    --------
    >>> import torchvision
    >>> check_lxt_support(torchvision.models.resnet18())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: Explainer 'attnlrp' (LXT) explains vision transformers only ...: use 'lrp' for convolutional networks.
    """
    _require_lxt()
    found = _library(model)
    if found is None:
        kind = "convolutional networks" if patch_geometry(model) is None else "other models"
        advice = "use 'lrp'" if patch_geometry(model) is None else "use 'gradcam' or a gradient method"
        raise FocusError(
            f"Explainer 'attnlrp' (LXT) explains vision transformers only (timm's or torchvision's "
            f"VisionTransformer), not {type(model).__name__}: {advice} for {kind}."
        )
    library, classes = found
    if library == "torchvision" and attention != "cp":
        raise FocusError(
            "LXT has only CP-LRP for torchvision's VisionTransformer attention: pass attention='cp' to 'attnlrp'."
        )
    for name, module in model.named_modules():
        problem = _unsupported_module(module, library, classes)
        if problem is not None:
            raise FocusError(
                f"Explainer 'attnlrp' (LXT) has no rule for {problem} (layer {name!r} of {type(model).__name__}): "
                "explain this model with 'gradcam' or a gradient method."
            )


def _bind(module: nn.Module, forward: Callable[..., Any], keep_original: bool) -> Callable[[], None]:
    """Bind LXT's ``forward`` (and ``original_forward``, which it calls) to this one instance; return the undo."""
    saved = {key: module.__dict__[key] for key in ("forward", "original_forward") if key in module.__dict__}
    if keep_original:
        module.original_forward = module.forward  # the instance's forward: the class's, bound
    module.forward = types.MethodType(forward, module)

    def undo() -> None:
        for key in ("forward", "original_forward"):
            module.__dict__.pop(key, None)
        module.__dict__.update(saved)

    return undo


def _qkv_rule(attention: str, width: int) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]:
    """A forward hook on timm's ``Attention.qkv``: its output's query and key parts (the first ``2 * width``
    features, the layout timm's reshape to ``(B, N, 3, heads, head_dim)`` reads) get the attention rule."""
    rules, _, _ = lxt_efficient()

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        qk, v = output[..., : 2 * width], output[..., 2 * width:]
        if attention == "cp":
            return torch.cat([rules.stop_gradient(qk), v], dim=-1)
        return torch.cat([rules.divide_gradient(qk, 4), rules.divide_gradient(v, 2)], dim=-1)

    return hook


@contextlib.contextmanager
def lxt_rules(
    model: nn.Module,
    attention: str = "cp",
    bounds: tuple[torch.Tensor | float, torch.Tensor | float] | None = None,
    linear_gamma: float | None = None,
) -> Iterator[nn.Module]:
    """Give ``model``'s own layers LXT's LRP rules while the block runs; take them away after, whatever happens.

    Checks the model first (:func:`check_lxt_support`). Inside, a gradient x input of the model is its LRP.
    ``bounds`` ``(low, high)`` put zennit's z^B rule on the patch embedding (the model's one convolution, its
    first layer), ``linear_gamma`` zennit's Gamma rule on every linear layer, both in LXT's gradient x input form;
    ``None`` keeps their gradient (LRP-0).

    Raises
    ------
    FocusError
        For a model :func:`check_lxt_support` refuses.
    """
    _, patches, _ = lxt_efficient()
    check_lxt_support(model, attention)
    library, classes = _library(model)  # type: ignore[misc]
    undo: list[Callable[[], None]] = []
    try:
        layer_map = []
        if bounds is not None:
            layer_map.append((nn.Conv2d, _lxt_zennit_rule("ZBox")(low=bounds[0], high=bounds[1])))
        if linear_gamma is not None:
            layer_map.append((nn.Linear, _lxt_zennit_rule("Gamma")(gamma=linear_gamma)))
        if layer_map:
            from zennit.composites import LayerMapComposite

            composite = LayerMapComposite(layer_map)
            composite.register(model)  # before the qkv hooks: their rule must act on zennit's output, not under it
            undo.append(composite.remove)
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                undo.append(_bind(module, patches.layer_norm_forward, keep_original=False))
            elif type(module) in _ACTIVATIONS + classes["activation"]:
                undo.append(_bind(module, patches.non_linear_forward, keep_original=True))
            elif type(module) in classes["attention"] and library == "torchvision":
                undo.append(_bind(module, patches.cp_multi_head_attention_forward, keep_original=True))
            elif type(module) in classes["attention"]:
                width = module.qkv.out_features // 3
                undo.append(module.qkv.register_forward_hook(_qkv_rule(attention, width)).remove)
        yield model
    finally:
        for step in reversed(undo):
            step()


class AttnLRP(ExplainerBase):
    """LRP of a vision transformer through LXT (see the module docstring): ``inputs * grad`` summed over channels.

    Parameters
    ----------
    attention : str, optional
        The rule inside attention: ``"cp"`` (default, CP-LRP: LXT's choice for ViTs, conservative) or
        ``"attnlrp"`` (AttnLRP's uniform rule through the softmax; timm models only).
    low, high : float, list of float or None, optional
        z^B bounds of the patch embedding's input, as for ``lrp`` (``None``, default: each sample's own range).
    linear_gamma : float or None, optional
        Gamma of zennit's Gamma rule on linear layers; ``None`` (default) keeps LRP-0 there.
    """

    name = "attnlrp"
    spec: ClassVar[dict[str, tuple[str, Any]]] = {
        "attention": ("str", "cp"),
        "low": ("optional_bounds", None),
        "high": ("optional_bounds", None),
        "linear_gamma": ("optional_float", None),
    }

    def _check(self, values: dict[str, Any]) -> None:
        if values["attention"] not in ATTENTION_RULES:
            raise FocusError(
                f"Unknown attention rule {values['attention']!r} for explainer 'attnlrp': "
                f"choose one of {', '.join(ATTENTION_RULES)}."
            )
        if values["linear_gamma"] is not None and values["linear_gamma"] < 0:
            raise FocusError(
                f"Parameter 'linear_gamma' of explainer 'attnlrp' got {values['linear_gamma']}: pass a number >= 0."
            )
        if (values["low"] is None) != (values["high"] is None):
            raise FocusError("Explainer 'attnlrp' got only one of 'low' and 'high': pass both z^B bounds or neither.")

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`FocusError` for a model LXT cannot explain here (:func:`check_lxt_support`)."""
        check_lxt_support(model, self.params["attention"])

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Explanation:
        params = self.params
        bounds = zbox_bounds(inputs, params["low"], params["high"], self.name)
        with lxt_rules(model, params["attention"], bounds, params["linear_gamma"]) as patched:
            forward = checked_forward(patched, targets)
            logits = forward(inputs)
            score = logits.gather(1, targets[:, None]).sum()
            (gradient,) = torch.autograd.grad(score, inputs)
        # the rules change the backward pass only; the forward values are the model's up to float rounding
        # (LayerNorm's variance is computed by hand), so the logits are handed out
        return Explanation((inputs * gradient).sum(1), logits.detach())
