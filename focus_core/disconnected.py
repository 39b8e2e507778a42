"""The disconnected setting: every tile of a mosaic passes through the feature extractor on its own.

Rao et al.'s DiFull (the grid pointing game, CVPR 2022) answers the question a mosaic score cannot answer on
an ordinary network: did the model use the other tile, or did the explanation leak onto it? :class:`DisconnectedModel`
wraps a classifier so that no receptive field crosses a tile edge: the ``(B, C, N h, N w)`` mosaics are cut into
their N² tiles (:func:`split_tiles`), each tile goes through the model's own feature extractor alone (one batch of
``B N²`` tiles), and the per-tile feature maps are laid out again as the mosaic's map (:func:`join_tiles`) before
the head. The laid-out map is the output of the wrapper's ``layout`` module (an identity), the layer GradCAM
explains (:data:`GRADCAM_LAYER`); the wrapper's input and output are the original model's, so every explainer sees
one mosaic-shaped network.

Heads, and why each tile's share of the target logit is exact (:func:`tile_contributions`):

- global average pooling + one linear layer (the digits CNN, torchvision ResNets): the head runs on the laid-out
  map as in the original model. Tile maps are the same size, so the pooled features are the mean of the tiles'
  pooled features and the logit, linear in them, is a sum of one term per tile (the bias split evenly over the
  N² tiles);
- VGG (adaptive average pooling to 7x7 and a three-layer MLP): that head is not linear and its pooling windows
  cross tile edges, so it runs on each tile's map on its own and the mosaic's logits are the mean of the tiles'
  logits: each tile's share is its own logit / N², exact by construction;
- anything else is refused in one sentence (a :class:`~focus_core.errors.FocusError`, a ``ValueError``) when the
  wrapper is built, before any computation: a vision transformer's attention joins every patch to every other, and
  the feature extractor and head of an unknown network are not known.

Put the model in eval mode: BatchNorm in training mode would share batch statistics across tiles.

Examples
--------
>>> import torch
>>> from focus_core.architectures import DigitsCNN
>>> torch.manual_seed(0) and None
>>> model = DisconnectedModel(DigitsCNN().eval(), grid=2)
>>> x, targets = torch.randn(3, 1, 64, 64), torch.tensor([0, 4, 9])
>>> logits = model(x)
>>> logits.shape
torch.Size([3, 10])
>>> parts = tile_contributions(model, x, targets)
>>> parts.shape, bool(torch.allclose(parts.sum(1), logits.gather(1, targets[:, None])[:, 0], atol=1e-5))
(torch.Size([3, 4]), True)
"""

from __future__ import annotations

from typing import Literal

import torch
import torchvision
from torch import nn

from focus_core.architectures import DigitsCNN
from focus_core.errors import FocusError

__all__ = ["GRADCAM_LAYER", "DisconnectedModel", "join_tiles", "split_tiles", "tile_contributions"]

#: The wrapper's submodule whose output is the laid-out, mosaic-shaped feature map: GradCAM's layer there.
GRADCAM_LAYER = "layout"

_GRIDS = (2, 3, 4)


def _check_grid(grid: int) -> None:
    if isinstance(grid, bool) or not isinstance(grid, int) or grid not in _GRIDS:
        raise FocusError(f"Expected a grid of 2, 3 or 4 tiles per side but got {grid!r}.")


