"""Mosaic layouts: where the target tiles of an N x N mosaic go (the paper's positional test), and chance level.

Tiles are numbered row-major, ``0..N²-1`` (for the paper's 2x2 mosaics: TL, TR, BL, BR = 0, 1, 2, 3). A mosaic
set has ``grid`` (N = 2, 3 or 4) and ``targets`` (k, ``1 <= k < N²``) target tiles.

- 2x2 with two targets (the paper's): :data:`LAYOUTS`. ``"random"`` draws the two target quadrants per mosaic;
  every other name fixes them.
- Any other grid or target count: ``"random"`` (drawn per mosaic), ``"contiguous"`` (the first k tiles in
  row-major order: one connected block) or ``"scattered"`` (k tiles of one checkerboard colour spread evenly over
  it: no two targets share an edge, so it fits while ``k <= ceil(N² / 2)``).

:func:`check` says in one sentence when a layout does not fit a grid; :func:`positions` gives a fixed layout's
tiles; :func:`chance_level` is the Focus of a method that spreads relevance evenly, ``k / N²``. This module
imports only the standard library, so the flow parameters, the command line and the report take their names
from it without loading torch.

Examples
--------
>>> LAYOUTS["diagonal"]
(0, 3)
>>> list(LAYOUTS)[0]
'random'
>>> positions("contiguous", 3, 2), positions("scattered", 3, 3), positions("random", 3, 1)
((0, 1), (0, 4, 8), None)
>>> chance_level(3, 1)
0.1111111111111111
"""

from __future__ import annotations

import math

__all__ = ["GRIDS", "GRID_LAYOUTS", "LAYOUTS", "all_names", "chance_level", "check", "names_for", "positions"]

LAYOUTS: dict[str, tuple[int, int] | None] = {
    "random": None,
    "top": (0, 1),
    "bottom": (2, 3),
    "left": (0, 2),
    "right": (1, 3),
    "diagonal": (0, 3),
    "antidiagonal": (1, 2),
}
"""2x2 layout policies: ``"random"`` positions per mosaic, or the fixed quadrants of the two targets."""

#: The layouts of every other grid or target count (see the module doc).
GRID_LAYOUTS: tuple[str, ...] = ("random", "contiguous", "scattered")

#: The grid sizes a mosaic set may have (tiles per side).
GRIDS: tuple[int, ...] = (2, 3, 4)


def all_names() -> tuple[str, ...]:
    """Every layout name of any grid: :data:`LAYOUTS`, then :data:`GRID_LAYOUTS` (the flows' and the CLI's choices).

    Examples
    --------
    >>> all_names()[-3:]
    ('antidiagonal', 'contiguous', 'scattered')
    """
    return tuple(dict.fromkeys((*LAYOUTS, *GRID_LAYOUTS)))


def names_for(grid: int = 2, targets: int = 2) -> tuple[str, ...]:
    """The layout names that fit ``grid`` x ``grid`` mosaics with ``targets`` target tiles.

    Examples
    --------
    >>> names_for(2)[:3], names_for(3, 1)
    (('random', 'top', 'bottom'), ('random', 'contiguous', 'scattered'))
    >>> names_for(2, 1)
    ('random', 'contiguous', 'scattered')
    """
    if grid == 2 and targets == 2:
        return tuple(LAYOUTS)
    return tuple(name for name in GRID_LAYOUTS if name != "scattered" or targets <= _checkerboard_size(grid))


def check(layout: str, grid: int = 2, targets: int = 2) -> None:
    """Raise :class:`focus_core.errors.FocusError` unless ``layout`` fits ``grid`` x ``grid`` mosaics with ``targets``.

    Examples
    --------
    >>> check("diagonal", 2, 2)
    >>> check("diagonal", 3, 2)
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The layout 'diagonal' does not fit 3x3 mosaics with 2 target tile(s): use one of random, contiguous, scattered.
    """
    from focus_core.errors import FocusError

    if isinstance(grid, bool) or not isinstance(grid, int) or grid not in GRIDS:
        raise FocusError(f"Expected a grid of 2, 3 or 4 tiles per side but got {grid!r}.")
    if isinstance(targets, bool) or not isinstance(targets, int) or not 1 <= targets < grid * grid:
        raise FocusError(
            f"A {grid}x{grid} mosaic has {grid * grid} tiles: pass between 1 and {grid * grid - 1} target tiles, "
            f"not {targets!r}."
        )
    names = names_for(grid, targets)
    if layout not in names:
        raise FocusError(
            f"The layout {layout!r} does not fit {grid}x{grid} mosaics with {targets} target tile(s): use one of "
            f"{', '.join(names)}."
        )


def positions(layout: str, grid: int = 2, targets: int = 2) -> tuple[int, ...] | None:
    """The sorted target tiles of a fixed layout (``None`` for ``"random"``); :func:`check` it first."""
    if layout == "random":
        return None
    if layout in LAYOUTS and grid == 2 and targets == 2:
        return LAYOUTS[layout]
    if layout == "contiguous":
        return tuple(range(targets))
    cells = [p for p in range(grid * grid) if (p // grid + p % grid) % 2 == 0]  # the colour of tile 0
    # evenly spread over the colour: cell round((i + 1/2) * L / k - 1/2) for i < k
    return tuple(cells[math.floor((2 * i + 1) * len(cells) / (2 * targets))] for i in range(targets))


def chance_level(grid: int = 2, targets: int = 2) -> float:
    """Focus of a map that spreads its positive relevance evenly over the tiles: ``targets / grid²``.

    Examples
    --------
    >>> chance_level(), chance_level(4, 2)
    (0.5, 0.125)
    """
    return targets / grid**2


def _checkerboard_size(grid: int) -> int:
    return (grid * grid + 1) // 2
