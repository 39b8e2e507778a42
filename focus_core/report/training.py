"""Training figures: loss, accuracy and Focus per epoch (Figure 5), Focus vs accuracy and loss (Figure 6).

Training records are mappings (or dataclasses such as ``focus_core.train.EpochMetrics``), one
per epoch::

    {"epoch": 3, "train_loss": 0.21, "val_loss": 0.25,           # losses, any scale
     "train_accuracy": 0.94, "val_accuracy": 0.93,               # fractions in [0, 1]
     "focus_gradcam": 0.91, "focus_gradcam_q1": 0.85, "focus_gradcam_q3": 0.97,
     "focus_lrp": 0.95}                                          # Focus median (and quartiles) per method

Every key but ``epoch`` is optional; ``focus_<method>`` is the median Focus of that method on
the epoch's fixed mosaic set, and ``focus_<method>_q1`` / ``_q3`` draw its interquartile band.

Examples
--------
>>> import tempfile, os
>>> from focus_core.report.training import plot_training_curves
>>> plot_training_curves([{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": 0.5}],
...                      os.path.join(tempfile.mkdtemp(), "f5.png")).name
'f5.png'
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from focus_core.errors import FocusError
from focus_core.report._inputs import check_fraction
from focus_core.report._style import focus_axis, method_color, output_path, save
from focus_core.stats import as_scores, pearson

__all__ = ["plot_training_curves", "plot_focus_vs_metrics"]


def _records(epochs: Any) -> list[dict[str, Any]]:
    if isinstance(epochs, Mapping) or not isinstance(epochs, Sequence) or len(epochs) == 0:
        raise FocusError("The epochs must be a non-empty list of records: pass one dict per epoch.")
    rows = []
    for record in epochs:
        if dataclasses.is_dataclass(record) and not isinstance(record, type):
            record = dataclasses.asdict(record)
        if not isinstance(record, Mapping) or "epoch" not in record:
            raise FocusError(f"The record {record!r} has no 'epoch': pass dicts with an 'epoch' key and metrics.")
        rows.append(dict(record))
    return sorted(rows, key=lambda row: row["epoch"])


def _column(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    values = [row.get(key) for row in rows]
    return as_scores([math.nan if v is None else v for v in values], f"'{key}' values")


def _focus_methods(rows: list[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(k for row in rows for k in row if k.startswith("focus_"))
    return [k[len("focus_"):] for k in keys if not k.endswith(("_q1", "_q3"))]


def _plot_train_and_val(
    ax: Any, rows: list[dict[str, Any]], epoch: np.ndarray, metric: str, fraction: bool = False
) -> None:
    """``train_<metric>`` solid and ``val_<metric>`` dashed, each skipped when no epoch records it.

    With ``fraction`` the values must lie in [0, 1] (:class:`~focus_core.errors.FocusError` otherwise).
    """
    for key, style in ((f"train_{metric}", "-"), (f"val_{metric}", "--")):
        values = _column(rows, key)
        if not np.isnan(values).all():
            if fraction:
                check_fraction(values, key)
            ax.plot(epoch, values, style, marker="^", color="#e377c2", label=key.replace("_", " "))


def plot_training_curves(epochs: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Loss, accuracy and median Focus per epoch (the paper's Figure 5).

    Left panel: train and validation loss. Right panel: train and validation accuracy and,
    per method, the median Focus with its interquartile band when ``_q1``/``_q3`` are given.
    See the module docstring for the record format; missing values are skipped.

    Parameters
    ----------
    epochs : sequence of mapping
        One record per epoch (order does not matter; they are sorted by ``epoch``).
    path : str or Path
        Output ``.png`` file.

    Returns
    -------
    Path
        ``path``, now a PNG file.

    Raises
    ------
    FocusError
        When there is no record, a record lacks ``epoch``, accuracies or Focus lie outside
        [0, 1], or the path does not end in ``.png``.

    Examples
    --------
    >>> import tempfile, os
    >>> rows = [{"epoch": e, "train_loss": 1 / e, "val_accuracy": 0.5 + e / 10, "focus_gradcam": 0.5 + e / 12}
    ...         for e in range(1, 5)]
    >>> plot_training_curves(rows, os.path.join(tempfile.mkdtemp(), "f5.png")).name
    'f5.png'
    """
    out = output_path(path)
    rows = _records(epochs)
    epoch = _column(rows, "epoch")
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    loss_ax, score_ax = fig.subplots(1, 2)
    _plot_train_and_val(loss_ax, rows, epoch, "loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Loss")
    loss_ax.grid(True, alpha=0.3)
    _plot_train_and_val(score_ax, rows, epoch, "accuracy", fraction=True)
    for method in _focus_methods(rows):
        median = _column(rows, f"focus_{method}")
        check_fraction(median, f"focus_{method}")
        color = method_color(method)
        score_ax.plot(epoch, median, marker="o", color=color, label=f"Focus median ({method})")
        q1, q3 = _column(rows, f"focus_{method}_q1"), _column(rows, f"focus_{method}_q3")
        if not (np.isnan(q1).all() or np.isnan(q3).all()):
            score_ax.fill_between(epoch, q1, q3, color=color, alpha=0.2, linewidth=0)
    focus_axis(score_ax, label="accuracy / Focus")
    score_ax.set_xlabel("epoch")
    score_ax.set_title("Accuracy and Focus")
    for ax in (loss_ax, score_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no values recorded", transform=ax.transAxes, ha="center", color="0.4")
    fig.suptitle("Training curves with Focus")
    return save(fig, out)


def _r_text(x: np.ndarray, y: np.ndarray) -> str:
    defined = ~(np.isnan(x) | np.isnan(y))
    n = int(defined.sum())
    if n < 3:
        return f"n = {n}, r n/a (< 3 points)"
    r, _ = pearson(x, y)
    return f"n = {n}, r undefined (constant)" if math.isnan(r) else f"n = {n}, r = {r:.3f}"


def _r_label(x: np.ndarray, y: np.ndarray, epoch: np.ndarray | None = None) -> str:
    """n and Pearson's r, and, when epoch 0 (the untrained model) is a point, the same without it."""
    label = _r_text(x, y)
    if epoch is not None and (epoch == 0).any():
        later = epoch != 0
        label += f"; without epoch 0: {_r_text(x[later], y[later])}"
    return label


def plot_focus_vs_metrics(epochs: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Median Focus against validation accuracy and loss, with Pearson r (the paper's Figure 6).

    One point per record (an epoch, or an experiment: any record with ``val_accuracy``,
    ``val_loss`` and ``focus_<method>`` keys), one colour per method; the legend gives n and
    Pearson's r of each method (``n/a`` with fewer than 3 points) and, when an ``epoch`` 0 (the
    untrained model) is among the points, n and r without it: one early point can carry r.

    Parameters
    ----------
    epochs : sequence of mapping
        Records in the format of the module docstring.
    path : str or Path
        Output ``.png`` file.

    Returns
    -------
    Path
        ``path``, now a PNG file.

    Raises
    ------
    FocusError
        When no record has a ``focus_<method>`` key, values lie outside [0, 1], or the path
        does not end in ``.png``.

    Examples
    --------
    >>> import tempfile, os
    >>> rows = [{"epoch": e, "val_loss": 1 / e, "val_accuracy": 0.5 + e / 10, "focus_lrp": 0.5 + e / 12}
    ...         for e in range(1, 5)]
    >>> plot_focus_vs_metrics(rows, os.path.join(tempfile.mkdtemp(), "f6.png")).name
    'f6.png'
    """
    out = output_path(path)
    rows = _records(epochs)
    methods = _focus_methods(rows)
    if not methods:
        raise FocusError(
            "No record has a 'focus_<method>' key: add the median Focus per method, e.g. 'focus_gradcam'."
        )
    epochs = _column(rows, "epoch")
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in zip(axes, ("val_accuracy", "val_loss"), ("validation accuracy", "validation loss")):
        x = _column(rows, key)
        if key == "val_accuracy":
            check_fraction(x, key)
        for method in methods:
            y = _column(rows, f"focus_{method}")
            check_fraction(y, f"focus_{method}")
            ax.scatter(x, y, color=method_color(method), s=30, label=f"{method} ({_r_label(x, y, epochs)})")
        ax.set_xlabel(label)
        focus_axis(ax, label="Focus median")
        ax.set_title(f"Focus vs {label}")
        if np.isnan(x).all():
            ax.text(0.5, 0.3, f"no '{key}' recorded", transform=ax.transAxes, ha="center", color="0.4")
        ax.legend(fontsize=8)
    axes[1].set_ylabel("")
    fig.suptitle("Focus and model performance")
    return save(fig, out)
