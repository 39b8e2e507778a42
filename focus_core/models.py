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
    """
    features = getattr(model, "features", None)
    official = isinstance(model, (DigitsCNN, torchvision.models.AlexNet, torchvision.models.VGG))
    if isinstance(features, nn.Sequential) and len(features) > 0:
        if official or isinstance(features[-1], nn.ReLU):
            return f"features.{len(features) - 1}"
    layer4 = getattr(model, "layer4", None)
    if isinstance(model, torchvision.models.ResNet) and isinstance(layer4, nn.Sequential):
        return f"layer4.{len(layer4) - 1}"
    raise FocusError(
        f"Cannot infer GradCAM's layer for {type(model).__name__}: pass --gradcam-layer with the "
        "dotted name of its last convolutional block's output."
    )
