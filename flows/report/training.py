"""Figures 5 and 6 of the report: training curves with Focus per epoch, Focus vs accuracy and loss.

Focus per epoch comes from the per-epoch evaluations of the run's checkpoints on one fixed
mosaic set (the set evaluated in the most epochs); without them, from the median Focus the
training run recorded itself. Each run gets its figures, an epochs table and Pearson's r.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from flows.results.analysis import correlation_caveat
from flows.report.figures import FigureWriter
from flows.report.page import Section, count, fmt, fmt_p, row, table
from flows.report.queries import EvaluationData
from flows.report.selection import latest, method_key, slug
from focus_core import report, stats
from focus_core.errors import FocusError

__all__ = ["training_section"]


def training_section(evals: Sequence[EvaluationData], runs: dict[int, dict[str, Any]], figures: FigureWriter) -> Section:
    """Per training run: Figures 5 and 6, its epochs table and Pearson's r."""
    section = Section(
        "training", "Training curves and Focus",
        "Loss and accuracy per epoch with the median Focus on the fixed validation mosaic set (the paper's Figure 5), "
        "and Focus against validation accuracy and loss with Pearson's r (Figure 6).",
    )
    if not runs:
        section.missing = "No training run recorded for the selection: train with `focus train` (or `focus demo`) to see Focus per epoch."
        return section
    for run_id, run in sorted(runs.items()):
        info = run["run"]
        name = info.get("name") or f"run {run_id}"
        records, source, counts = _epoch_records(run, evals)
        section.blocks.append(f"<h3>{_esc(name)} ({_esc(info['architecture'])}, training run {run_id}, "
                              f"{_epochs_text(records)}, {_esc(info['status'])})</h3>")
        start = len(section.figures)
        figures.draw(section, f"fig5-{slug(name, run_id)}", f"Training run {run_id}; Focus from {source}.",
                     f"Training curves of {name}", report.plot_training_curves, records)
        if any(k.startswith("focus_") for r in records for k in r):
            figures.draw(section, f"fig6-{slug(name, run_id)}", f"Training run {run_id}: one point per epoch.",
                         f"Focus vs accuracy and loss of {name}", report.plot_focus_vs_metrics, records)
        else:
            section.notes.append(f"Training run {run_id} recorded no Focus per epoch, so Focus vs accuracy is not drawn.")
        # keep each run's figures next to its heading
        section.blocks.append('<div class="figures">' + "\n".join(f.render() for f in section.figures[start:]) + "</div>")
        del section.figures[start:]
        section.blocks.append(_epochs_table(run_id, records, counts))
    return section


def _epochs_text(records: Sequence[dict[str, Any]]) -> str:
    """How many epochs were trained (epoch 0 is the untrained model, recorded before the first): ``"10 epochs"``,
    ``"10 epochs after the untrained epoch 0"``.

    Examples
    --------
    >>> _epochs_text([{"epoch": e} for e in range(11)]), _epochs_text([{"epoch": 1}])
    ('10 epochs after the untrained epoch 0', '1 epoch')
    """
    trained = sum(1 for r in records if (r.get("epoch") or 0) > 0)
    untrained = any(r.get("epoch") == 0 for r in records)
    return count(trained, "epoch") + (" after the untrained epoch 0" if untrained else "")


def _epoch_records(run: dict[str, Any], evals: Sequence[EvaluationData]
                   ) -> tuple[list[dict[str, Any]], str, dict[tuple[int, str], dict[str, Any]]]:
    """Figure 5/6 records of a run: epoch metrics plus Focus per method (from per-epoch evaluations when recorded).

    Also ``{(epoch, method): summary}`` of the evaluations behind each median (its ``n`` and undefined share);
    empty when the Focus is the run's own recorded median.
    """
    run_id = run["run"]["id"]
    candidates = [e for e in evals
                  if e.epoch_in(run_id) is not None and e.randomization == "none" and e.n]
    # Focus per epoch is measured on one fixed mosaic set: the set evaluated in the most epochs.
    epochs_per_set: dict[int, set[int]] = defaultdict(set)
    for e in candidates:
        epochs_per_set[e.mosaic_set_id].add(e.epoch_in(run_id))
    per_epoch: dict[tuple[int, str], list[EvaluationData]] = defaultdict(list)
    if epochs_per_set:
        fixed = max(epochs_per_set, key=lambda s: (len(epochs_per_set[s]), -s))
        for e in candidates:
            if e.mosaic_set_id == fixed:
                per_epoch[(e.epoch_in(run_id), e.method)].append(e)
    records, source, counts = [], "per-epoch evaluations", {}
    fallback = _recorded_focus_name(run["run"].get("config"))
    for epoch in run["epochs"]:
        record = {k: epoch.get(k) for k in ("epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy",
                                             "val_mean_class_accuracy")}
        methods = {m for (ep, m) in per_epoch if ep == epoch["epoch"]}
        for method in methods:
            s = latest(per_epoch[(epoch["epoch"], method)]).summary
            counts[(epoch["epoch"], method)] = s
            record[f"focus_{method}"] = s["median"]
            record[f"focus_{method}_q1"] = s["q1"]
            record[f"focus_{method}_q3"] = s["q3"]
        records.append(record)
    if not per_epoch:
        source = "the training run's recorded median Focus per epoch"
        for record, epoch in zip(records, run["epochs"]):
            if epoch.get("focus_median") is not None:
                record[f"focus_{fallback}"] = epoch["focus_median"]
    return records, source, counts