def split_tiles(mosaics: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut ``(B, C, N h, N w)`` mosaics into their tiles: ``(B N², C, h, w)``, mosaic by mosaic, tiles row-major.

    The inverse of :func:`join_tiles`, and of :func:`focus_core.mosaics.compose_mosaics`'s layout.

    Raises
    ------
    FocusError
        Unless ``mosaics`` is 4-D with a height and width that ``grid`` divides.

    Examples
    --------
    >>> split_tiles(torch.arange(16.0).view(1, 1, 4, 4), 2)[:, 0].tolist()[1]
    [[2.0, 3.0], [6.0, 7.0]]
    """
    _check_grid(grid)
    if not isinstance(mosaics, torch.Tensor) or mosaics.ndim != 4 or mosaics.shape[2] % grid or mosaics.shape[3] % grid:
        shape = tuple(mosaics.shape) if isinstance(mosaics, torch.Tensor) else type(mosaics).__name__
        raise FocusError(
            f"Expected (B, C, H, W) mosaics whose height and width {grid} divides but got {shape}: tiles must be "
            f"of one size to pass through the network on their own."
        )
    b, c, hh, ww = mosaics.shape
    h, w = hh // grid, ww // grid
    # (B, C, row, h, col, w) -> (B, row, col, C, h, w) -> (B N², C, h, w)
    return mosaics.reshape(b, c, grid, h, grid, w).permute(0, 2, 4, 1, 3, 5).reshape(b * grid * grid, c, h, w)


def join_tiles(tiles: torch.Tensor, grid: int) -> torch.Tensor:
    """Lay ``(B N², C, h, w)`` tiles (row-major per mosaic) out as ``(B, C, N h, N w)`` mosaics.

    Examples
    --------
    >>> x = torch.randn(2, 3, 6, 6)
    >>> bool(torch.equal(join_tiles(split_tiles(x, 3), 3), x))
    True
    """
    _check_grid(grid)
    if not isinstance(tiles, torch.Tensor) or tiles.ndim != 4 or tiles.shape[0] % (grid * grid):
        shape = tuple(tiles.shape) if isinstance(tiles, torch.Tensor) else type(tiles).__name__
        raise FocusError(f"Expected (B x {grid * grid}, C, h, w) tiles but got {shape}: pass split_tiles' output.")
    n, c, h, w = tiles.shape
    b = n // (grid * grid)
    return tiles.reshape(b, grid, grid, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * h, grid * w)


def _is_vision_transformer(model: nn.Module) -> bool:
    return isinstance(model, torchvision.models.VisionTransformer) or (
        getattr(model, "patch_embed", None) is not None and getattr(model, "blocks", None) is not None
    )


def _parts(model: nn.Module, name: str | None = None
           ) -> tuple[nn.Module, nn.Module, nn.Module, Literal["linear", "per_tile"]]:
    """``(extractor, pool, classifier, head kind)`` of a supported model; a one-sentence refusal (naming the model
    ``name``, else its class) otherwise."""
    name = name or type(model).__name__
    if isinstance(model, DigitsCNN):
        parts = (model.features, model.pool, model.classifier, "linear")
    elif isinstance(model, torchvision.models.ResNet):
        extractor = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                                  model.layer1, model.layer2, model.layer3, model.layer4)
        parts = (extractor, model.avgpool, model.fc, "linear")
    elif isinstance(model, torchvision.models.VGG):
        parts = (model.features, model.avgpool, model.classifier, "per_tile")
    elif _is_vision_transformer(model):
        raise FocusError(
            f"The disconnected setting cannot be built for the vision transformer {name}: its attention joins every "
            f"patch to every other, so no tile passes through it on its own; use the digits CNN, a torchvision "
            f"ResNet or a VGG."
        )
    else:
        raise FocusError(
            f"The disconnected setting cannot be built for {name}: it knows the feature extractor and head of the "
            f"digits CNN, torchvision ResNets and VGGs only; use one of those."
        )
    extractor, pool, classifier, kind = parts
    if kind == "linear" and not (isinstance(classifier, nn.Linear) and isinstance(pool, nn.AdaptiveAvgPool2d)
                                 and pool.output_size in (1, (1, 1))):
        raise FocusError(
            f"The disconnected setting needs {name}'s head to be global average pooling and one nn.Linear, but it is "
            f"{type(pool).__name__} and {type(classifier).__name__}: restore that head."
        )
    return extractor, pool, classifier, kind


class DisconnectedModel(nn.Module):
    """``model`` with every tile of a ``grid`` x ``grid`` mosaic passed through its feature extractor on its own.

    Same input ``(B, C, N h, N w)`` (``N = grid`` must divide ``H`` and ``W``) and output ``(B, classes)`` as
    ``model``; the wrapper holds ``model``'s own modules (the weights are shared, nothing is copied). The module
    doc says how each head is handled.

    Parameters
    ----------
    model : torch.nn.Module
        A :class:`~focus_core.architectures.DigitsCNN`, a torchvision ``ResNet`` or a torchvision ``VGG``, in eval
        mode.
    grid : int
        Tiles per side of the mosaics it will see: 2, 3 or 4.
    name : str, optional
        How a refusal names the model (an architecture string, say); its class name by default.

    Raises
    ------
    FocusError
        For any other model (one sentence naming it), or a grid other than 2, 3 or 4, before any computation.

    Examples
    --------
    >>> vit = torchvision.models.VisionTransformer(32, 16, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8)
    >>> try:
    ...     DisconnectedModel(vit, 2)
    ... except FocusError as error:
    ...     print(str(error)[:76])
    The disconnected setting cannot be built for the vision transformer VisionTr
    """

    def __init__(self, model: nn.Module, grid: int, *, name: str | None = None) -> None:
        super().__init__()
        _check_grid(grid)
        extractor, pool, classifier, kind = _parts(model, name)
        self.grid = grid
        self.head_kind: Literal["linear", "per_tile"] = kind
        self.extractor = extractor
        self.layout = nn.Identity()
        self.pool = pool
        self.classifier = classifier

    def tile_features(self, mosaics: torch.Tensor) -> torch.Tensor:
        """The feature extractor's maps of every tile on its own: ``(B N², K, h', w')``."""
        return self.extractor(split_tiles(mosaics, self.grid))

    def head(self, mosaic_maps: torch.Tensor) -> torch.Tensor:
        """The logits ``(B, classes)`` of laid-out feature maps ``(B, K, N h', N w')``."""
        if self.head_kind == "linear":
            return self.classifier(torch.flatten(self.pool(mosaic_maps), 1))
        per_tile = self.classifier(torch.flatten(self.pool(split_tiles(mosaic_maps, self.grid)), 1))
        return per_tile.view(mosaic_maps.shape[0], self.grid * self.grid, -1).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits ``(B, classes)`` of mosaics ``(B, C, N h, N w)``."""
        return self.head(self.layout(join_tiles(self.tile_features(x), self.grid)))


def tile_contributions(model: DisconnectedModel, mosaics: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each tile's exact share of the target logit in the disconnected setting: ``(B, N²)``, tiles row-major.

    The shares sum to ``model(mosaics)``'s target logit (up to rounding). Linear heads: tile ``t``'s share is
    ``(w_c . mean_t + b_c) / N²``, ``mean_t`` the spatial mean of its feature map and ``w_c, b_c`` the target
    class's weights and bias (the bias is the same on every tile, so differences and ranks between tiles are those
    of the feature terms). VGG: tile ``t``'s own target logit / N². Computed without gradients.

    Raises
    ------
    FocusError
        For a model that is not a :class:`DisconnectedModel`, or targets that are not ``(B,)`` integers.
    """
    if not isinstance(model, DisconnectedModel):
        raise FocusError(
            f"Expected a DisconnectedModel but got {type(model).__name__}: wrap the model with "
            f"DisconnectedModel(model, grid) first."
        )
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.int32, torch.int64) \
            or targets.shape != (mosaics.shape[0],):
        raise FocusError(f"Expected ({mosaics.shape[0]},) integer targets, one per mosaic: pass the target classes.")
    tiles = model.grid * model.grid
    targets = targets.to(device=mosaics.device, dtype=torch.int64)
    with torch.no_grad():
        maps = model.tile_features(mosaics)
        if model.head_kind == "linear":
            pooled = maps.mean(dim=(2, 3)).view(mosaics.shape[0], tiles, -1)  # (B, N², K)
            weights = model.classifier.weight[targets]  # (B, K)
            shares = torch.einsum("btk,bk->bt", pooled, weights)
            if model.classifier.bias is not None:
                shares = shares + model.classifier.bias[targets][:, None]
        else:
            logits = model.classifier(torch.flatten(model.pool(maps), 1)).view(mosaics.shape[0], tiles, -1)
            shares = logits.gather(2, targets[:, None, None].expand(-1, tiles, 1))[..., 0]
    return shares / tiles
