"""The audit per target class: a class whose Focus falls on a probe set fires an event naming the class and probe.

The numbers are controlled: the serving stack's Focus is halved for one class on the corner-patch probe set only
(as a model with a shortcut for that class would show), on a real Prefect API and a real PostgreSQL store.
"""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select, text

import db
from db.models import AuditRun
from db import class_comparisons
from flows import audit as audit_module
from flows import audit_classes, tasks
from flows.params import AuditParams, DatasetSpec, ModelSpec
from flows.worker import caches, record, store

SHORTCUT_CLASS = 3


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    db.upgrade(postgres_database)
    return postgres_database


def _params(url: str, probes: list[dict]) -> AuditParams:
    return AuditParams(
        name="nightly", methods=[{"name": "gradcam"}], mosaics={"split": "test", "per_class": 10, "seed": 5},
        threshold=0.05, probes=probes,
        run={"device": "cpu", "batch_size": 64, "chunk_size": 128, "database_url": url},
    )


def test_a_class_that_falls_on_a_probe_set_fires_an_event_naming_class_and_probe(
    prefect_api, postgres_url, digits_weights, monkeypatch
):
    engine = store.engine_for(postgres_url)
    checkpoint_id, sha = record.register_checkpoint(
        engine, ModelSpec(weights=digits_weights, label="digits-prod"), DatasetSpec()
    )
    db.set_checkpoint_audit(engine, checkpoint_id, True)
    events: list[dict] = []
    for module in (audit_module, audit_classes):
        real = module.emit_event
        monkeypatch.setattr(module, "emit_event", lambda real=real, **kw: (events.append(kw), real(**kw))[1])
    params = _params(postgres_url, [{"name": "corner", "patch": {"kind": "corner_patch", "size": 3, "seed": 1}}])

    first = audit_module.audit(params)
    assert first["class_results"] == [] and first["class_regressions"] == []  # nothing to compare with yet
    assert len(db.checkpoint_history(engine, checkpoint_id)) == 2  # the clean and the probe set, both audited

    real_explain = tasks.explain_chunk

    def shortcut(request):  # class 3's explanations move to the stamped tiles: on probe mosaics only
        scores = real_explain(request)
        sums, focus, predicted = scores
        if request.mosaics.probe is not None:
            targets = caches.manifest_tensors(request.dataset, request.mosaics, request.model).targets
            is_class = targets[np.asarray(request.positions)].numpy() == SHORTCUT_CLASS
            focus = np.where(is_class, focus * 0.5, focus)
        return tasks.ChunkScores(sums, focus, predicted, scores.batch_size)

    monkeypatch.setattr(tasks, "explain_chunk", shortcut)
    events.clear()
    second = audit_module.audit(params)

    overall = second["results"]  # against the previous audit and the reference: here the same evaluation
    assert [r["kind"] for r in overall] == ["previous", "reference"]
    assert all(not r["regressed"] and r["median_change"] == pytest.approx(0.0) for r in overall)  # clean: no change
    rows = second["class_results"]
    assert {(r["probe"], r["class"]) for r in rows} == {(p, c) for p in ("clean", "corner") for c in range(10)}
    assert all(r["correction"] == "holm" for r in rows)
    (regression,) = second["class_regressions"]
    assert (regression["probe"], regression["class"], regression["class_name"]) == ("corner", 3, "3")
    assert regression["method"] == "gradcam" and regression["kind"] == "previous"  # one event for both kinds
    assert regression["median_change"] < -0.05 and regression["p_adjusted"] < 0.05
    assert regression["compared_with"] == sha and regression["checkpoint"] == sha

    fired = [e for e in events if e["event"] == "focus.audit.regressed"]
    assert len(fired) == 1
    assert fired[0]["resource"]["focus.probe"] == "corner" and fired[0]["resource"]["focus.class"] == "3"
    assert fired[0]["resource"]["prefect.resource.id"] == f"focus.checkpoint.{sha}"
    assert fired[0]["payload"]["class"] == 3 and fired[0]["payload"]["probe"] == "corner"
    assert audit_classes.REGRESSED_EVENT == audit_module.REGRESSED_EVENT
    with engine.connect() as connection:  # the audit run's record names them too
        stored = connection.scalar(select(AuditRun.metadata_).where(AuditRun.id == second["audit_run_id"]))
    assert [(r["probe"], r["class"]) for r in stored["class_regressions"]] == [("corner", SHORTCUT_CLASS)]


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_the_reads_return_one_evaluations_pairs_with_their_classes(prefect_api, kind, request, digits_weights):
    url = request.getfixturevalue("postgres_url" if kind == "postgres" else "sqlite_url")
    engine = store.engine_for(url)
    checkpoint_id, sha = record.register_checkpoint(engine, ModelSpec(weights=digits_weights), DatasetSpec())
    db.set_checkpoint_audit(engine, checkpoint_id, True)
    params = _params(url, [])
    first = audit_module.audit(params)
    second = audit_module.audit(params)
    now, before = second["results"][0]["evaluation_id"], first["results"][0]["evaluation_id"]
    assert class_comparisons.earlier_audit_evaluation(engine, now, sha, second["audit_run_id"]) == before
    assert class_comparisons.earlier_audit_evaluation(engine, now, sha, second["audit_run_id"] + 1) == now
    assert class_comparisons.earlier_audit_evaluation(engine, now, "0" * 64, second["audit_run_id"]) is None
    assert class_comparisons.audit_run_evaluations(engine, second["audit_run_id"],
                                                   second["results"][0]["mosaic_set_id"], sha) == [
        {"evaluation_id": now, "method_name": "gradcam"}]
    pairs = class_comparisons.paired_focus_by_class(engine, now, before)
    assert 90 <= len(pairs) <= 100 and set(pairs["target_class"]) == set(range(10))  # 10 per class, defined in both
    assert np.allclose(pairs["focus_a"], pairs["focus_b"])  # the same checkpoint, the same mosaics
    assert class_comparisons.class_names(engine, before) == [str(c) for c in range(10)]


