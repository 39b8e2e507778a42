"""Architectures, safe weight files and the default GradCAM layer.

One registry serves the paper's networks (AlexNet, VGG16, ResNet18), a small CNN for the
bundled digits, any torchvision classifier by name, and a user's own ``nn.Module`` given as an
import path ``"package.module:factory"``.

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

import hashlib
import importlib
import inspect
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from focus_core.errors import FocusError

__all__ = [
    "ARCHITECTURES",
    "DigitsCNN",
    "build_model",
    "default_gradcam_layer",
    "load_weights",
    "save_atomically",
    "save_weights",
    "weights_sha256",
]

#: The named architectures. ``build_model`` also accepts any name of
#: ``torchvision.models.list_models()`` and ``"package.module:factory"`` import paths.
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
    arch: str, num_classes: int, in_channels: int = 3, pretrained: bool = False
) -> nn.Module:
    """Build a classifier with its head sized for ``num_classes`` and its stem for ``in_channels``.

    Parameters
    ----------
    arch : str
        ``"digits_cnn"``, ``"alexnet"``, ``"vgg16"``, ``"resnet18"``, any other name of
        ``torchvision.models.list_models()``, or ``"package.module:factory"``. A factory is
        called as ``factory(num_classes=..., in_channels=...)``, passing only the keywords its
        signature accepts (``factory()`` when none); its last ``nn.Linear`` and first
        ``nn.Conv2d`` are then replaced where they do not match, as for torchvision models.
    num_classes : int
        Number of classes of the dataset.
    in_channels : int
        Channels of the input images; a value other than the stem's replaces the first
        convolution (pretrained stems are averaged over their input channels).
    pretrained : bool
        Start from torchvision's default ImageNet weights (downloads them once; needs network).

    Returns
    -------
    torch.nn.Module
        The model in training mode, on the CPU.

    Raises
    ------
    FocusError
        For an unknown architecture, a broken import path, a module or factory that raises (the
        message names the factory and its error) or a failed weight download.

    Examples
    --------
    >>> build_model("resnet18", num_classes=2).fc.out_features
    2
    >>> build_model("vgg16", num_classes=3, in_channels=1).features[0].in_channels
    1
    """
    _check_positive(num_classes=num_classes, in_channels=in_channels)
    if arch == "digits_cnn":
        if pretrained:
            raise FocusError("digits_cnn has no pretrained weights: pass pretrained=False.")
        return DigitsCNN(num_classes=num_classes, in_channels=in_channels)
    if ":" in arch:
        model = _call_factory(arch, _import_factory(arch), num_classes, in_channels)
    elif arch in torchvision.models.list_models(module=torchvision.models):
        model = _torchvision_model(arch, pretrained)
    else:
        raise FocusError(
            f"Unknown architecture {arch!r}: use one of {', '.join(ARCHITECTURES)}, a torchvision "
            "model name or a 'package.module:factory' import path."
        )
    _replace_head(model, num_classes, arch)
    _replace_stem(model, in_channels)
    return model


def save_weights(model: nn.Module, path: str | os.PathLike) -> str:
    """Write the model's ``state_dict`` (on the CPU) to ``path`` atomically; return its sha256.

    Raises
    ------
    OSError
        As :func:`save_atomically`: nothing is left at ``path`` or beside it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
    >>> save_weights(DigitsCNN(), path) == weights_sha256(path)
    True
    """
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    save_atomically(state, path)
    return weights_sha256(path)


def save_atomically(payload: object, path: str | os.PathLike) -> Path:
    """``torch.save`` ``payload`` to ``path`` through a hidden ``.partial`` file beside it, then rename it.

    A reader never sees half a file, and a failed write (a full disk, a crash of ``torch.save``) leaves
    neither ``path`` nor the ``.partial`` file behind. ``path``'s folder is created if needed.

    Raises
    ------
    OSError
        When the file cannot be written, with the ``errno`` of the failure (``ENOSPC`` on a full disk,
        ``EACCES``, ``EROFS``, ...) and ``filename`` set to ``path`` (``torch.save`` itself reports a
        write error as a ``RuntimeError``; its ``OSError`` is raised instead, from it).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> save_atomically({"epoch": 1}, folder / "c.pt").name, [p.name for p in folder.iterdir()]
    ('c.pt', ['c.pt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as error:  # a read-only or forbidden folder: name the file that was to be written
        raise OSError(error.errno, error.strerror, str(path)) from error
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        os.replace(partial, path)
    except BaseException as error:
        Path(partial).unlink(missing_ok=True)
        cause = _os_error(error)
        if cause is not None and (cause is not error or cause.filename is None):
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from error
        raise
    return path


def _os_error(error: BaseException) -> OSError | None:
    """The ``OSError`` that ``error`` is or that it was raised from or while handling (a few links deep)."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _require_weights_file(path: Path) -> None:
    """A missing path and a directory are told apart: both are mistakes, with different fixes."""
    if path.is_dir():
        raise FocusError(
            f"The weights file {str(path)!r} is a directory, not a file: pass the path of a saved state_dict in it."
        )
    if not path.is_file():
        raise FocusError(f"The weights file {str(path)!r} does not exist: pass the path of a saved state_dict.")


def weights_sha256(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a weights file.

    Raises
    ------
    FocusError
        When the file does not exist or is a directory.
    """
    path = Path(path)
    _require_weights_file(path)
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a ``state_dict`` file into ``model`` safely (``weights_only=True``) and return it.

    A file holding ``{"state_dict": ...}`` or ``{"model_state_dict": ...}`` is accepted too.
    Nothing is loaded unless every key and shape matches.

    Raises
    ------
    FocusError
        When the file is missing, is a directory, is not a state_dict (any file that
        ``torch.load(..., weights_only=True)`` refuses, a text file too), or was saved for another
        architecture, class count or channel count (the message names the mismatch).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
    >>> _ = save_weights(DigitsCNN(num_classes=2), path)
    >>> load_weights(DigitsCNN(num_classes=10), path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The weights file ... has 2 classes in 'classifier.weight' but the model has 10: pass the matching --num-classes or architecture.
    """
    path = Path(path)
    name = str(path)
    _require_weights_file(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load raises a different error for each kind of wrong file: UnpicklingError, RuntimeError,
    # EOFError, KeyError (a text file: "KeyError: 101"), ...; each means the same to the user.
    except Exception as error:  # noqa: BLE001
        raise FocusError(
            f"The weights file {name!r} cannot be read safely ({type(error).__name__}): "
            "save it with torch.save(model.state_dict(), path)."
        ) from None
    state = _as_state_dict(loaded, name)
    _check_state_dict(model, state, name)
    model.load_state_dict(state)
    return model


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


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FocusError(f"Expected {key} to be a positive integer but got {value!r}: pass one.")


def _torchvision_model(arch: str, pretrained: bool) -> nn.Module:
    if not pretrained:
        return torchvision.models.get_model(arch, weights=None)
    try:
        return torchvision.models.get_model(arch, weights="DEFAULT")
    except (OSError, RuntimeError, ValueError) as error:  # URLError is an OSError
        raise FocusError(
            f"Could not download torchvision's pretrained weights for {arch!r} "
            f"({type(error).__name__}): connect to the network once, or pass pretrained=False "
            "and a local weights file."
        ) from None


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
            f"Importing {module_name!r} for {path!r} failed ({type(error).__name__}: {_first_line(error)}): "
            "fix the module so that it imports."
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise FocusError(
            f"{module_name!r} has no callable {attr!r}: pass 'package.module:factory' naming a "
            "function or class that returns an nn.Module."
        )
    return factory


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _call_factory(path: str, factory: Callable[..., nn.Module], num_classes: int, in_channels: int) -> nn.Module:
    wanted = {"num_classes": num_classes, "in_channels": in_channels}
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs = {k: v for k, v in wanted.items() if takes_any or k in parameters}
    call = f"{path}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    try:
        model = factory(**kwargs)
    except Exception as error:  # noqa: BLE001 - the user's code: name it and its error in one line
        raise FocusError(
            f"The model factory {call} failed ({type(error).__name__}: {_first_line(error)}): "
            "fix the factory or pass another --arch."
        ) from None
    if not isinstance(model, nn.Module):
        raise FocusError(
            f"The factory {getattr(factory, '__name__', factory)!r} returned "
            f"{type(model).__name__}, not an nn.Module: make it return the model."
        )
    return model


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
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
    found = _last_linear(model)
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


def _as_state_dict(loaded: object, name: str) -> Mapping[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if (
        not isinstance(loaded, Mapping)
        or not loaded
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items())
    ):
        raise FocusError(
            f"The weights file {name!r} does not hold a state_dict: save it with "
            "torch.save(model.state_dict(), path)."
        )
    return loaded


def _check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        detail = f"lacks {missing[0]!r}" if missing else f"has {unexpected[0]!r}, which the model lacks"
        raise FocusError(
            f"The weights file {name!r} {detail} ({len(missing)} keys missing, {len(unexpected)} "
            f"unexpected), so it was saved for another architecture: pass the matching architecture."
        )
    head = _last_linear(model)
    head_keys = {f"{head[0]}.weight", f"{head[0]}.bias"} if head else set()
    for key, tensor in expected.items():
        got = state[key].shape
        if got == tensor.shape:
            continue
        if key in head_keys and len(got) >= 1:
            raise FocusError(
                f"The weights file {name!r} has {got[0]} classes in {key!r} but the model has "
                f"{tensor.shape[0]}: pass the matching --num-classes or architecture."
            )
        raise FocusError(
            f"The weights file {name!r} has shape {tuple(got)} for {key!r} but the model has "
            f"{tuple(tensor.shape)}: pass the matching architecture, --num-classes or --in-channels."
        )
