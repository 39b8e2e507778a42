"""The ``audit`` flow: the nightly check that no audited checkpoint lost Focus.

For every checkpoint marked for auditing it evaluates the standard methods on the audit mosaic
set as part of one audit run, compares each evaluation with the same checkpoint, method and
mosaics in the previous audit (median change and a paired Wilcoxon test on the same mosaics),
and emits the Prefect event ``focus.audit.regressed`` when median Focus fell by more than the
threshold. Automations match the event name and its resource labels
(``prefect.resource.id = focus.checkpoint.<sha256>``, ``focus.method``); the audit flow decides
"regressed" itself, so no automation needs to compare numbers.

Examples
--------
>>> from flows.params import AuditParams
>>> audit(AuditParams(threshold=0.05))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

import db
from flows import analysis, devices, store
from flows.evaluate import evaluate
from flows.jsonsafe import number
from flows.params import AuditParams, EvaluateParams, ModelSpec
from flows.run_names import audit_name, named
from focus_core import models
from focus_core.errors import FocusError

__all__ = ["audit", "REGRESSED_EVENT", "COMPLETED_EVENT", "checkpoint_resource"]

REGRESSED_EVENT = "focus.audit.regressed"
COMPLETED_EVENT = "focus.audit.completed"


def checkpoint_resource(sha256: str, name: str | None = None, **labels: str) -> dict[str, str]:
    """The Prefect resource of a checkpoint, as automations match it."""
    resource = {"prefect.resource.id": f"focus.checkpoint.{sha256}", "focus.checkpoint.sha256": sha256}
    if name:
        resource["prefect.resource.name"] = name
    resource.update({k: str(v) for k, v in labels.items()})
    return resource


def _audited(engine: Any, params: AuditParams) -> list[dict[str, Any]]:
    frame = db.checkpoints_to_audit(engine)
    rows = frame.to_dict("records")
    if params.checkpoints:
        wanted = set(params.checkpoints)
        unknown = wanted - {r["sha256"] for r in rows}
        if unknown:
            raise FocusError(
                f"Checkpoint(s) {', '.join(sorted(s[:12] for s in unknown))} are not marked for auditing: "
                "mark them (focus train --audit, or db.set_checkpoint_audit) or leave checkpoints empty."
            )
        rows = [r for r in rows if r["sha256"] in wanted]
    return rows


@flow(name="audit", flow_run_name=named(audit_name, AuditParams), validate_parameters=True, persist_result=False)
def audit(params: AuditParams = AuditParams()) -> dict[str, Any]:  # noqa: B008 - the nightly run needs no parameters
    """Audit every checkpoint marked for auditing; emit ``focus.audit.regressed`` when Focus fell.

    Args:
        params: Methods, audit mosaic set, regression threshold, which checkpoints, how to run.

    Returns a dict with the audit run id and, per checkpoint and method, the median Focus, the
    change since the previous audit, the paired test and whether it regressed.
    """
    devices.require_device(params.run.device)
    logger = get_run_logger()
    engine = store.engine_for(params.run.database_url)
    checkpoints = _audited(engine, params)
    audit_run_id = db.start_audit_run(
        engine, name=params.name, threshold=params.threshold,
        metadata={"methods": [m.model_dump(mode="json") for m in params.methods],
                  "mosaics": params.mosaics.model_dump(mode="json"), "dataset": params.dataset.model_dump(mode="json")},
    )
    logger.info("Audit run %d: %d checkpoint(s) marked for auditing", audit_run_id, len(checkpoints))

    results: list[dict[str, Any]] = []
    failures: list[str] = []
    for row in checkpoints:
        name = row["label"] or f"{row['architecture']}-{row['sha256'][:12]}"
        try:
            if not row["path"] or models.weights_sha256(row["path"]) != row["sha256"]:
                raise FocusError(
                    f"The weights file {row['path']!r} of checkpoint {row['sha256'][:12]} is missing or changed: "
                    "restore it or unmark the checkpoint."
                )
            spec = ModelSpec(architecture=row["architecture"], weights=row["path"], num_classes=int(row["num_classes"]),
                             in_channels=None if row["in_channels"] is None else int(row["in_channels"]),
                             label=row["label"])
            evaluate.with_options(flow_run_name=f"evaluate {name} {_methods(params)} (audit {audit_run_id})")(
                EvaluateParams(model=spec, dataset=params.dataset, mosaics=params.mosaics, methods=params.methods,
                               run=params.run),
                audit_run_id=audit_run_id,
            )
        except Exception as error:  # noqa: BLE001 - one broken checkpoint must not stop the nightly audit
            failures.append(f"{name}: {error}")
            logger.error("Audit of %s failed: %s", name, error)
            continue
        history = db.checkpoint_history(engine, int(row["checkpoint_id"]))
        for entry in history[history["audit_run_id"] == audit_run_id].to_dict("records"):
            results.append(_compare(engine, row, name, entry, params))

    regressed = [r for r in results if r["regressed"]]
    for result in regressed:
        emit_event(
            event=REGRESSED_EVENT,
            resource=checkpoint_resource(result["sha256"], result["checkpoint"], **{"focus.method": result["method"]}),
            related=[{"prefect.resource.id": f"focus.audit-run.{audit_run_id}", "prefect.resource.role": "audit-run"}],
            payload={k: result[k] for k in ("median_focus", "previous_median_focus", "median_change", "p_value",
                                             "significant", "n_paired", "threshold")},
        )
        logger.warning("Focus of %s with %s fell by %.3f (threshold %.3f)", result["checkpoint"], result["method"],
                       -result["median_change"], params.threshold)
    emit_event(
        event=COMPLETED_EVENT,
        resource={"prefect.resource.id": f"focus.audit-run.{audit_run_id}"},
        payload={"checkpoints": len(checkpoints), "regressions": len(regressed), "failures": len(failures)},
    )
    status = "failed" if failures else "finished"
    db.finish_audit_run(engine, audit_run_id, status=status, metadata={
        "regressions": [{k: r[k] for k in ("sha256", "method", "median_change", "p_value")} for r in regressed],
        "failures": failures,
    })
    if results:
        create_table_artifact(
            [{k: _round(v) for k, v in r.items() if k not in ("sha256", "threshold")} for r in results],
            key="focus-audit",
            description=f"Audit run {audit_run_id}: {len(regressed)} regression(s) beyond {params.threshold}",
        )
    if failures:
        raise RuntimeError(f"The audit of {len(failures)} checkpoint(s) failed: {'; '.join(failures)}")
    return {"audit_run_id": audit_run_id, "results": results, "regressions": len(regressed)}


def _compare(engine: Any, row: dict[str, Any], name: str, entry: dict[str, Any], params: AuditParams) -> dict[str, Any]:
    """This audit's evaluation against the previous audit's, on the same mosaics."""
    previous = entry.get("previous_evaluation_id")
    has_previous = number(previous) is not None
    test: dict[str, Any] = {"n": 0, "median_difference": None, "p_value": None}
    if has_previous:
        test = analysis.paired_comparison(engine, int(entry["evaluation_id"]), int(previous))
    change = number(entry.get("median_change")) if has_previous else None
    return {
        "checkpoint": name,
        "sha256": row["sha256"],
        "method": entry["method_name"],
        "evaluation_id": int(entry["evaluation_id"]),
        "previous_evaluation_id": int(previous) if has_previous else None,
        "median_focus": number(entry.get("median_focus")),
        "previous_median_focus": number(entry.get("previous_median_focus")) if has_previous else None,
        "median_change": change,
        "n_paired": int(test["n"]),
        "median_paired_difference": number(test["median_difference"]),
        "p_value": number(test["p_value"]),
        "significant": number(test["p_value"]) is not None and float(test["p_value"]) < params.alpha,
        "threshold": params.threshold,
        "regressed": change is not None and change < -params.threshold,
    }


def _methods(params: AuditParams) -> str:
    return "+".join(m.name for m in params.methods)


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
