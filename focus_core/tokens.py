"""The patch tokens of a vision transformer: its patch size, its prefix tokens, their grid, and tile alignment.

A ViT cuts its input into ``ph x pw`` patches and runs ``(B, N, C)`` token sequences through its blocks:
``N = P + gh * gw``, where the ``P`` prefix tokens (the class token, register tokens, a distillation token) come
first and the patch tokens follow in row-major order of the ``gh x gw`` grid. :func:`patch_geometry` reads the
patch size and ``P`` from the model (timm's ``patch_embed.patch_size`` and ``num_prefix_tokens``; torchvision's
``patch_size`` and its one class token), :func:`tokens_to_grid` turns a token tensor into a ``(B, C, gh, gw)``
map (what GradCAM weights), and :func:`check_patch_alignment` refuses mosaics whose tile edges cut a patch: such
a patch mixes two tiles inside the model, so no attribution can credit one tile alone.

Examples
--------
>>> import timm, torch
>>> vit = timm.create_model("vit_tiny_patch16_224", patch_size=8, img_size=32, depth=1, embed_dim=16,
...                         num_heads=2, in_chans=1, num_classes=3, reg_tokens=2, dynamic_img_size=True)
>>> geometry = patch_geometry(vit)
>>> geometry.patch_size, geometry.num_prefix_tokens, geometry.grid(64, 64)
((8, 8), 3, (8, 8))
>>> tokens_to_grid(torch.zeros(2, 3 + 64, 16), geometry, (64, 64)).shape
torch.Size([2, 16, 8, 8])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from focus_core.errors import FocusError

__all__ = ["PatchGeometry", "check_patch_alignment", "patch_geometry", "tokens_to_grid"]


@dataclass(frozen=True)
class PatchGeometry:
    """How a vision transformer lays out its tokens.

    Attributes
    ----------
    patch_size : tuple of int
        ``(ph, pw)`` pixels per patch.
    num_prefix_tokens : int
        Tokens before the patch tokens (class, register, distillation tokens), dropped from maps.
    """

    patch_size: tuple[int, int]
    num_prefix_tokens: int

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The ``(gh, gw)`` patch grid of an input of ``height x width`` pixels.

        Raises
        ------
        FocusError
            When a side is not a whole number of patches (the model would pad or crop it, and its map would not
            line up with the pixels).
        """
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise FocusError(
                f"An input of {height}x{width} pixels is not a whole number of the model's {ph}x{pw} patches: "
                f"use inputs whose sides are multiples of the patch size."
            )
        return height // ph, width // pw


def patch_geometry(model: nn.Module) -> PatchGeometry | None:
    """The patch geometry of a vision transformer, or ``None`` for a model that is not one (a CNN).

    Recognised: timm models with ``patch_embed.patch_size`` and ``num_prefix_tokens`` (ViT, DeiT, EVA and their
    kin; register tokens included) and torchvision's ``VisionTransformer`` (one class token).

    Examples
    --------
    >>> import torchvision
    >>> patch_geometry(torchvision.models.vit_b_16(num_classes=2))
    PatchGeometry(patch_size=(16, 16), num_prefix_tokens=1)
    >>> patch_geometry(torchvision.models.resnet18()) is None
    True
    """
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "patch_size", None)
    prefix = getattr(model, "num_prefix_tokens", None)
    if size is not None and isinstance(prefix, int):
        return PatchGeometry(_pair(size), prefix)
    import torchvision

    if isinstance(model, torchvision.models.VisionTransformer):
        return PatchGeometry(_pair(model.patch_size), 1)
    return None


def _pair(size: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = tuple(size)
    return int(height), int(width)


def tokens_to_grid(tokens: torch.Tensor, geometry: PatchGeometry, size: tuple[int, int]) -> torch.Tensor:
    """``(B, N, C)`` tokens of an input of ``size`` pixels -> the ``(B, C, gh, gw)`` map of its patch tokens.

    The ``num_prefix_tokens`` first tokens are dropped; the rest are the patches in row-major order.

    Raises
    ------
    FocusError
        When the number of tokens is not ``num_prefix_tokens + gh * gw`` (the layer does not return one token
        per patch, e.g. a pooled or merged sequence).
    """
    gh, gw = geometry.grid(*size)
    batch, count, channels = tokens.shape
    if count != geometry.num_prefix_tokens + gh * gw:
        raise FocusError(
            f"The layer returns {count} tokens, not {geometry.num_prefix_tokens} prefix tokens and {gh}x{gw} patch "
            "tokens: pass a layer inside the transformer's blocks, such as 'blocks.3.norm1'."
        )
    patches = tokens[:, geometry.num_prefix_tokens:]
    return patches.reshape(batch, gh, gw, channels).permute(0, 3, 1, 2)


def check_patch_alignment(model: nn.Module, tile_size: int) -> None:
    """Refuse mosaics whose tile edges cut the patches of a vision transformer (nothing to check for a CNN).

    A patch that straddles two tiles is one token made of both, so its relevance cannot be credited to either
    tile, and Focus would count it for one of them.

    Raises
    ------
    FocusError
        When ``tile_size`` is not a multiple of the patch size.

    Examples
    --------
    >>> import torchvision
    >>> check_patch_alignment(torchvision.models.vit_b_16(num_classes=2), 224)
    >>> check_patch_alignment(torchvision.models.vit_b_16(num_classes=2), 200)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: Tiles of 200 pixels cut the model's 16x16 patches ...: pick a tile size that is a multiple of 16.
    """
    geometry = patch_geometry(model)
    if geometry is None:
        return
    ph, pw = geometry.patch_size
    if tile_size % ph or tile_size % pw:
        multiple = ph if ph == pw else f"{ph} and {pw}"
        raise FocusError(
            f"Tiles of {tile_size} pixels cut the model's {ph}x{pw} patches at the mosaic's tile edges: "
            f"pick a tile size that is a multiple of {multiple}."
        )