def _recorded_focus_name(config: Any) -> str:
    try:
        methods = (config or {}).get("focus_methods") or []
        if len(methods) == 1:
            return str(methods[0]["name"] if isinstance(methods[0], dict) else methods[0])
    except (AttributeError, KeyError, TypeError):
        pass
    return "recorded"


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _epochs_table(run_id: int, records: list[dict[str, Any]], counts: dict[tuple[int, str], dict[str, Any]]) -> str:
    """The epochs table of a run (each method's median with its n and undefined share) and Pearson's r per method."""
    methods = sorted({k[len("focus_"):] for r in records for k in r
                      if k.startswith("focus_") and not k.endswith(("_q1", "_q3"))}, key=method_key)
    headers = ["epoch", "train loss", "val loss", "train accuracy", "val accuracy", "val mean class accuracy"]
    for m in methods:
        headers += [f"Focus median ({m})", f"n ({m})", f"undefined ({m})"]
    rows = []
    for r in records:
        values = [r.get("train_loss"), r.get("val_loss"), r.get("train_accuracy"), r.get("val_accuracy"),
                  r.get("val_mean_class_accuracy")]
        data = {"training_run_id": run_id, "epoch": r["epoch"], "val_accuracy": r.get("val_accuracy"),
                "val_loss": r.get("val_loss")}
        for m in methods:
            s = counts.get((r["epoch"], m), {})
            values += [r.get(f"focus_{m}"), s.get("n"), s.get("share_undefined")]
            data.update({f"focus_{slug(m)}": r.get(f"focus_{m}"), f"n_{slug(m)}": s.get("n"),
                         f"share_undefined_{slug(m)}": s.get("share_undefined")})
        rows.append(row(data, [str(r["epoch"])] + [fmt(v) for v in values], numeric=[True] * (1 + len(values))))
    html_text = '<div class="table-wrap">' + table(headers, rows, table_id=f"epochs-{run_id}") + "</div>"
    if methods and not counts:
        html_text += ("<p class=\"caption\">Focus per epoch as the training run recorded it (no per-epoch evaluation "
                      "is selected): its n and undefined share are not recorded.</p>")
    return html_text + _correlation_table(run_id, records, methods)


def _correlation_table(run_id: int, records: list[dict[str, Any]], methods: list[str]) -> str:
    """Pearson's r (:func:`focus_core.stats.pearson`) per method and metric; empty without methods."""
    corr_rows = []
    later = [r for r in records if r["epoch"] != 0]
    for m in methods:
        for key, label in (("val_accuracy", "val accuracy"), ("val_loss", "val loss")):
            n, rho, p = _pearson_over(records, key, m)
            n0, rho0, p0 = _pearson_over(later, key, m)
            corr_rows.append(row({"training_run_id": run_id, "method": m, "metric": key, "n": n, "r": rho, "p_value": p,
                                  "n_without_epoch_0": n0, "r_without_epoch_0": rho0, "p_value_without_epoch_0": p0},
                                 [m, label, fmt(n), fmt(rho), fmt_p(p), fmt(n0), fmt(rho0), fmt_p(p0)],
                                 numeric=[False, False] + [True] * 6))
    if not corr_rows:
        return ""
    headers = ["method", "against", "epochs", "Pearson r", "p-value", "epochs without 0", "r without epoch 0",
               "p-value without epoch 0"]
    fewest = min(int(n) for n in (_pearson_over(records, "val_accuracy", m)[0] for m in methods))
    return ('<div class="table-wrap">' + table(headers, corr_rows, table_id=f"correlation-{run_id}")
            + "</div><p class=\"caption\">Pearson r needs at least 3 epochs with both values (a dash otherwise). "
            "Epoch 0 is the model before its first optimisation step: one far point can carry r, so r is also "
            f"given without it. {html.escape(correlation_caveat(fewest))}</p>")


def _pearson_over(records: list[dict[str, Any]], key: str, method: str) -> tuple[int, float, float]:
    """``(n, r, p)`` of :func:`focus_core.stats.pearson` of ``focus_<method>`` against ``key`` over the records."""
    x = [math.nan if r.get(key) is None else r[key] for r in records]
    y = [math.nan if r.get(f"focus_{method}") is None else r[f"focus_{method}"] for r in records]
    n = int(np.sum(~(np.isnan(np.asarray(x, float)) | np.isnan(np.asarray(y, float))))) if records else 0
    try:
        rho, p = stats.pearson(x, y)
    except FocusError:  # fewer than 3 epochs with both values
        rho, p = math.nan, math.nan
    return n, rho, p
