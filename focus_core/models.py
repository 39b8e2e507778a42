"""Architectures, safe weight files and the default GradCAM layer: the one place to import them from.

One registry serves the paper's networks (AlexNet, VGG16, ResNet18), a small CNN for the
bundled digits, any torchvision classifier by name, any timm model (``"timm:<name>"``, optional
package) and a user's own ``nn.Module`` given as an import path ``"package.module:factory"``,
each with optional keyword arguments (``"timm:vit_tiny_patch16_224(patch_size=8,img_size=32)"``);
:func:`model_data_config` gives the input size and normalisation an architecture defines.
The registry and the building live in :mod:`focus_core.architectures`, saving, hashing and safe loading of weight files in
:mod:`focus_core.weights`; this module gathers them and holds GradCAM's default layer.

Examples
--------
>>> import torch
>>> from focus_core.models import build_model, default_gradcam_layer
>>> model = build_model("digits_cnn", num_classes=10, in_channels=1)
>>> model(torch.zeros(2, 1, 64, 64)).shape
torch.Size([2, 10])
>>> default_gradcam_layer(model)
'features.14'
"""

from __future__ import annotations

import torchvision
from torch import nn

from focus_core.architectures import ARCHITECTURES, DataConfig, DigitsCNN, build_model, model_data_config
from focus_core.errors import FocusError
from focus_core.weights import load_weights, save_atomically, save_weights, weights_sha256

__all__ = [
    "ARCHITECTURES",
    "DataConfig",
    "DigitsCNN",
    "build_model",
    "default_gradcam_layer",
    "load_weights",
    "model_data_config",
    "save_atomically",
    "save_weights",
    "weights_sha256",
]


def default_gradcam_layer(model: nn.Module) -> str:
    """Return the dotted name of GradCAM's default layer, as the paper's official code uses.

    AlexNet, VGG and ``DigitsCNN``: ``features[-1]`` (the last module of ``features``);
    ResNet: ``layer4[-1]`` (the last block, whose output follows its ReLU); any other model
    whose ``features`` is an ``nn.Sequential`` ending in an ``nn.ReLU``: that ReLU.

    Vision transformers (timm's ``blocks``, torchvision's ``encoder.layers``): the last block's
    input normalisation (timm ``blocks[-1].norm1``, torchvision ``ln_1``) when the class token
    alone feeds the head, else the last block's output. A class token's logit depends on the
    patch tokens of the last block's output not at all (only the class token goes on), so their
    gradient there is zero and the CAM would be empty; the last place where every patch token
    still reaches the class token is the last attention, and ``norm1`` is what it reads. A head
    on the average of the tokens (timm ``global_pool="avg"``) reads every patch token of the
    last block's output, with one gradient for all: there GradCAM is CAM, as on a CNN's last
    block. The token maps are reshaped to the patch grid by GradCAM
    (:func:`focus_core.tokens.tokens_to_grid`).

    Raises
    ------
    FocusError
        When the layer cannot be inferred.

    Examples
    --------
    >>> default_gradcam_layer(build_model("resnet18", num_classes=2))
    'layer4.1'
    >>> default_gradcam_layer(build_model("vgg16", num_classes=2))
    'features.30'
    >>> default_gradcam_layer(torchvision.models.vit_b_16(num_classes=2))
    'encoder.layers.encoder_layer_11.ln_1'
    """
    features = getattr(model, "features", None)
    official = isinstance(model, (DigitsCNN, torchvision.models.AlexNet, torchvision.models.VGG))
    if isinstance(features, nn.Sequential) and len(features) > 0:
        if official or isinstance(features[-1], nn.ReLU):
            return f"features.{len(features) - 1}"
    layer4 = getattr(model, "layer4", None)
    if isinstance(model, torchvision.models.ResNet) and isinstance(layer4, nn.Sequential):
        return f"layer4.{len(layer4) - 1}"
    vit_layer = _vit_gradcam_layer(model)
    if vit_layer is not None:
        return vit_layer
    raise FocusError(
        f"Cannot infer GradCAM's layer for {type(model).__name__}: pass --gradcam-layer with the "
        "dotted name of its last convolutional block's output."
    )


def _vit_gradcam_layer(model: nn.Module) -> str | None:
    """GradCAM's default layer of a timm or torchvision vision transformer (see :func:`default_gradcam_layer`)."""
    blocks = getattr(model, "blocks", None)
    if getattr(model, "patch_embed", None) is not None and isinstance(blocks, (nn.Sequential, nn.ModuleList)) \
            and len(blocks) > 0:
        last = f"blocks.{len(blocks) - 1}"
        class_token_head = getattr(model, "global_pool", "token") in ("token", "map", "prr") \
            or getattr(model, "attn_pool", None) is not None
        if class_token_head and isinstance(getattr(blocks[-1], "norm1", None), nn.Module):
            return f"{last}.norm1"
        return last
    if isinstance(model, torchvision.models.VisionTransformer):
        names = [name for name, _ in model.encoder.layers.named_children()]
        return f"encoder.layers.{names[-1]}.ln_1"
    return None
