"""Batched mosaic composition: N x N mosaics from index rows into a tile tensor, with one gather.

A batch of mosaics is a ``(B, N²)`` tensor of tile indices, row-major (2x2: TL, TR, BL, BR; a
:meth:`focus_core.mosaics.MosaicManifest.index_tensor` slice); N (2, 3 or 4) is the square root of its width. :func:`compose_mosaics` returns the mosaics
in the tiles' dtype; :func:`compose_normalized` returns them normalised to float in the same pass (the hot
path's). No loop over mosaics in either.

:mod:`focus_core.mosaics` re-exports both functions: import them from there, with the manifests they compose
(``from focus_core.mosaics import compose_normalized``).

Examples
--------
>>> tiles = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1)
>>> compose_mosaics(tiles, torch.tensor([[0, 1, 2, 3], [7, 6, 5, 4]])).shape
torch.Size([2, 1, 2, 2])
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

from focus_core.errors import FocusError

if TYPE_CHECKING:
    from focus_core.data import TileDataset

__all__ = ["compose_mosaics", "compose_normalized"]


def compose_mosaics(
    tiles: torch.Tensor, image_indices: torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """Compose N x N mosaics from tiles with one gather and a reshape (no loop over mosaics).

    Parameters
    ----------
    tiles : torch.Tensor
        Tiles of shape ``(N, C, h, w)``, usually ``uint8``, on any device (a memory-mapped
        CPU tensor is fine).
    image_indices : torch.Tensor
        Integer indices into ``tiles`` of shape ``(B, N²)``, N = 2, 3 or 4, row-major (2x2: TL, TR, BL, BR).
    device : torch.device or str, optional
        Where the mosaics should live; the ``N² B`` gathered tiles are moved there before the
        reshape (by default the device of ``tiles``).

    Returns
    -------
    torch.Tensor
        Mosaics of shape ``(B, C, N h, N w)`` with the dtype of ``tiles``.

    Examples
    --------
    >>> tiles = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1)
    >>> compose_mosaics(tiles, torch.tensor([[3, 2, 1, 0]]))[0, 0].tolist()
    [[3, 2], [1, 0]]
    """
    grid = _grid_of(image_indices)
    gathered = _gather(tiles, image_indices)
    if device is not None:
        gathered = gathered.to(device)
    b, c, h, w = gathered.shape[0] // (grid * grid), *gathered.shape[1:]
    # (B*N², C, h, w) -> (B, row, col, C, h, w) -> (B, C, row, h, col, w) -> (B, C, N h, N w)
    return gathered.view(b, grid, grid, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * h, grid * w)


def compose_normalized(
    tiles: torch.Tensor, image_indices: torch.Tensor, dataset: TileDataset, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Compose mosaics and normalise them in one pass: ``dataset.normalize(compose_mosaics(tiles, image_indices))``.

    One gather of tile rows, already in the mosaics' row order, and one elementwise kernel that converts, scales
    and shifts them into the float mosaics: instead of a copy into the layout and four passes over the float
    mosaics, about a fifth of the memory traffic, which is what composing costs on a GPU. (Gathering rows keeps
    the elementwise kernel's indexing low-dimensional instead of converting from a six-dimensional permuted view
    of the tiles; see benchmarks/README.md, section "Composing mosaics".) The result equals the two-step one up to
    rounding (``x * scale + shift`` instead of ``(x / 255 - mean) / std``).

    Parameters
    ----------
    tiles : torch.Tensor
        ``uint8`` tiles ``(N, C, h, w)`` of ``dataset`` (its ``tiles`` or a copy on a device).
    image_indices : torch.Tensor
        Integer indices into ``tiles`` of shape ``(B, N²)``, N = 2, 3 or 4, row-major (2x2: TL, TR, BL, BR).
    dataset : TileDataset
        Gives the per-channel normalisation (:meth:`TileDataset.normalization`).
    dtype : torch.dtype, optional
        The floating point type of the result.

    Returns
    -------
    torch.Tensor
        Normalised mosaics ``(B, C, N h, N w)`` on the device of ``tiles``.

    Examples
    --------
    >>> from focus_core.data import load_digits
    >>> digits = load_digits(tile_size=8)
    >>> rows = torch.tensor([[0, 1, 2, 3]])
    >>> x = compose_normalized(digits.tiles, rows, digits)
    >>> bool(torch.allclose(x, digits.normalize(compose_mosaics(digits.tiles, rows)), atol=1e-6))
    True
    """
    if tiles.dtype != torch.uint8 or tiles.ndim != 4 or tiles.shape[1] != len(dataset.mean):
        raise FocusError(
            f"Expected uint8 tiles of shape (N, {len(dataset.mean)}, h, w) but got {tiles.dtype} "
            f"{tuple(tiles.shape)}: compose from the tiles of the dataset that normalises them."
        )
    grid = _grid_of(image_indices)
    flat = _device_indices(tiles, image_indices)
    n, c, h, w = tiles.shape
    b, t = flat.shape[0] // (grid * grid), grid * grid
    # row (b, c, row, y, col) of the mosaics is row y of channel c of tile flat[N² b + N row + col]
    rows = flat.view(b, 1, grid, 1, grid) * (c * h) + _channel_rows(c, h, tiles.device)
    pixels = tiles.reshape(n * c * h, w).index_select(0, rows.reshape(-1)).view(b, c, t * h * w)
    scale, shift = (s.view(1, c, 1) for s in dataset.normalization(dtype, tiles.device))
    out = torch.empty((b, c, grid * h, grid * w), dtype=dtype, device=tiles.device)
    torch.addcmul(shift, pixels, scale, out=out.view(b, c, t * h * w))
    return out


