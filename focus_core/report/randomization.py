"""The cascading randomization curve (Adebayo et al.; the paper's §5 sanity check).

Examples
--------
>>> import tempfile, os
>>> from focus_core.report.randomization import plot_cascading_randomization
>>> plot_cascading_randomization(["trained", "fc"], {"lrp": [0.9, 0.5]},
...                              os.path.join(tempfile.mkdtemp(), "cascade.png")).name
'cascade.png'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from focus_core.errors import FocusError
from focus_core.report._inputs import check_fraction, non_empty_mapping
from focus_core.report._style import focus_axis, method_color, output_path, save
from focus_core.stats import as_scores

__all__ = ["plot_cascading_randomization"]


def plot_cascading_randomization(
    stages: Sequence[str],
    medians_by_method: Mapping[str, Sequence[float]],
    path: str | Path,
    q1_by_method: Mapping[str, Sequence[float]] | None = None,
    q3_by_method: Mapping[str, Sequence[float]] | None = None,
    chance: float = 0.5,
) -> Path:
    """Median Focus per cascading-randomization stage (Adebayo et al.; the paper's §5 test).

    Parameters
    ----------
    stages : sequence of str
        Stage labels in order: ``"trained"``, then the layers randomized top-down
        (each stage randomizes its layer and every layer above it).
    medians_by_method : mapping of str to sequence of float
        ``{method: median per stage}``, each as long as ``stages``; NaN leaves a gap.
    path : str or Path
        Output ``.png`` file.
    q1_by_method, q3_by_method : mapping, optional
        First and third quartile per stage, drawn as a band for the methods present in both.

    Returns
    -------
    Path
        ``path``, now a PNG file.

    Raises
    ------
    FocusError
        When ``stages`` is empty, a sequence differs in length from ``stages``, a median lies
        outside [0, 1], or the path does not end in ``.png``.

    Examples
    --------
    >>> import tempfile, os
    >>> plot_cascading_randomization(["trained", "fc", "conv2", "conv1"], {"gradcam": [0.95, 0.5, 0.52, 0.49]},
    ...                              os.path.join(tempfile.mkdtemp(), "cascade.png")).name
    'cascade.png'
    """
    out = output_path(path)
    labels = [str(s) for s in stages]
    if not labels:
        raise FocusError("The stages are empty: pass 'trained' followed by the randomized layers.")
    methods = non_empty_mapping(medians_by_method, "medians by method")
    q1s, q3s = dict(q1_by_method or {}), dict(q3_by_method or {})

    def series(values: Any, what: str) -> np.ndarray:
        array = as_scores(values, what)
        if array.size != len(labels):
            raise FocusError(f"The {what} have {array.size} values for {len(labels)} stages: pass one per stage.")
        check_fraction(array, what)
        return array

    x = np.arange(len(labels))
    fig = Figure(figsize=(max(5.0, 1.6 + 0.7 * len(labels)), 4.2), layout="constrained")
    ax = fig.subplots()
    for method, medians in methods.items():
        color = method_color(method)
        ax.plot(x, series(medians, f"medians of '{method}'"), marker="o", color=color, label=method)
        if method in q1s and method in q3s:
            low = series(q1s[method], f"first quartiles of '{method}'")
            high = series(q3s[method], f"third quartiles of '{method}'")
            ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("randomized from the top down to layer")
    focus_axis(ax, label="Focus median", chance=chance)
    ax.set_title("Cascading randomization")
    ax.legend(fontsize=8)
    return save(fig, out)
