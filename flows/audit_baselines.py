"""What an audit evaluation is compared with: the previous audit, and the lineage's reference.

Two comparisons (``kind``) per audited checkpoint and method, each on the same mosaics (median change and a
paired Wilcoxon test from :mod:`flows.results.analysis`):

- ``previous``: the checkpoint's own previous audit (``same_checkpoint``: drift from code, library or data
  changes) or, on the first audit of a lineage's new checkpoint, the lineage's previous audited checkpoint
  (the highest version below it that an audit evaluated: a worse model);
- ``reference``: the lineage's reference checkpoint (the version ``focus checkpoint pin`` pinned, the version
  the pinned MLflow alias names now, else the lineage's first audited version; a checkpoint outside a
  lineage is its own reference), at its first audit on these mosaics. Each night compares with the same
  evaluation, so a series of small falls each under the threshold, or a bad version followed by a worse one,
  still fires once the total fall passes it, and keeps firing until the fall is undone or the team pins a
  new reference.

Each comparison also says which one changed (:func:`flows.results.analysis.change_cause`): ``model_focus_change``,
the median paired change of the model's own reliance on the target tiles (model Focus), and ``cause``
(``model``, ``explainer``, ``both`` or ``unclear``, the rule of :mod:`focus_core.cause`), from the reliance pass
every audit evaluation runs.

A comparison ``regressed`` when its median Focus fell by more than the threshold **and** the paired test is
significant at ``alpha``. When the earlier evaluation is on other mosaics (the data changed), the comparison
says so (``mosaic_set_changed``) and none is made.

Examples
--------
>>> from types import SimpleNamespace
>>> verdict(SimpleNamespace(threshold=0.05, alpha=0.05), change=-0.08, p_value=0.2)
False
>>> verdict(SimpleNamespace(threshold=0.05, alpha=0.05), change=-0.08, p_value=0.001)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import db
from flows.results import analysis
from flows.results.artifacts import number

__all__ = ["KINDS", "Baseline", "compare", "previous_baseline", "reference_baseline", "reference_missing", "verdict"]

#: The comparisons an audit makes, in the order its results list them.
KINDS = ("previous", "reference")


@dataclass(frozen=True)
class Baseline:
    """One comparison of a checkpoint x method: its ``kind``, the checkpoint compared with (``None``: none to
    compare with) and that checkpoint's candidate audit evaluations, preferred first."""

    kind: str
    compared: dict[str, Any] | None = None
    evaluations: list[Any] = field(default_factory=list)


def verdict(params: Any, change: float | None, p_value: float | None) -> bool:
    """Regressed: median Focus fell by more than ``params.threshold`` and the paired test's ``p < params.alpha``."""
    return change is not None and change < -params.threshold and p_value is not None and p_value < params.alpha


def previous_baseline(engine: Any, target: Any, method_id: int, audit_run_id: int) -> Baseline:
    """The ``previous`` comparison: the checkpoint's own earlier audits, else the lineage's previous audited one."""
    own = db.audit_evaluations(engine, target.checkpoint_id, method_id, before_audit_run=audit_run_id)
    if own:
        return Baseline("previous", {"sha256": target.sha256, "version": target.version, "label": target.label}, own)
    if target.lineage_id is None or target.version is None:
        return Baseline("previous")
    previous = db.previous_audited_checkpoint(engine, target.lineage_id, target.version)
    if previous is None:
        return Baseline("previous")
    earlier = db.audit_evaluations(engine, previous["checkpoint_id"], method_id, before_audit_run=audit_run_id)
    return Baseline("previous", previous, earlier) if earlier else Baseline("previous")


def _first_audits(engine: Any, checkpoint_id: int, method_id: int, audit_run_id: int,
                  skip: int | None = None) -> list[Any]:
    """The checkpoint's audit evaluations up to ``audit_run_id``, oldest first, without evaluation ``skip``."""
    found = db.audit_evaluations(engine, checkpoint_id, method_id, before_audit_run=audit_run_id + 1)
    return [e for e in reversed(found) if e.evaluation_id != skip]


def reference_baseline(engine: Any, target: Any, reference: dict[str, Any] | None, method_id: int,
                       audit_run_id: int, evaluation_id: int) -> Baseline:
    """The ``reference`` comparison: the reference checkpoint's first audits (up to this one), oldest first."""
    if reference is None:
        return Baseline("reference")
    earlier = _first_audits(engine, reference["checkpoint_id"], method_id, audit_run_id, skip=evaluation_id)
    return Baseline("reference", reference, earlier) if earlier else Baseline("reference")


def reference_missing(engine: Any, reference: dict[str, Any], method_ids: list[int], mosaic_set_id: int,
                      audit_run_id: int) -> bool:
    """Whether the reference checkpoint lacks a finished audit evaluation on these mosaics for some method."""
    return any(
        not [e for e in _first_audits(engine, reference["checkpoint_id"], m, audit_run_id)
             if e.mosaic_set_id == mosaic_set_id]
        for m in method_ids
    )


def compare(engine: Any, target: Any, entry: dict[str, Any], baseline: Baseline, params: Any) -> dict[str, Any]:
    """This audit's evaluation ``entry`` against ``baseline``'s first evaluation on the same mosaics."""
    evaluation_id, mosaic_set_id = int(entry["evaluation_id"]), int(entry["mosaic_set_id"])
    same_mosaics = [e for e in baseline.evaluations if e.mosaic_set_id == mosaic_set_id]
    earlier = same_mosaics[0] if same_mosaics else None
    test: dict[str, Any] = {"n": 0, "median_difference": None, "p_value": None}
    model_focus_change, cause = None, "unclear"
    if earlier is not None:
        test = analysis.paired_comparison(engine, evaluation_id, earlier.evaluation_id)
        moved = analysis.change_cause(engine, evaluation_id, earlier.evaluation_id)
        model_focus_change, cause = number(moved.model_focus_change), moved.cause
    median = number(entry.get("median_focus"))
    previous_median = None if earlier is None else number(earlier.median_focus)
    change = None if median is None or previous_median is None else median - previous_median
    p_value = number(test["p_value"])
    compared = baseline.compared
    compared_name = None
    if compared is not None:
        compared_name = (f"{target.lineage}-v{compared['version']}" if target.lineage is not None
                         else compared.get("label") or f"{target.architecture}-{compared['sha256'][:12]}")
    return {
        "significant": p_value is not None and p_value < params.alpha,
        "regressed": verdict(params, change, p_value),
        "median_change": change,
        "p_value": p_value,
        "model_focus_change": model_focus_change,
        "cause": cause,
        "method": entry["method_name"],
        "kind": baseline.kind,
        "lineage": target.lineage,
        "checkpoint_name": target.name,
        "compared_with_name": compared_name,
        "median_focus": median,
        "previous_median_focus": previous_median,
        "n_paired": int(test["n"]),
        "median_paired_difference": number(test["median_difference"]),
        "mosaic_set_changed": bool(baseline.evaluations) and earlier is None,
        "same_checkpoint": compared is not None and compared["sha256"] == target.sha256,
        "threshold": params.threshold,
        "alpha": params.alpha,
        "checkpoint_version": target.version,
        "compared_with_version": None if compared is None else compared.get("version"),
        "checkpoint": target.sha256,
        "compared_with": None if compared is None else compared["sha256"],
        "evaluation_id": evaluation_id,
        "previous_evaluation_id": None if earlier is None else earlier.evaluation_id,
        "mosaic_set_id": mosaic_set_id,
    }
