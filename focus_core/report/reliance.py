"""Focus against the model's own reliance per mosaic (:mod:`focus_core.reliance`): one panel per method."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from focus_core.errors import FocusError
from focus_core.report._style import check_chance, method_color, output_path, save

__all__ = ["MAX_COLUMNS", "PANEL_INCHES", "plot_focus_against_model_focus"]

#: Panels per row of the figure, and each panel's side in inches: at 110 dpi three panels are 1144 px wide, within
#: the page's content at a 1280 px window (1232 px), so the figure shows at its own size and its labels stay readable;
#: a fourth method starts a second row.
MAX_COLUMNS = 3
PANEL_INCHES = 3.3


def plot_focus_against_model_focus(points_by_method: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                                   path: str | Path, chance: float = 0.5) -> Path:
    """Focus (y) against model Focus (x) per mosaic: one panel per method, both axes 0..1 and shared, the diagonal.

    Parameters
    ----------
    points_by_method : mapping of str to (model Focus, Focus)
        Per method, two equally long sequences, one value per mosaic in [0, 1] (NaN where undefined: left out; the
        panel's title counts the mosaics drawn and those below the diagonal).
    path : str or Path
        Output ``.png`` file.
    chance : float
        The chance level k/N², dashed on both axes.

    Returns
    -------
    Path
        ``path``, now a PNG file.

    Raises
    ------
    FocusError
        When no method is given, a method's sequences differ in length, a value lies outside [0, 1], or the path
        does not end in ``.png``.

    Examples
    --------
    >>> import tempfile, os
    >>> plot_focus_against_model_focus({"gradcam": ([0.6, 0.7], [0.9, 0.8])},
    ...                                os.path.join(tempfile.mkdtemp(), "r.png")).name
    'r.png'
    """
    out = output_path(path)
    chance = check_chance(chance)
    if not points_by_method:
        raise FocusError("No method to draw: pass each method's model Focus and Focus per mosaic.")
    checked = {}
    for method, (model_focus, focus) in points_by_method.items():
        x, y = np.asarray(model_focus, dtype=float), np.asarray(focus, dtype=float)
        if x.shape != y.shape or x.ndim != 1:
            raise FocusError(f"The model Focus and Focus of '{method}' have {x.size} and {y.size} values: pass one "
                             "of each per mosaic.")
        if ((x < 0) | (x > 1) | (y < 0) | (y > 1)).any():  # NaN compares false: kept, left out below
            raise FocusError(f"A value of '{method}' lies outside [0, 1]: pass Focus and model Focus as shares.")
        checked[method] = (x, y)
    columns = min(MAX_COLUMNS, len(checked))
    rows = math.ceil(len(checked) / columns)
    fig = Figure(figsize=(0.5 + PANEL_INCHES * columns, 0.8 + PANEL_INCHES * rows), layout="constrained")
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, (method, (x, y)) in zip(axes, checked.items()):
        both = np.isfinite(x) & np.isfinite(y)
        ax.plot([0, 1], [0, 1], color="0.25", linewidth=1.0, zorder=1)
        ax.axhline(chance, color="0.6", linestyle="--", linewidth=0.8, zorder=0)
        ax.axvline(chance, color="0.6", linestyle="--", linewidth=0.8, zorder=0)
        ax.scatter(x[both], y[both], s=14, alpha=0.6, color=method_color(method), edgecolors="none", zorder=2)
        below = int((y[both] < x[both]).sum())
        ax.set_title(f"{method}\n{int(both.sum())} of {x.size} mosaics, {below} below the diagonal", loc="left",
                     fontsize=9)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(checked):]:
        ax.set_visible(False)
    for i, ax in enumerate(axes[:len(checked)]):
        if i + columns >= len(checked):  # nothing drawn below it: its axis carries the label
            ax.set_xlabel("model Focus")
            ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[::columns]:
        ax.set_ylabel("Focus")
    return save(fig, out)
