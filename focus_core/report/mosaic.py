"""A mosaic and each method's heat map over it (the paper's Figure 1).

Examples
--------
>>> import numpy as np, tempfile, os
>>> from focus_core.report.mosaic import plot_mosaic_explanations
>>> plot_mosaic_explanations(np.zeros((1, 8, 8), dtype=np.uint8), {"lrp": np.ones((8, 8))},
...                          os.path.join(tempfile.mkdtemp(), "f1.png")).name
'f1.png'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from focus_core.errors import FocusError
from focus_core.report._style import output_path, save

__all__ = ["plot_mosaic_explanations"]

_QUADRANT_NAMES = ("TL", "TR", "BL", "BR")


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        raise FocusError(f"The {name} could not be read as an array: pass a numpy array or a tensor.") from None


def _mosaic_image(mosaic: Any) -> np.ndarray:
    """(C, H, W) or (H, W), uint8 or float in [0, 1] -> float (H, W, 3) in [0, 1]."""
    image = _to_numpy(mosaic, "mosaic")
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] not in (1, 3) or min(image.shape[1:]) < 2:
        raise FocusError(f"The mosaic has shape {image.shape}: pass one mosaic as (C, H, W) with C = 1 or 3.")
    if image.dtype == np.uint8:
        image = image.astype(np.float64) / 255.0
    else:
        image = image.astype(np.float64)
        if not np.isfinite(image).all() or image.min() < -1e-3 or image.max() > 1 + 1e-3:
            raise FocusError(
                "The mosaic values are outside [0, 1]: pass it as uint8 or as floats before normalisation."
            )
        image = image.clip(0.0, 1.0)
    return np.repeat(image, 3, axis=0).transpose(1, 2, 0) if image.shape[0] == 1 else image.transpose(1, 2, 0)


def _grid_of(target_quadrants: Any, grid: int | None) -> int:
    """N of the mosaic: ``grid`` when given, else from a boolean mask of N² entries, else 2."""
    if grid is not None:
        if int(grid) < 2:
            raise FocusError(f"The grid {grid} has fewer than 2 tiles a side: pass N of the N x N mosaic.")
        return int(grid)
    if target_quadrants is not None:
        values = _to_numpy(target_quadrants, "target quadrants").ravel()
        side = math.isqrt(values.size)
        if values.dtype == np.bool_ and side >= 2 and side * side == values.size:
            return side
    return 2


def _target_quadrants(target_quadrants: Any, grid: int) -> list[int]:
    if target_quadrants is None:
        return []
    tiles = grid * grid
    order = "TL, TR, BL, BR order" if grid == 2 else "row-major order"
    values = _to_numpy(target_quadrants, "target quadrants").ravel()
    if values.dtype == np.bool_:
        if values.size != tiles:
            raise FocusError(f"The target mask has {values.size} entries: pass {tiles} booleans in {order}.")
        return [int(i) for i in np.flatnonzero(values)]
    quadrants = [int(q) for q in values]
    if any(q not in range(tiles) for q in quadrants):
        raise FocusError(f"The target tiles {quadrants} are not in 0..{tiles - 1}: pass indices in {order}.")
    return quadrants


def _tile_name(position: int, grid: int) -> str:
    """``TL``, ``TR``, ``BL``, ``BR`` on 2x2; ``r1c3`` (row 1, column 3) on larger grids."""
    return _QUADRANT_NAMES[position] if grid == 2 else f"r{position // grid + 1}c{position % grid + 1}"


def plot_mosaic_explanations(
    mosaic: Any,
    maps: Mapping[str, Any],
    path: str | Path,
    target_quadrants: Any = None,
    focus: Mapping[str, float] | None = None,
    grid: int | None = None,
) -> Path:
    """A mosaic and each method's heat map over it (the paper's Figure 1), on any N x N grid.

    The first panel is the mosaic with its target tiles outlined; each further panel shows
    one method's positive relevance (the part Focus counts), scaled to its maximum, over a
    grey copy of the mosaic, with the method's Focus in the title.

    Parameters
    ----------
    mosaic : array or tensor
        One mosaic, ``(C, H, W)`` with ``C`` in {1, 3} (or ``(H, W)``), uint8 or float in [0, 1]
        (un-normalised).
    maps : mapping of str to array or tensor
        ``{method: relevance}`` with relevance of shape ``(H, W)`` (a leading axis of size 1 is allowed).
    path : str or Path
        Output ``.png`` file.
    target_quadrants : sequence of int or bool mask, optional
        Target tile positions (row-major 0..N²-1; 2x2: TL, TR, BL, BR) or a boolean mask of N², as
        from ``focus_core.mosaics.target_mask``.
    focus : mapping of str to float, optional
        Focus per method, shown in each title (NaN is shown as undefined).
    grid : int, optional
        N of the N x N mosaic (tiles split at ``i * H // N`` and ``j * W // N``); default: from a
        boolean mask of N² entries, else 2.

    Returns
    -------
    Path
        ``path``, now a PNG file.

    Raises
    ------
    FocusError
        When the mosaic or a map has the wrong shape or range, a tile is not in 0..N²-1, or the
        path does not end in ``.png``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> mosaic = np.zeros((3, 8, 8), dtype=np.uint8)
    >>> heat = np.zeros((8, 8)); heat[:4, :4] = 1.0
    >>> plot_mosaic_explanations(mosaic, {"gradcam": heat}, os.path.join(tempfile.mkdtemp(), "f1.png"),
    ...                          target_quadrants=(0, 3), focus={"gradcam": 0.5}).name
    'f1.png'
    """
    out = output_path(path)
    image = _mosaic_image(mosaic)
    height, width = image.shape[:2]
    grid = _grid_of(target_quadrants, grid)
    quadrants = _target_quadrants(target_quadrants, grid)
    rows = [i * height // grid for i in range(grid + 1)]
    cols = [j * width // grid for j in range(grid + 1)]
    methods = dict(maps or {})
    scores = dict(focus or {})
    grey = np.repeat(image.mean(axis=2, keepdims=True), 3, axis=2)

    panels = 1 + len(methods)
    fig = Figure(figsize=(2.8 * panels, 3.2), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title("mosaic")
    for ax, (method, relevance) in zip(axes[1:], methods.items()):
        heat = _to_numpy(relevance, f"map of '{method}'").astype(np.float64)
        while heat.ndim > 2 and heat.shape[0] == 1:
            heat = heat[0]
        if heat.shape != (height, width):
            raise FocusError(
                f"The map of '{method}' has shape {heat.shape}: "
                f"pass relevance of shape ({height}, {width}) like the mosaic."
            )
        positive = np.nan_to_num(heat, nan=0.0).clip(min=0.0)
        ax.imshow(grey, interpolation="nearest")
        if positive.max() > 0:
            ax.imshow(positive / positive.max(), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, interpolation="bilinear")
        else:
            ax.text(width / 2, height / 2, "no positive\nrelevance", ha="center", va="center", color="white",
                    bbox={"facecolor": "black", "alpha": 0.6, "linewidth": 0})
        value = scores.get(method)
        if value is None:
            ax.set_title(method)
        else:
            ax.set_title(f"{method}: Focus " + ("undefined" if math.isnan(float(value)) else f"{float(value):.2f}"))
    for ax in axes:
        for y in rows[1:-1]:
            ax.axhline(y - 0.5, color="white", linewidth=0.8)
        for x in cols[1:-1]:
            ax.axvline(x - 0.5, color="white", linewidth=0.8)
        for q in quadrants:
            r, c = divmod(q, grid)
            ax.add_patch(Rectangle((cols[c] - 0.5, rows[r] - 0.5), cols[c + 1] - cols[c], rows[r + 1] - rows[r],
                                   fill=False, edgecolor="lime", linewidth=2.5))
        ax.set_xticks([])
        ax.set_yticks([])
    if quadrants:
        kind = "quadrants" if grid == 2 else f"tiles of {grid}x{grid}"
        fig.suptitle(f"target {kind} (outlined in green): " + ", ".join(_tile_name(q, grid) for q in quadrants),
                     fontsize=13, fontweight="bold")
    return save(fig, out)
