"""The report's tables: statistics per evaluation, the paired comparison of methods, and the audits.

Every row carries the exact values in ``data-*`` attributes (see :func:`flows.report.page.row`).
The statistics come from :mod:`focus_core.stats`: :func:`~focus_core.stats.summarize` and
:func:`~focus_core.stats.bootstrap_median_ci` (computed in :func:`flows.report.queries.load_evaluations`)
and :func:`~focus_core.stats.paired_test` (Wilcoxon signed-rank on the mosaics both methods scored).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from flows.report.page import DASH, Section, fmt, fmt_p, fmt_signed, row, table
from flows.report.queries import BOOTSTRAP_RESAMPLES, CONFIDENCE, EvaluationData
from flows.report.selection import RANDOMIZATION_ORDER, method_key
from focus_core import stats
from focus_core.cause import RULE as CAUSE_RULE
from focus_core.cause import ChangeCause

__all__ = ["audits_section", "paired_section", "summary_section"]


_SUMMARY_TITLES = {
    "checkpoint": "label (every training run's when several produced the same weights), else architecture and "
                  "epoch; hover for the sha256 of the weights",
    "mosaic set": "id, dataset, tile size / resize in pixels (each image's shorter side resized, then the centre tile "
                  "cropped), and the split, layout and grid where not the test split, random positions and 2x2 with "
                  "2 target tiles; hover for all of it",
    "chance": "chance level k/N²: what a random explanation scores on these mosaics (k target tiles of N x N); "
              "compare the median with it",
    "audit": "audit run id",
    "n": "mosaics scored",
    "undefined": "share of mosaics without positive relevance (Focus undefined)",
    "median": "median Focus of the defined scores (undefined maps left out: they say nothing about where relevance "
              "went); compare it with the chance level (its column, or the note above the table)",
    "median, undefined as 0": "median Focus with undefined maps counted as 0: Quantus's convention, the one to compare "
                              "with quantus.Focus",
    f"{int(CONFIDENCE * 100)}% CI of median": f"percentile bootstrap over mosaics, {BOOTSTRAP_RESAMPLES} resamples, "
                                              "seed 0: assumes mosaics independent",
    "cluster CI": f"{int(CONFIDENCE * 100)}% percentile bootstrap resampling target classes, then mosaics within them "
                  f"({BOOTSTRAP_RESAMPLES} resamples, seed 0): mosaics of one class are not independent",
    "q1": "first quartile",
    "q3": "third quartile",
    "mosaic acc.": "mosaic accuracy: share of mosaics whose predicted class is the target class",
}


_PAIRED_HEADERS = ["checkpoint", "mosaic set", "randomization", "method A #evaluation", "method B #evaluation",
                   "pairs", "median A−B", "mean A−B", "W", "p-value", "rank-biserial r", "at 0.05"]


def summary_section(evals: Sequence[EvaluationData], names: dict[int, str]) -> Section:
    """The summary table: one row per evaluation with its statistics and mosaic accuracy."""
    section = Section(
        "summary", "Summary per evaluation",
        "One row per evaluation (checkpoint x method x mosaic set x randomization; the latest when audits measured "
        "it again, see Audits). Statistics are over the defined Focus scores; the confidence interval of the "
        "median is a percentile bootstrap. Hover a header or a checkpoint for details.",
    )
    section.notes += _one_chance_level(evals)
    section.blocks.append(_summary_table(evals, names, "summary-table"))
    return section


def _one_chance_level(evals: Sequence[EvaluationData]) -> list[str]:
    """The note that names the chance level when every row shares it (the table then has no chance column)."""
    levels = {round(e.chance_level, 12) for e in evals}
    if len(levels) != 1:
        return []
    e = evals[0]
    return [f"Chance level {fmt(e.chance_level)} for every row ({e.grid}x{e.grid} mosaics with {e.target_tiles} "
            "target tiles): what a random explanation scores; compare each median with it."]


def audits_section(evals: Sequence[EvaluationData], names: dict[int, str], outcome: str | None = None,
                   causes: Sequence[tuple[EvaluationData, EvaluationData, ChangeCause]] = (),
                   regressions: Sequence[dict[str, Any]] = ()) -> Section:
    """Every audit's evaluations, oldest audit first: the same statistics as the summary, per audit run; then each
    audit against the previous one with what changed (``causes``, :func:`flows.report.queries.audit_causes`) and the
    regressions the audits stored (``regressions``, :func:`flows.report.queries.stored_regressions`).

    ``outcome`` (:func:`flows.report.queries.audit_outcome`) says what the audits found, regressions or none.
    """
    section = Section(
        "audits", "Audits",
        "Each audit run re-evaluates the checkpoints marked for auditing on their audit mosaic set; one row per "
        "audit run x checkpoint x method. The main tables above show the latest of each; `focus results "
        "regressions` lists the falls beyond the threshold with the paired test. Below, where the audits ran the "
        "reliance pass: whether the model's own reliance on the target tiles (model Focus) or the explanation "
        "changed since the previous audit, and the cause each alerted regression recorded (docs/reliance.md).",
    )
    if outcome:
        section.notes.append(outcome)
    ordered = sorted(evals, key=lambda e: (e.audit_run_id or 0, e.checkpoint_id, method_key(e.method)))
    section.blocks.append(_summary_table(ordered, names, "audit-table", keep_order=True))
    if causes:
        section.blocks.append("<h3>Which one changed since the previous audit</h3>" + _causes_table(causes, names))
    if regressions:
        section.blocks.append("<h3>Regressions the audits alerted</h3>" + _regressions_table(regressions, names, evals))
    return section


_CAUSE_TITLES = {
    "Focus change": "median paired change of Focus, this audit minus the previous, on the mosaics with every value "
                    "defined",
    "model Focus change": "median paired change of model Focus, the model's own reliance on the target tiles "
                          "(docs/reliance.md); a dash where either audit ran without the reliance pass",
    "gap change": "median paired change of the explainer gap (Focus minus model Focus)",
    "cause": f"which one changed: {CAUSE_RULE}",
    "pairs": "mosaics with Focus and model Focus defined in both evaluations",
}


def _causes_table(causes: Sequence[tuple[EvaluationData, EvaluationData, ChangeCause]], names: dict[int, str]) -> str:
    """Each audit evaluation against the previous audit of its cell: the paired changes and the cause (recomputed
    from the stored per-mosaic values)."""
    headers = ["audit", "evaluation", "checkpoint", "method", "mosaic set", "previous", "pairs", "Focus change",
               "model Focus change", "gap change", "cause"]
    rows = []
    for later, earlier, moved in causes:
        measured = moved.n > 0
        rows.append(row(
            {"audit_run_id": later.audit_run_id, "evaluation_id": later.evaluation_id,
             "previous_evaluation_id": earlier.evaluation_id, "checkpoint_id": later.checkpoint_id,
             "method": later.method, "n": moved.n, "focus_change": moved.focus_change,
             "model_focus_change": moved.model_focus_change, "gap_change": moved.gap_change,
             "cause": moved.cause if measured else None},
            [str(later.audit_run_id), str(later.evaluation_id), names[later.checkpoint_id], later.method,
             later.set_label, f"{earlier.evaluation_id} (audit {earlier.audit_run_id})", fmt(moved.n),
             fmt_signed(moved.focus_change), fmt_signed(moved.model_focus_change), fmt_signed(moved.gap_change),
             moved.cause if measured else DASH],
            numeric=[True, True, False, False, False, False, True, True, True, True, False],
            titles=[None, None, None, None, later.set_description],
        ))
    return ('<div class="table-wrap">' + table(headers, rows, table_id="audit-causes-table",
                                               titles=[_CAUSE_TITLES.get(h) for h in headers]) + "</div>")


def _regressions_table(regressions: Sequence[dict[str, Any]], names: dict[int, str],
                       evals: Sequence[EvaluationData]) -> str:
    """The regressions as each audit stored them (its metadata): the fall, the paired test, the model Focus change
    and the cause the audit recorded."""
    by_sha = {e.sha256: names[e.checkpoint_id] for e in evals}
    headers = ["audit", "checkpoint", "compared with", "kind", "method", "median change", "p-value",
               "model Focus change", "cause"]
    def name(sha: Any) -> str:
        return DASH if not sha else by_sha.get(sha, f"sha256 {str(sha)[:12]}")

    rows = []
    for r in regressions:
        checkpoint = name(r.get("checkpoint"))
        if r.get("lineage"):
            checkpoint = f"{checkpoint} (lineage {r['lineage']})"
        rows.append(row(
            {k: r.get(k) for k in ("audit_run_id", "lineage", "checkpoint", "compared_with", "kind", "method",
                                   "median_change", "p_value", "model_focus_change", "cause")},
            [str(r["audit_run_id"]), checkpoint, name(r.get("compared_with")), str(r.get("kind") or DASH),
             str(r.get("method") or DASH), fmt_signed(r.get("median_change")), fmt_p(r.get("p_value")),
             fmt_signed(r.get("model_focus_change")), str(r.get("cause") or DASH)],
            numeric=[True, False, False, False, False, True, True, True, False],
        ))
    titles = [_CAUSE_TITLES.get(h) for h in headers]
    return '<div class="table-wrap">' + table(headers, rows, table_id="regressions-table", titles=titles) + "</div>"


def _summary_table(evals: Sequence[EvaluationData], names: dict[int, str], table_id: str,
                   keep_order: bool = False) -> str:
    with_architecture = any(e.checkpoint_label for e in evals)
    with_audit = any(e.audit_run_id is not None for e in evals)
    with_chance = len({round(e.chance_level, 12) for e in evals}) > 1  # else one note says it
    headers = (["evaluation", "checkpoint"] + (["architecture"] if with_architecture else [])
               + ["method", "mosaic set"] + (["chance"] if with_chance else []) + ["randomization"]
               + (["audit"] if with_audit else [])
               + ["n", "undefined", "median", "median, undefined as 0", f"{int(CONFIDENCE * 100)}% CI of median",
                  "cluster CI", "mean", "q1", "q3", "mosaic acc."])
    rows = []
    order = (lambda e: 0) if keep_order else (lambda e: (
        e.checkpoint_id, e.mosaic_set_id, RANDOMIZATION_ORDER.get(e.randomization, 9), e.stage or 0, str(e.layer),
        e.seed or 0, method_key(e.method), e.evaluation_id))
    for e in sorted(evals, key=order):
        s = e.summary
        checkpoint, checkpoint_tip = _checkpoint_cell(e, names)
        mosaic_set, mosaic_set_tip = _mosaic_set_cell(e)
        cells = ([str(e.evaluation_id), checkpoint] + ([e.architecture] if with_architecture else [])
                 + [e.method, mosaic_set] + ([fmt(e.chance_level)] if with_chance else []) + [e.randomization_label]
                 + ([DASH if e.audit_run_id is None else str(e.audit_run_id)] if with_audit else [])
                 + [fmt(s["n"]), fmt(s["share_undefined"]), fmt(s["median"]), fmt(s.get("median_undefined_as_zero")),
                    _ci_text(e.ci), _ci_text(e.cluster_ci), fmt(s["mean"]), fmt(s["q1"]), fmt(s["q3"]),
                    fmt(e.mosaic_accuracy)])
        text_columns = {"checkpoint", "architecture", "method", "mosaic set", "randomization"}
        tips = {"checkpoint": checkpoint_tip, "mosaic set": mosaic_set_tip}
        rows.append(row(
            {"evaluation_id": e.evaluation_id, "checkpoint_id": e.checkpoint_id, "method": e.method,
             "mosaic_set_id": e.mosaic_set_id, "randomization": e.randomization, "stage": e.stage,
             "seed": e.seed, "audit_run_id": e.audit_run_id, "n": s["n"], "n_defined": s["n_defined"],
             "share_undefined": s["share_undefined"], "median": s["median"], "grid": e.grid,
             "targets": e.target_tiles, "chance_level": e.chance_level, "tile_size": e.tile_size,
             "resize": e.resize,
             "median_undefined_as_zero": s.get("median_undefined_as_zero"), "ci_low": e.ci[0], "ci_high": e.ci[1],
             "cluster_ci_low": e.cluster_ci[0], "cluster_ci_high": e.cluster_ci[1],
             "mean": s["mean"], "q1": s["q1"], "q3": s["q3"], "mosaic_accuracy": e.mosaic_accuracy},
            cells,
            numeric=[h not in text_columns for h in headers],
            titles=[tips.get(h) for h in headers],
        ))
    return ('<div class="table-wrap">' + table(headers, rows, table_id=table_id,
                                               titles=[_SUMMARY_TITLES.get(h) for h in headers]) + "</div>")



def paired_section(evals: Sequence[EvaluationData], names: dict[int, str]) -> Section:
    """The paired Wilcoxon table of methods on the same mosaics (randomized models folded away)."""
    section = Section(
        "paired", "Paired comparison of methods",
        "Two methods on the same mosaics of the same model: Wilcoxon signed-rank test of the per-mosaic differences "
        "A − B (mosaics where either Focus is undefined are dropped). A small p-value says the methods differ "
        "systematically on these mosaics; the effect size is the matched-pairs rank-biserial correlation (-1 to 1, "
        "positive when A is higher). Per target class: the section Focus per target class.",
    )
    trained, randomized = _paired_rows(evals, names)
    if not trained and not randomized:
        section.missing = "No two methods were evaluated on the same mosaics of the same model, so there is nothing to pair."
        return section
    if trained:
        section.blocks.append('<div class="table-wrap">' + table(_PAIRED_HEADERS, trained, table_id="paired-table") + "</div>")
    else:
        section.missing = "No two methods were evaluated on the same mosaics of a trained model."
    if randomized:
        section.blocks.append(
            f"<details><summary>Randomized models ({len(randomized)} comparison{'s' if len(randomized) != 1 else ''})</summary>"
            '<div class="table-wrap">' + table(_PAIRED_HEADERS, randomized, table_id="paired-randomized-table")
            + "</div></details>"
        )
    return section


def _checkpoint_cell(e: EvaluationData, names: dict[int, str]) -> tuple[str, str]:
    where = f", weights {e.weights_path}" if e.weights_path else ""
    return names[e.checkpoint_id], f"{e.architecture}, sha256 {e.sha256[:16]}{where}"


def _mosaic_set_cell(e: EvaluationData) -> tuple[str, str]:
    """The short label of the set (id, dataset, tile size / resize) and its whole identity for the tooltip."""
    return e.set_label, e.set_description


def _ci_text(ci: tuple[float, float]) -> str:
    if any(math.isnan(v) for v in ci):
        return DASH
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _paired_rows(evals: Sequence[EvaluationData], names: dict[int, str]) -> tuple[list[str], list[str]]:
    """Wilcoxon rows for every pair of methods on the same mosaics: (trained rows, randomized rows)."""
    groups: dict[tuple, dict[str, EvaluationData]] = defaultdict(dict)
    for e in sorted(evals, key=lambda e: e.evaluation_id):
        if e.n:
            groups[(e.checkpoint_id, e.mosaic_set_id, e.randomization, e.stage, e.layer, e.seed,
                    e.audit_run_id)][e.method] = e
    trained, randomized = [], []
    for key in sorted(groups, key=lambda k: (k[0], k[1], RANDOMIZATION_ORDER.get(k[2], 9), k[3] or 0, str(k[4]),
                                             k[5] or 0, k[6] or 0)):
        methods = sorted(groups[key].values(), key=lambda e: method_key(e.method))
        for a, b in itertools.combinations(methods, 2):
            common, ia, ib = np.intersect1d(a.mosaic_ids, b.mosaic_ids, return_indices=True)
            if common.size == 0:
                continue
            result = stats.paired_test(a.focus[ia], b.focus[ib])
            significant = not math.isnan(result["p_value"]) and result["p_value"] < 0.05
            if result["n"] == 0:
                verdict = "no defined pair"
            elif not significant:
                verdict = "not significant"
            else:
                a_higher = (result["median_difference"], result["mean_difference"]) > (0.0, 0.0)
                verdict = f"{a.method if a_higher else b.method} higher"
            target = trained if a.randomization == "none" else randomized
            target.append(row(
                {"evaluation_a": a.evaluation_id, "evaluation_b": b.evaluation_id, "method_a": a.method,
                 "method_b": b.method, "n": result["n"], "median_difference": result["median_difference"],
                 "mean_difference": result["mean_difference"], "statistic": result["statistic"],
                 "p_value": result["p_value"], "rank_biserial": result["rank_biserial"]},
                [_checkpoint_cell(a, names)[0], _mosaic_set_cell(a)[0], a.randomization_label,
                 f"{a.method} #{a.evaluation_id}", f"{b.method} #{b.evaluation_id}",
                 fmt(result["n"]), fmt(result["median_difference"]), fmt(result["mean_difference"]),
                 fmt(result["statistic"]), fmt_p(result["p_value"]), fmt(result["rank_biserial"]), verdict],
                numeric=[False, False, False, False, False, True, True, True, True, True, True, False],
                classes=[""] * 9 + (["sig"] if significant else [""]) + ["", ""],
                titles=[_checkpoint_cell(a, names)[1], _mosaic_set_cell(a)[1]],
            ))
    return trained, randomized