def test_the_per_class_reference_comparison_uses_the_overall_reference_evaluation(
    prefect_api, postgres_url, digits_weights
):
    """Third audit of a checkpoint that is its own reference: ``reference`` compares with the first audit (overall
    and per class, on the clean and on the probe set), ``previous`` with the second."""
    engine = store.engine_for(postgres_url)
    checkpoint_id, _ = record.register_checkpoint(engine, ModelSpec(weights=digits_weights), DatasetSpec())
    db.set_checkpoint_audit(engine, checkpoint_id, True)
    params = _params(postgres_url, [{"name": "corner", "patch": {"kind": "corner_patch", "size": 3, "seed": 1}}])
    params = params.model_copy(update={"mosaics": params.mosaics.model_copy(update={"per_class": 2})})
    first, second, third = (audit_module.audit(params) for _ in range(3))

    def audit_run_of(evaluation_id: int) -> int:
        with engine.connect() as connection:
            return connection.execute(text("SELECT audit_run_id FROM evaluation WHERE id = :e"),
                                      {"e": evaluation_id}).scalar_one()

    expected = {"previous": second["audit_run_id"], "reference": first["audit_run_id"]}
    overall = {r["kind"]: r["previous_evaluation_id"] for r in third["results"]}
    assert {kind: audit_run_of(e) for kind, e in overall.items()} == expected
    rows = third["class_results"]
    assert {(r["probe"], r["kind"]) for r in rows} == {(p, k) for p in ("clean", "corner") for k in expected}
    for row in rows:
        assert audit_run_of(row["previous_evaluation_id"]) == expected[row["kind"]], row
        if row["probe"] == "clean":  # the very evaluation the overall comparison of that kind used
            assert row["previous_evaluation_id"] == overall[row["kind"]]
