"""The paper's figures as PNG files, drawn with matplotlib from plain data.

One ``plot_*`` function per figure, grouped by figure family:

- :mod:`~focus_core.report.distributions`: Focus per method and architecture (Figure 4), trained
  vs random (Figure 3), per positional layout (Figure 2);
- :mod:`~focus_core.report.training`: training curves with Focus (Figure 5), Focus vs accuracy
  and loss (Figure 6);
- :mod:`~focus_core.report.randomization`: the cascading randomization curve;
- :mod:`~focus_core.report.mosaic`: a mosaic with each method's heat map (Figure 1);
- :mod:`~focus_core.report.design`: median Focus per target class, random models over seeds;
- :mod:`~focus_core.report.reliance`: Focus against model Focus per mosaic, one panel per method.

Each takes plain Python data (mappings, sequences, numpy arrays or torch tensors) and an output
path ending in ``.png``, writes the figure there (parent folders are created) and returns the
path as a :class:`pathlib.Path`. Figures are built with :class:`matplotlib.figure.Figure` and
the Agg canvas, never with ``pyplot``: no global state, safe in threads and worker processes,
nothing left open.

Undefined Focus scores (NaN or ``None``) are dropped and counted in the figure. Focus axes
run from 0 to 1 with a dashed line at the chance level, the score of a random explanation: the
``chance`` argument (k/N² on N x N mosaics with k target tiles; default 0.5, the 2x2 one). Each method
keeps the same colour in every figure (see :func:`method_color`).

Examples
--------
>>> import tempfile, os
>>> from focus_core.report import plot_layout_boxplots
>>> out = plot_layout_boxplots({"top": [0.9, 0.8, 0.95], "bottom": [0.7, 0.6, 0.8]},
...                            os.path.join(tempfile.mkdtemp(), "layouts.png"))
>>> out.suffix
'.png'
"""

from focus_core.report._style import DPI, method_color
from focus_core.report.distributions import (
    plot_focus_distributions,
    plot_layout_boxplots,
    plot_trained_vs_random,
)
from focus_core.report.design import plot_per_class_focus, plot_random_seeds
from focus_core.report.mosaic import plot_mosaic_explanations
from focus_core.report.randomization import plot_cascading_randomization
from focus_core.report.reliance import plot_focus_against_model_focus
from focus_core.report.training import plot_focus_vs_metrics, plot_training_curves

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
    "plot_per_class_focus",
    "plot_random_seeds",
    "plot_focus_against_model_focus",
]
