"""Mosaic layouts: where the two target tiles of a 2x2 mosaic go (the paper's positional test).

``"random"`` draws the two target quadrants per mosaic; every other layout fixes them, in TL, TR, BL, BR
(0, 1, 2, 3) numbering. :data:`LAYOUTS` is the one list of layout names: :mod:`focus_core.mosaics` draws
mosaics from it, and the flow parameters, the command line and the report take their names from it. This
module imports only the standard library, so they can without loading torch.

Examples
--------
>>> LAYOUTS["diagonal"]
(0, 3)
>>> list(LAYOUTS)[0]
'random'
"""

from __future__ import annotations

__all__ = ["LAYOUTS"]

LAYOUTS: dict[str, tuple[int, int] | None] = {
    "random": None,
    "top": (0, 1),
    "bottom": (2, 3),
    "left": (0, 2),
    "right": (1, 3),
    "diagonal": (0, 3),
    "antidiagonal": (1, 2),
}
"""Layout policies: ``"random"`` positions per mosaic, or the fixed quadrants of the two targets."""