@functools.lru_cache(maxsize=16)
def _channel_rows(channels: int, height: int, device: torch.device) -> torch.Tensor:
    """``(1, C, 1, h, 1)``: the row of channel ``c``, line ``y`` within a tile's ``(C * h, w)`` rows."""
    rows = torch.arange(channels * height, dtype=torch.int64).view(1, channels, 1, height, 1)
    return rows.to(device)


def _gather(tiles: torch.Tensor, image_indices: torch.Tensor) -> torch.Tensor:
    """The ``(N² B, C, h, w)`` tiles of ``image_indices`` ``(B, N²)``, row by row, checked and gathered at once."""
    return tiles.index_select(0, _device_indices(tiles, image_indices))


def _grid_of(image_indices: torch.Tensor) -> int:
    """N of ``(B, N²)`` index rows, N = 2, 3 or 4; FocusError for any other shape."""
    width = image_indices.shape[1] if isinstance(image_indices, torch.Tensor) and image_indices.ndim == 2 else 0
    grid = {4: 2, 9: 3, 16: 4}.get(width)
    if grid is None:
        shape = tuple(image_indices.shape) if isinstance(image_indices, torch.Tensor) else type(image_indices).__name__
        raise FocusError(
            f"Expected image_indices of shape (B, 4), (B, 9) or (B, 16) but got {shape}: "
            f"pass one row of N² tile indices per mosaic (2x2, 3x3 or 4x4)."
        )
    return grid


def _device_indices(tiles: torch.Tensor, image_indices: torch.Tensor) -> torch.Tensor:
    """``image_indices`` ``(B, N²)`` checked against ``tiles`` and flattened to int64 on the tiles' device."""
    if tiles.ndim != 4:
        raise FocusError(f"Expected tiles of shape (N, C, h, w) but got {tuple(tiles.shape)}.")
    _grid_of(image_indices)
    dtype = image_indices.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise FocusError(f"Expected integer image_indices but got {image_indices.dtype}.")
    n = tiles.shape[0]
    flat = image_indices.reshape(-1)
    if flat.numel():
        # Checked where the indices live (the CPU on the hot path: free; elsewhere one read back to the host),
        # before they travel to the tiles.
        low, high = torch.stack(torch.aminmax(flat)).tolist()
        if low < 0 or high >= n:
            raise FocusError(
                f"image_indices must lie in [0, {n}) but range over [{low}, {high}]: "
                f"compose with the tiles of the manifest's dataset."
            )
    return flat.to(device=tiles.device, dtype=torch.int64, non_blocking=True)
