"""timm models: ``timm:<name>(key=value,...)`` built with timm, and the input size and normalisation timm defines.

timm is optional (``pip install 'focus-audit[timm]'``) and imported only when a ``timm:`` architecture is built or
asked for its data config. :func:`build_timm_model` calls ``timm.create_model(name, num_classes=..., in_chans=...,
**kwargs)``: timm sizes the head and the stem itself (a pretrained stem is adapted to the channel count by timm).
A model that takes ``dynamic_img_size`` (timm's ViTs, DeiT, EVA, ...) is built with ``dynamic_img_size=True``
unless the architecture string sets it: its position embedding is resampled to the input's size, so one model
takes both the tiles it is trained on and the mosaics (twice the side) it is evaluated on.
Import the public names from :mod:`focus_core.models`.

Examples
--------
>>> import torch
>>> from focus_core.arch_string import parse_architecture
>>> arch = parse_architecture("timm:vit_tiny_patch16_224(patch_size=8,depth=1,embed_dim=32,num_heads=2,img_size=32)")
>>> model = build_timm_model(arch, num_classes=10, in_channels=1)
>>> model(torch.zeros(1, 1, 32, 32)).shape, model(torch.zeros(1, 1, 64, 64)).shape
(torch.Size([1, 10]), torch.Size([1, 10]))
>>> timm_data_config(arch, in_channels=1)
DataConfig(input_size=(32, 32), mean=(0.5,), std=(0.5,))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from focus_core.arch_string import Architecture
from focus_core.errors import FocusError, first_line

__all__ = ["DataConfig", "build_timm_model", "timm_data_config"]

#: Modules whose errors mean "the weights could not be fetched" (huggingface_hub, its HTTP clients).
_NETWORK_MODULES = ("huggingface_hub", "httpx", "httpcore", "requests", "urllib3", "urllib", "socket", "ssl")


@dataclass(frozen=True)
class DataConfig:
    """The input an architecture expects, where it defines one; ``None`` where it leaves it to the dataset.

    Attributes
    ----------
    input_size : tuple of int or None
        ``(height, width)`` the model is built for (a timm model's ``img_size``, else its pretrained config's).
        A model built with ``dynamic_img_size`` takes other sizes too; this is the size it was made for.
    mean, std : tuple of float or None
        Per-channel normalisation on the ``[0, 1]`` scale that its pretrained weights were trained with, one value
        per input channel (averaged over the pretrained config's channels for a one-channel model).
    """

    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise FocusError(
            "timm: architectures need the timm package, which is not installed: pip install 'focus-audit[timm]'."
        ) from None
    return timm


def build_timm_model(arch: Architecture, num_classes: int, in_channels: int, pretrained: bool = False) -> nn.Module:
    """Build the timm model ``arch`` (kind ``"timm"``) with ``num_classes`` logits and ``in_channels`` inputs.

    Parameters
    ----------
    arch : Architecture
        A parsed ``timm:<name>(key=value,...)``; the keywords go to ``timm.create_model``.
    num_classes, in_channels : int
        timm's ``num_classes`` and ``in_chans``.
    pretrained : bool
        Start from timm's pretrained weights of the name (its default tag, or the tag in the name): downloaded
        once from the Hugging Face Hub into its cache, which needs the network the first time.

    Returns
    -------
    torch.nn.Module
        The model in training mode, on the CPU.

    Raises
    ------
    FocusError
        When timm is not installed, the name is not a timm model, timm refuses the keywords, or the pretrained
        weights cannot be downloaded (one sentence each).
    """
    timm = _timm()
    if not timm.is_model(arch.name):
        raise FocusError(
            f"{arch.name!r} is not a timm model: use a name of timm.list_models() (e.g. 'timm:vit_tiny_patch16_224')."
        )
    kwargs = {"num_classes": num_classes, "in_chans": in_channels, **arch.kwargs}
    try:
        try:
            model = timm.create_model(arch.name, pretrained=pretrained, **{"dynamic_img_size": True, **kwargs})
        except TypeError as error:
            if "dynamic_img_size" in arch.kwargs or "dynamic_img_size" not in str(error):
                raise
            model = timm.create_model(arch.name, pretrained=pretrained, **kwargs)  # not a ViT: a fixed-size model
    except Exception as error:  # noqa: BLE001 - timm's or the hub's error: name it in one sentence
        if pretrained and _is_network_error(error):
            raise FocusError(
                f"Could not download timm's pretrained weights for {arch.name!r} ({type(error).__name__}): connect "
                "to the network once (they are cached), or pass pretrained=False and a local weights file."
            ) from None
        raise FocusError(
            f"timm could not build {arch.canonical()!r} ({type(error).__name__}: {first_line(error)}): fix its "
            "keyword arguments or pass another --arch."
        ) from None
    if not isinstance(model, nn.Module):  # pragma: no cover - timm always returns a module
        raise FocusError(f"timm returned {type(model).__name__} for {arch.name!r}, not an nn.Module.")
    return model


def timm_data_config(arch: Architecture, in_channels: int = 3) -> DataConfig:
    """The input size and normalisation of the timm model ``arch``, from its pretrained config (builds no model).

    ``input_size`` is the ``img_size`` keyword when the architecture string sets it, else the pretrained config's;
    ``mean`` and ``std`` are the pretrained config's, or ``None`` where it defines none or has neither one nor
    ``in_channels`` values.

    Raises
    ------
    FocusError
        When timm is not installed, the name is not a timm model or its pretrained tag is unknown.
    """
    timm = _timm()
    if not timm.is_model(arch.name):
        raise FocusError(
            f"{arch.name!r} is not a timm model: use a name of timm.list_models() (e.g. 'timm:vit_tiny_patch16_224')."
        )
    try:
        cfg = timm.get_pretrained_cfg(arch.name)
    except Exception as error:  # noqa: BLE001 - an unknown pretrained tag: timm's RuntimeError in one sentence
        raise FocusError(
            f"timm has no pretrained config {arch.name!r} ({type(error).__name__}: {first_line(error)}): drop the "
            "tag after the '.' or use one of timm.list_models(pretrained=True)."
        ) from None
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg or {})
    size = arch.kwargs.get("img_size")
    if size is None and cfg.get("input_size"):
        size = tuple(cfg["input_size"][-2:])
    if isinstance(size, int):
        size = (size, size)
    input_size = tuple(int(s) for s in size) if isinstance(size, tuple) and len(size) == 2 else None
    return DataConfig(input_size, _per_channel(cfg.get("mean"), in_channels), _per_channel(cfg.get("std"), in_channels))


def _per_channel(values: Any, in_channels: int) -> tuple[float, ...] | None:
    if not values:
        return None
    values = tuple(float(v) for v in values)
    if len(values) == in_channels:
        return values
    if in_channels == 1:
        return (sum(values) / len(values),)
    return None


def _is_network_error(error: BaseException) -> bool:
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, (OSError, TimeoutError, ConnectionError)) or type(seen).__module__.split(".")[0] in (
            _NETWORK_MODULES
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
