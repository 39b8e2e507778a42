"""The paper's figures as PNG files, drawn with matplotlib from plain data.

One ``plot_*`` function per figure. Each takes plain Python data (mappings, sequences,
numpy arrays or torch tensors) and an output path ending in ``.png``, writes the figure
there (parent folders are created) and returns the path as a :class:`pathlib.Path`.
Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas, never with
``pyplot``: no global state, safe in threads and worker processes, nothing left open.

Undefined Focus scores (NaN or ``None``) are dropped and counted in the figure. Focus axes
run from 0 to 1 with a dashed line at 0.5, the score of a random explanation. Each method
keeps the same colour in every figure (see :func:`method_color`).

Training records (for :func:`plot_training_curves` and :func:`plot_focus_vs_metrics`) are
mappings (or dataclasses such as ``focus_core.train.EpochMetrics``), one per epoch::

    {"epoch": 3, "train_loss": 0.21, "val_loss": 0.25,           # losses, any scale
     "train_accuracy": 0.94, "val_accuracy": 0.93,               # fractions in [0, 1]
     "focus_gradcam": 0.91, "focus_gradcam_q1": 0.85, "focus_gradcam_q3": 0.97,
     "focus_lrp": 0.95}                                          # Focus median (and quartiles) per method

Every key but ``epoch`` is optional; ``focus_<method>`` is the median Focus of that method on
the epoch's fixed mosaic set, and ``focus_<method>_q1`` / ``_q3`` draw its interquartile band.

Examples
--------
>>> import tempfile, os
>>> from focus_core.report import plot_layout_boxplots
>>> out = plot_layout_boxplots({"top": [0.9, 0.8, 0.95], "bottom": [0.7, 0.6, 0.8]},
...                            os.path.join(tempfile.mkdtemp(), "layouts.png"))
>>> out.suffix
'.png'
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy.stats import gaussian_kde

from focus_core.errors import FocusError
from focus_core.stats import as_scores, pearson

__all__ = [
    "DPI",
    "method_color",
    "plot_focus_distributions",
    "plot_trained_vs_random",
    "plot_layout_boxplots",
    "plot_training_curves",
    "plot_focus_vs_metrics",
    "plot_cascading_randomization",
    "plot_mosaic_explanations",
]

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
_QUADRANT_NAMES = ("TL", "TR", "BL", "BR")


# --------------------------------------------------------------------------- shared look


def method_color(method: str) -> str:
    """The colour a method has in every figure.

    Known methods have fixed colours; other names get a stable colour from their spelling.

    Examples
    --------
    >>> method_color("GradCAM") == method_color("gradcam")
    True
    """
    key = method.lower().replace("-", "_").replace(" ", "_")
    if key in _KNOWN_METHODS:
        return _PALETTE[_KNOWN_METHODS.index(key)]
    return _PALETTE[sum(key.encode()) % len(_PALETTE)]


def _output_path(path: str | Path) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise FocusError(f"The output path '{out}' does not end in .png: give the figure a .png file name.")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _save(fig: Figure, out: Path) -> Path:
    fig.savefig(out, dpi=DPI, format="png", facecolor="white")
    fig.clear()  # a pyplot-free Figure holds no global state: clearing releases its artists
    return out


def _focus_axis(ax: Any, axis: str = "y", label: str = "Focus") -> None:
    if axis == "y":
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(label)
        ax.axhline(0.5, **_RANDOM_LINE)
    else:
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(label)
        ax.axvline(0.5, **_RANDOM_LINE)
    ax.grid(True, axis=axis, alpha=0.3)


def _mapping(value: Any, name: str) -> Mapping:
    if not isinstance(value, Mapping) or len(value) == 0:
        raise FocusError(f"The {name} must be a non-empty mapping: pass a dict such as {{'gradcam': scores}}.")
    return value


def _defined(values: Any, name: str) -> tuple[np.ndarray, int]:
    """Defined scores and the number of undefined ones."""
    scores = as_scores(values, name)
    if scores.size == 0:
        raise FocusError(f"The {name} are empty: pass at least one score.")
    defined = scores[~np.isnan(scores)]
    return defined, int(scores.size - defined.size)


def _count_label(name: str, defined: np.ndarray, undefined: int) -> str:
    label = f"{name}\nn={defined.size}"
    return label + (f" ({undefined} undef.)" if undefined else "")


def _violin(ax: Any, position: float, data: np.ndarray, color: str, width: float) -> None:
    """A violin with median and quartile marks; a single dot when the data cannot make a KDE."""
    if data.size == 0:
        ax.text(position, 0.5, "no defined\nscores", ha="center", va="center", fontsize=7, color="0.4")
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


# --------------------------------------------------------------------------- figure 4


def plot_focus_distributions(
    scores_by_group: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    accuracy_by_group: Mapping[str, float] | None = None,
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
    out = _output_path(path)
    groups = _mapping(scores_by_group, "scores by architecture")
    accuracy = dict(accuracy_by_group or {})
    widths = [max(1, len(_mapping(m, f"methods of '{g}'"))) for g, m in groups.items()]
    fig = Figure(figsize=(1.2 + 1.3 * sum(widths), 4.2), layout="constrained")
    axes = fig.subplots(1, len(groups), sharey=True, squeeze=False, width_ratios=widths)[0]
    for ax, (group, methods) in zip(axes, groups.items()):
        labels = []
        for i, (method, values) in enumerate(methods.items()):
            data, undefined = _defined(values, f"scores of '{method}' on '{group}'")
            _violin(ax, i, data, method_color(method), 0.8)
            labels.append(_count_label(method, data, undefined))
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        title = str(group)
        if accuracy.get(group) is not None and not math.isnan(float(accuracy[group])):
            title += f"\nacc {float(accuracy[group]):.2f}"
        ax.set_title(title, fontsize=10)
        _focus_axis(ax)
        if ax is not axes[0]:
            ax.set_ylabel("")
    fig.suptitle("Focus distribution per method and architecture")
    return _save(fig, out)


# --------------------------------------------------------------------------- figure 3


def plot_trained_vs_random(
    trained: Sequence[float], random: Sequence[float], path: str | Path, method: str = "GradCAM"
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
    out = _output_path(path)
    bins = np.linspace(0.0, 1.0, 21)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for name, values, color in (("trained", trained, "#1f77b4"), ("random", random, "#d62728")):
        data, undefined = _defined(values, f"{name} scores")
        label = f"{name}: n={data.size}" + (f", {undefined} undefined" if undefined else "")
        if data.size == 0:
            ax.plot([], [], color=color, label=label + ", no defined score")
            continue
        ax.hist(data, bins=bins, color=color, alpha=0.45, label=label)
        if data.size >= 2 and np.ptp(data) > 0:
            grid = np.linspace(0.0, 1.0, 201)
            density = gaussian_kde(data)(grid) * data.size * (bins[1] - bins[0])
            ax.plot(grid, density, color=color, linewidth=1.5)
        mean = float(data.mean())
        ax.axvline(mean, color=color, linewidth=2, label=f"{name} mean {mean:.2f}")
    _focus_axis(ax, axis="x")
    ax.set_ylabel("mosaics")
    ax.set_title(f"{method}: Focus of a trained and a random model")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, out)


# --------------------------------------------------------------------------- figure 2


def plot_layout_boxplots(scores_by_layout: Mapping[str, Sequence[float]], path: str | Path) -> Path:
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
    out = _output_path(path)
    layouts = _mapping(scores_by_layout, "scores by layout")
    fig = Figure(figsize=(1.6 + 1.0 * len(layouts), 4.0), layout="constrained")
    ax = fig.subplots()
    labels, data = [], []
    for layout, values in layouts.items():
        defined, undefined = _defined(values, f"scores of layout '{layout}'")
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
        ax.text(i, 0.5, "no defined\nscores", ha="center", va="center", fontsize=7, color="0.4")
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_xlim(-0.6, len(positions) - 0.4)
    ax.set_xlabel("position of the two target tiles")
    _focus_axis(ax)
    ax.set_title("Focus per mosaic layout")
    return _save(fig, out)


# --------------------------------------------------------------------------- figures 5 and 6


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


def _check_fraction(values: np.ndarray, key: str) -> None:
    if np.nanmax(values, initial=0.0) > 1.0 or np.nanmin(values, initial=0.0) < 0.0:
        raise FocusError(
            f"The '{key}' values are outside [0, 1]: pass accuracy and Focus as fractions, not percentages."
        )


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
    out = _output_path(path)
    rows = _records(epochs)
    epoch = _column(rows, "epoch")
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    loss_ax, score_ax = fig.subplots(1, 2)
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        values = _column(rows, key)
        if not np.isnan(values).all():
            loss_ax.plot(epoch, values, style, marker="^", color="#e377c2", label=key.replace("_", " "))
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Loss")
    loss_ax.grid(True, alpha=0.3)
    for key, style in (("train_accuracy", "-"), ("val_accuracy", "--")):
        values = _column(rows, key)
        if not np.isnan(values).all():
            _check_fraction(values, key)
            score_ax.plot(epoch, values, style, marker="^", color="#e377c2", label=key.replace("_", " "))
    for method in _focus_methods(rows):
        median = _column(rows, f"focus_{method}")
        _check_fraction(median, f"focus_{method}")
        color = method_color(method)
        score_ax.plot(epoch, median, marker="o", color=color, label=f"Focus median ({method})")
        q1, q3 = _column(rows, f"focus_{method}_q1"), _column(rows, f"focus_{method}_q3")
        if not (np.isnan(q1).all() or np.isnan(q3).all()):
            score_ax.fill_between(epoch, q1, q3, color=color, alpha=0.2, linewidth=0)
    _focus_axis(score_ax, label="accuracy / Focus")
    score_ax.set_xlabel("epoch")
    score_ax.set_title("Accuracy and Focus")
    for ax in (loss_ax, score_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no values recorded", transform=ax.transAxes, ha="center", color="0.4")
    fig.suptitle("Training curves with Focus")
    return _save(fig, out)


def _r_label(x: np.ndarray, y: np.ndarray) -> str:
    defined = ~(np.isnan(x) | np.isnan(y))
    if defined.sum() < 3:
        return "r n/a (< 3 points)"
    r, _ = pearson(x, y)
    return "r undefined (constant)" if math.isnan(r) else f"r = {r:.3f}"


def plot_focus_vs_metrics(epochs: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Median Focus against validation accuracy and loss, with Pearson r (the paper's Figure 6).

    One point per record (an epoch, or an experiment: any record with ``val_accuracy``,
    ``val_loss`` and ``focus_<method>`` keys), one colour per method; the legend gives
    Pearson's r of each method (``n/a`` with fewer than 3 points).

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
    out = _output_path(path)
    rows = _records(epochs)
    methods = _focus_methods(rows)
    if not methods:
        raise FocusError(
            "No record has a 'focus_<method>' key: add the median Focus per method, e.g. 'focus_gradcam'."
        )
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in zip(axes, ("val_accuracy", "val_loss"), ("validation accuracy", "validation loss")):
        x = _column(rows, key)
        if key == "val_accuracy":
            _check_fraction(x, key)
        for method in methods:
            y = _column(rows, f"focus_{method}")
            _check_fraction(y, f"focus_{method}")
            ax.scatter(x, y, color=method_color(method), s=30, label=f"{method} ({_r_label(x, y)})")
        ax.set_xlabel(label)
        _focus_axis(ax, label="Focus median")
        ax.set_title(f"Focus vs {label}")
        if np.isnan(x).all():
            ax.text(0.5, 0.3, f"no '{key}' recorded", transform=ax.transAxes, ha="center", color="0.4")
        ax.legend(fontsize=8)
    axes[1].set_ylabel("")
    fig.suptitle("Focus and model performance")
    return _save(fig, out)


# --------------------------------------------------------------------------- cascading randomization


def plot_cascading_randomization(
    stages: Sequence[str],
    medians_by_method: Mapping[str, Sequence[float]],
    path: str | Path,
    q1_by_method: Mapping[str, Sequence[float]] | None = None,
    q3_by_method: Mapping[str, Sequence[float]] | None = None,
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
    out = _output_path(path)
    labels = [str(s) for s in stages]
    if not labels:
        raise FocusError("The stages are empty: pass 'trained' followed by the randomized layers.")
    methods = _mapping(medians_by_method, "medians by method")
    q1s, q3s = dict(q1_by_method or {}), dict(q3_by_method or {})

    def series(values: Any, what: str) -> np.ndarray:
        array = as_scores(values, what)
        if array.size != len(labels):
            raise FocusError(f"The {what} have {array.size} values for {len(labels)} stages: pass one per stage.")
        _check_fraction(array, what)
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
    _focus_axis(ax, label="Focus median")
    ax.set_title("Cascading randomization")
    ax.legend(fontsize=8)
    return _save(fig, out)


# --------------------------------------------------------------------------- figure 1


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


def _target_quadrants(target_quadrants: Any) -> list[int]:
    if target_quadrants is None:
        return []
    values = _to_numpy(target_quadrants, "target quadrants").ravel()
    if values.dtype == np.bool_:
        if values.size != 4:
            raise FocusError(f"The target mask has {values.size} entries: pass 4 booleans in TL, TR, BL, BR order.")
        return [int(i) for i in np.flatnonzero(values)]
    quadrants = [int(q) for q in values]
    if any(q not in range(4) for q in quadrants):
        raise FocusError(f"The target quadrants {quadrants} are not in 0..3: pass indices in TL, TR, BL, BR order.")
    return quadrants


def plot_mosaic_explanations(
    mosaic: Any,
    maps: Mapping[str, Any],
    path: str | Path,
    target_quadrants: Any = None,
    focus: Mapping[str, float] | None = None,
) -> Path:
    """A mosaic and each method's heat map over it (the paper's Figure 1).

    The first panel is the mosaic with its target quadrants outlined; each further panel shows
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
        Quadrant indices (0..3 in TL, TR, BL, BR order) or a boolean mask of 4, as from
        ``focus_core.mosaics.target_mask``.
    focus : mapping of str to float, optional
        Focus per method, shown in each title (NaN is shown as undefined).

    Returns
    -------
    Path
        ``path``, now a PNG file.

    Raises
    ------
    FocusError
        When the mosaic or a map has the wrong shape or range, a quadrant is not in 0..3, or the
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
    out = _output_path(path)
    image = _mosaic_image(mosaic)
    height, width = image.shape[:2]
    quadrants = _target_quadrants(target_quadrants)
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
        ax.axhline(height // 2 - 0.5, color="white", linewidth=0.8)
        ax.axvline(width // 2 - 0.5, color="white", linewidth=0.8)
        for q in quadrants:
            top, left = (q // 2) * (height // 2), (q % 2) * (width // 2)
            h = height // 2 if q < 2 else height - height // 2
            w = width // 2 if q % 2 == 0 else width - width // 2
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, edgecolor="lime", linewidth=2.5))
        ax.set_xticks([])
        ax.set_yticks([])
    if quadrants:
        fig.suptitle("target quadrants outlined: " + ", ".join(_QUADRANT_NAMES[q] for q in quadrants), fontsize=9)
    return _save(fig, out)
