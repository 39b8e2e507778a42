"""The report's model-reliance section: Focus against the model's own reliance on the target tiles (model Focus).

Shown only when some selected evaluation ran the reliance pass (``focus evaluate --model-reliance``, every audit):
one figure per model and mosaic set, Focus against model Focus per mosaic with one panel per method and the
diagonal drawn, and one table of the summaries the store holds (``evaluation_reliance``: model Focus and the
explainer gap, Focus minus model Focus, with quartiles and their interval; the rank agreement). The numbers in
the table are the stored ones, not recomputed; the figure draws the stored per-mosaic values. docs/reliance.md
says what model Focus is and how the pass measures it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

import db
from db import Engine
from flows.report.figures import FigureWriter
from flows.report.page import DASH, Section, fmt, fmt_signed, row, table
from flows.report.queries import EvaluationData
from flows.report.selection import RANDOMIZATION_ORDER, method_key, slug
from focus_core.report.reliance import plot_focus_against_model_focus

__all__ = ["reliance_section"]

_LEAD = ("Each point is one mosaic: its Focus (the explanation's share of positive relevance on the target tiles) "
         "against its model Focus (the share of the model's own reliance on them, measured by taking tiles away), "
         "one panel per method. On the diagonal the explanation follows the model; below it the explanation puts "
         "relevance on tiles the model barely uses (leakage); above it the explanation is more concentrated on the "
         "targets than the model's reliance. The table gives the stored medians; docs/reliance.md explains the "
         "measure and its baseline.")

_TITLES = {
    "baseline": "what replaced a tile in the reliance pass (the dataset mean, or a blur of the tile)",
    "n": "mosaics with model Focus defined (some drop of the target logit positive)",
    "median Focus": "median Focus of the evaluation's defined scores",
    "median model Focus": "median model Focus over the mosaics: the model's own share of reliance on the targets",
    "model Focus q1–q3": "quartiles of model Focus",
    "model Focus CI": "95% interval of the median resampling target classes, then mosaics",
    "median gap": "median explainer gap, Focus minus model Focus per mosaic: near 0 the explanation follows the "
                  "model, negative is leakage, positive more concentrated than the model",
    "gap q1–q3": "quartiles of the explainer gap",
    "gap CI": "95% interval of the median gap resampling target classes, then mosaics",
    "rank agreement": "median Spearman correlation over the tiles between relevance and the model's drops "
                      "(grids of 3 and 4 only)",
}
_HEADERS = ["evaluation", "checkpoint", "method", "mosaic set", "randomization", "baseline", "n", "median Focus",
            "median model Focus", "model Focus q1–q3", "model Focus CI", "median gap", "gap q1–q3", "gap CI",
            "rank agreement"]
_TEXT = {"checkpoint", "method", "mosaic set", "randomization", "baseline"}


def reliance_section(engine: Engine, evals: Sequence[EvaluationData], names: dict[int, str],
                     figures: FigureWriter) -> Section | None:
    """The model-reliance section of the selected evaluations, or ``None`` when none of them has reliance rows."""
    summaries = db.report_reads.reliance_summaries(engine, [e.evaluation_id for e in evals])
    if not len(summaries):
        return None
    stored = {int(r["evaluation_id"]): r for r in summaries.to_dict("records")}
    chosen = [e for e in evals if e.evaluation_id in stored]
    pairs = db.report_reads.mosaic_model_focus(engine, [e.evaluation_id for e in chosen])
    per_mosaic = {int(k): v for k, v in pairs.groupby("evaluation_id")} if len(pairs) else {}
    section = Section("reliance", "Focus against the model's reliance", _LEAD)
    groups: dict[tuple, list[EvaluationData]] = defaultdict(list)
    for e in chosen:
        groups[_model_key(e)].append(e)
    for key in sorted(groups, key=lambda k: _model_key_sort(groups[k][0])):
        members = sorted(groups[key], key=lambda e: (method_key(e.method), e.evaluation_id))
        _draw(section, figures, names, members, per_mosaic, stored)
    ordered = sorted(chosen, key=lambda e: (*_model_key_sort(e), method_key(e.method), e.evaluation_id))
    baselines = sorted({str(s["baseline"]) for s in stored.values()})
    if len(baselines) == 1:  # one note says it, the table has no baseline column
        section.notes.append(f"Every reliance pass here replaced a tile by the {baselines[0]} baseline; compare model "
                             "Focus only between passes with the same baseline.")
    drop = ({"baseline"} if len(baselines) == 1 else set()) | (
        {"randomization"} if all(e.randomization == "none" for e in chosen) else set())
    headers = [h for h in _HEADERS if h not in drop]
    rows = [_row(e, names, stored[e.evaluation_id], drop) for e in ordered]
    section.blocks.append('<div class="table-wrap">' + table(
        headers, rows, table_id="reliance-table", titles=[_TITLES.get(h) for h in headers]) + "</div>")
    return section


def _model_key(e: EvaluationData) -> tuple:
    """One model on one mosaic set: checkpoint, mosaic set and randomization (the figure's panels are its methods)."""
    return (e.checkpoint_id, e.mosaic_set_id, e.randomization, e.stage, e.layer, e.seed)


def _model_key_sort(e: EvaluationData) -> tuple:
    return (e.checkpoint_id, e.mosaic_set_id, RANDOMIZATION_ORDER.get(e.randomization, 9), e.stage or 0,
            str(e.layer), e.seed or 0)


def _draw(section: Section, figures: FigureWriter, names: dict[int, str], members: list[EvaluationData],
          per_mosaic: dict[int, Any], stored: dict[int, dict[str, Any]]) -> None:
    """One figure of a model on a mosaic set: a panel per method (the latest evaluation of each)."""
    by_method: dict[str, EvaluationData] = {}
    for e in members:  # ordered by evaluation id within a method: the latest wins
        by_method[e.method] = e
    points = {}
    for method, e in by_method.items():
        frame = per_mosaic.get(e.evaluation_id)
        empty = np.zeros(0)
        points[method] = (empty, empty) if frame is None else (frame["model_focus"].to_numpy(float),
                                                               frame["focus"].to_numpy(float))
    first = members[0]
    baselines = sorted({str(stored[e.evaluation_id]["baseline"]) for e in by_method.values()})
    model = names[first.checkpoint_id] + ("" if first.randomization == "none" else f", {first.randomization_label}")
    caption = (f"{model} on mosaic set {first.set_label} (chance level {fmt(first.chance_level)}, the dashed lines), "
               f"{' and '.join(baselines)} baseline; evaluations "
               + ", ".join(f"{m} {e.evaluation_id}" for m, e in by_method.items())
               + ". Mosaics where either value is undefined are left out (counted in each panel's title).")
    name = "fig-reliance-" + slug(names[first.checkpoint_id], first.mosaic_set_id,
                                  None if first.randomization == "none" else first.randomization_label)
    figures.draw(section, name, caption, f"Focus against model Focus: {model}", plot_focus_against_model_focus,
                 points, chance=first.chance_level)


def _row(e: EvaluationData, names: dict[int, str], s: dict[str, Any], drop: set[str]) -> str:
    """One evaluation's row: its stored summaries (exact in ``data-*``), without the ``drop`` columns."""
    data = {"evaluation_id": e.evaluation_id, "checkpoint_id": e.checkpoint_id, "method": e.method,
            "mosaic_set_id": e.mosaic_set_id, "randomization": e.randomization, "pass_id": s["pass_id"],
            "baseline": s["baseline"], "median_focus": e.summary.get("median"),
            **{k: s[k] for k in db.reliance.RELIANCE_SUMMARY_COLUMNS}}
    cells = [str(e.evaluation_id), names[e.checkpoint_id], e.method, e.set_label, e.randomization_label,
             str(s["baseline"]), fmt(s["n_model_defined"]), fmt(e.summary.get("median")),
             fmt(s["median_model_focus"]), _pair(s["q1_model_focus"], s["q3_model_focus"]),
             _pair(s["model_focus_low"], s["model_focus_high"], brackets=True), fmt_signed(s["median_explainer_gap"]),
             _pair(s["q1_explainer_gap"], s["q3_explainer_gap"], signed=True),
             _pair(s["explainer_gap_low"], s["explainer_gap_high"], brackets=True, signed=True),
             fmt(s["median_rank_agreement"])]
    kept = [(h, c) for h, c in zip(_HEADERS, cells) if h not in drop]
    return row(data, [c for _, c in kept], numeric=[h not in _TEXT for h, _ in kept],
               titles=[None, None, None, e.set_description])


def _pair(low: Any, high: Any, *, brackets: bool = False, signed: bool = False) -> str:
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (low, high)):
        return DASH
    one = fmt_signed if signed else fmt
    text = f"{one(low)}, {one(high)}" if brackets else f"{one(low)}–{one(high)}"
    return f"[{text}]" if brackets else text
