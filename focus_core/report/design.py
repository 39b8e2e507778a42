"""Figures of how sure a Focus number is: median Focus per target class, and random models over seeds.

Examples
--------
>>> import tempfile, os
>>> from focus_core.report.design import plot_per_class_focus
>>> plot_per_class_focus(["0", "1"], {"gradcam": [0.9, 0.4]}, os.path.join(tempfile.mkdtemp(), "c.png")).name
'c.png'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from focus_core.errors import FocusError
from focus_core.report._inputs import check_fraction, non_empty_mapping
from focus_core.report._style import focus_axis, method_color, output_path, save
from focus_core.stats import as_scores

__all__ = ["MAX_WIDTH_INCHES", "plot_per_class_focus", "plot_random_seeds"]

#: The per-class figure's widest size (1320 px at the report's 110 dpi: the page's width at 1400 px).
MAX_WIDTH_INCHES = 12.0


def plot_per_class_focus(classes: Sequence[str], medians_by_method: Mapping[str, Sequence[float]],
                         path: str | Path, title: str = "Median Focus per target class", chance: float = 0.5) -> Path:
    """Median Focus per target class: one panel per method (stacked, classes on a shared axis), one bar per class.

    A class far below the others is one the explanations (or the model) miss: the extended paper's
    bias angle. NaN (a class without a defined score) draws no bar but the word "undefined". The figure is at most
    :data:`MAX_WIDTH_INCHES` wide whatever the number of classes and methods (each method adds a panel's height), so
    the page shows it near its own size and its labels stay readable.

    Parameters
    ----------
    classes : sequence of str
        Class names, in the order of the bars.
    medians_by_method : mapping of str to sequence of float
        ``{method: median per class}``, each as long as ``classes``, in [0, 1].
    path : str or Path
        Output ``.png`` file.
    title : str
        The figure's title.

    Returns
    -------
    Path
        ``path``, now a PNG file.

    Raises
    ------
    FocusError
        When ``classes`` is empty, a sequence differs in length from it, a median lies outside [0, 1], or the
        path does not end in ``.png``.
    """
    out = output_path(path)
    labels = [str(c) for c in classes]
    if not labels:
        raise FocusError("The classes are empty: pass the target classes whose median Focus to draw.")
    methods = non_empty_mapping(medians_by_method, "medians by method")
    checked = {}
    for method, medians in methods.items():
        values = as_scores(medians, f"medians of '{method}'")
        if values.size != len(labels):
            raise FocusError(f"The medians of '{method}' have {values.size} values for {len(labels)} classes: "
                             "pass one per class.")
        check_fraction(values, f"medians of '{method}'")
        checked[method] = values
    x = np.arange(len(labels))
    long_names = max(len(label) for label in labels) > 3
    width = min(MAX_WIDTH_INCHES, max(5.0, 1.5 + 0.3 * len(labels)))
    fig = Figure(figsize=(width, 0.6 + 1.7 * len(checked) + (0.6 if long_names else 0.2)), layout="constrained")
    axes = fig.subplots(len(checked), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (method, values) in zip(axes, checked.items()):
        ax.bar(x, values, 0.7, color=method_color(method))  # NaN: no bar, marked below
        for centre in x[np.isnan(values)]:
            ax.text(centre, 0.02, "undefined", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
        focus_axis(ax, label="median", chance=chance)
        ax.set_title(method, loc="left", fontsize=9)
    fontsize = 8 if len(labels) <= 40 else 6
    axes[-1].set_xticks(x, labels, rotation=45 if long_names else 0, ha="right" if long_names else "center",
                        fontsize=fontsize)
    axes[-1].set_xlabel("target class")
    fig.suptitle(title)
    return save(fig, out)


def plot_random_seeds(medians_by_method: Mapping[str, Sequence[float]], path: str | Path,
                      trained: Mapping[str, float] | None = None, chance: float = 0.5) -> Path:
    """Each random model's median Focus (one dot per seed), their mean and standard deviation, per method.

    "A random model scores about 0.5" is read on the mean (the bar with its +-1 sd whisker); a trained
    checkpoint's median, when given, is a diamond beside it.

    Parameters
    ----------
    medians_by_method : mapping of str to sequence of float
        ``{method: one median per seed}``, in [0, 1].
    path : str or Path
        Output ``.png`` file.
    trained : mapping of str to float, optional
        The trained checkpoint's median per method.

    Returns
    -------
    Path
        ``path``, now a PNG file.

    Raises
    ------
    FocusError
        When no method is given, a median lies outside [0, 1], or the path does not end in ``.png``.

    Examples
    --------
    >>> import tempfile, os
    >>> plot_random_seeds({"gradcam": [0.49, 0.52, 0.5]}, os.path.join(tempfile.mkdtemp(), "s.png"),
    ...                   trained={"gradcam": 0.9}).name
    's.png'
    """
    out = output_path(path)
    methods = non_empty_mapping(medians_by_method, "medians by method")
    fig = Figure(figsize=(max(4.5, 1.5 + 1.2 * len(methods)), 4.0), layout="constrained")
    ax = fig.subplots()
    for i, (method, medians) in enumerate(methods.items()):
        values = as_scores(medians, f"seed medians of '{method}'")
        check_fraction(values, f"seed medians of '{method}'")
        values = values[~np.isnan(values)]
        color = method_color(method)
        if values.size:
            spread = values.std(ddof=1) if values.size > 1 else 0.0
            ax.errorbar([i], [values.mean()], yerr=[spread], fmt="s", color=color, capsize=6, markersize=8,
                        label=f"{method}: mean {values.mean():.3f} +- {spread:.3f} over {values.size} "
                              f"seed{'' if values.size == 1 else 's'}")
            jitter = np.linspace(-0.12, 0.12, values.size) if values.size > 1 else np.zeros(1)
            ax.scatter(i + 0.25 + jitter, values, color=color, s=18, alpha=0.7)
        if trained and method in trained and trained[method] is not None and not np.isnan(trained[method]):
            ax.scatter([i - 0.3], [trained[method]], marker="D", color=color, edgecolor="black", s=40)
    ax.set_xticks(np.arange(len(methods)), list(methods), fontsize=8)
    ax.set_xlim(-0.7, len(methods) - 0.3)
    focus_axis(ax, label="Focus median", chance=chance)
    ax.set_title("Random models over seeds" + (" (diamond: trained)" if trained else ""))
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, out)
