"""Focus distributions: per method and architecture (Figure 4), trained vs random (Figure 3),
per positional layout of the target tiles (Figure 2).

Undefined Focus scores (NaN or ``None``) are dropped and counted in the figure.

Examples
--------
>>> import tempfile, os
>>> from focus_core.report.distributions import plot_layout_boxplots
>>> out = plot_layout_boxplots({"top": [0.9, 0.8, 0.95], "bottom": [0.7, 0.6, 0.8]},
...                            os.path.join(tempfile.mkdtemp(), "layouts.png"))
>>> out.suffix
'.png'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import gaussian_kde

from focus_core.report._inputs import defined_scores, non_empty_mapping
from focus_core.report._style import focus_axis, method_color, output_path, save

__all__ = ["plot_focus_distributions", "plot_trained_vs_random", "plot_layout_boxplots"]


def _count_label(name: str, defined: np.ndarray, undefined: int) -> str:
    label = f"{name}\nn={defined.size}"
    return label + (f" ({undefined} undef.)" if undefined else "")


def _no_defined_scores(ax: Any, position: float) -> None:
    """The placeholder a violin or a box leaves at ``position`` when its group has no defined score."""
    ax.text(position, 0.5, "no defined\nscores", ha="center", va="center", fontsize=7, color="0.4")


def _violin(ax: Any, position: float, data: np.ndarray, color: str, width: float) -> None:
    """A violin with median and quartile marks; a single dot when the data cannot make a KDE."""
    if data.size == 0:
        _no_defined_scores(ax, position)
        return
    if data.size >= 2 and np.ptp(data) > 0:
        parts = ax.violinplot([data], positions=[position], widths=width, showextrema=False)
        for body in parts["bodies"]:
            body.set_facecolor(color)
            body.set_edgecolor(color)
            body.set_alpha(0.45)
    q1, median, q3 = np.percentile(data, [25, 50, 75])
    ax.vlines(position, q1, q3, color=color, linewidth=4, zorder=3)
    ax.scatter([position], [median], color="white", edgecolor=color, s=28, zorder=4)


def plot_focus_distributions(
    scores_by_group: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    accuracy_by_group: Mapping[str, float] | None = None,
    chance: float = 0.5,
) -> Path:
    """Focus distribution per method, one panel per architecture (the paper's Figure 4).

    Parameters
    ----------
    scores_by_group : mapping of str to mapping of str to scores
        ``{architecture: {method: scores}}``; NaN scores are dropped and counted below each violin.
    path : str or Path
        Output ``.png`` file.
    accuracy_by_group : mapping of str to float, optional
        Model accuracy (fraction in [0, 1]) per architecture, shown under its name.
    chance : float, optional
        The chance level k/N² of the mosaics (the dashed line; 0.5 on 2x2 with 2 target tiles).

    Returns
    -------
    Path
        ``path``, now a PNG file.

    Raises
    ------
    FocusError
        When a mapping is empty, scores are not numeric, or the path does not end in ``.png``.

    Examples
    --------
    >>> import tempfile, os
    >>> plot_focus_distributions({"digits_cnn": {"gradcam": [0.9, 0.95], "lrp": [0.97, 0.99]}},
    ...     os.path.join(tempfile.mkdtemp(), "f4.png"), {"digits_cnn": 0.99}).name
    'f4.png'
    """
    out = output_path(path)
    groups = non_empty_mapping(scores_by_group, "scores by architecture")
    accuracy = dict(accuracy_by_group or {})
    widths = [max(1, len(non_empty_mapping(m, f"methods of '{g}'"))) for g, m in groups.items()]
    fig = Figure(figsize=(1.2 + 1.3 * sum(widths), 4.2), layout="constrained")
    axes = fig.subplots(1, len(groups), sharey=True, squeeze=False, width_ratios=widths)[0]
    for ax, (group, methods) in zip(axes, groups.items()):
        labels = []
        for i, (method, values) in enumerate(methods.items()):
            data, undefined = defined_scores(values, f"scores of '{method}' on '{group}'")
            _violin(ax, i, data, method_color(method), 0.8)
            labels.append(_count_label(method, data, undefined))
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        title = str(group)
        if accuracy.get(group) is not None and not math.isnan(float(accuracy[group])):
            title += f"\nacc {float(accuracy[group]):.2f}"
        ax.set_title(title, fontsize=10)
        focus_axis(ax, chance=chance)
        if ax is not axes[0]:
            ax.set_ylabel("")
    fig.suptitle("Focus distribution per method and architecture")
    return save(fig, out)


def plot_trained_vs_random(
    trained: Sequence[float], random: Sequence[float], path: str | Path, method: str = "GradCAM",
    chance: float = 0.5,
) -> Path:
    """Overlaid histograms of Focus for a trained and a random model (the paper's Figure 3).

    Each histogram has its density estimate on top (scaled to counts) and its mean marked.

    Parameters
    ----------
    trained, random : scores
        Focus per mosaic for the trained and the randomized model; NaN scores are dropped and counted.
    path : str or Path
        Output ``.png`` file.
    method : str
        Attribution method named in the title.

    Returns
    -------
    Path
        ``path``, now a PNG file.

    Raises
    ------
    FocusError
        When either input is empty or not numeric, or the path does not end in ``.png``.

    Examples
    --------
    >>> import tempfile, os
    >>> plot_trained_vs_random([0.9, 0.95, 1.0], [0.4, 0.5, 0.6],
    ...                        os.path.join(tempfile.mkdtemp(), "f3.png")).name
    'f3.png'
    """
    out = output_path(path)
    bins = np.linspace(0.0, 1.0, 21)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for name, values, color in (("trained", trained, "#1f77b4"), ("random", random, "#d62728")):
        data, undefined = defined_scores(values, f"{name} scores")
        label = f"{name}: n={data.size}" + (f", {undefined} undefined" if undefined else "")
        if data.size == 0:
            ax.plot([], [], color=color, label=label + ", no defined score")
            continue
        ax.hist(data, bins=bins, color=color, alpha=0.45, label=label)
        if data.size >= 2 and np.ptp(data) > 0:
            grid = np.linspace(0.0, 1.0, 201)
            density = gaussian_kde(data)(grid) * data.size * (bins[1] - bins[0])
            ax.plot(grid, density, color=color, linewidth=1.5)
        median = float(np.median(data))  # the captions and tables quote the median
        ax.axvline(median, color=color, linewidth=2, label=f"{name} median {median:.2f}")
    focus_axis(ax, axis="x", chance=chance)
    ax.set_ylabel("mosaics")
    ax.set_title(f"{method}: Focus of a trained and a random model")
    ax.legend(fontsize=8, loc="upper left")
    return save(fig, out)


def plot_layout_boxplots(scores_by_layout: Mapping[str, Sequence[float]], path: str | Path,
                         chance: float = 0.5) -> Path:
    """Box plot of Focus per positional layout of the target tiles (the paper's Figure 2).

    Parameters
    ----------
    scores_by_layout : mapping of str to scores
        ``{layout: scores}`` in the order to draw, e.g. ``top``, ``bottom``, ..., ``random``.
    path : str or Path
        Output ``.png`` file.

    Returns
    -------
    Path
        ``path``, now a PNG file.

    Raises
    ------
    FocusError
        When the mapping is empty, scores are not numeric, or the path does not end in ``.png``.

    Examples
    --------
    >>> import tempfile, os
    >>> plot_layout_boxplots({"top": [0.9, 0.8], "random": [0.7, float("nan")]},
    ...                      os.path.join(tempfile.mkdtemp(), "f2.png")).name
    'f2.png'
    """
    out = output_path(path)
    layouts = non_empty_mapping(scores_by_layout, "scores by layout")
    fig = Figure(figsize=(1.6 + 1.0 * len(layouts), 4.0), layout="constrained")
    ax = fig.subplots()
    labels, data = [], []
    for layout, values in layouts.items():
        defined, undefined = defined_scores(values, f"scores of layout '{layout}'")
        labels.append(_count_label(str(layout), defined, undefined))
        data.append(defined)
    positions = list(range(len(data)))
    drawable = [i for i, d in enumerate(data) if d.size]
    if drawable:
        ax.boxplot(
            [data[i] for i in drawable],
            positions=[positions[i] for i in drawable],
            widths=0.6,
            patch_artist=True,
            boxprops={"facecolor": "#aec7e8", "edgecolor": "#1f77b4"},
            medianprops={"color": "#d62728", "linewidth": 2},
            flierprops={"markersize": 3, "alpha": 0.5},
        )
    for i in set(positions) - set(drawable):
        _no_defined_scores(ax, i)
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_xlim(-0.6, len(positions) - 0.4)
    ax.set_xlabel("position of the target tiles")
    focus_axis(ax, chance=chance)
    ax.set_title("Focus per mosaic layout")
    return save(fig, out)
