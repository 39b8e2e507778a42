"""The architecture registry: the paper's networks, the digits CNN, torchvision, timm and a user's own factory.

:func:`build_model` serves the paper's networks (AlexNet, VGG16, ResNet18), a small CNN for the bundled digits
(:class:`DigitsCNN`), any torchvision classifier by name, any timm model as ``"timm:<name>"`` (optional package:
:mod:`focus_core.timm_models`) and a user's own ``nn.Module`` given as an import path ``"package.module:factory"``;
it sizes the head for the classes and the stem for the input channels. Any of them may carry keyword arguments for
its builder, ``name(key=value,...)``: the syntax and the canonical form are :mod:`focus_core.arch_string`'s.
:func:`model_data_config` says which input size and normalisation an architecture defines. Import these names
from :mod:`focus_core.models`, which gathers them with the weight files and GradCAM's default layer.

Examples
--------
>>> import torch
>>> from focus_core.architectures import build_model
>>> model = build_model("digits_cnn", num_classes=10, in_channels=1)
>>> model(torch.zeros(2, 1, 64, 64)).shape
torch.Size([2, 10])
>>> build_model("digits_cnn(width=8)", num_classes=10, in_channels=1).classifier.in_features
32
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import torch
import torchvision
from torch import nn

from focus_core.arch_policy import ANY_FACTORY, FactoryPolicy, check_keywords
from focus_core.arch_string import Architecture, parse_architecture
from focus_core.errors import FocusError, first_line
from focus_core.timm_models import DataConfig, build_timm_model, timm_data_config

__all__ = ["ARCHITECTURES", "DataConfig", "DigitsCNN", "build_model", "last_linear", "model_data_config"]

#: The named architectures. ``build_model`` also accepts any name of ``torchvision.models.list_models()``,
#: ``"timm:<name>"`` for any name of ``timm.list_models()`` and ``"package.module:factory"`` import paths.
ARCHITECTURES: tuple[str, ...] = ("digits_cnn", "alexnet", "vgg16", "resnet18")


class DigitsCNN(nn.Module):
    """A small, fully convolutional CNN for the bundled digits (32x32 tiles, 64x64 mosaics).

    Four blocks of 3x3 convolution, BatchNorm and ``nn.ReLU`` (modules, so hook-based
    explainers see them), a ``MaxPool2d(2)`` after blocks 1-3 (receptive field 38 pixels: a
    whole 32x32 tile), then global average pooling and one linear layer. ``features`` ends
    in the last ReLU, which is GradCAM's default layer.

    Parameters
    ----------
    num_classes : int
        Number of output logits.
    in_channels : int
        Channels of the input images (1 for digits).
    width : int
        Channels of the first block; blocks 2-4 have ``2 * width``, ``4 * width``, ``4 * width``.

    Examples
    --------
    >>> import torch
    >>> DigitsCNN()(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, in_channels=in_channels, width=width)
        channels = (in_channels, width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        for block in range(4):
            layers += [
                nn.Conv2d(channels[block], channels[block + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(channels[block + 1]),
                nn.ReLU(inplace=False),
            ]
            if block < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits ``(B, num_classes)`` of images ``(B, C, H, W)``."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def build_model(
    arch: str, num_classes: int, in_channels: int = 3, pretrained: bool = False,
    factories: FactoryPolicy = ANY_FACTORY,
) -> nn.Module:
    """Build a classifier with its head sized for ``num_classes`` and its stem for ``in_channels``.

    Parameters
    ----------
    arch : str
        ``"digits_cnn"``, ``"alexnet"``, ``"vgg16"``, ``"resnet18"``, any other name of
        ``torchvision.models.list_models()``, ``"timm:<name>"`` for a timm model, or
        ``"package.module:factory"``, each optionally followed by keyword arguments for its builder,
        ``(key=value,...)`` (syntax: :mod:`focus_core.arch_string`). A factory is called as
        ``factory(num_classes=..., in_channels=..., **keywords)``, passing ``num_classes`` and
        ``in_channels`` only where its signature accepts them; its last ``nn.Linear`` and first
        ``nn.Conv2d`` are then replaced where they do not match, as for torchvision models. A timm
        model is built by ``timm.create_model`` with ``num_classes`` and ``in_chans`` (and, for a ViT,
        ``dynamic_img_size=True``: see :func:`focus_core.timm_models.build_timm_model`).
    num_classes : int
        Number of classes of the dataset.
    in_channels : int
        Channels of the input images; a value other than the stem's replaces the first
        convolution (pretrained stems are averaged over their input channels).
    pretrained : bool
        Start from torchvision's default ImageNet weights, or timm's pretrained weights of the name
        (downloaded once; needs network).
    factories : FactoryPolicy
        Which ``package.module:factory`` paths may be imported and called (:mod:`focus_core.arch_policy`): every
        one by default (your own code on your own machine); a worker passes the operator's list, and anything
        else is refused before any import. An allowed factory's keywords are checked against its signature.

    Returns
    -------
    torch.nn.Module
        The model in training mode, on the CPU.

    Raises
    ------
    FocusError
        For an unknown or malformed architecture, a factory ``factories`` does not allow, a broken import path,
        a module or factory that raises (the message names the factory and its error), keywords the builder
        refuses, a ``timm:`` architecture without timm installed, or a failed weight download.

    Examples
    --------
    >>> build_model("resnet18", num_classes=2).fc.out_features
    2
    >>> build_model("vgg16", num_classes=3, in_channels=1).features[0].in_channels
    1
    """
    _check_positive(num_classes=num_classes, in_channels=in_channels)
    parsed = parse_architecture(arch)
    factories.check(parsed)  # before any import or call
    if parsed.kind == "timm":
        return build_timm_model(parsed, num_classes, in_channels, pretrained)
    if parsed.name == "digits_cnn":
        if pretrained:
            raise FocusError("digits_cnn has no pretrained weights: pass pretrained=False.")
        return _call_builder(parsed, DigitsCNN, num_classes=num_classes, in_channels=in_channels)
    if parsed.kind == "factory":
        model = _call_factory(parsed, _import_factory(parsed.name), num_classes, in_channels)
    elif parsed.name in torchvision.models.list_models(module=torchvision.models):
        model = _torchvision_model(parsed, pretrained)
    else:
        raise FocusError(
            f"Unknown architecture {arch!r}: use one of {', '.join(ARCHITECTURES)}, a torchvision "
            "model name, 'timm:<name>' or a 'package.module:factory' import path."
        )
    _replace_head(model, num_classes, arch)
    _replace_stem(model, in_channels)
    return model


def model_data_config(arch: str, in_channels: int = 3) -> DataConfig:
    """The input size and normalisation that ``arch`` defines, where it defines them (builds no model).

    A timm model: the ``img_size`` of the architecture string, else its pretrained config's input size, and the
    pretrained config's mean and std (one value per channel; for a one-channel model their mean over the
    config's channels): see :func:`focus_core.timm_models.timm_data_config`. Every other architecture leaves
    size and normalisation to the dataset: all fields ``None``.

    Who uses it: :func:`flows.specs.effective_dataset`, which every flow (evaluate, randomization, sweep, audit,
    train) and the command line's checks call before loading a dataset: an ImageFolder's empty tile size becomes
    ``input_size`` (when square) and its normalisation ``mean`` and ``std`` (instead of ImageNet's) wherever they
    are not ``None``; the bundled digits keep their own tile size and statistics.

    Raises
    ------
    FocusError
        For a malformed architecture string, and for a ``timm:`` one when timm is not installed or the name is not
        a timm model.

    Examples
    --------
    >>> model_data_config("timm:resnet18", in_channels=3)
    DataConfig(input_size=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    >>> model_data_config("digits_cnn")
    DataConfig(input_size=None, mean=None, std=None)
    """
    _check_positive(in_channels=in_channels)
    parsed = parse_architecture(arch)
    if parsed.kind == "timm":
        return timm_data_config(parsed, in_channels)
    return DataConfig()


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FocusError(f"Expected {key} to be a positive integer but got {value!r}: pass one.")


def _torchvision_model(arch: Architecture, pretrained: bool) -> nn.Module:
    try:
        return torchvision.models.get_model(arch.name, weights="DEFAULT" if pretrained else None, **arch.kwargs)
    except (OSError, RuntimeError, ValueError) as error:  # URLError is an OSError
        if not pretrained:
            raise _refused(arch, error) from None
        raise FocusError(
            f"Could not download torchvision's pretrained weights for {arch.name!r} "
            f"({type(error).__name__}): connect to the network once, or pass pretrained=False "
            "and a local weights file."
        ) from None
    except Exception as error:  # noqa: BLE001 - a keyword the builder refuses (TypeError) or a value it cannot use
        raise _refused(arch, error) from None


def _call_builder(arch: Architecture, builder: Callable[..., nn.Module], **fixed: object) -> nn.Module:
    """``builder(**fixed, **arch.kwargs)``; an error of the builder becomes one sentence naming the architecture."""
    try:
        return builder(**fixed, **arch.kwargs)
    except FocusError:
        raise
    except Exception as error:  # noqa: BLE001 - a keyword the builder refuses (TypeError) or a value it cannot use
        raise _refused(arch, error) from None


def _refused(arch: Architecture, error: BaseException) -> FocusError:
    return FocusError(
        f"Building {arch.canonical()!r} failed ({type(error).__name__}: {first_line(error)}): fix its keyword "
        "arguments or pass another --arch."
    )


def _import_factory(path: str) -> Callable[..., nn.Module]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise FocusError(
            f"Cannot import {module_name!r} from {path!r} ({error}): put the module on "
            "PYTHONPATH or fix the 'package.module:factory' path."
        ) from None
    except Exception as error:  # noqa: BLE001 - the user's module failed while it was imported
        raise FocusError(
            f"Importing {module_name!r} for {path!r} failed ({type(error).__name__}: {first_line(error)}): "
            "fix the module so that it imports."
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise FocusError(
            f"{module_name!r} has no callable {attr!r}: pass 'package.module:factory' naming a "
            "function or class that returns an nn.Module."
        )
    return factory


def _call_factory(
    arch: Architecture, factory: Callable[..., nn.Module], num_classes: int, in_channels: int
) -> nn.Module:
    path = arch.name
    wanted = {"num_classes": num_classes, "in_channels": in_channels}
    check_keywords(arch, factory)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs = {**{k: v for k, v in wanted.items() if takes_any or k in parameters}, **arch.kwargs}
    call = f"{path}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        model = factory(**kwargs)
    except Exception as error:  # noqa: BLE001 - the user's code: name it and its error in one line
        raise FocusError(
            f"The model factory {call} failed ({type(error).__name__}: {first_line(error)}): "
            "fix the factory or pass another --arch."
        ) from None
    if not isinstance(model, nn.Module):
        raise FocusError(
            f"The factory {getattr(factory, '__name__', factory)!r} returned "
            f"{type(model).__name__}, not an nn.Module: make it return the model."
        )
    return model


def last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """Return the dotted name and module of the last ``nn.Linear`` in ``named_modules()`` order (the head), or ``None``.

    Examples
    --------
    >>> last_linear(DigitsCNN(num_classes=3))[0]
    'classifier'
    """
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    return found


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    return None


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _replace_head(model: nn.Module, num_classes: int, arch: str) -> None:
    found = last_linear(model)
    if found is None:
        raise FocusError(
            f"{arch!r} has no nn.Linear head to size for {num_classes} classes: build the model "
            "with the right number of outputs in its factory."
        )
    name, head = found
    if head.out_features != num_classes:
        new = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
        _set_submodule(model, name, new.to(head.weight.device, head.weight.dtype))


def _replace_stem(model: nn.Module, in_channels: int) -> None:
    found = _first_conv(model)
    if found is None or found[1].in_channels == in_channels:
        return
    name, conv = found
    if conv.groups != 1:
        raise FocusError(
            f"Cannot adapt the grouped stem {name!r} to {in_channels} channels: "
            f"pass in_channels={conv.in_channels}."
        )
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():  # keep what a pretrained stem learnt: its mean filter, per channel
        mean = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.expand_as(new.weight) * conv.in_channels / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _set_submodule(model, name, new)
