"""The audit, per target class: a shortcut one class learned shows in that class, not in the overall median.

For each checkpoint the audit compared (:mod:`flows.audit`), this module

1. evaluates the audit's probe mosaic sets (``AuditParams.probes``, :mod:`flows.probe_sets`) besides the clean
   one, with the same methods, in the same audit run;
2. compares, on the clean set and on each probe set, this audit's evaluation with the evaluation of the
   checkpoint it was compared with overall (the same ``compared_with`` and ``kind``) on the same mosaic set (for
   ``previous`` that checkpoint's newest earlier audit, for ``reference`` its first, as the overall comparison):
   :func:`focus_core.class_comparison.compare_classes`, a paired two-sided Wilcoxon test within each target class
   on the mosaics both scored, with the **Holm-Bonferroni** correction over the classes (``alpha`` is the
   family-wise level);
3. fires ``focus.audit.regressed`` for every class whose corrected test is significant and whose median Focus fell
   by more than the threshold, with ``class``, ``class_name`` and ``probe`` (``"clean"`` or the probe's name) in
   the payload and as resource labels (``focus.class``, ``focus.probe``), beside the method and comparison, and
   which one changed on that class's mosaics (``model_focus_change`` and ``cause``,
   :func:`flows.results.analysis.change_causes_by_class`: probe sets run the reliance pass as the clean one does).

A probe set that the checkpoint compared with was never evaluated on (a probe added today) has no baseline: it
is evaluated now and becomes the baseline of the next audit. Nothing here changes the overall comparison.

Examples
--------
>>> from flows.params import AuditParams
>>> params = AuditParams(probes=[{"name": "corner", "patch": {"kind": "corner_patch", "size": 3}}])
>>> audit(params)["class_regressions"]  # doctest: +SKIP
[{'lineage': 'digits-prod', 'method': 'gradcam', 'probe': 'corner', 'class': 3, 'median_change': -0.33, ...}]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from db import class_comparisons
from flows.evaluate import evaluate
from flows.params import AuditParams, EvaluateParams, ModelSpec
from flows.probe_sets import CLEAN
from flows.results import analysis
from flows.results.artifacts import best_effort, number
from focus_core.class_comparison import compare_classes

__all__ = ["compare_target", "report", "CLASS_REGRESSION_KEYS", "REGRESSED_EVENT"]

#: The event a class that fell fires: the overall regressions' (``flows.audit.REGRESSED_EVENT``).
REGRESSED_EVENT = "focus.audit.regressed"

#: The keys of each per-class regression in the audit's result and the event's payload.
CLASS_REGRESSION_KEYS = ("lineage", "checkpoint", "compared_with", "method", "kind", "probe", "class", "class_name",
                         "median_change", "p_value", "p_adjusted", "correction", "model_focus_change", "cause")
_PAYLOAD_EXTRA = ("checkpoint_name", "compared_with_name", "median_focus", "previous_median_focus", "n_paired",
                  "significant", "threshold", "alpha")
_TABLE = ("regressed", "significant", "probe", "class_name", "method", "kind", "median_change", "p_adjusted",
          "cause", "model_focus_change", "p_value", "median_focus", "previous_median_focus", "n_paired", "checkpoint_name", "compared_with_name")


def compare_target(engine: Any, target: Any, model: ModelSpec, results: list[dict[str, Any]], audit_run_id: int,
                   params: AuditParams) -> tuple[list[dict[str, Any]], list[str]]:
    """Evaluate the probe sets of one audited checkpoint and compare every set per target class.

    Parameters
    ----------
    engine
        The results store's engine.
    target
        The audited checkpoint (:class:`flows.audit`'s target: ``name``, ``sha256``, ``lineage``).
    model
        Its model spec, as the audit evaluated it.
    results
        The audit's overall results for this checkpoint (``evaluation_id``, ``method``, ``kind``,
        ``compared_with`` and their names): which evaluation each set is compared with.
    audit_run_id, params
        This audit run and its parameters.

    Returns
    -------
    (rows, failures)
        One row per set x method x class compared (``regressed`` where the class fell), and one line per probe
        set whose evaluation failed (the other sets are still compared).
    """
    sets: list[tuple[str, dict[str, int]]] = [(CLEAN, {r["method"]: int(r["evaluation_id"]) for r in results})]
    failures: list[str] = []
    for probe in params.probes:
        try:
            sets.append((probe.name, _evaluate_probe(engine, target, model, probe, audit_run_id, params)))
        except Exception as error:  # noqa: BLE001 - one broken probe set must not stop the audit
            failures.append(f"{target.name} probe {probe.name}: {error}")
    rows: list[dict[str, Any]] = []
    for result in results:
        if result.get("compared_with") is None:
            continue
        for probe_name, evaluations in sets:
            evaluation_id = evaluations.get(result["method"])
            if evaluation_id is not None:
                rows += _compare(engine, result, probe_name, evaluation_id, audit_run_id, params)
    return rows, failures


def _evaluate_probe(engine: Any, target: Any, model: ModelSpec, probe: Any, audit_run_id: int,
                    params: AuditParams) -> dict[str, int]:
    """Evaluate one probe set in this audit run: ``{method name: evaluation id}``."""
    outcome = evaluate.with_options(flow_run_name=f"evaluate {target.name} probe {probe.name} (audit {audit_run_id})")(
        EvaluateParams(model=model, dataset=probe.data(params.dataset), mosaics=probe.mosaic_set(params.mosaics),
                       methods=params.methods, run=params.run.as_run_spec(), model_reliance=True),
        audit_run_id=audit_run_id,
    )
    history = class_comparisons.audit_run_evaluations(engine, audit_run_id, int(outcome["mosaic_set_id"]),
                                                      target.sha256)
    return {row["method_name"]: int(row["evaluation_id"]) for row in history}


def _compare(engine: Any, result: dict[str, Any], probe: str, evaluation_id: int, audit_run_id: int,
             params: AuditParams) -> list[dict[str, Any]]:
    """One set's per-class comparison with the evaluation ``result`` was compared with, on the same mosaics.

    As in the overall comparison, ``previous`` compares with that checkpoint's newest earlier audit and ``reference``
    with its first audit (up to this one) on these mosaics.
    """
    pick = (class_comparisons.reference_audit_evaluation if result.get("kind") == "reference"
            else class_comparisons.earlier_audit_evaluation)
    baseline = pick(engine, evaluation_id, result["compared_with"], audit_run_id)
    if baseline is None:
        return []
    pairs = class_comparisons.paired_focus_by_class(engine, evaluation_id, baseline)
    names = class_comparisons.class_names(engine, evaluation_id)
    compared = compare_classes(pairs["focus_a"].to_numpy(float), pairs["focus_b"].to_numpy(float),
                               pairs["target_class"].to_numpy(int), alpha=params.alpha, threshold=params.threshold)
    causes = analysis.change_causes_by_class(engine, evaluation_id, baseline)
    rows = []
    for row in compared:
        label = int(row["class"])
        moved = causes.get(label)
        rows.append({
            "lineage": result.get("lineage"), "checkpoint": result["checkpoint"],
            "checkpoint_name": result.get("checkpoint_name"), "compared_with": result["compared_with"],
            "compared_with_name": result.get("compared_with_name"), "method": result["method"],
            "kind": result.get("kind"), "probe": probe, "class": label,
            "class_name": names[label] if label < len(names) else str(label),
            "evaluation_id": evaluation_id, "previous_evaluation_id": baseline,
            "median_focus": number(row["median_focus"]), "previous_median_focus": number(row["previous_median_focus"]),
            "median_change": number(row["median_change"]), "n_paired": row["n"], "p_value": number(row["p_value"]),
            "p_adjusted": number(row["p_adjusted"]), "correction": row["correction"],
            "significant": row["significant"], "threshold": params.threshold, "alpha": params.alpha,
            "regressed": row["fell"],
            "model_focus_change": None if moved is None else number(moved.model_focus_change),
            "cause": "unclear" if moved is None else moved.cause,
        })
    return rows


def report(rows: list[dict[str, Any]], audit_run_id: int, logger: Any,
           resource: Callable[[dict[str, Any], dict[str, str]], dict[str, str]],
           alert_on: Sequence[str] = ("previous", "reference")) -> list[dict[str, Any]]:
    """Fire ``focus.audit.regressed`` for every class that fell in a comparison of a kind in ``alert_on``, log
    it, show the table; return the regressions.

    ``resource(row, labels)`` gives the event's resource (the lineage's, or the checkpoint's outside a lineage),
    as the overall regressions have it.
    """
    regressed, seen = [], set()
    for row in rows:  # the previous and the reference comparison may be the same one: one event for it
        key = (row["evaluation_id"], row["previous_evaluation_id"], row["class"])
        if row["regressed"] and row["kind"] in alert_on and key not in seen:
            seen.add(key)
            regressed.append(row)
    for row in regressed:
        labels = {"focus.method": row["method"], "focus.comparison": str(row["kind"]),
                  "focus.checkpoint.sha256": row["checkpoint"], "focus.class": str(row["class"]),
                  "focus.probe": row["probe"]}
        related = [
            {"prefect.resource.id": f"focus.audit-run.{audit_run_id}", "prefect.resource.role": "audit-run"},
            {"prefect.resource.id": f"focus.checkpoint.{row['checkpoint']}", "prefect.resource.role": "checkpoint"},
            {"prefect.resource.id": f"focus.checkpoint.{row['compared_with']}",
             "prefect.resource.role": "compared-with"},
        ]
        emit_event(event=REGRESSED_EVENT, resource=resource(row, labels), related=related,
                   payload={k: row[k] for k in (*CLASS_REGRESSION_KEYS, *_PAYLOAD_EXTRA)})
        logger.warning("Focus of %s with %s on class %s fell by %.3f on the %s mosaics since %s (%s, Holm-adjusted "
                       "p = %.2g)", row["checkpoint_name"], row["method"], row["class_name"], -row["median_change"],
                       row["probe"], row["compared_with_name"], row["kind"], row["p_adjusted"])
    if rows:
        best_effort(
            create_table_artifact,
            [{k: round(r[k], 4) if isinstance(r[k], float) else r[k] for k in _TABLE} for r in rows],
            key="focus-audit-classes",
            description=f"Audit run {audit_run_id}, per target class: {len(regressed)} class(es) fell "
                        "(Holm-Bonferroni over the classes)",
        )
    return [{k: r[k] for k in CLASS_REGRESSION_KEYS} for r in regressed]
