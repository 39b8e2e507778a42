"""LIME (Ribeiro et al.) through captum's ``Lime``, over interpretable features that never cross a tile edge.

LIME switches groups of pixels (features) on and off at random, runs the model on each perturbed mosaic and fits
a weighted linear surrogate of the target logit on the on/off pattern; a feature's weight is its coefficient,
signed. Focus sums relevance per tile, so a feature that spanned two tiles would hand its weight to both: every
feature here lies inside one tile (:func:`tile_feature_masks`), computed per tile. The map gives each pixel its
feature's weight, so the positive relevance of a tile is the positive weight of its features times their areas.

Two kinds of mask:

- ``"grid"`` (the default): each tile cut into a ``k x k`` grid of equal cells (``segments = k * k``). Every tile
  has the same number of features of the same size (equal where ``k`` divides the tile's side), so a tile's summed
  relevance is its features' summed coefficients times one cell area (the quantity a linear surrogate says about
  removing the tile), no tile gains from being cut finer, and the mask depends on nothing but the mosaic's shape.
- ``"slic"``: scikit-image's SLIC superpixels computed on each tile separately (``segments`` is SLIC's target
  count per tile, ``compactness`` its colour/space trade-off on the tile rescaled to [0, 1]). Features follow the
  image's edges, as the LIME paper's superpixels do; their number and size vary with the tile's content, and a
  large superpixel weighs more in the tile's sum. Needs scikit-image (the ``slic`` extra).

The Focus paper's code used the ``lime`` package (quickshift over the whole mosaic, so superpixels could cross tile
edges, a black fill and a binary top-5 mask); here the map is the signed surrogate, the fill is the baseline 0 of
the normalised input (the dataset's mean colour), the surrogate is captum's ``SkLearnRidge`` (the ``lime``
package's ridge regression, ``alpha``) on the target logit, weighted by captum's exponential kernel on the cosine
distance between the perturbed and the original mosaic (``kernel_width``).

LIME, not captum's ``KernelShap``: the extended Focus paper rates LIME, and KernelShap (the same machinery with the
Shapley kernel and an unpenalised fit) estimates Shapley values, another method with another name.

captum's ``Lime`` fits one surrogate per input and draws its on/off patterns from torch's global generator. So each
mosaic is explained on its own, its perturbed copies batched through the model ``internal_batch_size`` at a time
(captum's ``perturbations_per_eval``), with torch's CPU generator seeded from ``seed`` and the mosaic's content
(:func:`.noise.sample_seeds`) inside :func:`torch.random.fork_rng`: a batch gives the maps of its mosaics one by
one, the same seed the same maps, and the caller's random state is left as it was.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import Lime as CaptumLime
from captum.attr._core.lime import get_exp_kernel_similarity_function
from torch import nn

from focus_core.errors import FocusError
from focus_core.explainers.base import ExplainerBase, checked_forward, params_hash
from focus_core.explainers.noise import sample_seeds

__all__ = ["Lime", "MASKS", "tile_feature_masks", "grid_mask", "slic_mask"]

#: The kinds of feature mask.
MASKS: tuple[str, ...] = ("grid", "slic")
#: SLIC's compactness when none is given (on tiles rescaled to [0, 1]: about 10 superpixels for 16 asked on digits).
SLIC_COMPACTNESS = 0.1


def _tile_edges(size: int, grid: int) -> list[int]:
    """Where the ``grid`` tiles of a mosaic side of ``size`` pixels start, and its end (Focus's split)."""
    return [i * size // grid for i in range(grid + 1)]


def _tile_coordinates(size: int, grid: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each row (or column) of a mosaic side: its tile ``0..grid-1``, its offset in it and the tile's length."""
    edges = torch.tensor(_tile_edges(size, grid))
    index = torch.arange(size)
    tile = torch.searchsorted(edges[1:-1], index, right=True)
    return tile, index - edges[tile], edges[tile + 1] - edges[tile]


def grid_mask(height: int, width: int, segments: int, grid: int = 2) -> torch.Tensor:
    """Feature ids ``(H, W)``: each of the ``grid²`` tiles cut into a ``k x k`` grid, ``k * k == segments``,
    ids tile-major (tiles row-major).

    Raises
    ------
    FocusError
        When ``segments`` is not a square number or a tile has fewer pixels per side than ``k``.
    """
    k = math.isqrt(segments)
    if k * k != segments:
        raise FocusError(f"A grid mask needs a square number of segments per tile, got {segments}: pass 4, 9, 16, ...")
    if min(height // grid, width // grid) < k:
        raise FocusError(
            f"Tiles of {height // grid}x{width // grid} pixels cannot hold a {k}x{k} grid: pass fewer segments."
        )
    row_tile, row, row_length = _tile_coordinates(height, grid)
    col_tile, col, col_length = _tile_coordinates(width, grid)
    row_cell = row * k // row_length
    col_cell = col * k // col_length
    tile = row_tile[:, None] * grid + col_tile[None, :]
    return tile * segments + row_cell[:, None] * k + col_cell[None, :]


def slic_mask(mosaic: torch.Tensor, segments: int, compactness: float, grid: int = 2) -> torch.Tensor:
    """Feature ids ``(H, W)`` of one ``(C, H, W)`` mosaic: SLIC superpixels per tile, ids ``0..n-1`` tile-major.

    Each tile is rescaled to [0, 1] (all channels together) and segmented alone, so no superpixel crosses a tile
    edge.
    """
    try:
        from skimage.segmentation import slic
    except ImportError as error:  # an optional dependency
        raise FocusError("LIME's 'slic' mask needs scikit-image: pip install 'focus-audit[slic]'.") from error
    image = mosaic.detach().float().cpu().numpy()
    _, height, width = image.shape
    ids = np.zeros((height, width), dtype=np.int64)
    offset = 0
    row_edges, col_edges = _tile_edges(height, grid), _tile_edges(width, grid)
    for rows in [slice(a, b) for a, b in zip(row_edges, row_edges[1:])]:
        for cols in [slice(a, b) for a, b in zip(col_edges, col_edges[1:])]:
            tile = np.moveaxis(image[:, rows, cols], 0, -1)
            low, high = tile.min(), tile.max()
            tile = (tile - low) / (high - low) if high > low else np.zeros_like(tile)
            labels = slic(tile, n_segments=segments, compactness=compactness, channel_axis=-1, convert2lab=False,
                          start_label=0)
            _, labels = np.unique(labels, return_inverse=True)  # contiguous 0..m-1
            ids[rows, cols] = labels.reshape(tile.shape[:2]) + offset
            offset += int(labels.max()) + 1
    return torch.from_numpy(ids)


def tile_feature_masks(
    inputs: torch.Tensor, mask: str = "grid", segments: int = 16, compactness: float | None = None, grid: int = 2
) -> torch.Tensor:
    """Return the interpretable features of each mosaic: int64 ids ``(B, 1, H, W)`` on the inputs' device.

    Parameters
    ----------
    inputs : torch.Tensor
        Float ``(B, C, H, W)`` mosaics of ``grid`` x ``grid`` tiles, split where Focus splits them
        (:func:`focus_core.metric.tile_sums`; 2x2: at ``H // 2``, ``W // 2``).
    mask : str, optional
        ``"grid"`` or ``"slic"`` (see the module doc).
    segments : int, optional
        Features per tile (``"grid"``: a square number; ``"slic"``: SLIC's target count).
    compactness : float or None, optional
        SLIC's compactness (``None``: :data:`SLIC_COMPACTNESS`); unused by the grid.
    grid : int, optional
        Tiles per side of the mosaics (default 2).

    Returns
    -------
    torch.Tensor
        Ids ``0..n-1`` of one mosaic's ``n`` features, each feature inside one tile, numbered tile by tile.

    Examples
    --------
    >>> masks = tile_feature_masks(torch.zeros(1, 1, 4, 4), "grid", segments=4)
    >>> masks[0, 0].tolist()
    [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    """
    b, _, height, width = inputs.shape
    if mask == "grid":
        ids = grid_mask(height, width, segments, grid)[None, None].expand(b, 1, height, width)
    elif mask == "slic":
        weight = SLIC_COMPACTNESS if compactness is None else compactness
        ids = torch.stack([slic_mask(mosaic, segments, weight, grid) for mosaic in inputs])[:, None]
    else:
        raise FocusError(f"Unknown LIME mask {mask!r}: choose one of {', '.join(MASKS)}.")
    return ids.to(inputs.device)


class Lime(ExplainerBase):
    """LIME per mosaic (captum ``Lime``) over per-tile features; each pixel gets its feature's signed weight.

    Parameters
    ----------
    n_samples : int, optional
        Perturbed copies per mosaic, i.e. forward passes per mosaic (default 500).
    mask : str, optional
        ``"grid"`` (default) or ``"slic"``: see the module doc.
    segments : int, optional
        Features per tile (default 16: a 4x4 grid; for SLIC its target count).
    compactness : float or None, optional
        SLIC's compactness; ``None`` takes :data:`SLIC_COMPACTNESS` for ``"slic"`` (stored explicitly in
        ``params``) and is the only value the grid accepts.
    kernel_width : float, optional
        Width of captum's exponential similarity kernel on the cosine distance (default 1.0, captum's).
    alpha : float, optional
        Ridge penalty of the surrogate (default 1.0, the ``lime`` package's).
    seed : int, optional
        Seed of the on/off patterns (default 0); mixed with each mosaic's content.
    grid : int, optional
        Tiles per side of the mosaics explained (default 2, the paper's; 3 or 4): features never cross a tile
        edge of that grid. In ``params`` (and its hash) only when it is not 2, so 2x2 evaluations keep theirs.
    internal_batch_size : int or None, optional
        Perturbed copies per forward pass, captum's ``perturbations_per_eval`` (default 64; ``None``: all
        ``n_samples`` at once; the flows set it to their batch size). It bounds memory, changes the maps only
        within float tolerance and is not part of ``params`` or its hash.

    Examples
    --------
    >>> explainer = Lime(n_samples=8)
    >>> explainer.params
    {'n_samples': 8, 'mask': 'grid', 'segments': 16, 'compactness': None, 'kernel_width': 1.0, 'alpha': 1.0, 'seed': 0}
    >>> Lime(n_samples=8, grid=3).params["grid"]
    3
    """

    name = "lime"
    spec: ClassVar[dict[str, tuple[str, Any]]] = {
        "n_samples": ("int", 500),
        "mask": ("str", "grid"),
        "segments": ("int", 16),
        "compactness": ("optional_float", None),
        "kernel_width": ("float", 1.0),
        "alpha": ("float", 1.0),
        "seed": ("int", 0),
        "grid": ("int", 2),
    }
    runtime_spec: ClassVar[dict[str, tuple[str, Any]]] = {"internal_batch_size": ("optional_int", 64)}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params["grid"] == 2:  # the paper's mosaics: params and hash as before grids existed
            del self.params["grid"]
            self.params_hash = params_hash(self.name, self.params)

    def _check(self, values: dict[str, Any]) -> None:
        if values["grid"] not in (2, 3, 4):
            raise FocusError(f"Parameter 'grid' of explainer 'lime' got {values['grid']}: pass 2, 3 or 4.")
        for key in ("n_samples", "segments", "internal_batch_size"):
            if values[key] is not None and values[key] < 1:
                raise FocusError(f"Parameter '{key}' of explainer 'lime' got {values[key]}: pass an integer >= 1.")
        for key in ("kernel_width", "alpha"):
            if values[key] <= 0:
                raise FocusError(f"Parameter '{key}' of explainer 'lime' got {values[key]}: pass a number > 0.")
        if values["mask"] not in MASKS:
            raise FocusError(f"Parameter 'mask' of explainer 'lime' got {values['mask']!r}: pass 'grid' or 'slic'.")
        if values["mask"] == "grid":
            if values["compactness"] is not None:
                raise FocusError("Parameter 'compactness' of explainer 'lime' applies to mask 'slic': leave it out.")
            k = math.isqrt(values["segments"])
            if k * k != values["segments"]:
                raise FocusError(
                    f"Parameter 'segments' of explainer 'lime' got {values['segments']}: "
                    "a grid mask needs a square number (4, 9, 16, ...)."
                )
        elif values["compactness"] is None:
            values["compactness"] = SLIC_COMPACTNESS  # explicit in params, so its hash names the number used
        elif values["compactness"] <= 0:
            raise FocusError(
                f"Parameter 'compactness' of explainer 'lime' got {values['compactness']}: pass a number > 0."
            )

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = self.params
        x = inputs.detach()
        masks = tile_feature_masks(x, p["mask"], p["segments"], p["compactness"], p.get("grid", 2))
        lime = CaptumLime(
            checked_forward(model, targets),
            interpretable_model=SkLearnRidge(alpha=p["alpha"]),
            similarity_func=get_exp_kernel_similarity_function("cosine", p["kernel_width"]),
        )
        per_eval = self.runtime["internal_batch_size"] or p["n_samples"]
        maps = []
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for i, sample_seed in enumerate(sample_seeds(x, p["seed"])):
                torch.random.default_generator.manual_seed(sample_seed)  # captum draws its patterns on the CPU
                weights = lime.attribute(
                    x[i:i + 1], target=targets[i:i + 1], feature_mask=masks[i:i + 1], baselines=0.0,
                    n_samples=p["n_samples"], perturbations_per_eval=min(per_eval, p["n_samples"]),
                )
                maps.append(weights[:, 0])  # every channel of a pixel carries its feature's weight
        return torch.cat(maps).to(x.dtype)
