"""Probe mosaics: a built-in transformation of a mosaic set's non-target tiles that tests for a shortcut.

A *corner patch* stamps a small bright square (every channel at its brightest, 255 before normalisation) into
one corner of every non-target tile of every mosaic. A model that learned "a bright square in a corner means
class c" puts its explanation of class c on the stamped tiles, so class c's Focus falls on probe mosaics while
it stays put on clean ones: the extended Focus paper's point that Focus finds biases per class.

The probe is part of the mosaic set's identity: :class:`CornerPatch` is recorded in the manifest (and so in its
hash), and its corners are drawn once per manifest from ``numpy.random.default_rng(seed)``, one per tile of each
mosaic, so a mosaic's stamps depend on its manifest position, never on how the mosaics are batched. Target
tiles are never stamped.

Examples
--------
>>> import torch
>>> patch = CornerPatch.parse({"kind": "corner_patch", "size": 1, "seed": 0, "corner": "br"})
>>> patch.to_dict()
{'kind': 'corner_patch', 'size': 1, 'seed': 0, 'corner': 'br'}
>>> codes = corner_codes(patch, torch.tensor([[True, False, False, True]]))
>>> codes.tolist()
[[-1, 3, 3, -1]]
>>> stamp(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), codes, patch.size, torch.tensor([255]))[0, 0].tolist()
[[0, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 0], [0, 255, 0, 0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from focus_core.errors import FocusError

__all__ = ["CornerPatch", "CORNERS", "KINDS", "corner_codes", "corner_codes_at", "stamp", "bright_fill"]

#: The corners a patch may sit in, in the order of their codes 0..3 (a tile's TL, TR, BL, BR).
CORNERS = ("tl", "tr", "bl", "br")
#: The probe kinds a mosaic set may carry.
KINDS = ("corner_patch",)
_KEYS = ("kind", "size", "seed", "corner")


@dataclass(frozen=True)
class CornerPatch:
    """A bright ``size`` x ``size`` square in a corner of each non-target tile.

    ``corner`` is one of :data:`CORNERS` (every stamped tile the same corner) or ``"random"``: each tile's corner
    drawn from ``seed``. ``seed`` is part of the identity either way.
    """

    size: int
    seed: int = 0
    corner: str = "random"

    @classmethod
    def parse(cls, value: dict[str, Any] | CornerPatch) -> CornerPatch:
        """A probe from its JSON form ``{"kind": "corner_patch", "size": 4, "seed": 0, "corner": "random"}``.

        Raises
        ------
        FocusError
            For another kind, an unknown key, a size that is not a positive integer, a negative seed or an
            unknown corner.
        """
        if isinstance(value, CornerPatch):
            return value
        if not isinstance(value, dict) or value.get("kind") != "corner_patch":
            kind = value.get("kind") if isinstance(value, dict) else type(value).__name__
            raise FocusError(f"Unknown probe kind {kind!r}: use one of {list(KINDS)}, e.g. "
                             "{'kind': 'corner_patch', 'size': 4, 'seed': 0}.")
        unknown = sorted(set(value) - set(_KEYS))
        if unknown:
            raise FocusError(f"Unknown corner_patch option(s) {unknown}: use size, seed and corner.")
        size, seed, corner = value.get("size"), value.get("seed", 0), value.get("corner", "random")
        if not _is_int(size) or size < 1:
            raise FocusError(f"Expected the corner patch's size to be a positive integer (pixels) but got {size!r}.")
        if not _is_int(seed) or seed < 0:
            raise FocusError(f"Expected the corner patch's seed to be a non-negative integer but got {seed!r}.")
        if corner not in (*CORNERS, "random"):
            raise FocusError(f"Unknown corner {corner!r}: use one of {[*CORNERS, 'random']}.")
        return cls(int(size), int(seed), str(corner))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, every key given: what the manifest records and hashes."""
        return {"kind": "corner_patch", "size": self.size, "seed": self.seed, "corner": self.corner}

    def check_tile(self, height: int, width: int) -> None:
        """FocusError unless the patch fits in a quarter of a ``height`` x ``width`` tile."""
        if 2 * self.size > min(height, width):
            raise FocusError(
                f"A corner patch of {self.size} pixels does not fit in a corner of {height}x{width} tiles: "
                f"use a size of at most {min(height, width) // 2}."
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def corner_codes(patch: CornerPatch, masks: torch.Tensor) -> torch.Tensor:
    """The corner stamped on each tile of a whole manifest: int8 ``(M, N²)``, -1 on target tiles, else 0..3.

    Parameters
    ----------
    patch : CornerPatch
        The probe; with ``corner="random"`` the codes are ``default_rng(seed).integers(4, size=(M, N²))``.
    masks : torch.Tensor
        bool ``(M, N²)``: True on each mosaic's target tiles (:func:`focus_core.mosaics.target_mask`), row ``p``
        for manifest position ``p``.
    """
    return _drawn(patch, tuple(masks.shape)).masked_fill(masks.cpu(), -1)


def corner_codes_at(patch: CornerPatch, masks: torch.Tensor, positions: list[int], count: int) -> torch.Tensor:
    """The rows of :func:`corner_codes` at manifest ``positions`` of a manifest of ``count`` mosaics: int8 ``(P, N²)``.

    ``masks`` is bool ``(P, N²)``, the target tiles of the mosaics at ``positions``: what a reader of a few stored
    mosaics has, without the rest of their manifest.

    Examples
    --------
    >>> patch = CornerPatch(size=1, seed=3)
    >>> masks = torch.tensor([[True, True, False, False], [False, True, True, False], [True, False, False, True]])
    >>> bool((corner_codes_at(patch, masks[1:2], [1], 3) == corner_codes(patch, masks)[1:2]).all())
    True
    """
    return _drawn(patch, (int(count), int(masks.shape[1])))[list(positions)].masked_fill(masks.cpu(), -1)


def _drawn(patch: CornerPatch, shape: tuple[int, ...]) -> torch.Tensor:
    """Every tile's corner code before the target tiles are cleared, int8 ``shape`` (manifest positions first)."""
    if patch.corner == "random":
        return torch.from_numpy(np.random.default_rng(patch.seed).integers(0, 4, size=shape, dtype=np.int8))
    return torch.full(shape, CORNERS.index(patch.corner), dtype=torch.int8)


def bright_fill(normalize: Any, channels: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """The patch's value per channel, ``(C,)``: 255 through ``normalize`` (a dataset's ``normalize``, or ``None``
    for ``uint8`` mosaics)."""
    white = torch.full((1, channels, 1, 1), 255, dtype=torch.uint8, device=device)
    value = white if normalize is None else normalize(white)
    return value.reshape(channels).to(dtype)


def stamp(mosaics: torch.Tensor, codes: torch.Tensor, size: int, fill: torch.Tensor) -> torch.Tensor:
    """Stamp a ``size`` x ``size`` square of ``fill`` into the corner ``codes`` names of each tile, all mosaics at once.

    Parameters
    ----------
    mosaics : torch.Tensor
        ``(B, C, N h, N w)`` composed mosaics, any dtype, on any device.
    codes : torch.Tensor
        int ``(B, N²)``: per tile (row-major) -1 (no stamp) or the corner 0..3 (TL, TR, BL, BR).
    size : int
        The square's side in pixels, at most half a tile's side.
    fill : torch.Tensor
        ``(C,)`` the square's value per channel, in the mosaics' dtype (:func:`bright_fill`).

    Returns
    -------
    torch.Tensor
        New mosaics with the squares stamped; ``mosaics`` is left as it was.
    """
    b, c, height, width = mosaics.shape
    tiles = codes.shape[1] if codes.ndim == 2 else 0
    grid = {4: 2, 9: 3, 16: 4}.get(tiles, 0)
    if codes.shape[0] != b or grid == 0 or height % grid or width % grid:
        raise FocusError(f"Expected one row of N² corner codes per mosaic for mosaics {tuple(mosaics.shape)} but got "
                         f"{tuple(codes.shape)}: pass the rows of the same manifest positions.")
    h, w = height // grid, width // grid
    CornerPatch(size).check_tile(h, w)
    corner = torch.zeros(5, h, w, dtype=torch.bool, device=mosaics.device)  # code -1 (row 4): no square
    corner[0, :size, :size] = True
    corner[1, :size, w - size:] = True
    corner[2, h - size:, :size] = True
    corner[3, h - size:, w - size:] = True
    rows = codes.to(device=mosaics.device, dtype=torch.int64).remainder(5)  # -1 -> 4
    mask = corner[rows]  # (B, N², h, w)
    mask = mask.view(b, grid, grid, h, w).permute(0, 1, 3, 2, 4).reshape(b, 1, height, width)
    return torch.where(mask, fill.to(mosaics.device, mosaics.dtype).view(1, c, 1, 1), mosaics)
