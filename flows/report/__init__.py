"""``focus report``: a static HTML page of the paper's figures and tables, built from the store.

:func:`build_report` reads the selected finished evaluations (default: all) with their
per-mosaic Focus scores, the training runs of their checkpoints, and writes ``out/index.html``
with the figures as PNG files in ``out/figures/``. Nothing on the page needs a server or the
network: the CSS is inline, the images are relative files.

What the page holds, each part only when its data is recorded (otherwise a sentence says so):

- Figure 1: one mosaic with each method's heat map, recomputed from the checkpoint's weights
  file and the dataset (a note replaces it when the weights or the data are gone);
- Figure 4: Focus distributions per method and architecture;
- summary table per evaluation (n, undefined share, median with its bootstrap 95% CI, mean,
  quartiles, mosaic accuracy) and the paired Wilcoxon comparison of methods on the same mosaics;
- the audits: each audit run's evaluations, what changed since the previous audit (model Focus or the
  explanation) and the regressions the audits stored;
- Focus against model Focus per mosaic (the model's own reliance on the target tiles), with the stored
  summaries, when some evaluation ran the reliance pass;
- Figure 3: trained vs fully random model; the cascading randomization curve;
- Figures 5 and 6: training curves with Focus, Focus vs accuracy and loss (with Pearson r);
- Figure 2: Focus per fixed positional layout of the target tiles.

Modules, one concept each: :mod:`~flows.report.queries` (reading the store),
:mod:`~flows.report.selection` (names, order and picks), :mod:`~flows.report.figures` (the figure
writer and the figure-only sections), :mod:`~flows.report.sample` (Figure 1),
:mod:`~flows.report.tables` (summary, paired and audit tables), :mod:`~flows.report.reliance` (model
reliance), :mod:`~flows.report.training`
(Figures 5 and 6 with their tables), :mod:`~flows.report.page` (the HTML) and
:mod:`~flows.report.build` (the whole build).

Examples
--------
>>> from pathlib import Path
>>> build_report(Path("focus-report"), database_url="sqlite:///focus.db")  # doctest: +SKIP
PosixPath('focus-report/index.html')
"""

from flows.report.build import build_report
from flows.report.queries import EvaluationData, load_evaluations

__all__ = ["build_report", "EvaluationData", "load_evaluations"]
