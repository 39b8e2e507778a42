"""The shared look of the report figures: resolution, method colours, the Focus axis, saving.

Every figure is written at :data:`DPI` on a white background with its texts as plain text (no
mathtext), draws Focus from 0 to 1 with a dashed line at the chance level (the score of a random
explanation: k/N² on N x N mosaics with k target tiles, 0.5 on 2x2 with 2) and gives each method
the same colour.

Examples
--------
>>> from focus_core.report._style import method_color
>>> method_color("gradcam")
'#1f77b4'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.text import Text

from focus_core.errors import FocusError

__all__ = ["DPI", "method_color", "output_path", "save", "focus_axis", "check_chance"]

DPI = 110
_RANDOM_LINE = {"color": "0.45", "linestyle": "--", "linewidth": 1.0, "zorder": 0}
_KNOWN_METHODS = (
    "gradcam",
    "lrp",
    "smoothgrad",
    "integrated_gradients",
    "gradcam++",
    "gradient",
    "input_x_gradient",
    "random",
)
_PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def method_color(method: str) -> str:
    """The colour a method has in every figure.

    Known methods have fixed colours; other names get a stable colour from their spelling.

    Parameters
    ----------
    method : str
        Method name, in any case, with ``-``, ``_`` or spaces.

    Returns
    -------
    str
        A ``#rrggbb`` colour.

    Examples
    --------
    >>> method_color("GradCAM") == method_color("gradcam")
    True
    """
    key = method.lower().replace("-", "_").replace(" ", "_")
    if key in _KNOWN_METHODS:
        return _PALETTE[_KNOWN_METHODS.index(key)]
    return _PALETTE[sum(key.encode()) % len(_PALETTE)]


def output_path(path: str | Path) -> Path:
    """The figure's output path, its parent folders created.

    Raises
    ------
    FocusError
        When the path does not end in ``.png``.

    Examples
    --------
    >>> output_path("figure.pdf")
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The output path 'figure.pdf' does not end in .png: give the figure a .png file name.
    """
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise FocusError(f"The output path '{out}' does not end in .png: give the figure a .png file name.")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def save(fig: Figure, out: Path) -> Path:
    """Write ``fig`` to ``out`` as a PNG at :data:`DPI`, release its artists and return ``out``.

    Every text is drawn as plain text: a class name, label or method name such as ``$\\undefinedmacro$`` is shown
    as written, never parsed as matplotlib mathtext (which would fail, or typeset it).
    """
    with matplotlib.rc_context({"text.parse_math": False}):  # texts created while drawing (tick labels) too
        for text in fig.findobj(Text):
            text.set_parse_math(False)
        fig.savefig(out, dpi=DPI, format="png", facecolor="white")
    fig.clear()  # a pyplot-free Figure holds no global state: clearing releases its artists
    return out


def check_chance(chance: float) -> float:
    """The chance level of a figure (k/N², strictly between 0 and 1), else a FocusError.

    Examples
    --------
    >>> check_chance(1 / 3) == 1 / 3
    True
    """
    try:
        value = float(chance)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise FocusError(f"The chance level {chance!r} is not between 0 and 1: pass k / N**2 of the mosaics.")
    return value


def focus_axis(ax: Any, axis: str = "y", label: str = "Focus", chance: float = 0.5) -> None:
    """Make ``axis`` of ``ax`` a Focus axis: limits 0..1, a label, the dashed chance line and a grid."""
    chance = check_chance(chance)
    if axis == "y":
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(label)
        ax.axhline(chance, **_RANDOM_LINE)
    else:
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(label)
        ax.axvline(chance, **_RANDOM_LINE)
    ax.grid(True, axis=axis, alpha=0.3)
