"""The ``audit`` flow: the nightly check that no lineage, and no audited checkpoint, lost Focus.

Each run opens one audit run and evaluates the standard methods on the audit mosaic set for

- the newest checkpoint (highest version) of every lineage marked for auditing (or of the lineages
  named in ``params.lineages``), and
- every checkpoint marked for auditing outside a lineage (or those named in ``params.checkpoints``).

With ``params.follow_alias`` (``focus audit --follow-alias champion``), each run first asks the MLflow
registry which version that alias points at now, for each lineage to audit whose source is a registered
model (:func:`flows.weights.lineages.follow_alias`), and registers it into the lineage when it is new, so the
newest checkpoint is the alias's version; an unreachable server or a missing alias stops the run, in one
sentence, before anything is written.

Each evaluation is then compared, on the same mosaics, with the checkpoint's previous audit (or the lineage's
previous audited version) and with the lineage's reference (kinds ``previous`` and ``reference``, see
:mod:`flows.audit_baselines`); the audit first evaluates the reference checkpoint when it has no audit on
these mosaics yet. A comparison regressed when median Focus fell by more than the threshold and the paired
test is significant at ``alpha``; one whose kind is in ``params.alert_on`` emits the Prefect event
``focus.audit.regressed``, one per lineage (or checkpoint), method and kind (a reference comparison with the
same earlier evaluation as the previous one emits none of its own), whose resource is
``focus.lineage.<name>`` (``focus.checkpoint.<sha256>`` outside a lineage) labelled with ``focus.method``
and ``focus.comparison`` (the kind); its payload names the lineage, both checkpoints, the method, the change,
the p-value, the kind, and which one changed (``model_focus_change`` and ``cause``: every audit evaluation runs
the model-reliance pass, :mod:`focus_core.cause`). Automations match the event name and labels (``deployments/automations.yaml``);
the audit decides "regressed" itself.

Examples
--------
>>> from flows.params import AuditParams
>>> audit(AuditParams(threshold=0.05, lineages=["resnet18-prod"]))["regressions"]  # doctest: +SKIP
[{'lineage': 'resnet18-prod', 'checkpoint': '9f2c...', 'compared_with': '41ab...', 'method': 'gradcam', ...}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

import db
from flows import audit_baselines as baselines
from flows import audit_classes
from flows.results.names import names_of
from flows.weights import lineages, weight_store
from flows.worker import devices, leases, store
from flows.evaluate import evaluate
from flows.results.artifacts import number
from flows.params import AuditParams, EvaluateParams, ModelSpec
from flows.results.names import audit_name, named
from flows.results.artifacts import best_effort
from focus_core.errors import FocusError

__all__ = ["audit", "REGRESSED_EVENT", "COMPLETED_EVENT", "KINDS", "REGRESSION_KEYS", "checkpoint_resource",
           "lineage_resource"]

REGRESSED_EVENT = "focus.audit.regressed"
COMPLETED_EVENT = "focus.audit.completed"
#: Which earlier evaluation a result is compared with (:mod:`flows.audit_baselines`).
KINDS = baselines.KINDS
#: The keys of each regression in the flow's result, the event's payload and ``focus audit --format json``.
REGRESSION_KEYS = ("lineage", "checkpoint", "compared_with", "method", "median_change", "p_value", "kind",
                   "model_focus_change", "cause")
_PAYLOAD_EXTRA = ("checkpoint_version", "compared_with_version", "median_focus", "previous_median_focus", "n_paired",
                  "significant", "threshold", "alpha", "same_checkpoint")
#: The audit table artifact's columns: the verdict first, internal ids last (the rest of a result follows them).
_TABLE_FIRST = ("significant", "regressed", "median_change", "p_value", "cause", "model_focus_change", "method",
                "kind", "lineage", "checkpoint_name", "compared_with_name", "median_focus", "previous_median_focus",
                "n_paired")
_TABLE_LAST = ("checkpoint_version", "compared_with_version", "evaluation_id", "previous_evaluation_id",
               "mosaic_set_id")
_NOT_SHOWN = ("checkpoint", "compared_with", "threshold", "alpha")


def checkpoint_resource(sha256: str, name: str | None = None, **labels: str) -> dict[str, str]:
    """The Prefect resource of a checkpoint, as automations match it."""
    resource = {"prefect.resource.id": f"focus.checkpoint.{sha256}", "focus.checkpoint.sha256": sha256}
    if name:
        resource["prefect.resource.name"] = name
    resource.update({k: str(v) for k, v in labels.items()})
    return resource


def lineage_resource(name: str, **labels: str) -> dict[str, str]:
    """The Prefect resource of a lineage, as automations match it."""
    resource = {"prefect.resource.id": f"focus.lineage.{name}", "prefect.resource.name": name, "focus.lineage": name}
    resource.update({k: str(v) for k, v in labels.items()})
    return resource


@dataclass(frozen=True)
class _Target:
    """A checkpoint this audit evaluates: the newest of a lineage, or a marked one outside any lineage."""

    checkpoint_id: int
    sha256: str
    architecture: str
    num_classes: int
    in_channels: int | None
    path: str | None
    label: str | None
    lineage: str | None = None
    lineage_id: int | None = None
    version: int | None = None
    reference_version: int | None = None
    reference_alias: str | None = None

    @property
    def name(self) -> str:
        if self.lineage is not None:
            return f"{self.lineage}-v{self.version}"
        return self.label or f"{self.architecture}-{self.sha256[:12]}"

    @classmethod
    def of(cls, row: dict[str, Any]) -> _Target:
        def optional(key: str) -> int | None:
            value = number(row.get(key))
            return None if value is None else int(value)

        def text(key: str) -> str | None:  # a frame holding some None and some text gives NaN for the None
            value = row.get(key)
            return value if isinstance(value, str) else None

        return cls(int(row["checkpoint_id"]), row["sha256"], row["architecture"], int(row["num_classes"]),
                   optional("in_channels"), text("path"), text("label"), text("lineage"),
                   optional("lineage_id"), optional("version"), optional("reference_version"),
                   text("reference_alias"))


def _marked_checkpoints(engine: Any, params: AuditParams) -> list[_Target]:
    rows = db.checkpoints_to_audit(engine).to_dict("records")
    # a checkpoint several training runs produced byte for byte is named by all of them
    names = names_of(engine, {int(r["checkpoint_id"]): r.get("label") for r in rows})
    rows = [{**r, "label": names[int(r["checkpoint_id"])]} for r in rows]
    if params.checkpoints:
        wanted = set(params.checkpoints)
        unknown = wanted - {r["sha256"] for r in rows}
        if unknown:
            raise FocusError(
                f"Checkpoint(s) {', '.join(sorted(s[:12] for s in unknown))} are not marked for auditing: "
                "mark them (focus train --audit, or db.set_checkpoint_audit) or leave checkpoints empty."
            )
        return [_Target.of({**r, "lineage_id": None}) for r in rows if r["sha256"] in wanted]
    if params.lineages:
        return []
    return [_Target.of(r) for r in rows if number(r.get("lineage_id")) is None]  # a lineage is audited as one


def _targets(engine: Any, params: AuditParams) -> list[_Target]:
    """The newest checkpoint of each lineage to audit, then the marked checkpoints outside lineages."""
    lineages: list[_Target] = []
    if params.lineages or not params.checkpoints:
        frame = db.lineages_to_audit(engine, list(params.lineages) if params.lineages else None)
        lineages = [_Target.of(r) for r in frame.to_dict("records")]
    return lineages + _marked_checkpoints(engine, params)


def _follow_alias(engine: Any, params: AuditParams, logger: Any) -> list[dict[str, Any]]:
    """Register the version ``params.follow_alias`` points at now into each registry lineage to audit."""
    if not params.follow_alias or (params.checkpoints and not params.lineages):
        return []  # no lineage is audited: none to follow
    entries = lineages.follow_alias(engine, params.follow_alias, list(params.lineages) if params.lineages else None)
    if not entries:
        logger.info("No lineage to audit comes from the MLflow Model Registry: alias %r has nothing to follow",
                    params.follow_alias)
    for entry in entries:
        logger.info("Alias %r of %s is %s: %s version %d of lineage %r", params.follow_alias,
                    entry["registered_model"], entry["weights"], "registered as" if entry["added"] else "already",
                    entry["version"], entry["lineage"])
    return [{k: entry[k] for k in ("lineage", "weights", "version", "added")} for entry in entries]


def _check_weights(target: _Target) -> None:
    """The recorded weights are where the store says, unchanged (same sha256), before any evaluation."""
    if not target.path:
        raise FocusError(
            f"Checkpoint {target.sha256[:12]} has no recorded weights location: register it again or unmark it "
            "(or its lineage)."
        )
    weight_store.local_copy(target.path, expected_sha256=target.sha256)  # FocusError when missing or changed


@flow(name="audit", flow_run_name=named(audit_name, AuditParams), validate_parameters=True, persist_result=False)
def audit(params: AuditParams = AuditParams()) -> dict[str, Any]:  # noqa: B008 - the nightly run needs no parameters
    """Audit the newest checkpoint of every lineage, and every checkpoint, marked for auditing.

    Args:
        params: Methods, audit mosaic set, regression threshold, which lineages and checkpoints, how to run.

    Returns a dict with the audit run id, one result per checkpoint, method and comparison kind (the
    median Focus, its change, the paired test, whether it regressed) and the regressions (``REGRESSION_KEYS``).
    """
    devices.require_device(params.run.device)
    logger = get_run_logger()
    engine = store.engine_for(params.run.database_url)
    followed = _follow_alias(engine, params, logger)
    targets = _targets(engine, params)
    newest = {t.lineage: t.version for t in targets if t.lineage is not None}
    for entry in followed:
        if newest.get(entry["lineage"], entry["version"]) != entry["version"]:
            logger.warning("Alias %r names version %d of lineage %r, not its newest (%s): the audit follows the "
                           "newest", params.follow_alias, entry["version"], entry["lineage"],
                           newest[entry["lineage"]])
    audit_run_id = leases.open_audit_run(
        engine, name=params.name, threshold=params.threshold,
        metadata={"methods": [m.model_dump(mode="json") for m in params.methods],
                  "mosaics": params.mosaics.model_dump(mode="json"), "dataset": params.dataset.model_dump(mode="json"),
                  "lineages": sorted({t.lineage for t in targets if t.lineage is not None}),
                  **({"followed": followed} if params.follow_alias else {})},
    )
    logger.info("Audit run %d: %d lineage(s) and %d checkpoint(s) to audit", audit_run_id,
                sum(t.lineage is not None for t in targets), sum(t.lineage is None for t in targets))

    results: list[dict[str, Any]] = []
    failures: list[str] = []
    class_results: list[dict[str, Any]] = []  # per target class, clean and probe sets (flows.audit_classes)
    for target in targets:
        try:
            _evaluate(target, params, audit_run_id)
        except Exception as error:  # noqa: BLE001 - one broken checkpoint must not stop the nightly audit
            failures.append(f"{target.name}: {error}")
            logger.error("Audit of %s failed: %s", target.name, error)
            continue
        history = db.checkpoint_history(engine, target.checkpoint_id)
        entries = history[history["audit_run_id"] == audit_run_id].to_dict("records")
        reference = _reference(engine, target, entries, params, audit_run_id, failures, logger)
        for entry in entries:
            method_id = int(entry["method_id"])
            for baseline in (baselines.previous_baseline(engine, target, method_id, audit_run_id),
                             baselines.reference_baseline(engine, target, reference, method_id, audit_run_id,
                                                          int(entry["evaluation_id"]))):
                result = baselines.compare(engine, target, entry, baseline, params)
                if result["mosaic_set_changed"]:
                    logger.warning("%s with %s: the audit mosaic set changed since the evaluation it is compared "
                                   "with (%s, the data changed): no paired comparison; this audit is the new "
                                   "baseline", target.name, result["method"], result["kind"])
                results.append(result)
        rows, failed = audit_classes.compare_target(engine, target, _model_spec(target), [
            r for r in results if r["checkpoint"] == target.sha256], audit_run_id, params)
        class_results, failures = class_results + rows, failures + failed

    alerts = _alerts(results, params)
    for result in alerts:
        _emit_regression(result, audit_run_id)
    for result in (r for r in results if r["regressed"]):
        logger.warning("Focus of %s with %s fell by %.3f since %s (%s, threshold %.3f, p = %.2g)%s",
                       result["checkpoint_name"], result["method"], -result["median_change"],
                       result["compared_with_name"], result["kind"], params.threshold, result["p_value"],
                       "" if any(r is result for r in alerts) else ": no event (see alert_on)")
    regressions = [{k: result[k] for k in REGRESSION_KEYS} for result in alerts]
    class_regressions = audit_classes.report(class_results, audit_run_id, logger, _class_resource, params.alert_on)
    emit_event(
        event=COMPLETED_EVENT,
        resource={"prefect.resource.id": f"focus.audit-run.{audit_run_id}"},
        payload={"lineages": sum(t.lineage is not None for t in targets),
                 "checkpoints": sum(t.lineage is None for t in targets), "regressions": len(alerts),
                 "failures": len(failures)},
    )
    db.finish_audit_run(engine, audit_run_id, status="failed" if failures else "finished",
                        metadata={"regressions": regressions, "failures": failures,
                                  **({"followed": followed} if params.follow_alias else {}),
                                  "class_regressions": class_regressions})
    if results:
        best_effort(create_table_artifact, [_table_row(r) for r in results], key="focus-audit",
                    description=f"Audit run {audit_run_id}: {len(alerts)} regression(s) beyond {params.threshold} "
                    f"significant at alpha {params.alpha} (alerting on {', '.join(params.alert_on)})")
    if failures:
        raise RuntimeError(f"The audit of {len(failures)} checkpoint(s) failed: {'; '.join(failures)}")
    return {"audit_run_id": audit_run_id, "results": results, "regressions": regressions, "followed": followed,
            "class_results": class_results, "class_regressions": class_regressions}


def _model_spec(target: _Target) -> ModelSpec:
    """The model of an audited checkpoint, as its evaluations name it."""
    return ModelSpec(architecture=target.architecture, weights=target.path, num_classes=target.num_classes,
                     in_channels=target.in_channels, label=target.label)


def _evaluate(target: _Target, params: AuditParams, audit_run_id: int) -> None:
    """Evaluate the audit's methods on ``target``'s weights (checked first), as part of the audit run."""
    _check_weights(target)
    spec = _model_spec(target)
    evaluate.with_options(flow_run_name=f"evaluate {target.name} {_methods(params)} (audit {audit_run_id})")(
        EvaluateParams(model=spec, dataset=params.dataset, mosaics=params.mosaics, methods=params.methods,
                       run=params.run.as_run_spec(), model_reliance=True),
        audit_run_id=audit_run_id,
    )


def _reference(engine: Any, target: _Target, entries: list[dict[str, Any]], params: AuditParams,
               audit_run_id: int, failures: list[str], logger: Any) -> dict[str, Any] | None:
    """The reference checkpoint ``target`` is compared with, evaluated in this audit when it has no audit on
    these mosaics yet; ``None`` (and a failure recorded) when it cannot be found or evaluated."""
    if target.lineage_id is None:  # a checkpoint outside a lineage: its own first audit
        return {"checkpoint_id": target.checkpoint_id, "sha256": target.sha256, "version": None,
                "label": target.label}
    try:
        version = target.reference_version
        if target.reference_alias:  # the version the pinned alias names now, registered when new
            (entry,) = lineages.follow_alias(engine, target.reference_alias, [str(target.lineage)])
            version = int(entry["version"])
        reference = db.reference_checkpoint(engine, target.lineage_id, version)
        if reference is None and version is not None:
            raise FocusError(f"The pinned reference, version {version} of lineage {target.lineage!r}, is not there: "
                             "pin another with focus checkpoint pin.")
        if reference is None or reference["checkpoint_id"] == target.checkpoint_id or not entries:
            return reference
        method_ids = sorted({int(e["method_id"]) for e in entries})
        if baselines.reference_missing(engine, reference, method_ids, int(entries[0]["mosaic_set_id"]),
                                       audit_run_id):
            logger.info("Evaluating the reference of lineage %r, version %d: it has no audit on these mosaics",
                        target.lineage, reference["version"])
            _evaluate(_Target.of({**reference, "lineage": target.lineage, "lineage_id": target.lineage_id}),
                      params, audit_run_id)
        return reference
    except Exception as error:  # noqa: BLE001 - the previous comparison still runs
        failures.append(f"{target.name} (its reference): {error}")
        logger.error("The reference of %s could not be evaluated: %s", target.name, error)
        return None


def _alerts(results: list[dict[str, Any]], params: AuditParams) -> list[dict[str, Any]]:
    """The regressed results whose kind is in ``params.alert_on``, one per earlier evaluation compared with."""
    alerts, seen = [], set()
    for result in results:
        key = (result["evaluation_id"], result["previous_evaluation_id"])
        if result["regressed"] and result["kind"] in params.alert_on and key not in seen:
            seen.add(key)
            alerts.append(result)
    return alerts


def _table_row(result: dict[str, Any]) -> dict[str, Any]:
    """One row of the audit table artifact: the verdict first, names and numbers, internal ids last."""
    middle = [k for k in result if k not in (*_TABLE_FIRST, *_TABLE_LAST, *_NOT_SHOWN)]
    return {k: _round(result[k]) for k in (*_TABLE_FIRST, *middle, *_TABLE_LAST) if k in result}


def _emit_regression(result: dict[str, Any], audit_run_id: int) -> None:
    """``focus.audit.regressed`` for one lineage (or checkpoint) and method."""
    labels = {"focus.method": result["method"], "focus.comparison": result["kind"],
              "focus.checkpoint.sha256": result["checkpoint"]}
    if result["lineage"] is not None:
        resource = lineage_resource(result["lineage"], **labels)
    else:
        resource = checkpoint_resource(result["checkpoint"], result["checkpoint_name"], **labels)
    related = [
        {"prefect.resource.id": f"focus.audit-run.{audit_run_id}", "prefect.resource.role": "audit-run"},
        {"prefect.resource.id": f"focus.checkpoint.{result['checkpoint']}", "prefect.resource.role": "checkpoint"},
        {"prefect.resource.id": f"focus.checkpoint.{result['compared_with']}",
         "prefect.resource.role": "compared-with"},
    ]
    emit_event(event=REGRESSED_EVENT, resource=resource, related=related,
               payload={k: result[k] for k in (*REGRESSION_KEYS, *_PAYLOAD_EXTRA)})


def _class_resource(row: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    if row["lineage"] is not None:
        return lineage_resource(row["lineage"], **labels)
    return checkpoint_resource(row["checkpoint"], row["checkpoint_name"], **labels)


def _methods(params: AuditParams) -> str:
    return "+".join(m.name for m in params.methods)


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
