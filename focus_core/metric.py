"""The Focus metric: the share of positive relevance that lands on a mosaic's target tiles.

    Focus = sum of R_t over the target tiles t / sum of R_i over all tiles i      R_i = sum of max(relevance, 0) on tile i

An N x N mosaic's tiles are numbered row-major ``0..N²-1`` (2x2: TL, TR, BL, BR = 0..3); tile row ``i`` spans
rows ``i * H // N`` to ``(i + 1) * H // N`` (columns likewise), so the 2x2 split is at ``H // 2``, ``W // 2``.
:func:`tile_sums` reduces a batch of relevance maps to per-tile positive and negative sums (what the record
layer stores), :func:`quadrant_sums` is its 2x2 case (the hot path's); :func:`focus_from_sums` turns sums into
Focus for any number of tiles, and :func:`focus_score` does both. Everything stays on the device of the input.

Examples
--------
>>> relevance = torch.tensor([[[1.0, 3.0], [-2.0, 0.0]]])
>>> quadrant_sums(relevance)[0].tolist()
[[1.0, 0.0], [3.0, 0.0], [0.0, -2.0], [0.0, 0.0]]
>>> focus_score(relevance, torch.tensor([[True, False, False, True]])).tolist()
[0.25]
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

from focus_core.errors import FocusError

__all__ = [
    "focus_from_sums",
    "focus_score",
    "quadrant_sums",
    "tile_sums",
    "upsampled_quadrant_sums",
    "upsampled_tile_sums",
]


def _check_relevance(relevance: torch.Tensor, smallest: int = 2) -> None:
    """Refuse anything but floating point ``(B, H, W)`` maps of at least ``smallest`` pixels per side."""
    if not isinstance(relevance, torch.Tensor) or relevance.ndim != 3:
        shape = tuple(relevance.shape) if isinstance(relevance, torch.Tensor) else type(relevance).__name__
        raise FocusError(
            f"Expected relevance of shape (B, H, W) but got {shape}: pass one map per mosaic."
        )
    if relevance.shape[1] < smallest or relevance.shape[2] < smallest:
        raise FocusError(
            f"Expected relevance maps of at least {smallest}x{smallest} pixels but got shape {tuple(relevance.shape)}: "
            f"pass maps at mosaic resolution."
        )
    if not relevance.dtype.is_floating_point:
        raise FocusError(f"Expected floating point relevance but got {relevance.dtype}: cast it to float.")


def _check_mask(mask: torch.Tensor, batch: int, tiles: int | None = None) -> int:
    """Refuse anything but a bool ``(batch, T)`` mask, ``T`` a square of 2, 3 or 4 (or ``tiles``); return ``T``."""
    width = mask.shape[1] if isinstance(mask, torch.Tensor) and mask.ndim == 2 else -1
    expected = tiles if tiles is not None else width if width in _TILE_COUNTS else 4
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (batch, expected):
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise FocusError(
            f"Expected a bool target-tile mask of shape ({batch}, {expected}) but got {got}: "
            f"pass mosaics.target_mask(...) for the same mosaics."
        )
    return expected


#: Tiles per mosaic of the grids there are (2x2, 3x3, 4x4), and the grid of each.
_TILE_COUNTS = {4: 2, 9: 3, 16: 4}


def _check_grid(grid: int) -> None:
    if isinstance(grid, bool) or not isinstance(grid, int) or grid not in _TILE_COUNTS.values():
        raise FocusError(f"Expected a grid of 2, 3 or 4 tiles per side but got {grid!r}.")


def _quadrant_totals(x: torch.Tensor, h2: int, w2: int) -> torch.Tensor:
    """Sum ``x`` (B, H, W) over each quadrant: (B, 4) in TL, TR, BL, BR order."""
    top, bottom = x[:, :h2].sum(dim=1), x[:, h2:].sum(dim=1)  # (B, W) each
    return torch.stack(
        [
            top[:, :w2].sum(dim=1),
            top[:, w2:].sum(dim=1),
            bottom[:, :w2].sum(dim=1),
            bottom[:, w2:].sum(dim=1),
        ],
        dim=1,
    )


def _quadrant_sums(relevance: torch.Tensor) -> torch.Tensor:
    if relevance.dtype in (torch.float16, torch.bfloat16):
        relevance = relevance.float()
    b, h, w = relevance.shape
    h2, w2 = h // 2, w // 2
    if h % 2 or w % 2:  # unequal quadrants: sum the halves separately
        positive = relevance.clamp(min=0)
        positive_sums = _quadrant_totals(positive, h2, w2)
        negative_sums = _quadrant_totals(relevance - positive, h2, w2)
        return torch.stack([positive_sums, negative_sums], dim=2)
    # equal quadrants: (B, row, h2, col, w2) views, one clamp and one reduction per sign
    quadrants = relevance.view(b, 2, h2, 2, w2) if relevance.is_contiguous() else relevance.reshape(b, 2, h2, 2, w2)
    positive_sums = quadrants.clamp(min=0).sum(dim=(2, 4)).view(b, 4)
    negative_sums = quadrants.clamp(max=0).sum(dim=(2, 4)).view(b, 4)
    return torch.stack([positive_sums, negative_sums], dim=2)


def _tile_sums(relevance: torch.Tensor, grid: int) -> torch.Tensor:
    if grid == 2:  # the hot path's reduction, bit for bit
        return _quadrant_sums(relevance)
    if relevance.dtype in (torch.float16, torch.bfloat16):
        relevance = relevance.float()
    b, h, w = relevance.shape
    if h % grid == 0 and w % grid == 0:  # equal tiles: (B, row, h/N, col, w/N) views
        tiles = relevance.reshape(b, grid, h // grid, grid, w // grid)
        positive_sums = tiles.clamp(min=0).sum(dim=(2, 4)).reshape(b, grid * grid)
        negative_sums = tiles.clamp(max=0).sum(dim=(2, 4)).reshape(b, grid * grid)
        return torch.stack([positive_sums, negative_sums], dim=2)
    rows = _tile_of(h, grid, relevance.device)
    cols = _tile_of(w, grid, relevance.device)
    out = []
    for part in (relevance.clamp(min=0), relevance.clamp(max=0)):
        by_row = part.new_zeros(b, grid, w).index_add_(1, rows, part)  # (B, N, W)
        out.append(by_row.new_zeros(b, grid, grid).index_add_(2, cols, by_row).reshape(b, grid * grid))
    return torch.stack(out, dim=2)


@functools.lru_cache(maxsize=64)
def _tile_of(size: int, grid: int, device: torch.device) -> torch.Tensor:
    """``(size,)`` int64: the tile row (or column) of each of ``size`` pixels, split at ``i * size // grid``."""
    starts = torch.tensor([i * size // grid for i in range(1, grid)], dtype=torch.int64)
    return torch.searchsorted(starts, torch.arange(size), right=True).to(device)


def _focus_from_sums(sums: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    positive = sums[..., 0]
    total = positive.sum(dim=1)
    on_target = (positive * mask.to(device=positive.device, dtype=positive.dtype)).sum(dim=1)
    nan = torch.full_like(total, float("nan"))
    return torch.where(total > 0, on_target / torch.where(total > 0, total, 1), nan)


def quadrant_sums(relevance: torch.Tensor) -> torch.Tensor:
    """Sum the positive and the negative relevance in each quadrant of each map.

    Parameters
    ----------
    relevance : torch.Tensor
        Floating point maps of shape ``(B, H, W)``, ``H, W >= 2`` (odd sizes are fine: the
        split is at ``H // 2`` and ``W // 2``).

    Returns
    -------
    torch.Tensor
        Shape ``(B, 4, 2)`` on the input's device: ``[..., 0]`` the positive sum (``>= 0``) and
        ``[..., 1]`` the negative sum (``<= 0``) of quadrants TL, TR, BL, BR. The dtype is the
        input's (``float32`` for half-precision input, to keep the sums from overflowing).

    Examples
    --------
    >>> quadrant_sums(torch.ones(1, 3, 3))[0, :, 0].tolist()
    [1.0, 2.0, 2.0, 4.0]
    """
    _check_relevance(relevance)
    return _quadrant_sums(relevance)


def tile_sums(relevance: torch.Tensor, grid: int = 2) -> torch.Tensor:
    """Sum the positive and the negative relevance on each tile of each map of an N x N mosaic.

    Parameters
    ----------
    relevance : torch.Tensor
        Floating point maps of shape ``(B, H, W)``, ``H, W >= grid`` (sizes that ``grid`` does not divide are
        fine: tile row ``i`` spans rows ``i * H // grid`` to ``(i + 1) * H // grid``, columns likewise).
    grid : int
        Tiles per side: 2, 3 or 4. ``tile_sums(r, 2)`` is :func:`quadrant_sums` ``(r)``, bit for bit.

    Returns
    -------
    torch.Tensor
        Shape ``(B, grid², 2)`` on the input's device, tiles row-major: ``[..., 0]`` the positive sum (``>= 0``),
        ``[..., 1]`` the negative sum (``<= 0``). The dtype is the input's (``float32`` for half precision).

    Examples
    --------
    >>> tile_sums(torch.ones(1, 3, 3), 3)[0, :, 0].tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    >>> r = torch.randn(2, 5, 7)
    >>> bool(torch.equal(tile_sums(r, 2), quadrant_sums(r)))
    True
    """
    _check_grid(grid)
    _check_relevance(relevance, smallest=grid)
    return _tile_sums(relevance, grid)


def upsampled_quadrant_sums(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`quadrant_sums` of non-negative maps upsampled bilinearly to ``size``, without making the large maps.

    Bilinear upsampling (``align_corners=False``, GradCAM's) is linear and separable, so the sum of the upsampled
    map over a quadrant is ``rows[q] @ map @ cols[q]``, with weight vectors made once per size from torch's own
    interpolation of unit vectors. For GradCAM's maps (non-negative after its ReLU; bilinear weights are
    non-negative) the positive sums are these totals and the negative sums are zero. Signed maps give wrong
    positive and negative sums: use ``quadrant_sums(F.interpolate(...))`` for them. The 2x2 case of
    :func:`upsampled_tile_sums`.

    Parameters
    ----------
    maps : torch.Tensor
        Non-negative floating point maps ``(B, h, w)``.
    size : tuple of int
        ``(H, W)`` the maps are upsampled to.

    Returns
    -------
    torch.Tensor
        ``(B, 4, 2)`` float32 sums, as :func:`quadrant_sums` of the upsampled maps (up to rounding).

    Examples
    --------
    >>> maps = torch.rand(2, 7, 7)
    >>> big = F.interpolate(maps[:, None], size=(224, 224), mode="bilinear", align_corners=False)[:, 0]
    >>> bool(torch.allclose(upsampled_quadrant_sums(maps, (224, 224)), quadrant_sums(big), rtol=1e-5))
    True
    """
    return upsampled_tile_sums(maps, size, 2)


def upsampled_tile_sums(maps: torch.Tensor, size: tuple[int, int], grid: int = 2) -> torch.Tensor:
    """:func:`tile_sums` of non-negative maps upsampled bilinearly to ``size``: :func:`upsampled_quadrant_sums`
    for ``grid`` x ``grid`` tiles (the same contract; ``(B, grid², 2)`` float32).

    Examples
    --------
    >>> maps = torch.rand(2, 7, 7)
    >>> big = F.interpolate(maps[:, None], size=(96, 96), mode="bilinear", align_corners=False)[:, 0]
    >>> bool(torch.allclose(upsampled_tile_sums(maps, (96, 96), 3), tile_sums(big, 3), rtol=1e-5))
    True
    """
    _check_grid(grid)
    _check_relevance(maps, smallest=1)
    if int(size[0]) < grid or int(size[1]) < grid:
        raise FocusError(
            f"Expected an upsampled size of at least {grid}x{grid} pixels but got {tuple(size)}: pass (H, W)."
        )
    b, h, w = maps.shape
    rows = _tile_weights(h, int(size[0]), grid, maps.device)
    cols = _tile_weights(w, int(size[1]), grid, maps.device)
    kind = maps.device.type
    fp32 = torch.autocast(kind, enabled=False) if torch.amp.is_autocast_available(kind) else contextlib.nullcontext()
    with fp32:  # under bf16 autocast einsum would run in bf16: sums stay float32, as quadrant_sums' do
        totals = torch.einsum("rh,bhw,cw->brc", rows, maps.float(), cols).reshape(b, grid * grid)
    return torch.stack([totals, torch.zeros_like(totals)], dim=2)


@functools.lru_cache(maxsize=64)
def _tile_weights(n: int, size: int, grid: int, device: torch.device) -> torch.Tensor:
    """``(grid, n)``: how much of each of ``n`` samples lands in each of the ``grid`` tiles of ``size`` samples."""
    unit = torch.eye(n, dtype=torch.float64)[:, None, :]  # n signals of length n, one unit each
    spread = F.interpolate(unit, size=size, mode="linear", align_corners=False)[:, 0]  # (n, size)
    edges = [i * size // grid for i in range(grid + 1)]
    parts = torch.stack([spread[:, start:stop].sum(1) for start, stop in zip(edges, edges[1:])])
    return parts.to(device=device, dtype=torch.float32)


def focus_from_sums(sums: torch.Tensor, target_quadrants: torch.Tensor) -> torch.Tensor:
    """Compute Focus from per-tile sums (as stored per mosaic) and the target mask.

    Parameters
    ----------
    sums : torch.Tensor
        Shape ``(B, T, 2)`` from :func:`tile_sums` (``T = N²``; 2x2: :func:`quadrant_sums`); only ``[..., 0]``
        (positive) is used.
    target_quadrants : torch.Tensor
        ``bool`` of shape ``(B, T)``, True on the target tiles.

    Returns
    -------
    torch.Tensor
        Focus of shape ``(B,)``; NaN where a map has no positive relevance.

    Examples
    --------
    >>> sums = torch.tensor([[[3.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 0.0]]])
    >>> focus_from_sums(sums, torch.tensor([[True, False, True, False]])).tolist()
    [0.75]
    """
    if (not isinstance(sums, torch.Tensor) or sums.ndim != 3 or sums.shape[2] != 2
            or sums.shape[1] not in _TILE_COUNTS):
        shape = tuple(sums.shape) if isinstance(sums, torch.Tensor) else type(sums).__name__
        raise FocusError(
            f"Expected tile sums of shape (B, T, 2), T = 4, 9 or 16, but got {shape}: pass tile_sums(...)."
        )
    if not sums.dtype.is_floating_point:
        raise FocusError(f"Expected floating point tile sums but got {sums.dtype}: cast them to float.")
    _check_mask(target_quadrants, sums.shape[0], sums.shape[1])
    return _focus_from_sums(sums, target_quadrants)


def focus_score(relevance: torch.Tensor, target_quadrants: torch.Tensor) -> torch.Tensor:
    """Share of each map's positive relevance that lies on its target tiles.

    Parameters
    ----------
    relevance : torch.Tensor
        Floating point maps of shape ``(B, H, W)`` at mosaic resolution.
    target_quadrants : torch.Tensor
        ``bool`` of shape ``(B, N²)``, True on the target tiles (see :func:`focus_core.mosaics.target_mask`);
        its width gives the grid (4: 2x2, 9: 3x3, 16: 4x4); moved to the device of ``relevance``.

    Returns
    -------
    torch.Tensor
        Focus of shape ``(B,)`` in ``[0, 1]`` on the device of ``relevance``; NaN where a map
        has no positive relevance (undefined, never counted as 0 or 0.5).

    Examples
    --------
    >>> relevance = torch.zeros(2, 4, 4)
    >>> relevance[0, :2, :2] = 3.0   # TL
    >>> relevance[0, 2:, 2:] = 1.0   # BR
    >>> relevance[1] = -1.0          # no positive relevance
    >>> mask = torch.tensor([[True, True, False, False], [True, True, False, False]])
    >>> focus_score(relevance, mask).tolist()
    [0.75, nan]
    """
    _check_relevance(relevance)
    tiles = _check_mask(target_quadrants, relevance.shape[0])
    grid = _TILE_COUNTS[tiles]
    _check_relevance(relevance, smallest=grid)
    return _focus_from_sums(_tile_sums(relevance, grid), target_quadrants)
